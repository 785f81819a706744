// The README's client snippet ("## The client library"), as tests/docs.rs runs it:
// only its host differs. Keep the two in step; the test compares them.
{
use hakken::{Client, ClientConfig, Listing};

let client = Client::new(ClientConfig::new(host.as_str()));
client.start().await?;                         // first contact; Err when no coordinator answers

let watch = client.watch("billing").filter("protocol", "http").random(1).build();
watch.start().await?;                          // after the first answer, even an empty one
let before = watch.get();                      // current selection: no I/O, never blocks

client.publish(Listing::new("billing", "10.0.0.7:8080")?.with("protocol", "http")).await?;
let after = watch.changed().await?;            // the next change: the listing just published
assert_ne!(before, after);
client.close().await;                          // withdraws its listings, stops every task
}
