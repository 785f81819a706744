//! The forms of an address: what a coordinator's address, a discovery host and
//! an announced name may be, and what is wrong with one that is not. Pure: the
//! command checks its arguments with these before it contacts anything, and the
//! client its way in before its first call.

/// Checks the address of one coordinator, as the command takes it
/// (`--coordinator`, `HAKKEN_COORDINATOR`): `HOST:PORT` (a port from 1 to 65535,
/// an IPv6 address in brackets) or `http(s)://HOST[:PORT]`, not empty, no
/// spaces, no path.
pub fn check_coordinator(text: &str) -> Result<(), String> {
    let (scheme, rest) = scheme_and_rest(text)?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.contains(['/', '?', '#', '@']) {
        return Err("expected HOST:PORT or https://HOST:PORT, without a path".into());
    }
    // With a scheme, no port is the scheme's own (80, 443).
    host_and_port(host, scheme)
}

/// Checks a way into a cluster: a coordinator's discovery host
/// (`--discovery-host`, empty for none) and a client's `host`. As
/// [`check_coordinator`], except that a host without a port is port 80 and a
/// path may follow, as the original reads them (it asks
/// `http://DISCOVERY_HOST/v1/coordinator`, so that `lb:8082/hakken` asks
/// `/hakken/v1/coordinator`: a load balancer that serves the cluster under a
/// prefix).
pub fn check_discovery_host(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    let (_, rest) = scheme_and_rest(text)?;
    let host = rest.split_once('/').map_or(rest, |(host, _path)| host);
    if rest.contains(['?', '#', '@']) {
        return Err("expected HOST:PORT[/PATH], without a query, fragment or user".into());
    }
    host_and_port(host, true)
}

/// Checks the name a coordinator announces (`--announce-host`): a name or
/// address without a port (the port announced is the one listened on), an IPv6
/// address in brackets. What else a name may not hold, the coordinator says at
/// start.
pub fn check_announce_host(text: &str) -> Result<(), String> {
    if unbracketed_ipv6(text) {
        return Err(
            "expected a name without a port (the port announced is --port's), an IPv6 address in brackets"
                .into(),
        );
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert!(check_coordinator("").is_err());
        assert!(check_coordinator(" ").is_err());
        assert!(check_coordinator("a b:1").is_err());
        assert_eq!(check_coordinator("a:1"), Ok(()));
        assert!(check_coordinator("https://a:1").is_ok());
        assert!(check_coordinator("HTTPS://a:1/").is_ok());
        assert!(check_coordinator("https://a:1/prefix").is_err());
        assert!(check_coordinator("https://").is_err());
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
            assert!(check_coordinator(bad).is_err(), "{bad}");
        }
        for good in [
            "[::1]:8082",
            "https://lb.example",
            "http://lb/",
            "https://[::1]",
        ] {
            assert!(check_coordinator(good).is_ok(), "{good}");
        }
        for good in ["localhost", "10.0.0.7", "[::1]", "coordinator-1.internal"] {
            assert_eq!(check_announce_host(good), Ok(()), "{good}");
        }
        for bad in ["x:1", "::1", "[::1]:8082"] {
            assert!(check_announce_host(bad).is_err(), "{bad}");
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
            assert_eq!(check_discovery_host(good), Ok(()), "{good}");
        }
        for bad in [
            " ", "lb:", "lb:0", "::1", "http://", "/v1", "lb?x=1", "u@lb",
        ] {
            assert!(check_discovery_host(bad).is_err(), "{bad}");
        }
    }
}
