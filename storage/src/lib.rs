//! Durable state of the switch: the transaction journal, the token vault and,
//! for a fleet of nodes, the shared velocity store.
//!
//! This crate will hold one journal writer path with group commit (every record
//! waiting is written in one transaction, then every waiting reply is released),
//! behind a small trait with two backends: an embedded file-backed database that
//! needs no server (the default) and PostgreSQL for production. The vault maps a
//! keyed-hash token to the PAN encrypted with AES-256-GCM under a versioned key.
//! Records carry tokens, BIN and last four digits only; never the PAN in clear,
//! track data, CVV or PIN blocks. It never decides an authorization.
