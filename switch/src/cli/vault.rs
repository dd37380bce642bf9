//! `switch vault ...`: the operator's commands for key rotation, talking to
//! a running switch's admin routes over HTTP.
//!
//! ```text
//! switch vault status  --url http://127.0.0.1:8080 --admin-key-file F
//! switch vault reload  --url ... --admin-key-file F     # as SIGHUP does
//! switch vault rewrap  --url ... --admin-key-file F [--batch-rows N] [--pause-ms M]
//! switch vault verify  --url ... --admin-key-file F
//! ```
//!
//! `rewrap` starts the job and polls `GET /admin/vault` until it ends,
//! printing progress; it exits non-zero if the job fails. The admin key is
//! read from a file so it never shows in `ps` or the shell history.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

/// Where the switch is and how to prove to be its admin.
#[derive(Debug, Args)]
pub struct Target {
    /// The switch's HTTP listener (plain http).
    #[arg(
        long,
        env = "SWITCH_ADMIN_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub url: String,
    /// A file holding the admin API key (surrounding whitespace ignored).
    #[arg(long, env = "SWITCH_ADMIN_KEY_FILE", value_name = "FILE")]
    pub admin_key_file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Key ids, the active id, rows per key id, and the rewrap job.
    Status(Target),
    /// Re-read the `[vault]` section of the switch's configuration file.
    Reload(Target),
    /// Re-encrypt every row under the active key, in batches, while the
    /// switch serves; waits for the job and prints its progress.
    Rewrap {
        #[command(flatten)]
        target: Target,
        /// Rows per batch (one short write transaction each).
        #[arg(long, value_name = "N")]
        batch_rows: Option<u32>,
        /// Pause between batches, in milliseconds.
        #[arg(long, value_name = "MS")]
        pause_ms: Option<u64>,
        /// How often to ask for progress, in milliseconds.
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        poll_ms: u64,
    },
    /// Open every vault row and report counts per key id (never a PAN).
    Verify(Target),
}

pub fn run(command: VaultCommand) -> anyhow::Result<()> {
    match command {
        VaultCommand::Status(target) => {
            let body = call(&target, "GET", "/admin/vault", "", &[200])?;
            println!("{body}");
        }
        VaultCommand::Reload(target) => {
            let body = call(&target, "POST", "/admin/vault/reload", "", &[200])?;
            println!("{body}");
        }
        VaultCommand::Verify(target) => {
            let body = call(&target, "POST", "/admin/vault/verify", "", &[200])?;
            println!("{body}");
            let report: serde_json::Value = serde_json::from_str(&body)?;
            let failed = report.get("failed").and_then(serde_json::Value::as_u64);
            if failed != Some(0) {
                bail!("some vault rows did not open: {body}");
            }
        }
        VaultCommand::Rewrap {
            target,
            batch_rows,
            pause_ms,
            poll_ms,
        } => {
            let mut request = serde_json::Map::new();
            if let Some(rows) = batch_rows {
                request.insert("batch_rows".to_owned(), rows.into());
            }
            if let Some(ms) = pause_ms {
                request.insert("pause_ms".to_owned(), ms.into());
            }
            let request = serde_json::Value::Object(request).to_string();
            call(&target, "POST", "/admin/vault/rewrap", &request, &[202])?;
            loop {
                std::thread::sleep(Duration::from_millis(poll_ms.max(50)));
                let body = call(&target, "GET", "/admin/vault", "", &[200])?;
                let status: serde_json::Value = serde_json::from_str(&body)?;
                let job = &status["rewrap"];
                println!(
                    "rewrap {}: batches {} moved {} skipped {} rows per key id {}",
                    job["state"].as_str().unwrap_or("?"),
                    job["batches"],
                    job["moved"],
                    job["skipped"],
                    status["rows_per_key_id"],
                );
                match job["state"].as_str() {
                    Some("running") => continue,
                    Some("done") => return Ok(()),
                    _ => bail!("the rewrap did not finish: {job}"),
                }
            }
        }
    }
    Ok(())
}

/// One request to the switch; the body on an expected status, else an
/// error with the status and the problem body (which names no secret).
fn call(
    target: &Target,
    method: &str,
    path: &str,
    body: &str,
    expected: &[u16],
) -> anyhow::Result<String> {
    let key = Zeroizing::new(
        std::fs::read_to_string(&target.admin_key_file).with_context(|| {
            format!(
                "the admin key file {} cannot be read",
                target.admin_key_file.display()
            )
        })?,
    );
    let Some(authority) = target.url.strip_prefix("http://") else {
        bail!("--url must start with http:// (for example http://127.0.0.1:8080)");
    };
    let authority = authority.trim_end_matches('/');
    let mut stream = TcpStream::connect(authority)
        .with_context(|| format!("the switch at {authority} cannot be reached"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = Zeroizing::new(format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        key.trim(),
        body.len()
    ));
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    if !expected.contains(&status) {
        bail!("{method} {path}: HTTP {status}: {}", body.trim());
    }
    Ok(body.to_owned())
}
