//! Saying why a call to a coordinator failed: one line that names the
//! coordinator and the cause (no answer, a name that does not resolve, a token
//! missing or refused, a server that is not a coordinator), and what to do about it
//! where there is something to do.

use hakken::remote::RemoteError;
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;

/// Why a call to a coordinator failed, in one line that names it and the cause,
/// and what to do where there is something to do. `token`: whether one was sent;
/// `within`: how long a name lookup may take.
pub async fn remote_error(error: &RemoteError, token: bool, within: Duration) -> String {
    match error {
        RemoteError::Unreachable { host, message } => {
            match unresolvable(host, within).await {
                Some((name, why)) => {
                    format!("cannot resolve host `{name}` (coordinator {host}): {why}")
                }
                None => format!("cannot reach coordinator {host}: {message}"),
            }
        }
        RemoteError::Status {
            host,
            status: 403,
            body,
        } if body.contains("client certificate") => format!(
            "coordinator {host} requires a client certificate (mutual TLS, HTTP 403): set --cert and --key, or HAKKEN_CERT and HAKKEN_KEY"
        ),
        RemoteError::Status {
            host,
            status: status @ (401 | 403),
            ..
        } => match token {
            true => format!(
                "coordinator {host} refused the token (HTTP {status}): check --token or HAKKEN_TOKEN"
            ),
            false => format!(
                "coordinator {host} requires a token (HTTP {status}): set one with --token or HAKKEN_TOKEN"
            ),
        },
        RemoteError::Status { host, status, body } if body.trim_start().starts_with('<') => {
            format!("{host} is not a hakken coordinator (HTTP {status})")
        }
        RemoteError::Status { host, status, body } => match error_text(body) {
            Some(text) => format!("coordinator {host} answered HTTP {status}: {text}"),
            None => format!("coordinator {host} answered HTTP {status}"),
        },
        RemoteError::NotCoordinator {
            host,
            status,
            content_type,
        } => match content_type.as_str() {
            "none" | "" => format!("{host} is not a hakken coordinator (HTTP {status})"),
            named => format!("{host} is not a hakken coordinator (HTTP {status}, {named})"),
        },
        RemoteError::Ended { host } => format!("coordinator {host} ended the stream"),
        RemoteError::BadAnswer { host, message } => {
            format!("coordinator {host} sent an answer it should not have: {message}")
        }
        // A cause the library learns later: its own words name the coordinator.
        other => other.to_string(),
    }
}

/// What an error body says: the `error` of our coordinators' `{"error": "..."}`,
/// else its first line.
fn error_text(body: &str) -> Option<String> {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) {
        if let Some(Value::String(text)) = map.get("error") {
            return Some(text.clone());
        }
    }
    let line = body.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.to_owned())
}

/// The host name of `address` (`name:port`, `http://name:port/...`) and why it
/// cannot be resolved, when it cannot; `None` when it resolves, is an IP address,
/// or the lookup does not finish within `within`.
async fn unresolvable(address: &str, within: Duration) -> Option<(String, String)> {
    let rest = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address);
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.starts_with('[') {
        return None;
    }
    let name = authority
        .rsplit_once(':')
        .map_or(authority, |(name, _)| name);
    if name.is_empty() || name.parse::<IpAddr>().is_ok() {
        return None;
    }
    let lookup = tokio::net::lookup_host((name, 0));
    let why = match tokio::time::timeout(within, lookup).await {
        Ok(Ok(mut addresses)) => addresses
            .next()
            .is_none()
            .then(|| "no address found".into()),
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => None,
    };
    why.map(|why| (name.to_owned(), why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_read_for_their_message() {
        assert_eq!(
            error_text(r#"{"error":"missing or wrong bearer token"}"#).as_deref(),
            Some("missing or wrong bearer token")
        );
        assert_eq!(error_text("\n busy \nmore").as_deref(), Some("busy"));
        assert_eq!(error_text(""), None);
    }
}
