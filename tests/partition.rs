//! Network partitions (issue #6): two `hakken coordinator` processes, each in its
//! own network namespace, joined by a veth pair with addresses in a private /30
//! that exists only inside the two namespaces (nothing is added to the test's own
//! namespace, and no traffic leaves the machine). The test drives HTTP with
//! `ip netns exec NS curl`, splits the link, lets the coordinators diverge, heals it
//! and checks that they converge again.
//!
//! Needs root, `ip` (iproute2) and `curl`. Without them the test FAILS, saying why:
//! it never passes silently. Names are unique per test and per process; namespaces
//! are deleted at the end, also on panic (a guard), and ones left over by a test
//! run that was killed are swept at the next run.

mod common;

use common::process::CoordinatorProcess;
use common::{eventually, ip};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

/// Prefix of every namespace this test creates: `hkpart-<pid>-<test>-<side>`.
const PREFIX: &str = "hkpart-";
/// The coordinators' port inside their namespaces (nothing else lives there).
const PORT: u16 = 8082;

/// Fails the test loudly: the environment cannot run it.
fn unavailable(why: &str) -> ! {
    panic!(
        "NETWORK NAMESPACES UNAVAILABLE — this test needs root, iproute2 (`ip netns`) \
         and curl, and does not pass without them: {why}"
    )
}

/// Deletes namespaces left behind by test processes that no longer run (a run
/// killed before its guards could clean up).
fn sweep_leftovers() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// One side of the link: a namespace, its end of the veth pair, its address.
struct Side {
    netns: String,
    device: String,
    ip: String,
}

impl Side {
    /// `ip:port` of the coordinator on this side.
    fn address(&self) -> String {
        format!("{}:{PORT}", self.ip)
    }
}

/// Two namespaces joined by a veth pair. Dropping it deletes both namespaces
/// (which removes the veth pair with them).
struct Link {
    a: Side,
    b: Side,
}

impl Link {
    /// Creates `hkpart-<pid>-<test>-a` and `-b`, joined by a veth pair with
    /// `10.231.<subnet>.1/30` on a and `.2` on b, and loopback up in both.
    fn create(test: &str, subnet: u8) -> Link {
        sweep_leftovers();
        let pid = std::process::id();
        let side = |name: &str, host: u8| Side {
            netns: format!("{PREFIX}{pid}-{test}-{name}"),
            // Interface names are at most 15 bytes: "hk" + pid + test + side.
            device: format!("hk{pid}{test}{name}"),
            ip: format!("10.231.{subnet}.{host}"),
        };
        let link = Link {
            a: side("a", 1),
            b: side("b", 2),
        };
        assert!(link.a.device.len() <= 15, "device name {}", link.a.device);
        if let Err(error) = link.build() {
            unavailable(&error);
        }
        link
    }

    fn build(&self) -> Result<(), String> {
        let (a, b) = (&self.a, &self.b);
        for side in [a, b] {
            ip(&["netns", "add", &side.netns])?;
        }
        ip(&[
            "link", "add", &a.device, "netns", &a.netns, "type", "veth", "peer", "name", &b.device,
            "netns", &b.netns,
        ])?;
        for side in [a, b] {
            let cidr = format!("{}/30", side.ip);
            ip(&["-n", &side.netns, "addr", "add", &cidr, "dev", &side.device])?;
            ip(&["-n", &side.netns, "link", "set", "dev", &side.device, "up"])?;
            ip(&["-n", &side.netns, "link", "set", "dev", "lo", "up"])?;
        }
        Ok(())
    }

    /// Splits the link, the way `how` says.
    fn split(&self, how: Split) {
        for (side, peer) in [(&self.a, &self.b), (&self.b, &self.a)] {
            let result = match how {
                Split::LinkDown => ip(&[
                    "-n",
                    &side.netns,
                    "link",
                    "set",
                    "dev",
                    &side.device,
                    "down",
                ]),
                // Frames to the peer go to a MAC address nobody has: dropped
                // silently, so calls time out instead of failing at once.
                Split::Silent => ip(&[
                    "-n",
                    &side.netns,
                    "neigh",
                    "replace",
                    &peer.ip,
                    "lladdr",
                    "02:00:00:00:00:01",
                    "dev",
                    &side.device,
                    "nud",
                    "permanent",
                ]),
            };
            result.expect("the link splits");
        }
    }

