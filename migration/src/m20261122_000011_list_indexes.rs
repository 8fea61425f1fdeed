//! Lists page by keyset (`WHERE (sort, id) > (value, id) ORDER BY sort, id
//! LIMIT n`), so each sort a list offers gets an index that starts with
//! `tenant_id` and ends with the tie-breaking key: a page then costs the
//! same at the first row and the millionth. Sorts on a column unique per
//! tenant (product `sku`, warehouse `code`, user `email`) already have one
//! (`ux_*`), and a stock level's key is its primary key. The operators' job
//! list has no tenant and always filters by status.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

type Spec = (&'static str, &'static str, &'static [&'static str]);

/// Name, table and columns of each new index.
const INDEXES: &[Spec] = &[
    ("ix_products_tenant_created", "products", &["tenant_id", "created_at", "id"]),
    ("ix_products_tenant_name", "products", &["tenant_id", "name", "id"]),
    ("ix_warehouses_tenant_created", "warehouses", &["tenant_id", "created_at", "id"]),
    ("ix_warehouses_tenant_name", "warehouses", &["tenant_id", "name", "id"]),
    (
        "ix_stock_levels_tenant_on_hand",
        "stock_levels",
        &["tenant_id", "on_hand", "product_id", "warehouse_id"],
    ),
    (
        "ix_stock_levels_tenant_reserved",
        "stock_levels",
        &["tenant_id", "reserved", "product_id", "warehouse_id"],
    ),
    (
        "ix_stock_levels_tenant_updated",
        "stock_levels",
        &["tenant_id", "updated_at", "product_id", "warehouse_id"],
    ),
    ("ix_stock_movements_tenant_created", "stock_movements", &["tenant_id", "created_at", "id"]),
    // A product's history is the movement list's common filter.
    (
        "ix_stock_movements_product_created",
        "stock_movements",
        &["tenant_id", "product_id", "created_at", "id"],
    ),
    ("ix_vendors_tenant_created", "vendors", &["tenant_id", "created_at", "id"]),
    ("ix_vendors_tenant_name", "vendors", &["tenant_id", "name", "id"]),
    ("ix_purchase_orders_tenant_created", "purchase_orders", &["tenant_id", "created_at", "id"]),
    ("ix_purchase_orders_tenant_updated", "purchase_orders", &["tenant_id", "updated_at", "id"]),
    ("ix_purchase_orders_tenant_total", "purchase_orders", &["tenant_id", "total", "id"]),
    ("ix_journal_entries_tenant_created", "journal_entries", &["tenant_id", "created_at", "id"]),
    ("ix_users_tenant_created", "users", &["tenant_id", "created_at", "id"]),
    ("ix_users_tenant_name", "users", &["tenant_id", "name", "id"]),
    ("ix_audit_logs_tenant_created", "audit_logs", &["tenant_id", "created_at", "id"]),
    ("ix_audit_logs_tenant_status", "audit_logs", &["tenant_id", "status", "id"]),
    ("ix_jobs_status_created", "jobs", &["status", "created_at", "id"]),
    ("ix_webhook_endpoints_tenant_created", "webhook_endpoints", &["tenant_id", "created_at", "id"]),
    // Deliveries are always listed for one endpoint.
    (
        "ix_webhook_deliveries_tenant_endpoint_created",
        "webhook_deliveries",
        &["tenant_id", "endpoint_id", "created_at", "id"],
    ),
];

/// Indexes that the ones above make redundant (each is a prefix of one),
/// as they were, for `down`.
const REPLACED: &[Spec] = &[
    ("ix_audit_logs_tenant_time", "audit_logs", &["tenant_id", "created_at"]),
    ("ix_pos_tenant_created", "purchase_orders", &["tenant_id", "created_at"]),
    ("ix_webhook_endpoints_tenant", "webhook_endpoints", &["tenant_id"]),
];

async fn create(manager: &SchemaManager<'_>, specs: &[Spec]) -> Result<(), DbErr> {
    for (name, table, columns) in specs {
        let mut index = Index::create();
        index.name(*name).table(*table);
        for column in *columns {
            index.col(*column);
        }
        manager.create_index(index.to_owned()).await?;
    }
    Ok(())
}

async fn drop(manager: &SchemaManager<'_>, specs: &[Spec]) -> Result<(), DbErr> {
    for (name, table, _) in specs {
        manager.drop_index(Index::drop().name(*name).table(*table).to_owned()).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create(manager, INDEXES).await?;
        drop(manager, REPLACED).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create(manager, REPLACED).await?;
        drop(manager, INDEXES).await
    }
}
