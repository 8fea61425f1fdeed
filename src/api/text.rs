//! The character rule of every string the API reads, declared where the
//! document would otherwise be looser than the server: each string
//! parameter and request-body field without a pattern, format or enum of its
//! own gets the pattern of [`validate::forbidden_char`] (no control character
//! but tab and line breaks), and a required one (`minLength` ≥ 1) also must
//! not be blank. A field named `email` is an address as
//! [`validate::email`] reads one; `If-Match` is an ETag the server can read
//! back.

use std::collections::HashSet;

use utoipa::openapi::{
    OpenApi, RefOr,
    schema::{AdditionalProperties, ArrayItems, Object, ObjectBuilder, Schema, SchemaType, Type},
};

use crate::platform::validate::{EMAIL_PATTERN, TEXT_PATTERN};

/// Text with at least one character that is not white space.
const REQUIRED_TEXT_PATTERN: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";
/// A version as the server sends it in `ETag` (a 32-bit count), weak or not;
/// the quotes may be left out.
const ETAG_PATTERN: &str = r#"^(W/)?("[0-9]{1,9}"|[0-9]{1,9})$"#;

pub fn declare(doc: &mut OpenApi) {
    let mut bodies = Vec::new();
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            for parameter in operation.parameters.iter_mut().flatten() {
                let RefOr::T(parameter) = parameter else { continue };
                let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() else { continue };
                if parameter.name.eq_ignore_ascii_case("if-match") {
                    schema.pattern = Some(ETAG_PATTERN.to_owned());
                } else {
                    text(schema);
                }
            }
            let Some(RefOr::T(body)) = operation.request_body.as_mut() else { continue };
            for content in body.content.values_mut() {
                if let RefOr::T(content) = content
                    && let Some(schema) = content.schema.as_mut()
                {
                    walk(schema, &mut bodies);
                }
            }
        }
    }
    // The request bodies' schemas, and the ones they refer to, once each.
    let Some(components) = doc.components.as_mut() else { return };
    let mut done = HashSet::new();
    while let Some(name) = bodies.pop() {
        if done.insert(name.clone())
            && let Some(schema) = components.schemas.get_mut(&name)
        {
            walk(schema, &mut bodies);
        }
    }
}

/// Apply the rule to the strings of `schema`, collecting the components it
/// refers to.
fn walk(schema: &mut RefOr<Schema>, refs: &mut Vec<String>) {
    let schema = match schema {
        RefOr::Ref(r) => {
            if let Some(name) = r.ref_location.strip_prefix("#/components/schemas/") {
                refs.push(name.to_owned());
            }
            return;
        }
        RefOr::T(schema) => schema,
    };
    match schema {
        Schema::Object(object) => {
            text(object);
            // A map (`credentials`): its keys are strings the rule holds for too.
            if let Some(values) = object.additional_properties.as_deref_mut() {
                if let AdditionalProperties::RefOr(values) = values {
                    walk(values, refs);
                }
                let names = object
                    .property_names
                    .get_or_insert_with(|| Box::new(ObjectBuilder::new().schema_type(Type::String).into()));
                if let Schema::Object(names) = names.as_mut() {
                    text(names);
                }
            }
            for (name, property) in &mut object.properties {
                if let (true, RefOr::T(Schema::Object(field))) = (name == "email", &mut *property) {
                    // The server's own rule, not the stricter `email` format.
                    field.format = None;
                    field.pattern = Some(EMAIL_PATTERN.to_owned());
                    field.max_length = Some(254);
                }
                walk(property, refs);
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                walk(items, refs);
            }
        }
        Schema::AllOf(all) => all.items.iter_mut().for_each(|s| walk(s, refs)),
        Schema::OneOf(one) => one.items.iter_mut().for_each(|s| walk(s, refs)),
        Schema::AnyOf(any) => any.items.iter_mut().for_each(|s| walk(s, refs)),
        _ => {}
    }
}

fn text(schema: &mut Object) {
    let is_string = match &schema.schema_type {
        SchemaType::Type(t) => *t == Type::String,
        SchemaType::Array(types) => types.contains(&Type::String),
        SchemaType::AnyValue => false,
    };
    let own_rule = schema.pattern.is_some() || schema.format.is_some() || schema.enum_values.is_some();
    if is_string && !own_rule {
        let required = schema.min_length.is_some_and(|n| n >= 1);
        schema.pattern = Some(if required { REQUIRED_TEXT_PATTERN } else { TEXT_PATTERN }.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns say what the server does: checked with the regex crate
    /// against the server's own rules on a set of characters.
    #[test]
    fn the_patterns_are_the_servers_rules() {
        let text = regex::Regex::new(TEXT_PATTERN).unwrap();
        let required = regex::Regex::new(REQUIRED_TEXT_PATTERN).unwrap();
        let samples = [
            "plain",
            "a\tb\nc\r",
            "nul\0",
            "bell\x07",
            "del\x7f",
            "c1\u{85}",
            "é ü 中",
            "",
            "  ",
            "\t\n",
            " x ",
        ];
        for sample in samples {
            let clean = !sample.chars().any(crate::platform::validate::forbidden_char);
            assert_eq!(text.is_match(sample), clean, "{sample:?}");
            assert_eq!(required.is_match(sample), clean && !sample.trim().is_empty(), "{sample:?}");
        }
        let email = regex::Regex::new(EMAIL_PATTERN).unwrap();
        let addresses = [
            "ada@example.com",
            "a@b.c",
            "a@b..c",
            "",
            "a@b",
            "@b.c",
            "a@.b.c",
            "a@b.c.",
            "a b@c.d",
            "a@b@c.d",
            "ü@ö.de",
        ];
        for address in addresses {
            assert_eq!(
                email.is_match(address),
                crate::platform::validate::email(address).is_ok(),
                "{address:?}"
            );
        }
        let etag = regex::Regex::new(ETAG_PATTERN).unwrap();
        assert!(etag.is_match("\"3\"") && etag.is_match("W/\"999999999\"") && etag.is_match("3"));
        for value in ["\"3\"", "W/\"999999999\"", "3", "\"9999999999\"", "\"3", "3\"", "x", "\"\"", "W/"] {
            let req =
                actix_web::test::TestRequest::default().insert_header(("if-match", value)).to_http_request();
            let read = crate::platform::http::if_match(&req).is_ok();
            assert_eq!(etag.is_match(value), read, "{value:?}");
        }
    }
}
