//! The decision core of the switch: the rules that need no state, then
//! per-card and per-merchant state hosted by shard actors, one shard per core,
//! each owning its entities outright so the hot path takes no locks. No
//! sockets and no database: it takes requests and a clock, and answers
//! approve or a [`DeclineReason`](protocol::domain::DeclineReason).
//!
//! The modules, in the order a request flows through them:
//!
//! - [`rules`]: [`check_rules`], pure checks run by the ingress before any
//!   actor: Luhn (14), expiry (54), amount (13), blocked BIN ranges (57).
//! - [`shard`]: [`Shards`], the handle that routes a [`CardCheck`] to the
//!   shard owning its card (by token) and then to the one owning its
//!   merchant, over bounded mailboxes that shed with 91 when full, and
//!   carries give-backs and journal replay the same way; each shard's task,
//!   and its card table with the sweep that evicts idle cards.
//! - [`card`]: [`CardState`], a card's approved count and amount over a
//!   minute, an hour and a day in 184 bytes; [`CardLimits`] (61, 65).
//! - [`velocity`]: the bucketed sliding window ([`velocity::Ring`]) the card
//!   is made of, and why saturating small counters is safe for limits.
//! - [`merchant`]: [`MerchantState`], per-transaction amount (13), MCC
//!   (58), TPS ceiling (58) and UTC daily volume (61).
//! - [`clock`]: the time every step above is judged by; [`ManualClock`]
//!   lets tests move it instead of sleeping.
//!
//! Declines are data; [`Error`] is only for what is broken (a stopped shard,
//! a bad configuration).

pub mod card;
pub mod clock;
mod error;
pub mod merchant;
pub mod rules;
pub mod shard;
pub mod velocity;

pub use card::{CardLimits, CardState, Window};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::Error;
pub use merchant::{MerchantLimits, MerchantState};
pub use rules::{BinRange, RuleConfig, check_rules};
pub use shard::{CardCheck, GiveBack, Limits, Restore, ShardConfig, ShardLoad, ShardStats, Shards};
pub use velocity::{Totals, WindowLimit};
