//! The switch's own load tester, for perf engineers: open-loop, constant-rate
//! ISO 8583 and JSON/HTTP load whose latencies are taken from each request's
//! intended send time (no coordinated omission), HdrHistogram percentiles,
//! `.hlog` interval logs, plots, and the servers to compare a switch with.
//!
//! The modules, in the order a run flows through them:
//!
//! - [`args`]: the flags, as clap types, and the parsers of their values.
//! - [`cli`]: each subcommand: its flags checked together into a
//!   [`run::RunConfig`], a bench or a server configuration, then run;
//!   one-line errors that name the flag; [`flags`]: the checks of the
//!   flags several subcommands share.
//! - [`workload`]: what request number `i` is (type, card, amount,
//!   merchant), a pure function of `--seed` and `i`; Luhn-valid PANs.
//! - [`rng`]: the seeded generator, Zipf and normal samplers behind it.
//! - [`schedule`]: when request `i` is intended (at `--rate`, then each
//!   `--then` phase's), and the pacer thread that wakes connections on
//!   time, finer than tokio's millisecond timer.
//! - [`run`]: connects, starts the connections and the pacer, and once a
//!   second harvests what they measured into the totals, the `.hlog`, the
//!   ack log and the progress line.
//! - [`connection`]: one connection's loop: send what is due, match
//!   responses, time out, reconnect; the protocol is a [`connection::Dialogue`].
//! - [`iso`] and [`http`]: the two dialogues. ISO 8583 requests are built
//!   with the switch's own `protocol` codec and matched by DE11 (and DE41);
//!   HTTP/1.1 is pipelined and matched in order. [`http`] also fetches the
//!   switch's `/admin/latency`.
//! - [`tls`]: `--tls` (mutual TLS with `--tls-cert`): the handshake at
//!   connect, then the rustls session driven from the connection's own
//!   readiness loop; and TLS for `loadtest echo`.
//! - [`clock`]: the monotonic [`clock::Instant`] every send time, latency
//!   and timeout is read from (the crate's one clock module), and
//!   DE7/DE12/DE13 from the wall clock.
//! - [`stats`]: the histograms and counts, recorded per shard of connections.
//! - [`report`]: the end-of-run table and the `--report` JSON;
//!   [`phases`]: a run's rate phases (`--then`) against a deadline
//!   (`--deadline`): goodput, sheds, late answers, admitted p99 and the
//!   recovery of the overload scenario; [`plot`]: the `--plot` SVG.
//! - [`overload`]: `loadtest overload`, the overload scenario in one
//!   command (the target's peak, then 50%, 3x and 50% of it against a
//!   deadline); [`overload_report`]: what it reports and the goals of
//!   issue 13; [`metrics`]: the switch's Prometheus text read at each
//!   phase's start and end (sheds by reason, deadline misses, the
//!   admission limit).
//! - [`echo`] and [`issuer`]: `loadtest echo` (the same frames echoed, the
//!   machine's own limit; with `--durable`, only once each request's record
//!   is synced to a file, the durable limit) and `loadtest issuer` (an issuer host simulator).
//! - [`bench`](mod@bench): `loadtest bench`, the echo baselines and the switch measured
//!   in one run, as ratios; [`bench_report`]: its figures as a table, JSON
//!   and a Markdown section; [`goals`]: a goal checked against a figure,
//!   for the bench's and the overload scenario's.
//! - [`durable`]: the durable echo's journal thread and `K_append`, the
//!   disk's own limit for those records; [`cpu`]: CPU time of a process
//!   from `/proc`, for CPU per request.
//! - [`units`]: numbers between types (counts as `f64`, floats back to
//!   counts, nanoseconds) and into text (`1.20ms`, ASCII digits).
//! - [`error`]: [`Error`], one line naming the flag, target or file.

pub mod args;
pub mod bench;
pub mod bench_report;
pub mod cli;
pub mod clock;
pub mod connection;
pub mod cpu;
pub mod durable;
pub mod echo;
pub mod error;
pub mod flags;
pub mod goals;
pub mod http;
pub mod iso;
pub mod issuer;
pub mod metrics;
pub mod overload;
pub mod overload_report;
pub mod phases;
pub mod plot;
pub mod report;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod tls;
pub mod units;
pub mod workload;

pub use error::Error;
