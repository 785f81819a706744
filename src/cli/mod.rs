//! Command-line parsing and dispatch for the `hakken` binary.
//!
//! Every setting can come from a flag or from an environment variable (flags win);
//! a bad value is one line on stderr naming the setting, and exit code 2.

mod client;
mod coordinator;
mod logging;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};
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
    Coordinator(coordinator::CoordinatorArgs),
    /// Publish a listing and keep it alive until Ctrl-C, then withdraw it.
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
    let cli = match Cli::try_parse() {
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
            Command::Coordinator(args) => coordinator::run(args).await,
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
            eprintln!("hakken: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a clap error: help and version as clap does, anything else as one line
/// that names the setting (flag and environment variable), exit code 2.
fn usage_error(error: clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return if error.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let env = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => env_of(arg),
        _ => None,
    };
    match env {
        Some(env) => eprintln!("hakken: {first} (setting {env})"),
        None => eprintln!("hakken: {first}"),
    }
    ExitCode::from(2)
}

/// The environment variable behind a flag such as `--port <PORT>`, if it has one.
fn env_of(arg: &str) -> Option<String> {
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let command = Cli::command();
    let env = command
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments())
        .chain(command.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_map_to_their_environment_variables() {
        assert_eq!(env_of("--port <PORT>").as_deref(), Some("PORT"));
        assert_eq!(
            env_of("--heartbeat-interval <MS>").as_deref(),
            Some("DISCOVERY_HEARTBEAT_INTERVAL")
        );
        assert_eq!(env_of("--nope"), None);
    }
}
