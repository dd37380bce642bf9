//! The decision core of the switch: per-card and per-merchant actors hosted by
//! shard actors, one shard per core, each owning its entities' state outright so
//! the hot path takes no locks.
//!
//! This crate will hold the card state (bucketed velocity windows of approved
//! count and amount over one minute, one hour and one day, fixed memory per
//! card), the merchant state (amount limits, daily volume, allowed MCCs, a TPS
//! ceiling), the rules that run before the actors (Luhn, expiry, amount, blocked
//! BIN ranges) and the bounded shard mailboxes that answer at once when full.
//! It never sees a socket or a database: it takes a domain `Authorization` from
//! `protocol` and a clock, and returns a `Decision`.
