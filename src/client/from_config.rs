//! Watches from configuration, in the original's shapes.
//!
//! | shape | watch |
//! | --- | --- |
//! | `"billing"` | one random listing of `billing` (the original's default) |
//! | `{"type": "random", "service": "billing", "filter": {"k": v}, "config": {"numToPull": 2}}` | up to `numToPull` (default 1) random listings whose fields equal the filter's |
//! | `{"type": "all", "service": "billing", "filter": {..}}` | every listing that passes the filter (ours) |
//! | `{"type": "static", "hosts": [..], "service": "billing"}` | a fixed list |
//!
//! The original hands a static watch's `hosts` out as they are. A listing needs a
//! `service` and a `host`, so here each entry is either a listing object (its
//! `service` defaulting to the config's `service`, else `"static"`) or a
//! `"name:port"` string, which becomes a listing with that `host` and that
//! default `service`. This lets a local setup say `{"type": "static", "hosts":
//! ["localhost:8080"]}` where production says `"billing"`.

use super::error::ClientError;
use super::watch::Watch;
use super::Client;
use crate::listing::{Limits, Listing};
use serde_json::Value;

/// A static listing's `service` when neither it nor the config names one.
const STATIC_SERVICE: &str = "static";

fn bad(message: impl Into<String>) -> ClientError {
    ClientError::Config(message.into())
}

/// The watch `config` describes; see the module documentation for the shapes.
pub(crate) fn watch_from_config(client: &Client, config: &Value) -> Result<Watch, ClientError> {
    let object = match config {
        Value::String(service) => return Ok(client.random_watch(service)),
        Value::Object(object) => object,
        other => {
            return Err(bad(format!(
                "a watch config is a service name or an object, not {other}"
            )))
        }
    };
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("watch config: missing string `type`"))?;
    let service = object.get("service").and_then(Value::as_str);
    match kind {
        "random" | "all" => {
            let service =
                service.ok_or_else(|| bad(format!("{kind} watch: missing string `service`")))?;
            let mut builder = client.watch(service);
            match object.get("filter") {
                None | Some(Value::Null) => {}
                Some(Value::Object(filter)) => {
                    for (key, value) in filter {
                        builder = builder.filter(key.clone(), value.clone());
                    }
                }
                Some(other) => {
                    return Err(bad(format!(
                        "{kind} watch: `filter` must be an object, not {other}"
                    )))
                }
            }
            if kind == "random" {
                let n = match object.get("config").and_then(|c| c.get("numToPull")) {
                    None | Some(Value::Null) => 1,
                    Some(n) => n.as_u64().ok_or_else(|| {
                        bad(format!(
                            "random watch: `numToPull` must be a count, not {n}"
                        ))
                    })? as usize,
                };
                builder = builder.random(n);
            }
            Ok(builder.build())
        }
        "static" => {
            let hosts = object
                .get("hosts")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("static watch: missing array `hosts`"))?;
            let service = service.unwrap_or(STATIC_SERVICE);
            let listings = hosts
                .iter()
                .map(|entry| static_listing(entry, service))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Client::static_watch(listings))
        }
        other => Err(bad(format!(
            "unknown watch type `{other}` (expected random, all or static)"
        ))),
    }
}

fn static_listing(entry: &Value, service: &str) -> Result<Listing, ClientError> {
    let mut fields = match entry {
        Value::String(host) => {
            return Listing::new(service, host.clone())
                .map_err(|e| bad(format!("static watch: host `{host}`: {e}")))
        }
        Value::Object(fields) => fields.clone(),
        other => {
            return Err(bad(format!(
                "static watch: a host is a listing or a \"name:port\", not {other}"
            )))
        }
    };
    if !fields.contains_key("service") {
        fields.insert("service".into(), Value::String(service.to_owned()));
    }
    Listing::from_map(fields, &Limits::RECEIVED).map_err(|e| bad(format!("static watch: {e}")))
}
