//! Parsing and checking argument values, so that a bad one is an argument error
//! (exit code 2) before anything is contacted: listing fields (`KEY=VALUE`,
//! `KEY:=JSON`), service names and hosts, `--coordinator`, `--discovery-host`,
//! `--announce-host`, counts.

use hakken::{Listing, ListingError};
use serde_json::Value;

/// Checks `--coordinator`: `HOST:PORT` (a port from 1 to 65535, an IPv6 address
/// in brackets) or `http(s)://HOST[:PORT]`, not empty, no spaces, no path.
pub fn coordinator_address(text: &str) -> Result<String, String> {
    let (scheme, rest) = scheme_and_rest(text)?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.contains(['/', '?', '#', '@']) {
        return Err("expected HOST:PORT or https://HOST:PORT, without a path".into());
    }
    // With a scheme, no port is the scheme's own (80, 443).
    host_and_port(host, scheme)?;
    Ok(text.to_owned())
}

/// Checks `--discovery-host` as `--coordinator`, except that empty means none, a
/// host without a port is port 80, and a path may follow: the original reads
/// `DISCOVERY_HOST` so (it asks `http://DISCOVERY_HOST/v1/coordinator`, so that
/// `lb:8082/hakken` asks `/hakken/v1/coordinator`).
pub fn discovery_host(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    let (_, rest) = scheme_and_rest(text)?;
    let host = rest.split_once('/').map_or(rest, |(host, _path)| host);
    if rest.contains(['?', '#', '@']) {
        return Err("expected HOST:PORT[/PATH], without a query, fragment or user".into());
    }
    host_and_port(host, true)?;
    Ok(text.to_owned())
}

/// Checks `--announce-host`: a name or address without a port (the port
/// announced is the one listened on), an IPv6 address in brackets. What else a
/// name may not hold, the coordinator says at start.
pub fn announce_host(text: &str) -> Result<String, String> {
    if unbracketed_ipv6(text) {
        return Err(
            "expected a name without a port (the port announced is --port's), an IPv6 address in brackets"
                .into(),
        );
    }
    Ok(text.to_owned())
}

/// An address that is not empty and has no spaces: whether it starts with
/// `http://` or `https://`, and what follows.
fn scheme_and_rest(text: &str) -> Result<(bool, &str), String> {
    if text.trim().is_empty() {
        return Err("expected HOST:PORT, got nothing".into());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("expected HOST:PORT, without spaces".into());
    }
    for prefix in ["https://", "http://"] {
        if let Some(head) = text.get(..prefix.len()) {
            if head.eq_ignore_ascii_case(prefix) {
                return Ok((true, &text[prefix.len()..]));
            }
        }
    }
    Ok((false, text))
}

/// Checks `HOST:PORT`, or `HOST` when `port_optional`: a host (an IPv6 address
/// in brackets, so that its last group is not a port) and a port from 1 to 65535.
fn host_and_port(text: &str, port_optional: bool) -> Result<(), String> {
    let (name, port) = match text.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => (name, Some(port)),
        _ => (text, None),
    };
    if name.is_empty() || name == "[]" {
        return Err("expected HOST:PORT, with a host before the port".into());
    }
    if unbracketed_ipv6(name) {
        return Err("expected HOST:PORT, an IPv6 address in brackets ([::1]:8082)".into());
    }
    match port {
        None if port_optional => Ok(()),
        Some(port)
            if port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|port| port > 0) =>
        {
            Ok(())
        }
        _ => Err("expected HOST:PORT, with a port from 1 to 65535".into()),
    }
}

/// Whether `name` holds a `:` outside brackets (an IPv6 address written bare, or
/// a port).
fn unbracketed_ipv6(name: &str) -> bool {
    name.contains(':') && !(name.starts_with('[') && name.ends_with(']'))
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
        assert!(coordinator_address("").is_err());
        assert!(coordinator_address(" ").is_err());
        assert!(coordinator_address("a b:1").is_err());
        assert_eq!(coordinator_address("a:1"), Ok("a:1".into()));
        assert!(coordinator_address("https://a:1").is_ok());
        assert!(coordinator_address("HTTPS://a:1/").is_ok());
        assert!(coordinator_address("https://a:1/prefix").is_err());
        assert!(coordinator_address("https://").is_err());
        for bad in [
            "localhost",
            "localhost:",
            "a:abc",
            "a:0",
            "a:65536",
            "a:+80",
            "[::1]",
            "::1",
            ":8082",
            "[]:8082",
            "http://:8082",
        ] {
            assert!(coordinator_address(bad).is_err(), "{bad}");
        }
        for good in [
            "[::1]:8082",
            "https://lb.example",
            "http://lb/",
            "https://[::1]",
        ] {
            assert!(coordinator_address(good).is_ok(), "{good}");
        }
        for good in ["localhost", "10.0.0.7", "[::1]", "coordinator-1.internal"] {
            assert_eq!(announce_host(good), Ok(good.into()), "{good}");
        }
        for bad in ["x:1", "::1", "[::1]:8082"] {
            assert!(announce_host(bad).is_err(), "{bad}");
        }
        // The discovery host: as the original, a bare host is port 80.
        for good in [
            "",
            "lb",
            "lb/",
            "lb:8082",
            "[::1]",
            "https://lb",
            "lb:8082/hakken",
            "http://lb/hakken/",
        ] {
            assert_eq!(discovery_host(good), Ok(good.into()), "{good}");
        }
        for bad in [
            " ", "lb:", "lb:0", "::1", "http://", "/v1", "lb?x=1", "u@lb",
        ] {
            assert!(discovery_host(bad).is_err(), "{bad}");
        }
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-1").is_err());
        assert_eq!(at_least_one("2"), Ok(2));
    }
}
