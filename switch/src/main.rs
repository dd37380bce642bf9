//! The `switch` binary: `switch serve` runs the switch; `switch iso decode`
//! and `switch iso encode` read and write ISO 8583 messages for people;
//! `switch audit verify` checks the audit log; `switch vault ...` rotates
//! vault keys on a running switch.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switch::cli::{audit as audit_cli, iso as iso_cli, vault as vault_cli};
use switch::serve;

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
    /// Check the audit log.
    #[command(subcommand)]
    Audit(audit_cli::AuditCommand),
    /// Vault key rotation on a running switch: status, reload, rewrap, verify.
    #[command(subcommand)]
    Vault(vault_cli::VaultCommand),
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Serve(args) => serve::run(args),
        Command::Iso(command) => iso_cli::run(command),
        Command::Audit(command) => audit_cli::run(command),
        Command::Vault(command) => vault_cli::run(command),
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
