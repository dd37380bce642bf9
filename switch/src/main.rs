//! The `switch` binary.
//!
//! Today it carries the tools people use to read and write ISO 8583 messages
//! (`switch iso decode`, `switch iso encode`); the server (`switch serve`)
//! joins it as the ingress, actors and journal land.

mod iso_cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The card-transaction switch.
#[derive(Debug, Parser)]
#[command(name = "switch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read and write ISO 8583 messages.
    #[command(subcommand)]
    Iso(iso_cli::IsoCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Iso(command) => iso_cli::run(command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole chain on one line: "field 4: ...".
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
