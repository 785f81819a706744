//! The README's tables of settings and limits are checked against the code, which
//! is the one source of truth: a default changed in one place and not the other
//! fails here.

use hakken::coordinator::CoordinatorConfig;
use hakken::Limits;
use std::collections::BTreeMap;

const README: &str = include_str!("../README.md");

/// The rows of the first table after `heading`, as cells without backquotes.
fn table_after(heading: &str) -> Vec<Vec<String>> {
    let start = README
        .find(heading)
        .unwrap_or_else(|| panic!("README has {heading}"));
    README[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            row.trim()
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().replace('`', ""))
                .collect()
        })
        .collect()
}

/// A table's defaults, by variable (column 0), from column `default`.
fn defaults(rows: &[Vec<String>], default: usize) -> BTreeMap<String, String> {
    rows.iter()
        .filter(|row| !row[0].is_empty())
        .map(|row| (row[0].clone(), row[default].clone()))
        .collect()
}

fn ms(duration: std::time::Duration) -> String {
    duration.as_millis().to_string()
}

#[test]
fn the_settings_table_is_the_code() {
    let config = CoordinatorConfig::default();
    let table = defaults(&table_after("## Coordinator configuration"), 3);
    let expected = [
        (
            "DISCOVERY_HEARTBEAT_INTERVAL",
            ms(config.heartbeat_interval),
        ),
        (
            "MISSED_HEARTBEATS_ALLOWED",
            config.missed_heartbeats_allowed.to_string(),
        ),
        ("ANNOUNCE_HOST", config.announce_host.clone()),
        ("HAKKEN_SYNC_TIMEOUT", ms(config.sync_timeout)),
        (
            "HAKKEN_FAILURES_BEFORE_DROP",
            config.failures_before_drop.to_string(),
        ),
        ("LOG_HEARTBEATS", config.log_heartbeats.to_string()),
    ];
    for (variable, value) in expected {
        assert_eq!(
            table.get(variable),
            Some(&value),
            "README default of {variable}"
        );
    }
}

#[test]
fn the_limits_table_is_the_code() {
    let config = CoordinatorConfig::default();
    let limits = Limits::default();
    let rows = table_after("### Limits and write protection");
    let table = defaults(&rows, 3);
    let expected = [
        ("HAKKEN_MAX_BODY_BYTES", config.max_body_bytes.to_string()),
        (
            "HAKKEN_MAX_LISTINGS",
            config.registry_limits.max_listings.to_string(),
        ),
        (
            "HAKKEN_MAX_SERVICES",
            config.registry_limits.max_services.to_string(),
        ),
        (
            "HAKKEN_MAX_COORDINATORS",
            config.max_coordinators.to_string(),
        ),
        ("HAKKEN_MAX_CONNECTIONS", config.max_connections.to_string()),
        (
            "HAKKEN_MAX_HELD_QUERIES",
            config.max_held_queries.to_string(),
        ),
        ("HAKKEN_REQUEST_TIMEOUT", ms(config.request_timeout)),
        ("HAKKEN_READ_TIMEOUT", ms(config.header_timeout)),
    ];
    for (variable, value) in expected {
        assert_eq!(
            table.get(variable),
            Some(&value),
            "README default of {variable}"
        );
    }
    assert_eq!(
        config.body_timeout, config.header_timeout,
        "one setting for both"
    );
    // The bounds without a setting, by what they bound (column 2).
    let fixed: BTreeMap<String, String> = rows
        .iter()
        .filter(|row| row[0].is_empty())
        .map(|row| (row[2].clone(), row[3].clone()))
        .collect();
    assert_eq!(limits.max_service_len, limits.max_host_len);
    let expected = [
        (
            "service, host length",
            format!("{} bytes", limits.max_service_len),
        ),
        ("fields per listing", limits.max_fields.to_string()),
        ("JSON nesting depth", limits.max_depth.to_string()),
        (
            "blocking query wait",
            format!("{} min", config.max_wait.as_secs() / 60),
        ),
    ];
    for (bound, value) in expected {
        assert_eq!(fixed.get(bound), Some(&value), "README bound: {bound}");
    }
}
