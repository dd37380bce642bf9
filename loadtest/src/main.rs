//! `loadtest`: see `loadtest --help` and the crate's library docs.

fn main() -> std::process::ExitCode {
    loadtest::cli::main_with(std::env::args_os())
}
