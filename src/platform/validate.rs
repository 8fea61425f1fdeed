//! Field rules applied at the edge. Each returns the message for a
//! [`FieldError`](crate::error::FieldError), so a handler can collect them all.

use crate::error::FieldError;

/// Collects field errors; `finish` turns them into a validation result.
#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn check(&mut self, field: &str, result: Result<(), String>) -> &mut Self {
        if let Err(message) = result {
            self.0.push(FieldError::new(field, message));
        }
        self
    }

    pub fn finish(&mut self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() { Ok(()) } else { Err(std::mem::take(&mut self.0)) }
    }
}

/// The one character rule of every string the API reads (JSON bodies,
/// GraphQL arguments and variables, URLs): no control character other than
/// tab, line feed and carriage return. Refused with 400 `invalid_string`.
pub fn forbidden_char(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// The same rule as a JSON Schema pattern, declared on every string input.
pub const TEXT_PATTERN: &str = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$";

/// A display name: 1..=200 characters, not blank, within the character rule.
pub fn name(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be blank".to_owned());
    }
    if value.chars().count() > 200 {
        return Err("must be at most 200 characters".to_owned());
    }
    if value.chars().any(forbidden_char) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(())
}

/// Optional free text (descriptions): at most `max` characters, no control
/// characters other than line breaks and tabs.
pub fn plain_text(value: &str, max: usize) -> Result<(), String> {
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if value.chars().any(forbidden_char) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(())
}

/// The largest integer every JSON reader keeps exactly (2^53 - 1).
pub const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// Free-form attributes: an object whose numbers every client reads back
/// exactly, so none is silently turned into a float on the way.
pub fn attributes(value: &serde_json::Value) -> Result<(), String> {
    fn exact(value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match value {
            Value::Number(n) => n
                .as_u64()
                .map(|v| v <= MAX_EXACT_INTEGER)
                .or_else(|| n.as_i64().map(|v| v.unsigned_abs() <= MAX_EXACT_INTEGER))
                .unwrap_or_else(|| n.as_f64().is_some_and(|f| f.abs() <= MAX_EXACT_INTEGER as f64)),
            Value::Array(items) => items.iter().all(exact),
            Value::Object(map) => map.values().all(exact),
            _ => true,
        }
    }
    if !value.is_object() {
        return Err("must be an object".to_owned());
    }
    if !exact(value) {
        return Err(format!(
            "numbers must lie within ±{MAX_EXACT_INTEGER} to be kept exactly; send larger ones as strings"
        ));
    }
    Ok(())
}

/// An ISO 4217 currency code: three upper-case letters.
pub fn currency(value: &str) -> Result<(), String> {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err("must be an ISO 4217 code such as EUR".to_owned())
    }
}

/// A pragmatic email check: one `@`, a dotted domain, no spaces, <= 254.
/// [`email`] as a JSON Schema pattern.
pub const EMAIL_PATTERN: &str = r"^[^\s@\x00-\x1f\x7f-\x9f]+@[^\s@.\x00-\x1f\x7f-\x9f][^\s@\x00-\x1f\x7f-\x9f]*\.[^\s@\x00-\x1f\x7f-\x9f]*[^\s@.\x00-\x1f\x7f-\x9f]$";

pub fn email(value: &str) -> Result<(), String> {
    let invalid = || Err("is not a valid email address".to_owned());
    if value.chars().count() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid();
    }
    match value.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.') =>
        {
            Ok(())
        }
        _ => invalid(),
    }
}

pub const PASSWORD_MIN_LENGTH: usize = 12;

/// Password rules: at least 12 characters, at most 128 (hashing cost), not
/// one repeated character, and both letters and something else.
pub fn password(value: &str) -> Result<(), String> {
    let length = value.chars().count();
    if length < PASSWORD_MIN_LENGTH {
        return Err(format!("must be at least {PASSWORD_MIN_LENGTH} characters"));
    }
    if length > 128 {
        return Err("must be at most 128 characters".to_owned());
    }
    let mut chars = value.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err("must not be a single repeated character".to_owned());
    }
    let letters = value.chars().any(char::is_alphabetic);
    let others = value.chars().any(|c| !c.is_alphabetic());
    if !(letters && others) {
        return Err("must mix letters with digits or symbols".to_owned());
    }
    Ok(())
}

/// A tenant slug: 3..=63 of `a-z`, `0-9` and inner `-`.
pub fn slug(value: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok { Ok(()) } else { Err("must be 3-63 characters of a-z, 0-9 and inner dashes".to_owned()) }
}

/// Derive a slug from a name: "Acme Trading GmbH" -> "acme-trading-gmbh".
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.truncate(63);
    out.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(email("ada@example.com").is_ok());
        for bad in ["", "ada", "ada@", "@example.com", "ada@example", "a b@example.com", "a@b@c.com"] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert!(password("correct horse 9").is_ok());
        assert!(password("short1").is_err());
        assert!(password("aaaaaaaaaaaaaa").is_err());
        assert!(password("onlylettershere").is_err());
        assert!(password("123456789012345").is_err());
        assert!(password(&"a1".repeat(65)).is_err());
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("  Acme Trading GmbH!"), "acme-trading-gmbh");
        assert!(slug("acme").is_ok());
        assert!(slug("-acme").is_err());
        assert!(slug("Acme").is_err());
        assert!(slug("ab").is_err());
    }

    #[test]
    fn names() {
        assert!(name("Ada Lovelace").is_ok());
        assert!(name("   ").is_err());
        assert!(name("a\u{7}b").is_err());
    }
}

#[cfg(test)]
mod attribute_tests {
    use serde_json::json;

    use super::attributes;

    #[test]
    fn attributes_keep_their_numbers_exact_or_are_refused() {
        assert!(
            attributes(&json!({"weight": 1.5, "pack": 9007199254740991_u64, "nested": [{"n": -3}]})).is_ok()
        );
        assert!(attributes(&json!({"ean": 9007199254740993_u64})).is_err());
        assert!(attributes(&json!({"deep": [{"n": -9007199254740993_i64}]})).is_err());
        let huge: serde_json::Value =
            serde_json::from_str(r#"{"n": 123456789012345678901234567890}"#).unwrap();
        assert!(attributes(&huge).is_err(), "beyond u64 it would be a float");
        assert_eq!(attributes(&json!([1])), Err("must be an object".to_owned()));
    }
}
