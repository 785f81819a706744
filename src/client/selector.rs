//! What a watch hands out: filters narrow a service's listings, then a selector
//! picks among them. Pure functions of the listings, no I/O.
//!
//! A watch calls its selector only when the filtered listings change, and passes
//! the current selection to [`Selector::reselect`] so that a selector can keep its
//! picks stable: [`Random`] keeps what it picked while every pick is still listed
//! and as many can be picked as before; it draws again when a pick disappears or
//! the number it can pick changes. New listings alone do not move a random pick,
//! so connections made to it stay put. (The original drew again at every `get()`;
//! for per-call spreading, watch with [`All`] and pick at each call.)

use crate::listing::Listing;
use serde_json::Value;
use std::sync::Arc;

/// Picks the listings a watch hands out from those that pass its filters.
pub trait Selector: Send + Sync + 'static {
    /// The selection out of `listings` (those that passed the filters).
    fn select(&self, listings: &[Listing]) -> Vec<Listing>;

    /// The selection when the listings changed and `current` was selected before.
    /// By default, selects afresh.
    fn reselect(&self, listings: &[Listing], current: &[Listing]) -> Vec<Listing> {
        let _ = current;
        self.select(listings)
    }
}

/// Every listing, in the coordinator's order.
#[derive(Debug, Clone, Copy, Default)]
pub struct All;

impl Selector for All {
    fn select(&self, listings: &[Listing]) -> Vec<Listing> {
        listings.to_vec()
    }
}

/// Up to `n` distinct listings drawn at random (all of them when fewer are listed).
#[derive(Debug, Clone, Copy)]
pub struct Random(pub usize);

impl Selector for Random {
    fn select(&self, listings: &[Listing]) -> Vec<Listing> {
        let mut pool = listings.to_vec();
        let n = self.0.min(pool.len());
        // A partial Fisher-Yates shuffle: the first `n` are a uniform draw.
        for i in 0..n {
            let j = fastrand::usize(i..pool.len());
            pool.swap(i, j);
        }
        pool.truncate(n);
        pool
    }

    fn reselect(&self, listings: &[Listing], current: &[Listing]) -> Vec<Listing> {
        let kept: Vec<Listing> = current
            .iter()
            .filter_map(|picked| listings.iter().find(|l| l.key() == picked.key()).cloned())
            .collect();
        if !current.is_empty()
            && kept.len() == current.len()
            && kept.len() == self.0.min(listings.len())
        {
            kept // the same picks, with their latest fields
        } else {
            self.select(listings)
        }
    }
}

/// Whether a listing passes a watch's filter.
#[derive(Clone)]
pub(crate) enum Filter {
    /// The field `key` equals the value (JSON equality; absent never equals).
    Equals(String, Value),
    /// The closure says yes.
    Fn(Arc<dyn Fn(&Listing) -> bool + Send + Sync>),
}

impl Filter {
    /// True when `listing` passes.
    pub fn accepts(&self, listing: &Listing) -> bool {
        match self {
            Filter::Equals(key, value) => listing.get(key) == Some(value),
            Filter::Fn(f) => f(listing),
        }
    }
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Filter::Equals(key, value) => write!(f, "{key} == {value}"),
            Filter::Fn(_) => f.write_str("<closure>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn listings(n: usize) -> Vec<Listing> {
        (0..n)
            .map(|i| Listing::new("s", format!("h{i}:1")).unwrap())
            .collect()
    }

    #[test]
    fn random_draws_distinct_listings_and_covers_all() {
        let all = listings(5);
        let mut seen = HashSet::new();
        for _ in 0..500 {
            let pick = Random(2).select(&all);
            assert_eq!(pick.len(), 2);
            assert_ne!(pick[0], pick[1]);
            seen.extend(pick.iter().map(|l| l.host().to_owned()));
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(Random(9).select(&all).len(), 5);
        assert!(Random(0).select(&all).is_empty());
        assert!(Random(1).select(&[]).is_empty());
    }

    #[test]
    fn random_keeps_its_pick_while_it_is_listed() {
        let all = listings(3);
        let pick = Random(1).select(&all);
        let mut more = listings(4);
        more[0] = more[0].clone().with("v", 2);
        for _ in 0..50 {
            let again = Random(1).reselect(&more, &pick);
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].host(), pick[0].host());
        }
        // The pick disappears: a new one is drawn among the rest.
        let rest: Vec<Listing> = all.iter().filter(|l| *l != &pick[0]).cloned().collect();
        let moved = Random(1).reselect(&rest, &pick);
        assert!(rest.contains(&moved[0]));
        // More can be picked than before: drawn again.
        assert_eq!(Random(2).reselect(&all, &pick).len(), 2);
    }

    #[test]
    fn filters() {
        let l = Listing::new("s", "h:1")
            .unwrap()
            .with("zone", "a")
            .with("n", 3);
        assert!(Filter::Equals("zone".into(), "a".into()).accepts(&l));
        assert!(!Filter::Equals("zone".into(), "b".into()).accepts(&l));
        assert!(!Filter::Equals("nope".into(), Value::Null).accepts(&l));
        assert!(Filter::Fn(Arc::new(|l: &Listing| l.get("n") == Some(&3.into()))).accepts(&l));
    }
}
