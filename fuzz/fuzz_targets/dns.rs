//! Fuzzes the DNS request path: any packet, answered from a few listings (IP and
//! named hosts, fields to filter on), must never panic, and an answer must decode.
#![no_main]

use hakken::coordinator::dns_answer_packet;
use hakken::{Limits, Listing};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn listings() -> &'static [Listing] {
    static LISTINGS: OnceLock<Vec<Listing>> = OnceLock::new();
    LISTINGS.get_or_init(|| {
        [
            r#"{"service":"billing","host":"10.0.0.7:8080","zone":"east","weight":5}"#,
            r#"{"service":"billing","host":"[2001:db8::1]:80","zone":"west"}"#,
            r#"{"service":"billing","host":"api.example.com:9000"}"#,
        ]
        .iter()
        .map(|json| Listing::from_json(json.as_bytes(), &Limits::default()).unwrap())
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(answer) = dns_answer_packet(data, listings()) {
        assert!(answer.len() >= 12, "an answer has at least a header");
    }
});
