//! Admission: whether a request is worked on at all, decided before the
//! vault, the actors and the journal see it, and shared by both ingresses.
//!
//! These are not the limits the actors decide on (a card's velocity
//! windows, a merchant's amount and volume maxima and `tps_max`): a request
//! admitted here can still be declined there, and a request refused here
//! was never decided, so it is not journaled.
//!
//! - [`AdmissionRates`] (`rate.rs`): a token bucket per merchant (DE42, or
//!   the merchant of an HTTP API key). Over its rate a merchant's card
//!   request is refused at once: HTTP 429 with `Retry-After`, ISO 8583 DE39
//!   91.
//! - [`Lockout`] (`lockout.rs`): failed HTTP authentications counted per
//!   client origin (peer IP); an origin with too many is refused for a
//!   while, right key or not.
//! - [`LoadLimit`] (`load.rs`): how many card requests and reversals are
//!   worked on at once, adapted to the latency the switch is asked to keep,
//!   each merchant and acquirer held to its share while it binds, and
//!   reversals admitted first. Past it a request is refused at once: ISO
//!   8583 DE39 91, HTTP 503 with `Retry-After`.
//! - [`RetryAfter`] (`retry_after.rs`): when a refused request may try
//!   again, the answer of both.

mod load;
mod lockout;
mod rate;
mod retry_after;

pub use load::{Class, LoadLimit, LoadSettings, Permit, Refused};
pub use lockout::{Lockout, LockoutFailure, LockoutStanding};
pub use rate::AdmissionRates;
pub use retry_after::RetryAfter;
