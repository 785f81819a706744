//! What the soak saw, with when: publishers (the truth), every view of every
//! watcher, every probe of every coordinator, the faults, and the resources of our
//! coordinators. Times are milliseconds since the soak started. Everything is
//! also written, as it happens, to `events.jsonl` in the output folder.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Whose code a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Original,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Original => "original",
        }
    }
}

/// How a publisher ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Closed cleanly (ours withdraw; the original's close withdraws nothing).
    Closed,
    /// Killed with SIGKILL.
    Killed,
}

/// One publisher: one listing, alive from `start` to `end`.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub kind: Kind,
    pub host: String,
    /// It runs in the network namespace: a partition leaves it with the coordinator
    /// inside, cut off from the others.
    pub inside: bool,
    pub start: u64,
    pub end: Option<(u64, End)>,
}

/// The kinds of fault the soak injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    KillRestart,
    Stop,
    Partition,
    RestartAll,
    Hostile,
    PublisherKilled,
    PublisherClosed,
}

impl FaultKind {
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::KillRestart => "coordinator killed -9 and restarted",
            FaultKind::Stop => "coordinator stopped (SIGSTOP) and resumed",
            FaultKind::Partition => "coordinator partitioned and healed",
            FaultKind::RestartAll => "every coordinator restarted at once",
            FaultKind::Hostile => "burst of hostile requests",
            FaultKind::PublisherKilled => "publisher killed -9",
            FaultKind::PublisherClosed => "publisher closed cleanly",
        }
    }
}

/// A fault: on which coordinator (if one), from `start` to `heal`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub coordinator: Option<usize>,
    pub start: u64,
    pub heal: u64,
}

/// What a watcher handed out at `at`.
#[derive(Debug, Clone)]
pub struct View {
    pub watcher: usize,
    pub at: u64,
    pub hosts: BTreeSet<String>,
}

/// What a coordinator answered (`None`: no answer) when asked directly at `at`.
#[derive(Debug, Clone)]
pub struct Probe {
    pub coordinator: usize,
    pub at: u64,
    pub hosts: Option<BTreeSet<String>>,
}

/// Resident memory and open descriptors of one run (pid) of one of our coordinators.
#[derive(Debug, Clone)]
pub struct Resources {
    pub coordinator: usize,
    pub pid: u32,
    pub at: u64,
    pub rss_kb: u64,
    pub fds: usize,
}

/// Everything recorded.
#[derive(Debug, Default, Clone)]
pub struct Record {
    pub publishers: Vec<Publisher>,
    pub watchers: Vec<Kind>,
    pub coordinators: Vec<(Kind, String)>,
    pub views: Vec<View>,
    pub probes: Vec<Probe>,
    pub faults: Vec<Fault>,
    pub resources: Vec<Resources>,
    /// Faults that could not be injected here, with why.
    pub skipped: Vec<String>,
    pub duration: u64,
}

impl Kind {
    fn from_label(label: &str) -> Option<Kind> {
        [Kind::Ours, Kind::Original]
            .into_iter()
            .find(|k| k.label() == label)
    }
}

impl Record {
    /// The record of a past run, read back from its `events.jsonl` (resources
    /// aside: they are not written there), to check it again. Runs that did
    /// not write their watchers' kinds take them from `watchers`, and which
    /// publisher ran inside the namespace from its name.
    pub fn load(events: &Path, watchers: &[Kind]) -> Record {
        let text = std::fs::read_to_string(events).expect("events.jsonl");
        let mut record = Record::default();
        let hosts = |v: &Value| -> Option<BTreeSet<String>> {
            let list = v.as_array()?;
            Some(
                list.iter()
                    .filter_map(|h| Some(h.as_str()?.to_owned()))
                    .collect(),
            )
        };
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let at = e["at"].as_u64().unwrap_or(0);
            record.duration = record.duration.max(at);
            if e["snapshot"] == true {
                record.duration = at;
                break;
            }
            let kind = e["kind"].as_str().and_then(Kind::from_label);
            if let Some(label) = e["fault"].as_str() {
                let kinds = [
                    FaultKind::KillRestart,
                    FaultKind::Stop,
                    FaultKind::Partition,
                    FaultKind::RestartAll,
                    FaultKind::Hostile,
                    FaultKind::PublisherKilled,
                    FaultKind::PublisherClosed,
                ];
                let kind = kinds.into_iter().find(|k| k.label() == label);
                record.faults.push(Fault {
                    kind: kind.expect("a known fault"),
                    coordinator: e["coordinator"].as_u64().map(|c| c as usize),
                    start: e["start"].as_u64().expect("start"),
                    heal: e["heal"].as_u64().expect("heal"),
                });
            } else if let (Some(address), Some(kind)) = (e["coordinator"].as_str(), kind) {
                record.coordinators.push((kind, address.to_owned()));
            } else if let Some(host) = e["publisher"].as_str() {
                match e["event"].as_str() {
                    Some("started") => record.publishers.push(Publisher {
                        kind: kind.expect("a publisher's kind"),
                        host: host.to_owned(),
                        inside: e["inside"]
                            .as_bool()
                            .unwrap_or_else(|| host.starts_with("pub-inside")),
                        start: at,
                        end: None,
                    }),
                    Some(end) => {
                        let end = if end == "Closed" {
                            End::Closed
                        } else {
                            End::Killed
                        };
                        if let Some(p) = record.publishers.iter_mut().rev().find(|p| p.host == host)
                        {
                            p.end = Some((at, end));
                        }
                    }
                    None => {}
                }
            } else if let Some(watcher) = e["watcher"].as_u64() {
                let watcher = watcher as usize;
                match (kind, e.get("view")) {
                    (Some(kind), None) => {
                        if record.watchers.len() <= watcher {
                            record.watchers.resize(watcher + 1, kind);
                        }
                        record.watchers[watcher] = kind;
                    }
                    (_, Some(view)) => record.views.push(View {
                        watcher,
                        at,
                        hosts: hosts(view).unwrap_or_default(),
                    }),
                    _ => {}
                }
            } else if let Some(coordinator) = e["probe"].as_u64() {
                record.probes.push(Probe {
                    coordinator: coordinator as usize,
                    at,
                    hosts: hosts(&e["hosts"]),
                });
            } else if let Some(why) = e["skipped"].as_str() {
                record.skipped.push(why.to_owned());
            }
        }
        if record.watchers.is_empty() {
            record.watchers = watchers.to_vec();
        }
        record
    }
}

