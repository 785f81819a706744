//! Command-line parsing and dispatch for the `hakken` binary.
//!
//! Every setting can come from a flag or from an environment variable (flags win);
//! a bad value is one line on stderr naming the setting, and exit code 2; a
//! missing or unknown argument is clap's own message, with the usage line.

mod client;
mod coordinator;
mod explain;
mod logging;
mod values;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

/// Service discovery: coordinators holding service listings, gossiping over HTTP.
#[derive(Debug, Parser)]
#[command(name = "hakken", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a coordinator (configured like the original: PORT, DISCOVERY_HOST, ...).
    Coordinator(Box<coordinator::CoordinatorArgs>),
    /// Publish a listing and keep it alive until Ctrl-C (or SIGTERM, SIGHUP), then withdraw it.
    Publish(client::PublishArgs),
    /// Print a service's listings as a JSON array per line, again at every change.
    Watch(client::WatchArgs),
    /// List the services that have live listings.
    Services(client::OutputArgs),
    /// List the live listings of one service.
    Listings(client::ListingsArgs),
    /// List the coordinators a coordinator knows.
    Coordinators(client::OutputArgs),
}

/// Parses arguments, runs the command, and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = match command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hakken: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Coordinator(args) => coordinator::run(*args).await,
            Command::Publish(args) => client::publish(args).await,
            Command::Watch(args) => client::watch(args).await,
            Command::Services(args) => client::services(args).await,
            Command::Listings(args) => client::listings(args).await,
            Command::Coordinators(args) => client::coordinators(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hakken: {}", one_line(&error));
            match error.downcast_ref::<UsageError>() {
                Some(_) => ExitCode::from(2),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// The TLS settings of calls out, shared by every command that makes them (to
/// coordinators from the client commands, to peers from `hakken coordinator`).
#[derive(Debug, Clone, clap::Args)]
pub struct OutgoingTls {
    /// PEM file of CA certificates trusted beyond the system's, for calls over TLS.
    #[arg(long, env = "HAKKEN_CA", value_name = "FILE", help_heading = "TLS")]
    ca: Option<std::path::PathBuf>,
    /// PEM file of a client certificate to present, for coordinators that require one (mutual TLS).
    #[arg(
        long,
        env = "HAKKEN_CERT",
        value_name = "FILE",
        requires = "key",
        help_heading = "TLS"
    )]
    cert: Option<std::path::PathBuf>,
    /// PEM file of the client certificate's private key.
    #[arg(
        long,
        env = "HAKKEN_KEY",
        value_name = "FILE",
        requires = "cert",
        help_heading = "TLS"
    )]
    key: Option<std::path::PathBuf>,
}

impl OutgoingTls {
    /// As the library takes them.
    pub fn settings(&self) -> hakken::tls::ClientTls {
        hakken::tls::ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// Arguments that parse but do not make sense together (a listing with too many
/// fields, say): reported like any bad argument, exit code 2, before anything is
/// contacted.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An error and its causes on one line, each cause said once: a cause whose text
/// its context already quotes is left out.
fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// The command line, its help showing `[env: NAME=value]` only for variables that
/// are set (and `[env: NAME]` for the others, rather than an empty `NAME=`).
fn command() -> clap::Command {
    hide_unset_env_values(Cli::command())
}

fn hide_unset_env_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let unset = arg
                .get_env()
                .is_some_and(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()));
            if unset {
                arg.hide_env_values(true)
            } else {
                arg
            }
        })
        .mut_subcommands(hide_unset_env_values)
}

/// Reports a clap error, exit code 2 (0 for help and version). A bad value is one
/// line that names the setting (flag and environment variable) and, for a choice,
/// the accepted values; anything else (a missing or unknown argument) is clap's
/// whole message: what is wrong, the usage line and its tips.
fn usage_error(error: clap::Error) -> ExitCode {
    let code = || ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        let _ = error.print();
        return code();
    }
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    if let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) {
        let subcommand = std::env::args_os().nth(1);
        if let Some(env) = env_of(arg, subcommand.as_ref().and_then(|s| s.to_str())) {
            line.push_str(&format!(" (setting {env})"));
        }
    }
    if let Some(ContextValue::Strings(values)) = error.get(ContextKind::ValidValue) {
        if !values.is_empty() {
            line.push_str(&format!(" [possible values: {}]", values.join(", ")));
        }
    }
    eprintln!("hakken: {line}");
    code()
}

/// The environment variable behind a flag such as `--port <PORT>` of
/// `subcommand`, if it has one (two subcommands can have the same flag, one
/// with a variable and one without).
fn env_of(arg: &str, subcommand: Option<&str>) -> Option<String> {
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let command = Cli::command();
    let env = command
        .get_subcommands()
        .filter(|sub| Some(sub.get_name()) == subcommand)
        .flat_map(|sub| sub.get_arguments())
        .chain(command.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    env
}

/// Parses a number of milliseconds between 1 and a day.
pub(crate) fn positive_ms(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1 millisecond".into()),
        Ok(ms) if ms > MAX_MS => Err(format!("must be at most {MAX_MS} ms (a day)")),
        Ok(ms) => Ok(ms),
        Err(_) => Err("expected a positive whole number of milliseconds".into()),
    }
}

/// The longest period accepted from the command line: a day, in milliseconds.
const MAX_MS: u64 = 24 * 3600 * 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_map_to_their_environment_variables() {
        let coordinator = Some("coordinator");
        assert_eq!(
            env_of("--port <PORT>", coordinator).as_deref(),
            Some("PORT")
        );
        assert_eq!(
            env_of("--heartbeat-interval <MS>", coordinator).as_deref(),
            Some("DISCOVERY_HEARTBEAT_INTERVAL")
        );
        // The same flag of `publish` has no variable: the coordinator's is not
        // suggested.
        assert_eq!(env_of("--heartbeat-interval <MS>", Some("publish")), None);
        assert_eq!(env_of("--nope", coordinator), None);
    }
}
