//! Fuzzes what a coordinator does with a request body and a path segment:
//! decoding and validating a listing or coordinator descriptor must never panic,
//! and whatever is accepted must survive a round trip unchanged.
#![no_main]

use hakken::{Limits, Listing, Peer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(listing) = Listing::from_json(data, &limits) {
        let text = serde_json::to_vec(&listing).expect("a listing serializes");
        let again = Listing::from_json(&text, &limits).expect("a listing decodes again");
        assert_eq!(again, listing);
        // Its names travel in URL paths: escaping and unescaping is lossless.
        for name in [listing.service(), listing.host()] {
            let escaped = hakken::remote::segment(name);
            let back = percent_encoding::percent_decode_str(&escaped).decode_utf8().unwrap();
            assert_eq!(back, name);
            assert!(!escaped.contains('/'));
        }
    }
    if let Ok(peer) = Peer::from_json(data, &limits) {
        let text = serde_json::to_vec(&peer).expect("a descriptor serializes");
        assert_eq!(Peer::from_json(&text, &limits).expect("decodes again"), peer);
    }
});
