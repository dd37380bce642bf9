//! The switch's own load tester, for perf engineers.
//!
//! This crate will hold the `loadtest` binary: an open-loop, constant-rate
//! driver for ISO 8583 over TCP and for the JSON API, whose latencies are taken
//! from each request's intended send time and recorded in HdrHistograms (no
//! coordinated omission); the echo server that gives the machine's own limit as
//! a baseline; an issuer simulator; and the reports (table, JSON, `.hlog`
//! interval logs, plots). Requests are built with the same `protocol` codec the
//! switch uses.
