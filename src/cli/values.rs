//! Parsing and checking argument values, so that a bad one is an argument error
//! (exit code 2) before anything is contacted: listing fields (`KEY=VALUE`,
//! `KEY:=JSON`), service names and hosts, `--coordinator`, `--discovery-host`,
//! `--announce-host`, counts.

use hakken::{address, Listing, ListingError};
use serde_json::Value;

/// Checks `--coordinator` (see [`address::check_coordinator`]).
pub fn coordinator_address(text: &str) -> Result<String, String> {
    address::check_coordinator(text).map(|()| text.to_owned())
}

/// Checks `--discovery-host` (see [`address::check_discovery_host`]).
pub fn discovery_host(text: &str) -> Result<String, String> {
    address::check_discovery_host(text).map(|()| text.to_owned())
}

/// Checks `--announce-host` (see [`address::check_announce_host`]).
pub fn announce_host(text: &str) -> Result<String, String> {
    address::check_announce_host(text).map(|()| text.to_owned())
}

/// What is wrong with a `service` or `host` argument, said of the argument.
fn name_error(error: ListingError) -> String {
    match error {
        ListingError::Empty(_) => "must not be empty".into(),
        ListingError::TooLong { max, .. } => format!("must be at most {max} bytes"),
        ListingError::ControlCharacter(_) => "must not contain control characters".into(),
        ListingError::DotSegment(_) => "must not be `.` or `..`".into(),
        other => other.to_string(),
    }
}

/// Parses a count of at least 1.
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number, at least 1".into()),
    }
}

/// Checks a service name as a listing would.
pub fn service_name(text: &str) -> Result<String, String> {
    Listing::new(text, "placeholder:1").map_err(name_error)?;
    Ok(text.to_owned())
}

/// Checks a listing's host as a listing would.
pub fn listing_host(text: &str) -> Result<String, String> {
    Listing::new("placeholder", text).map_err(name_error)?;
    Ok(text.to_owned())
}

/// Parses `KEY=VALUE` or `KEY:=JSON` (the first `=` decides which).
///
/// `KEY=VALUE` keeps what was typed: the value is a string unless it is a number,
/// `true`, `false` or `null` that JSON writes back exactly as typed (`8080`, `-3`,
/// `0.5`); `7.10`, `007`, `1e3`, `"x"`, `{"a":1}` or `[1]` stay the strings typed
/// (arrays and objects take `:=`, whatever their spacing). `KEY:=JSON` is any JSON value, explicitly; text that is not JSON
/// there is an error naming the field.
pub fn parse_field(text: &str) -> Result<(String, Value), String> {
    let at = text
        .find('=')
        .ok_or_else(|| format!("expected KEY=VALUE or KEY:=JSON, got `{text}`"))?;
    let (key, json) = match text[..at].strip_suffix(':') {
        Some(key) => (key, true),
        None => (&text[..at], false),
    };
    let raw = &text[at + 1..];
    if key.is_empty() {
        return Err(format!("empty key in `{text}`"));
    }
    let value = if json {
        serde_json::from_str(raw)
            .map_err(|e| format!("invalid JSON after `:=` in field `{key}`: {e}"))?
    } else {
        plain_value(raw)
    };
    Ok((key.to_owned(), value))
}

/// A `KEY=VALUE` value: the number, boolean or null it spells when JSON writes that
/// back unchanged, else the text itself.
fn plain_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(value)
            if (value.is_number() || value.is_boolean() || value.is_null())
                && serde_json::to_string(&value).is_ok_and(|back| back == text) =>
        {
            value
        }
        _ => Value::String(text.to_owned()),
    }
}

/// A field of `publish`: as [`parse_field`], but `service` and `host` are the
/// arguments, not fields.
pub fn parse_published_field(text: &str) -> Result<(String, Value), String> {
    let (key, value) = parse_field(text)?;
    if key == "service" || key == "host" {
        return Err(format!(
            "`{key}` is given as the {} argument, not as a field",
            key.to_uppercase()
        ));
    }
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_fields_keep_what_was_typed() {
        let field = |text: &str| parse_field(text).map(|(_, value)| value);
        assert_eq!(field("port=8080"), Ok(json!(8080)));
        assert_eq!(field("neg=-3"), Ok(json!(-3)));
        assert_eq!(field("half=0.5"), Ok(json!(0.5)));
        assert_eq!(field("tls=true"), Ok(json!(true)));
        assert_eq!(field("off=false"), Ok(json!(false)));
        assert_eq!(field("none=null"), Ok(json!(null)));
        for kept in [
            "7.10",
            "007",
            "1e3",
            "1.50",
            "-0",
            "+1",
            "123456789012345678901234567890",
            r#""quoted""#,
            r#"{"a": 1}"#,
            r#"{"a":[1]}"#,
            "[1, 2]",
            "[1,2]",
            "True",
            "billing",
            "a=b",
            "",
        ] {
            assert_eq!(field(&format!("k={kept}")), Ok(json!(kept)), "{kept}");
        }
        assert_eq!(parse_field("a:b=c"), Ok(("a:b".into(), json!("c"))));
        assert!(parse_field("novalue").is_err());
        assert!(parse_field("=x").is_err());
    }

    #[test]
    fn json_fields_are_explicit() {
        assert_eq!(
            parse_field("version:=7.10"),
            Ok(("version".into(), json!(7.1)))
        );
        assert_eq!(
            parse_field(r#"tags:=["a","b"]"#),
            Ok(("tags".into(), json!(["a", "b"])))
        );
        assert_eq!(
            parse_field(r#"meta:={"a": 1}"#),
            Ok(("meta".into(), json!({"a": 1})))
        );
        assert_eq!(parse_field(r#"s:="x""#), Ok(("s".into(), json!("x"))));
        // The first `=` decides: this is a string with `:=` in it.
        assert_eq!(parse_field("a=b:=c"), Ok(("a".into(), json!("b:=c"))));
        let error = parse_field("tags:=[1,").unwrap_err();
        assert!(error.contains("`tags`"), "{error}");
        assert!(parse_field("x:=hello").is_err());
        assert!(parse_field(":=1").is_err());
    }

    #[test]
    fn published_fields_are_not_service_or_host() {
        assert!(parse_published_field("service=other").is_err());
        assert!(parse_published_field(r#"host:="a:1""#).is_err());
        assert!(parse_published_field("hosts=a").is_ok());
        // A filter may name them.
        assert!(parse_field("host=a:1").is_ok());
    }

    #[test]
    fn names_are_checked_as_listings_check_them() {
        assert_eq!(service_name("billing"), Ok("billing".into()));
        assert!(service_name("").is_err());
        assert!(service_name("..").is_err());
        assert!(service_name(".").is_err());
        assert!(service_name("a\nb").is_err());
        assert!(listing_host("").is_err());
        assert_eq!(coordinator_address("a:1"), Ok("a:1".into()));
        assert!(coordinator_address("a:0").is_err());
        assert_eq!(discovery_host(""), Ok("".into()));
        assert_eq!(announce_host("a"), Ok("a".into()));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-1").is_err());
        assert_eq!(at_least_one("2"), Ok(2));
    }
}
