//! hakken: service discovery with coordinators that gossip over HTTP.
//!
//! - [`coordinator`]: the server that holds service listings, wire-compatible with the
//!   npm `hakken` 0.1.x coordinator, embeddable with [`coordinator::Coordinator`].
//! - [`client`]: the client library: [`Client`] publishes listings and runs
//!   [`Watch`]es over every coordinator it learns of.
//! - [`Listing`] and [`Peer`]: the JSON objects published and gossiped.
//! - [`address`]: the forms of a coordinator's address.
//! - [`remote`]: typed calls to a coordinator's HTTP API; [`protocol`]: the wire
//!   vocabulary (headers, extension routes, the snapshot format) both sides share.

#![warn(missing_docs)]

pub mod address;
mod backoff;
pub mod client;
pub mod coordinator;
mod fanout;
pub mod listing;
pub mod protocol;
pub mod remote;
mod sse;
pub mod tls;

pub use client::{Client, ClientConfig, ClientError, Watch};
pub use listing::{DecodeError, Limits, Listing, ListingError, Peer};