    /// Heals what [`split`](Link::split) did.
    fn heal(&self, how: Split) {
        for (side, peer) in [(&self.a, &self.b), (&self.b, &self.a)] {
            let result = match how {
                Split::LinkDown => {
                    ip(&["-n", &side.netns, "link", "set", "dev", &side.device, "up"])
                }
                Split::Silent => ip(&[
                    "-n",
                    &side.netns,
                    "neigh",
                    "del",
                    &peer.ip,
                    "dev",
                    &side.device,
                ]),
            };
            result.expect("the link heals");
        }
    }
}

/// How the link is split.
#[derive(Debug, Clone, Copy)]
enum Split {
    /// Both ends down: calls across fail at once (no route).
    LinkDown,
    /// Up, but every frame across is dropped: calls across time out.
    Silent,
}

impl Drop for Link {
    fn drop(&mut self) {
        for side in [&self.a, &self.b] {
            if !std::path::Path::new("/run/netns")
                .join(&side.netns)
                .exists()
            {
                continue;
            }
            if let Err(error) = ip(&["netns", "del", &side.netns]) {
                eprintln!("cleanup: {error}");
            }
        }
    }
}

/// `curl` run inside `side`'s namespace: `METHOD http://addr{path}` with an
/// optional JSON body → (status, body as JSON or Null); `None` when it got no
/// answer (the peer is unreachable, say).
async fn curl(
    side: &Side,
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    curl_within(3, side, method, addr, path, body).await
}

/// [`curl`] with a timeout of `seconds`.
async fn curl_within(
    seconds: u32,
    side: &Side,
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut command = tokio::process::Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            &side.netns,
            "curl",
            "--silent",
            "--show-error",
        ])
        .args(["--max-time", &seconds.to_string(), "--request", method])
        .args(["--write-out", "\n%{http_code}"]);
    if let Some(body) = body {
        command
            .args(["--header", "content-type: application/json"])
            .args(["--data-binary", &body.to_string()]);
    }
    command
        .arg(format!("http://{addr}{path}"))
        .kill_on_drop(true);
    let output = match command.output().await {
        Ok(output) => output,
        Err(error) => unavailable(&format!("cannot run `ip netns exec .. curl`: {error}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() == Some(127) || stderr.contains("No such file") {
            unavailable(&format!("curl is missing: {stderr}"));
        }
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, status) = text.rsplit_once('\n')?;
    let status = status.trim().parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Hosts listed by `GET /v1/coordinator` on `side`'s coordinator, sorted.
async fn coordinators(side: &Side) -> Option<Vec<String>> {
    let (status, body) = curl(side, "GET", &side.address(), "/v1/coordinator", None).await?;
    if status != 200 {
        return None;
    }
    let mut hosts: Vec<String> = body
        .as_array()?
        .iter()
        .filter_map(|p| p["host"].as_str().map(str::to_owned))
        .collect();
    hosts.sort();
    Some(hosts)
}

/// Waits until `side`'s coordinator says it is complete (`/ready`).
async fn complete(side: &Side) {
    eventually(&format!("{} complete", side.address()), || async {
        let answer = curl(side, "GET", &side.address(), "/ready", None).await;
        // One curl at a time is plenty; do not spin processes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        (answer?.1["complete"] == true).then_some(())
    })
    .await;
}

/// Hosts of `service`'s listings on `side`'s coordinator, sorted.
async fn listings(side: &Side, service: &str) -> Vec<String> {
    let path = format!("/v1/listings/{service}");
    match curl(side, "GET", &side.address(), &path, None).await {
        Some((404, _)) => Vec::new(),
        Some((200, body)) => {
            let mut hosts: Vec<String> = body
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["host"].as_str().map(str::to_owned))
                .collect();
            hosts.sort();
            hosts
        }
        other => panic!("{} answers its listings: {other:?}", side.address()),
    }
}

async fn publish(side: &Side, service: &str, host: &str) {
    let listing = json!({"service": service, "host": host});
    let answer = curl(
        side,
        "POST",
        &side.address(),
        "/v1/listings",
        Some(&listing),
    )
    .await;
    assert_eq!(
        answer.map(|(status, _)| status),
        Some(201),
        "published on {}",
        side.address()
    );
}

/// Waits until `side`'s coordinator lists exactly `hosts`.
async fn lists(side: &Side, hosts: &[String]) {
    let mut want = hosts.to_vec();
    want.sort();
    eventually(&format!("{} lists {want:?}", side.address()), || async {
        let listed = coordinators(side).await;
        // One curl at a time is plenty; do not spin processes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        (listed.as_ref() == Some(&want)).then_some(())
    })
    .await;
}

