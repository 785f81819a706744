//! Where the soak's processes live, and how one coordinator is cut off.
//!
//! With root and `ip` (iproute2), one network namespace is joined to the test's
//! own by a veth pair in a private /30: `10.232.N.1` on the test's side, `.2` in the
//! namespace. Every process of the test's side listens and announces on `.1`, the
//! coordinator in the namespace on `.2`, so everything reaches everything. A
//! partition sets the namespace's end of the pair down: the coordinator inside is
//! cut off from the others and from every client, and the rest keeps talking over
//! `.1` (a local address is reachable whatever its link does). Without root or
//! `ip`, everything is on `127.0.0.1` and the partition fault is skipped (the
//! report says so). The namespace goes when this is dropped, and ones left behind
//! by a run that was killed are swept at the next.

use crate::common::ip;
use std::process::Command;

const PREFIX: &str = "hkchaos-";

/// The namespace side.
pub struct Namespace {
    pub name: String,
    /// The namespace's end of the veth pair.
    device: String,
    /// The test side's end.
    host_device: String,
    /// The address inside.
    pub ip: String,
}

/// Addresses, and the namespace when there is one.
pub struct Net {
    /// What the test's side listens on.
    pub host_ip: String,
    pub namespace: Option<Namespace>,
}

impl Net {
    /// A namespace when possible, else loopback only (and why).
    pub fn create() -> (Net, Option<String>) {
        let loopback = || Net {
            host_ip: "127.0.0.1".into(),
            namespace: None,
        };
        // SAFETY-free check of the effective user: root can make namespaces.
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
            })
            .unwrap_or(false);
        if !root {
            return (loopback(), Some("not root: no network namespaces".into()));
        }
        sweep();
        let pid = std::process::id();
        let subnet = 1 + pid % 250;
        let namespace = Namespace {
            name: format!("{PREFIX}{pid}"),
            device: format!("hkc{pid}n"),
            host_device: format!("hkc{pid}h"),
            ip: format!("10.232.{subnet}.2"),
        };
        let host_ip = format!("10.232.{subnet}.1");
        let build = || -> Result<(), String> {
            ip(&["netns", "add", &namespace.name])?;
            ip(&[
                "link",
                "add",
                &namespace.host_device,
                "type",
                "veth",
                "peer",
                "name",
                &namespace.device,
            ])?;
            ip(&["link", "set", &namespace.device, "netns", &namespace.name])?;
            ip(&[
                "addr",
                "add",
                &format!("{host_ip}/30"),
                "dev",
                &namespace.host_device,
            ])?;
            ip(&["link", "set", &namespace.host_device, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &namespace.name, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            inside(&[
                "addr",
                "add",
                &format!("{}/30", namespace.ip),
                "dev",
                &namespace.device,
            ])?;
            inside(&["link", "set", &namespace.device, "up"])?;
            inside(&["link", "set", "lo", "up"])?;
            Ok(())
        };
        match build() {
            Ok(()) => (
                Net {
                    host_ip,
                    namespace: Some(namespace),
                },
                None,
            ),
            Err(error) => {
                let _ = ip(&["netns", "del", &namespace.name]);
                let _ = ip(&["link", "del", &namespace.host_device]);
                (loopback(), Some(format!("no network namespace: {error}")))
            }
        }
    }

    /// Cuts the namespace off (`down`) or joins it again.
    pub fn set_partitioned(&self, partitioned: bool) {
        if let Some(ns) = &self.namespace {
            let state = if partitioned { "down" } else { "up" };
            let _ = ip(&[
                "netns", "exec", &ns.name, "ip", "link", "set", &ns.device, state,
            ]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(ns) = &self.namespace {
            let _ = ip(&["netns", "del", &ns.name]);
            let _ = ip(&["link", "del", &ns.host_device]);
        }
    }
}

/// Deletes namespaces of soak runs that no longer run.
fn sweep() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
            let _ = ip(&["link", "del", &format!("hkc{pid}h")]);
        }
    }
}
