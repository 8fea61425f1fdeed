//! What several migrations build the same way: named foreign keys, and
//! indexes declared as data.

use sea_orm_migration::prelude::*;

pub fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
    action: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create().name(name).from(from.0, from.1).to(to.0, to.1).on_delete(action).to_owned()
}

/// Name, table, columns and uniqueness of an index.
pub type Spec = (&'static str, &'static str, &'static [&'static str], bool);

/// Create each index of `specs`, in order.
pub async fn create_indexes(manager: &SchemaManager<'_>, specs: &[Spec]) -> Result<(), DbErr> {
    for (name, table, columns, unique) in specs {
        let mut index = Index::create();
        index.name(*name).table(*table);
        if *unique {
            index.unique();
        }
        for column in *columns {
            index.col(*column);
        }
        manager.create_index(index.to_owned()).await?;
    }
    Ok(())
}
