//! The `switch` binary: `switch serve` runs the switch; `switch iso decode`
//! and `switch iso encode` read and write ISO 8583 messages for people;
//! `switch vault ...` rotates vault keys on a running switch.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switch::cli::{iso as iso_cli, vault as vault_cli};
use switch::ops::audit;
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
    Audit(AuditCommand),
    /// Vault key rotation on a running switch: status, reload, rewrap, verify.
    #[command(subcommand)]
    Vault(vault_cli::VaultCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check every entry's hash and the chain; exits 1 naming the first
    /// line at fault (edited, deleted, reordered).
    Verify {
        /// The audit log, `data_dir/audit.log`.
        #[arg(long, value_name = "PATH")]
        file: std::path::PathBuf,
    },
}

fn audit_verify(file: &std::path::Path) -> anyhow::Result<()> {
    match audit::verify(file) {
        Ok(head) => {
            println!("OK: {} entries, chain head {}", head.seq, head.hash);
            Ok(())
        }
        Err(error) => Err(anyhow::anyhow!("{}: {error}", file.display())),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Iso(command) => iso_cli::run(command),
        Command::Audit(AuditCommand::Verify { file }) => audit_verify(&file),
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