/// Where the soak writes what it sees.
pub struct Recorder {
    /// The output folder.
    pub out: std::path::PathBuf,
    start: Instant,
    record: Mutex<Record>,
    events: Mutex<std::io::BufWriter<std::fs::File>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    pub fn new(out: &Path) -> Recorder {
        std::fs::create_dir_all(out).expect("the output folder");
        let file = std::fs::File::create(out.join("events.jsonl")).expect("events.jsonl");
        Recorder {
            out: out.to_owned(),
            start: Instant::now(),
            record: Mutex::new(Record::default()),
            events: Mutex::new(std::io::BufWriter::new(file)),
        }
    }

    /// Milliseconds since the soak started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn write(&self, event: Value) {
        let _ = writeln!(lock(&self.events), "{event}");
    }

    pub fn flush(&self) {
        let _ = lock(&self.events).flush();
    }

    pub fn coordinator(&self, kind: Kind, address: &str) -> usize {
        let mut record = lock(&self.record);
        record.coordinators.push((kind, address.to_owned()));
        self.write(json!({"at": self.now(), "coordinator": address, "kind": kind.label()}));
        record.coordinators.len() - 1
    }

    pub fn watcher(&self, kind: Kind) -> usize {
        let mut record = lock(&self.record);
        record.watchers.push(kind);
        let id = record.watchers.len() - 1;
        self.write(json!({"at": self.now(), "watcher": id, "kind": kind.label()}));
        id
    }

    /// A publisher whose listing is out from now; returns its number.
    pub fn publisher_started(&self, kind: Kind, host: &str, inside: bool) -> usize {
        let at = self.now();
        let mut record = lock(&self.record);
        record.publishers.push(Publisher {
            kind,
            host: host.to_owned(),
            inside,
            start: at,
            end: None,
        });
        self.write(json!({
            "at": at, "publisher": host, "kind": kind.label(), "inside": inside, "event": "started",
        }));
        record.publishers.len() - 1
    }

    pub fn publisher_ended(&self, id: usize, end: End) -> u64 {
        let at = self.now();
        let mut record = lock(&self.record);
        record.publishers[id].end = Some((at, end));
        let host = record.publishers[id].host.clone();
        self.write(json!({"at": at, "publisher": host, "event": format!("{end:?}")}));
        at
    }

    pub fn view(&self, watcher: usize, hosts: BTreeSet<String>) {
        let at = self.now();
        self.write(json!({"at": at, "watcher": watcher, "view": hosts}));
        lock(&self.record).views.push(View { watcher, at, hosts });
    }

    pub fn probe(&self, coordinator: usize, at: u64, hosts: Option<BTreeSet<String>>) {
        self.write(json!({"at": at, "probe": coordinator, "hosts": hosts}));
        lock(&self.record).probes.push(Probe {
            coordinator,
            at,
            hosts,
        });
    }

    pub fn fault(&self, kind: FaultKind, coordinator: Option<usize>, start: u64, heal: u64) {
        self.write(json!({
            "fault": kind.label(), "coordinator": coordinator, "start": start, "heal": heal,
        }));
        lock(&self.record).faults.push(Fault {
            kind,
            coordinator,
            start,
            heal,
        });
    }

    pub fn resources(&self, sample: Resources) {
        lock(&self.record).resources.push(sample);
    }

    pub fn skipped(&self, why: String) {
        self.write(json!({"skipped": why}));
        lock(&self.record).skipped.push(why);
    }

    /// A copy of everything so far.
    pub fn snapshot(&self) -> Record {
        let mut record = lock(&self.record).clone();
        record.duration = self.now();
        // What is written after (the last publishers ending) is not checked.
        self.write(json!({"at": record.duration, "snapshot": true}));
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_it_was_checked() {
        let dir = std::env::temp_dir().join(format!("hakken-chaos-record-{}", fastrand::u64(..)));
        let recorder = Recorder::new(&dir);
        recorder.coordinator(Kind::Ours, "a:1");
        recorder.coordinator(Kind::Original, "b:1");
        let watcher = recorder.watcher(Kind::Original);
        let publisher = recorder.publisher_started(Kind::Ours, "pub-1:80", true);
        recorder.view(watcher, BTreeSet::from(["pub-1:80".to_owned()]));
        recorder.probe(1, 5, None);
        recorder.probe(0, 6, Some(BTreeSet::new()));
        recorder.fault(FaultKind::Partition, Some(0), 7, 9);
        recorder.fault(FaultKind::RestartAll, None, 10, 12);
        recorder.publisher_ended(publisher, End::Closed);
        recorder.skipped("why".into());
        let checked = recorder.snapshot();
        // After the snapshot: not checked, not read back.
        recorder.publisher_started(Kind::Ours, "after:80", false);
        recorder.flush();
        let read = Record::load(&dir.join("events.jsonl"), &[]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(format!("{read:?}"), format!("{checked:?}"));
    }
}
