//! Listings and coordinator descriptors: the two JSON objects hakken moves around.
//!
//! A [`Listing`] is what a service publishes: a JSON object with a string `service`
//! and a string `host` (`"name:port"`) plus any number of extra fields, kept exactly
//! as sent (nested values and key order included) and handed to watchers unchanged.
//! A [`Peer`] describes a coordinator: an object with a string `host`, extra fields
//! kept the same way. Both validate on construction, so a value of either type is
//! always well formed; the checks and their bounds live in [`Limits`].
//!
//! This module knows nothing of HTTP or time: it is the one place where "what is a
//! valid listing" is decided, used by the coordinator on every POST and by the client
//! before it publishes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Bounds on the shape of a listing or coordinator descriptor.
///
/// The defaults are generous for real deployments and small enough that a single
/// request cannot make a coordinator hold megabytes on its behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest `service` name, in bytes.
    pub max_service_len: usize,
    /// Longest `host`, in bytes.
    pub max_host_len: usize,
    /// Most top-level fields in one object, `service` and `host` included.
    pub max_fields: usize,
    /// Deepest nesting of the object, itself counting as 1 (`{"a":[1]}` is 2). Kept
    /// well below serde_json's 128, so an answer that wraps stored objects in an
    /// array can always be read back.
    pub max_depth: usize,
}

impl Limits {
    /// No bounds but the decoder's own: for what another coordinator sends, which
    /// may have been accepted under other limits (or by the original).
    pub const RECEIVED: Limits = Limits {
        max_service_len: usize::MAX,
        max_host_len: usize::MAX,
        max_fields: usize::MAX,
        max_depth: usize::MAX,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_service_len: 256,
            max_host_len: 256,
            max_fields: 64,
            max_depth: 32,
        }
    }
}

