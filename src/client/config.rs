//! Client settings: a plain struct with the original's defaults, and its
//! environment variables.
//!
//! Durations are durations, not milliseconds; the environment (read by
//! [`ClientConfig::from_env`]) speaks milliseconds, like the original. Nothing here
//! does I/O or touches a coordinator.

use super::error::ClientError;
use crate::tls::ClientTls;
use std::time::Duration;

/// The client's heartbeat interval when neither the configuration nor a coordinator
/// names one: the original client's 20 s.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);

/// The shortest interval the client honours, so a zero or a hostile coordinator's
/// header cannot make it spin.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// How a [`Client`](super::Client) behaves. [`ClientConfig::new`] gives the
/// original's defaults; only `host` is required.
///
/// ```
/// use hakken::client::ClientConfig;
/// use std::time::Duration;
/// let config = ClientConfig::new("discovery.local:8082")
///     .heartbeat_interval(Duration::from_secs(5))
///     .token(Some("s3cret".into()));
/// assert_eq!(config.poll_interval, Duration::from_secs(60));
/// assert_eq!(config.resync_period(), Duration::from_secs(600));
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    /// `name:port` of a coordinator or of a load balancer in front of several: the
    /// way in, asked for the set of coordinators and never forgotten. Written
    /// `https://name:port`, every coordinator is called over TLS (the ones learned
    /// from it too: a cluster is all TLS or all plain).
    pub host: String,
    /// How often every listing is sent again to every known coordinator, and how
    /// often a watch polls a coordinator without blocking queries. `None`: the
    /// interval the coordinators announce (`X-Hakken-Heartbeat-Interval`, the
    /// shortest when they differ), else 20 s.
    pub heartbeat_interval: Option<Duration>,
    /// How often each known coordinator is asked for the coordinators it knows.
    pub poll_interval: Duration,
    /// How often `host` is asked again. `None`: `poll_interval × 10`.
    pub resync_interval: Option<Duration>,
    /// Bound of every HTTP call but the hold time of blocking queries.
    pub request_timeout: Duration,
    /// How long a coordinator may hold a watch's blocking query.
    pub watch_wait: Duration,
    /// The original's `skipHakken`: contact nothing. `start` succeeds at once,
    /// `publish` only records, watches stay empty; static watches work.
    pub skip: bool,
    /// Bearer token sent with every write (publish, heartbeat, withdrawal).
    pub token: Option<String>,
    /// Rounds in a row (heartbeats, coordinator polls) that must find a coordinator
    /// broken — unreachable, or not speaking the protocol — before the client
    /// forgets it. A refusal (`4xx`, `503`) never counts. Default 3.
    pub failures_before_drop: u32,
    /// TLS: roots trusted beyond the system's, and a client certificate for
    /// coordinators that require one. Read when the client is made.
    pub tls: ClientTls,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("host", &self.host)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("poll_interval", &self.poll_interval)
            .field("resync_interval", &self.resync_interval)
            .field("request_timeout", &self.request_timeout)
            .field("watch_wait", &self.watch_wait)
            .field("skip", &self.skip)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("failures_before_drop", &self.failures_before_drop)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ClientConfig {
    /// The defaults, with `host` (`name:port`) as the way in: checked by the
    /// client's calls (see [`ClientConfig::check`]).
    pub fn new(host: impl Into<String>) -> Self {
        ClientConfig {
            host: host.into(),
            heartbeat_interval: None,
            poll_interval: Duration::from_secs(60),
            resync_interval: None,
            request_timeout: Duration::from_secs(5),
            watch_wait: Duration::from_secs(60),
            skip: false,
            token: None,
            failures_before_drop: 3,
            tls: ClientTls::default(),
        }
    }

    /// Reads the process environment; see [`ClientConfig::from_vars`].
    pub fn from_env() -> Result<Self, ClientError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `var` (a variable's value, or `None` when unset):
    ///
    /// | variable | field |
    /// | --- | --- |
    /// | `HAKKEN_HOST` | `host` (required unless skipping) |
    /// | `HAKKEN_HEARTBEAT_INTERVAL` | `heartbeat_interval`, milliseconds |
    /// | `HAKKEN_POLL_INTERVAL` | `poll_interval`, milliseconds |
    /// | `HAKKEN_RESYNC_INTERVAL` | `resync_interval`, milliseconds |
    /// | `HAKKEN_REQUEST_TIMEOUT` | `request_timeout`, milliseconds |
    /// | `HAKKEN_SKIP` or `SKIP_HAKKEN` | `skip`, `true` or `false` |
    /// | `HAKKEN_TOKEN` | `token` |
    /// | `HAKKEN_FAILURES_BEFORE_DROP` | `failures_before_drop` |
    /// | `HAKKEN_CA` | `tls.ca`, a PEM file of CAs trusted beyond the system's |
    /// | `HAKKEN_CERT`, `HAKKEN_KEY` | `tls.cert`, `tls.key`: a client certificate (PEM) |
    ///
    /// ```
    /// use hakken::client::ClientConfig;
    /// let config = ClientConfig::from_vars(|name| match name {
    ///     "HAKKEN_HOST" => Some("lb:8082".into()),
    ///     "HAKKEN_HEARTBEAT_INTERVAL" => Some("5000".into()),
    ///     _ => None,
    /// })
    /// .unwrap();
    /// assert_eq!(config.heartbeat_interval, Some(std::time::Duration::from_secs(5)));
    /// ```
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ClientError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let millis = |name: &str| -> Result<Option<Duration>, ClientError> {
            var(name)
                .map(|text| {
                    text.trim()
                        .parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|_| {
                            ClientError::Config(format!(
                                "{name}: expected milliseconds, got `{text}`"
                            ))
                        })
                })
                .transpose()
        };
        let skip = match var("HAKKEN_SKIP").or_else(|| var("SKIP_HAKKEN")) {
            None => false,
            Some(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(ClientError::Config(format!(
                        "HAKKEN_SKIP: expected true or false, got `{text}`"
                    )))
                }
            },
        };
        let host = match var("HAKKEN_HOST") {
            Some(host) => host.trim().to_owned(),
            None if skip => String::new(),
            None => return Err(ClientError::Config("HAKKEN_HOST is not set".into())),
        };
        let mut config = ClientConfig::new(host);
        config.skip = skip;
        config.heartbeat_interval = millis("HAKKEN_HEARTBEAT_INTERVAL")?;
        if let Some(poll) = millis("HAKKEN_POLL_INTERVAL")? {
            config.poll_interval = poll;
        }
        config.resync_interval = millis("HAKKEN_RESYNC_INTERVAL")?;
        if let Some(timeout) = millis("HAKKEN_REQUEST_TIMEOUT")? {
            config.request_timeout = timeout;
        }
        config.token = var("HAKKEN_TOKEN");
        if let Some(text) = var("HAKKEN_FAILURES_BEFORE_DROP") {
            config.failures_before_drop = text
                .trim()
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    ClientError::Config(format!(
                        "HAKKEN_FAILURES_BEFORE_DROP: expected a whole number of at least 1, got `{text}`"
                    ))
                })?;
        }
        config.tls = ClientTls {
            ca: var("HAKKEN_CA").map(Into::into),
            cert: var("HAKKEN_CERT").map(Into::into),
            key: var("HAKKEN_KEY").map(Into::into),
        };
        if let Some(why) = config.host_error() {
            return Err(ClientError::Config(format!(
                "HAKKEN_HOST `{}`: {why}",
                config.host
            )));
        }
        Ok(config)
    }

    /// What is wrong with `host`, if anything: it is checked as a way into the
    /// cluster ([`check_discovery_host`](crate::address::check_discovery_host):
    /// `HOST[:PORT][/PATH]`, `http(s)://` in front for TLS), and not at all with
    /// `skip`. [`Client::start`](super::Client::start), `publish`, `unpublish`
    /// and a watch's `start` fail with this before any call (`close` has nothing
    /// to withdraw: nothing could be published).
    pub fn check(&self) -> Result<(), ClientError> {
        self.host_problem()
            .map_or(Ok(()), |why| Err(ClientError::Config(why)))
    }

    /// What [`ClientConfig::check`] says, if anything.
    pub(crate) fn host_problem(&self) -> Option<String> {
        let why = self.host_error()?;
        Some(format!("coordinator address `{}`: {why}", self.host))
    }

    /// What is wrong with `host` (see [`ClientConfig::check`]).
    fn host_error(&self) -> Option<String> {
        if self.skip {
            None
        } else if self.host.trim().is_empty() {
            Some("expected HOST:PORT, got nothing".to_owned())
        } else {
            crate::address::check_discovery_host(&self.host).err()
        }
    }

    /// Sets the TLS settings (see [`ClientTls`]).
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// Sets a fixed heartbeat interval (the coordinators' is then ignored).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// Sets how often each known coordinator is asked for the coordinators it knows.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets how often `host` is asked again.
    pub fn resync_interval(mut self, interval: Duration) -> Self {
        self.resync_interval = Some(interval);
        self
    }

    /// Sets the bound of every HTTP call.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how long a coordinator may hold a watch's blocking query.
    pub fn watch_wait(mut self, wait: Duration) -> Self {
        self.watch_wait = wait;
        self
    }

    /// Turns discovery off (`true`) or on.
    pub fn skip(mut self, skip: bool) -> Self {
        self.skip = skip;
        self
    }

    /// Sets the bearer token sent with writes.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Sets how many broken rounds in a row make the client forget a coordinator.
    pub fn failures_before_drop(mut self, failures: u32) -> Self {
        self.failures_before_drop = failures;
        self
    }

    /// The resync period: `resync_interval`, or `poll_interval × 10`.
    pub fn resync_period(&self) -> Duration {
        self.resync_interval.unwrap_or(self.poll_interval * 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn environment() {
        let c = ClientConfig::from_vars(vars(&[
            ("HAKKEN_HOST", "a:1"),
            ("HAKKEN_POLL_INTERVAL", "1000"),
            ("SKIP_HAKKEN", "false"),
            ("HAKKEN_TOKEN", "t"),
        ]))
        .unwrap();
        assert_eq!(c.host, "a:1");
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!(c.resync_period(), Duration::from_secs(10));
        assert_eq!(c.heartbeat_interval, None);
        assert!(!c.skip);
        assert_eq!(c.token.as_deref(), Some("t"));
        assert!(!format!("{c:?}").contains("\"t\""), "token redacted");

        let skip = ClientConfig::from_vars(vars(&[("HAKKEN_SKIP", "true")])).unwrap();
        assert!(skip.skip);
        assert!(matches!(
            ClientConfig::from_vars(vars(&[])),
            Err(ClientError::Config(_))
        ));
        assert!(matches!(
            ClientConfig::from_vars(vars(&[
                ("HAKKEN_HOST", "a:1"),
                ("HAKKEN_POLL_INTERVAL", "1s")
            ])),
            Err(ClientError::Config(_))
        ));
        assert!(matches!(
            ClientConfig::from_vars(vars(&[("HAKKEN_HOST", "a:1"), ("SKIP_HAKKEN", "maybe")])),
            Err(ClientError::Config(_))
        ));
        match ClientConfig::from_vars(vars(&[("HAKKEN_HOST", "a:0")])) {
            Err(ClientError::Config(why)) => assert!(why.starts_with("HAKKEN_HOST `a:0`"), "{why}"),
            other => panic!("expected a Config error, got {other:?}"),
        }
    }
}