/// Checks that `side` lists exactly `hosts` at every look over `window` (one every
/// 100 ms): it stays so, it does not flap. (A fixed window cannot flake: a
/// regression could only pass unnoticed.)
async fn keeps_listing(side: &Side, hosts: &[String], window: Duration) {
    let mut want = hosts.to_vec();
    want.sort();
    let until = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < until {
        let listed = coordinators(side).await;
        assert_eq!(
            listed.as_ref(),
            Some(&want),
            "{} keeps listing",
            side.address()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A coordinator in `side`'s namespace, announcing its address there.
async fn coordinator(side: &Side, discovery: Option<&Side>) -> CoordinatorProcess {
    let mut args = vec![
        "--announce-host".to_owned(),
        side.ip.clone(),
        "--heartbeat-interval".to_owned(),
        "200".to_owned(),
        // Listings published once with curl stay for the whole test.
        "--missed-heartbeats-allowed".to_owned(),
        "1000".to_owned(),
        "--resync-interval".to_owned(),
        "400".to_owned(),
        // A short warm-up (a heartbeat interval and a call's time) before
        // coordinators started together are complete.
        "--request-timeout".to_owned(),
        "1000".to_owned(),
    ];
    if let Some(discovery) = discovery {
        args.extend(["--discovery-host".to_owned(), discovery.address()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match CoordinatorProcess::start(Some(&side.netns), &side.ip, PORT, &args).await {
        Ok(process) => process,
        Err(error) => panic!("coordinator in {} starts: {error}", side.netns),
    }
}

/// Two coordinators, one per side; `a` is b's discovery host and, when
/// `mutual`, b is a's. They converge, split, diverge, heal, converge again.
async fn a_partition_heals(test: &str, subnet: u8, mutual: bool, how: Split) {
    let link = Link::create(test, subnet);
    let (a_side, b_side) = (&link.a, &link.b);
    // Declared after the link: dropped (killed) before the namespaces go.
    let a = coordinator(a_side, mutual.then_some(b_side)).await;
    let b = coordinator(b_side, Some(a_side)).await;
    let both = vec![a.address(), b.address()];

    lists(a_side, &both).await;
    lists(b_side, &both).await;
    // Both complete (warmed up): from then on neither copies the listings of a
    // peer it finds again, which the heal below relies on. (A partial one does,
    // by design: it may be missing some.)
    complete(a_side).await;
    complete(b_side).await;
    publish(a_side, "svc", "before-a:1").await;
    publish(b_side, "svc", "before-b:1").await;

    // Split: each drops (and blacklists) the other.
    link.split(how);
    lists(a_side, &[a.address()]).await;
    lists(b_side, &[b.address()]).await;
    // Published on each side during the split: stays there.
    publish(a_side, "svc", "during-a:1").await;
    publish(b_side, "svc", "during-b:1").await;
    assert!(
        curl_within(1, a_side, "GET", &b.address(), "/status", None)
            .await
            .is_none(),
        "the split holds"
    );
    // Still split through several polls and resyncs.
    keeps_listing(a_side, &[a.address()], Duration::from_millis(1_000)).await;
    keeps_listing(b_side, &[b.address()], Duration::from_millis(300)).await;
    assert_eq!(listings(a_side, "svc").await, ["before-a:1", "during-a:1"]);
    assert_eq!(listings(b_side, "svc").await, ["before-b:1", "during-b:1"]);

    // Heal: the resync with the discovery host lifts the blacklist on both sides.
    link.heal(how);
    lists(a_side, &both).await;
    lists(b_side, &both).await;
    // Coordinators do not copy listings to each other: each keeps its own.
    assert_eq!(listings(a_side, "svc").await, ["before-a:1", "during-a:1"]);
    assert_eq!(listings(b_side, "svc").await, ["before-b:1", "during-b:1"]);
    // Converged for good: so at every look over several polls.
    keeps_listing(a_side, &both, Duration::from_millis(600)).await;
    keeps_listing(b_side, &both, Duration::from_millis(600)).await;

    drop((a, b));
}

#[tokio::test]
async fn a_partition_between_mutual_discovery_hosts_heals() {
    a_partition_heals("m", 1, true, Split::LinkDown).await;
}

/// `a` has no discovery host: after the heal only b's resync (its announcement)
/// can bring b back into a's list.
#[tokio::test]
async fn a_partition_heals_when_only_one_side_has_a_discovery_host() {
    a_partition_heals("o", 2, false, Split::LinkDown).await;
}

/// Every frame across dropped: the coordinators' calls to each other time out
/// (their request timeout, 1 s here) rather than fail at once.
#[tokio::test]
async fn a_silent_partition_heals() {
    a_partition_heals("s", 3, false, Split::Silent).await;
}
