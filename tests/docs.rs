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
        (
            "HAKKEN_DNS_MAX_CONNECTIONS",
            config.dns_max_connections.to_string(),
        ),
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

/// The settings `hakken coordinator` reads, from its own help.
fn coordinator_settings() -> Vec<String> {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_hakken"))
        .args(["coordinator", "--help"])
        .output()
        .expect("hakken runs");
    let help = String::from_utf8(help.stdout).expect("utf-8 help");
    let mut names: Vec<String> = help
        .split("env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 20, "the help names its variables: {names:?}");
    names
}

#[test]
fn every_setting_is_in_the_readme_and_the_deployment_file() {
    let env_file = include_str!("../deploy/coordinator.env");
    for name in coordinator_settings() {
        assert!(
            README.contains(&format!("`{name}`")),
            "README documents {name}"
        );
        let listed = env_file.lines().any(|line| {
            line.trim_start_matches('#')
                .strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with('='))
        });
        assert!(listed, "deploy/coordinator.env lists {name}");
    }
}

/// The first Rust code block after `heading` in the README.
fn code_block_after(heading: &str) -> &'static str {
    let start = README.find(heading).expect("the heading");
    let block = &README[start..];
    let block = &block[block.find("```rust\n").expect("a Rust block") + "```rust\n".len()..];
    &block[..block.find("```").expect("the block ends")]
}

async fn readme_client_snippet(host: String) -> Result<(), Box<dyn std::error::Error>> {
    include!("snippets/readme_client.rs");
    Ok(())
}

#[tokio::test]
async fn the_client_snippet_runs_to_completion() {
    let included = include_str!("snippets/readme_client.rs");
    let body = included
        .split_once("\n{\n")
        .and_then(|(_, rest)| rest.strip_suffix("}\n"))
        .expect("the snippet file is one block");
    assert_eq!(
        code_block_after("## The client library")
            .replace("\"discovery.local:8082\"", "host.as_str()"),
        body,
        "tests/snippets/readme_client.rs is the README's snippet"
    );
    let config = CoordinatorConfig {
        announce_host: "127.0.0.1".into(),
        ..CoordinatorConfig::default()
    };
    let coordinator = hakken::coordinator::Coordinator::bind("127.0.0.1:0", config)
        .await
        .expect("a coordinator");
    let host = coordinator.local_addr().to_string();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        readme_client_snippet(host),
    )
    .await
    .expect("the snippet runs to completion")
    .expect("the snippet succeeds");
    coordinator.shutdown().await.expect("a clean shutdown");
}
