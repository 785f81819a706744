//! The `hakken` command: runs a coordinator, or talks to one from the shell.
//!
//! Argument parsing, output formatting and signal handling only; the work is done
//! by the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
