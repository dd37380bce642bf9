//! [`Error`]: everything that stops a run, worded as one line that names the
//! flag, the target or the file at fault.

use std::io;
use std::path::PathBuf;

/// Why the load tester gave up. Each variant's message is one line and
/// names what the user can change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value is wrong or two flags disagree.
    #[error("--{flag}: {reason}")]
    Flag { flag: &'static str, reason: String },
    /// The dialect named by `--spec` could not be loaded.
    #[error("--spec: {0}")]
    Spec(#[from] protocol::SpecError),
    /// A target did not accept a connection.
    #[error("{target}: cannot connect: {source}")]
    Connect { target: String, source: io::Error },
    /// A target answered something that is not what its protocol allows.
    #[error("{target}: {reason}")]
    Target { target: String, reason: String },
    /// A server could not take its listening address.
    #[error("{address}: cannot listen: {source}")]
    Listen { address: String, source: io::Error },
    /// An output file could not be written.
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    /// The runtime or a thread could not be started.
    #[error("cannot start: {0}")]
    Start(io::Error),
    /// A child process (`loadtest bench` starts servers) failed.
    #[error("{program}: {reason}")]
    Child { program: String, reason: String },
}

impl Error {
    /// A bad value for `--flag`.
    pub fn flag(flag: &'static str, reason: impl Into<String>) -> Error {
        Error::Flag {
            flag,
            reason: reason.into(),
        }
    }

    /// An output file at `path` could not be written.
    pub fn file(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::File {
            path: path.into(),
            source,
        }
    }
}