/// Why a JSON value is not a valid listing or descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListingError {
    /// The value is an array, a string, a number, ... rather than an object.
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// A required field is absent.
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    /// A required field is present but not a string.
    #[error("field `{0}` must be a string")]
    NotAString(&'static str),
    /// A required field is the empty string.
    #[error("field `{0}` must not be empty")]
    Empty(&'static str),
    /// A required field is longer than the limit.
    #[error("field `{field}` is longer than {max} bytes")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// The limit it exceeded.
        max: usize,
    },
    /// A required field holds a control character.
    #[error("field `{0}` must not contain control characters")]
    ControlCharacter(&'static str),
    /// A required field is `.` or `..`, which no URL path can carry.
    #[error("field `{0}` must not be `.` or `..`")]
    DotSegment(&'static str),
    /// A coordinator's `host` is not `name:port` or `[v6]:port`: it would go into
    /// URLs this coordinator calls, so nothing else is accepted.
    #[error("coordinator `host` must be `name:port` or `[v6]:port`, got `{0}`")]
    NotHostPort(String),
    /// The object is nested deeper than allowed.
    #[error("nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The object has more top-level fields than allowed.
    #[error("too many fields: {count} (at most {max})")]
    TooManyFields {
        /// How many the object has.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a request body is not a valid listing or descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is empty.
    #[error("empty body: expected a JSON object")]
    Empty,
    /// The body is not JSON (or not UTF-8, or nested too deep).
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The body is JSON but not a valid object.
    #[error(transparent)]
    Invalid(#[from] ListingError),
}

/// Parses a request body as JSON; the first step of decoding either object.
fn parse_json(body: &[u8]) -> Result<Value, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks that `fields[name]` is a usable identifier and returns it.
fn required_str(
    fields: &Map<String, Value>,
    name: &'static str,
    max: usize,
) -> Result<String, ListingError> {
    let value = fields.get(name).ok_or(ListingError::Missing(name))?;
    let text = value.as_str().ok_or(ListingError::NotAString(name))?;
    check_name(name, text, max)?;
    Ok(text.to_owned())
}

/// The rules for `service` and `host`: non-empty, bounded, no control characters.
pub(crate) fn check_name(field: &'static str, text: &str, max: usize) -> Result<(), ListingError> {
    if text.is_empty() {
        return Err(ListingError::Empty(field));
    }
    if text.len() > max {
        return Err(ListingError::TooLong { field, max });
    }
    if text.chars().any(char::is_control) {
        return Err(ListingError::ControlCharacter(field));
    }
    if text == "." || text == ".." {
        return Err(ListingError::DotSegment(field));
    }
    Ok(())
}

/// The rule for a coordinator's address, which other coordinators put into the
/// URLs they call: `name:port` (a DNS name or an IPv4 address: letters, digits,
/// `-`, `_` and dots) or `[v6]:port`, the port a number from 1 to 65535. Nothing
/// that could change the URL (`/`, `?`, `#`, `@`, spaces, a scheme) gets through.
pub(crate) fn check_host_port(host: &str) -> Result<(), ListingError> {
    let bad = || ListingError::NotHostPort(host.chars().take(100).collect());
    let (name, port) = host.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65_535).contains(&p));
    if !port_ok {
        return Err(bad());
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| bad());
    }
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if name_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Checks that an object nests at most `max` levels (the object itself is 1),
/// without recursion, so a deep value built in Rust cannot overflow the stack.
fn check_depth(fields: &Map<String, Value>, max: usize) -> Result<(), ListingError> {
    let mut pending: Vec<(&Value, usize)> = fields.values().map(|v| (v, 2)).collect();
    if max == 0 {
        return Err(ListingError::TooDeep { max });
    }
    while let Some((value, depth)) = pending.pop() {
        let is_container = matches!(value, Value::Array(_) | Value::Object(_));
        if is_container && depth > max {
            return Err(ListingError::TooDeep { max });
        }
        match value {
            Value::Array(items) => pending.extend(items.iter().map(|c| (c, depth + 1))),
            Value::Object(map) => pending.extend(map.values().map(|c| (c, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

fn check_field_count(fields: &Map<String, Value>, max: usize) -> Result<(), ListingError> {
    if fields.len() > max {
        return Err(ListingError::TooManyFields {
            count: fields.len(),
            max,
        });
    }
    Ok(())
}

/// One service listing: `service`, `host`, and any extra fields, in their original order.
///
/// ```
/// use hakken::Listing;
/// let listing = Listing::new("billing", "10.0.0.7:8080")
///     .unwrap()
///     .with("protocol", "http")
///     .with("weight", 3);
/// assert_eq!(listing.service(), "billing");
/// assert_eq!(listing.get("weight"), Some(&serde_json::json!(3)));
/// assert_eq!(
///     serde_json::to_string(&listing).unwrap(),
///     r#"{"service":"billing","host":"10.0.0.7:8080","protocol":"http","weight":3}"#
/// );
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Listing {
    service: String,
    host: String,
    /// The whole object as published, `service` and `host` included, order kept.
    fields: Map<String, Value>,
}

impl Listing {
    /// A listing with only `service` and `host`, checked against the default [`Limits`].
    pub fn new(service: impl Into<String>, host: impl Into<String>) -> Result<Self, ListingError> {
        let mut fields = Map::new();
        fields.insert("service".into(), Value::String(service.into()));
        fields.insert("host".into(), Value::String(host.into()));
        Self::from_map(fields, &Limits::default())
    }

    /// Decodes and validates a request body (JSON bytes) as a listing.
    pub fn from_json(body: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Self::from_value(parse_json(body)?, limits)?)
    }

    /// Validates a JSON value as a listing.
    pub fn from_value(value: Value, limits: &Limits) -> Result<Self, ListingError> {
        match value {
            Value::Object(fields) => Self::from_map(fields, limits),
            other => Err(ListingError::NotAnObject(kind_of(&other))),
        }
    }

    /// Validates a JSON object as a listing.
    pub fn from_map(fields: Map<String, Value>, limits: &Limits) -> Result<Self, ListingError> {
        check_field_count(&fields, limits.max_fields)?;
        check_depth(&fields, limits.max_depth)?;
        let service = required_str(&fields, "service", limits.max_service_len)?;
        let host = required_str(&fields, "host", limits.max_host_len)?;
        Ok(Listing {
            service,
            host,
            fields,
        })
    }

    /// Checks an existing listing against other limits (one received from another
    /// coordinator, say, that accepted it under its own).
    pub fn check(&self, limits: &Limits) -> Result<(), ListingError> {
        check_field_count(&self.fields, limits.max_fields)?;
        check_depth(&self.fields, limits.max_depth)?;
        check_name("service", &self.service, limits.max_service_len)?;
        check_name("host", &self.host, limits.max_host_len)
    }

    /// The service this listing belongs to.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Where the service can be reached, `"name:port"`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// One field of the listing, `service` and `host` included.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// Every field, in the order they were published.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// Returns the listing with one field set (added at the end, or replaced in
    /// place), checked like a published listing against the default [`Limits`].
    ///
    /// ```
    /// use hakken::{Listing, ListingError};
    /// let listing = Listing::new("s", "h:1").unwrap();
    /// assert!(listing.clone().try_with("weight", 3).is_ok());
    /// assert_eq!(listing.try_with("host", ""), Err(ListingError::Empty("host")));
    /// ```
    pub fn try_with(
        self,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<Self, ListingError> {
        let mut fields = self.fields;
        fields.insert(key.into(), value.into());
        Self::from_map(fields, &Limits::default())
    }

    /// Returns the listing with one field set, like [`Listing::try_with`].
    ///
    /// # Panics
    ///
    /// When the result is not a valid listing (an empty or non-string `service` or
    /// `host`, too many fields, ...): a programming error, as with a bad literal.
    /// Use [`Listing::try_with`] for values that come from outside.
    pub fn with(self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        match self.try_with(key, value) {
            Ok(listing) => listing,
            Err(error) => panic!("Listing::with: {error}"),
        }
    }

    /// The key that identifies this listing on a coordinator: `(service, host)`.
    pub fn key(&self) -> (&str, &str) {
        (&self.service, &self.host)
    }

    /// The listing as a JSON value.
    pub fn to_value(&self) -> Value {
        Value::Object(self.fields.clone())
    }

    /// The listing as a JSON object, consuming it.
    pub fn into_map(self) -> Map<String, Value> {
        self.fields
    }
}

impl fmt::Debug for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Listing({})", Value::Object(self.fields.clone()))
    }
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.service, self.host)
    }
}

impl Serialize for Listing {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.fields.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Listing {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Listing::from_value(value, &Limits::default()).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<Value> for Listing {
    type Error = ListingError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Listing::from_value(value, &Limits::default())
    }
}

/// A coordinator descriptor: `{"host": "name:port", ...}`, keyed by `host`, which
/// must be `name:port` or `[v6]:port` (see [`Peer::new`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Peer {
    host: String,
    fields: Map<String, Value>,
}

impl Peer {
    /// A descriptor with only `host`: `name:port` (a DNS name or an IPv4 address)
    /// or `[v6]:port`. Anything else — a path, a query, credentials, a scheme — is
    /// refused, for the host goes into URLs other coordinators call.
    ///
    /// ```
    /// use hakken::Peer;
    /// assert!(Peer::new("coordinator-1.internal:8082").is_ok());
    /// assert!(Peer::new("[::1]:8082").is_ok());
    /// assert!(Peer::new("evil.example/steal?x=1#:80").is_err());
    /// assert!(Peer::new("user@host:80").is_err());
    /// ```
    pub fn new(host: impl Into<String>) -> Result<Self, ListingError> {
        let mut fields = Map::new();
        fields.insert("host".into(), Value::String(host.into()));
        Self::from_value(Value::Object(fields), &Limits::default())
    }

    /// Decodes and validates a request body (JSON bytes) as a descriptor.
    pub fn from_json(body: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Self::from_value(parse_json(body)?, limits)?)
    }

    /// Validates a JSON value as a coordinator descriptor.
    pub fn from_value(value: Value, limits: &Limits) -> Result<Self, ListingError> {
        match value {
            Value::Object(fields) => {
                check_field_count(&fields, limits.max_fields)?;
                check_depth(&fields, limits.max_depth)?;
                let host = required_str(&fields, "host", limits.max_host_len)?;
                check_host_port(&host)?;
                Ok(Peer { host, fields })
            }
            other => Err(ListingError::NotAnObject(kind_of(&other))),
        }
    }

    /// The coordinator's address, `"name:port"`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Every field of the descriptor.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Peer({})", Value::Object(self.fields.clone()))
    }
}

impl Serialize for Peer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.fields.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Peer::from_value(value, &Limits::default()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coordinator_hosts_are_name_and_port_only() {
        for good in [
            "localhost:8082",
            "127.0.0.1:1",
            "coordinator-1.internal:65535",
            "a_b.c:80",
            "[::1]:8082",
            "[fe80::1]:9",
        ] {
            assert_eq!(check_host_port(good), Ok(()), "{good}");
        }
        for bad in [
            "localhost",
            "localhost:",
            "localhost:0",
            "localhost:65536",
            "localhost:+80",
            "host:80/path",
            "a/b:80",
            "h?x=1:80",
            "h#f:80",
            "user@h:80",
            "http://h:80",
            "h :80",
            ":80",
            "-h:80",
            "h..i:80",
            "[::1:80",
            "[nonsense]:80",
            "::1:80",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
        assert!(Peer::from_value(json!({"host": "x/y:1"}), &Limits::RECEIVED).is_err());
    }

    #[test]
    fn keeps_every_field_in_order() {
        let text =
            r#"{"zeta":1,"service":"s","nested":{"b":[1,{"c":null}],"a":true},"host":"h:1"}"#;
        let listing: Listing = serde_json::from_str(text).unwrap();
        assert_eq!(listing.service(), "s");
        assert_eq!(listing.host(), "h:1");
        assert_eq!(serde_json::to_string(&listing).unwrap(), text);
    }

    #[test]
    fn rejects_what_is_not_a_listing() {
        let limits = Limits::default();
        let cases = [
            (json!([1, 2]), ListingError::NotAnObject("an array")),
            (json!("s"), ListingError::NotAnObject("a string")),
            (json!(null), ListingError::NotAnObject("null")),
            (json!({"host": "h:1"}), ListingError::Missing("service")),
            (json!({"service": "s"}), ListingError::Missing("host")),
            (
                json!({"service": 1, "host": "h"}),
                ListingError::NotAString("service"),
            ),
            (
                json!({"service": "s", "host": ["h"]}),
                ListingError::NotAString("host"),
            ),
            (
                json!({"service": "", "host": "h"}),
                ListingError::Empty("service"),
            ),
            (
                json!({"service": "s\n", "host": "h"}),
                ListingError::ControlCharacter("service"),
            ),
            (
                json!({"service": "..", "host": "h"}),
                ListingError::DotSegment("service"),
            ),
            (
                json!({"service": "s".repeat(257), "host": "h"}),
                ListingError::TooLong {
                    field: "service",
                    max: 256,
                },
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(
                Listing::from_value(value.clone(), &limits),
                Err(expected),
                "{value}"
            );
        }
    }

    #[test]
    fn bounds_the_number_of_fields() {
        let limits = Limits {
            max_fields: 3,
            ..Limits::default()
        };
        let ok = json!({"service": "s", "host": "h", "a": 1});
        assert!(Listing::from_value(ok, &limits).is_ok());
        let too_many = json!({"service": "s", "host": "h", "a": 1, "b": 2});
        assert_eq!(
            Listing::from_value(too_many, &limits),
            Err(ListingError::TooManyFields { count: 4, max: 3 })
        );
    }

    #[test]
    fn names_may_hold_slashes_spaces_and_unicode() {
        for name in ["a/b", "a..b", "...", "%2F", "with space", "日本語", "a?b#c"] {
            assert!(Listing::new(name, "h:1").is_ok(), "{name}");
        }
    }

    #[test]
    fn with_sets_fields_and_guards_the_keys() {
        let listing = Listing::new("s", "h:1").unwrap().with("a", 1);
        assert_eq!(listing.get("a"), Some(&json!(1)));
        assert_eq!(
            listing.clone().try_with("host", ""),
            Err(ListingError::Empty("host"))
        );
        assert_eq!(
            listing.clone().try_with("service", 7),
            Err(ListingError::NotAString("service"))
        );
        let moved = listing.with("host", "h:2");
        assert_eq!(moved.host(), "h:2");
        assert_eq!(moved.key(), ("s", "h:2"));
        assert_eq!(moved.get("host"), Some(&json!("h:2")));
    }

    #[test]
    #[should_panic(expected = "must not be empty")]
    fn with_panics_on_an_invalid_listing() {
        let _ = Listing::new("s", "h:1").unwrap().with("host", "");
    }

    #[test]
    fn bounds_the_depth() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        let ok = json!({"service": "s", "host": "h", "a": [[1]], "b": {"c": 1}});
        assert!(Listing::from_value(ok, &limits).is_ok());
        let deep = json!({"service": "s", "host": "h", "a": [[[1]]]});
        assert_eq!(
            Listing::from_value(deep, &limits),
            Err(ListingError::TooDeep { max: 3 })
        );
        let deep_peer = json!({"host": "h", "a": {"b": {"c": {}}}});
        assert_eq!(
            Peer::from_value(deep_peer, &limits),
            Err(ListingError::TooDeep { max: 3 })
        );
        // A value built in Rust, deeper than any parser allows: checked without
        // recursion.
        let mut value = json!(1);
        for _ in 0..1_000 {
            value = json!([value]);
        }
        let huge = json!({"service": "s", "host": "h", "x": value});
        assert!(Listing::from_value(huge.clone(), &Limits::RECEIVED).is_ok());
        assert_eq!(
            Listing::from_value(huge, &Limits::default()),
            Err(ListingError::TooDeep { max: 32 })
        );
    }

    #[test]
    fn peer_needs_a_host() {
        assert!(Peer::from_value(json!({"host": "c:1", "dc": "x"}), &Limits::default()).is_ok());
        assert_eq!(
            Peer::from_value(json!({"hots": "c:1"}), &Limits::default()),
            Err(ListingError::Missing("host"))
        );
    }
}
