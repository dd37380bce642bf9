//! `switch audit verify`: checks the audit log's hash chain offline.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::ops::audit;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every entry's hash and the chain; exits 1 naming the first
    /// line at fault (edited, deleted, reordered).
    Verify {
        /// The audit log, `data_dir/audit.log`.
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
    },
}

pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { file } => verify(&file),
    }
}

fn verify(file: &Path) -> anyhow::Result<()> {
    match audit::verify(file) {
        Ok(head) => {
            println!("OK: {} entries, chain head {}", head.seq, head.hash);
            Ok(())
        }
        Err(error) => Err(anyhow::anyhow!("{}: {error}", file.display())),
    }
}
