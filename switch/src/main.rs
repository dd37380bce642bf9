//! The `switch` binary: `switch serve` runs the switch; `switch iso decode`
//! and `switch iso encode` read and write ISO 8583 messages for people.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switch::{iso_cli, serve};

/// The card-transaction switch.
#[derive(Debug, Parser)]
#[command(name = "switch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the switch: ISO 8583 and HTTP listeners, actors, journal.
    Serve(serve::ServeArgs),
    /// Read and write ISO 8583 messages.
    #[command(subcommand)]
    Iso(iso_cli::IsoCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(args),
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
