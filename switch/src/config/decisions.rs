//! What the engine decides with: `[rules]`, `[card_limits]`, `[shards]`
//! (with the merchants' limits) and `[duplicates]`, as the actors and the
//! engine take them ([`DuplicateSettings`] is the engine's).

use std::collections::HashMap;

use actors::{BinRange, CardLimits, MerchantLimits, RuleConfig, ShardConfig, WindowLimit};
use protocol::ids::MerchantId;

use super::check::{Check, ConfigError};
use super::raw::{
    Backend, RawCardLimits, RawDuplicates, RawOverload, RawRules, RawShards, RawWindowLimit,
};
use crate::admission::LoadSettings;

/// `[rules]`: the largest amount and the blocked BIN ranges.
pub(super) fn rules(check: &Check, raw: &RawRules) -> Result<RuleConfig, ConfigError> {
    let blocked_bins = raw
        .blocked_bins
        .iter()
        .enumerate()
        .map(|(i, range)| {
            BinRange::new(&range.from, &range.to).ok_or_else(|| {
                check.error(
                    &format!("rules.blocked_bins[{i}]"),
                    "from and to must be BINs of the same length, 6 to 8 digits, from <= to",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RuleConfig {
        amount_max: check.amount("rules.amount_max", raw.amount_max)?,
        blocked_bins,
    })
}

/// `[card_limits]`: the velocity every card is held to.
pub(super) fn card_limits(check: &Check, raw: &RawCardLimits) -> Result<CardLimits, ConfigError> {
    let window = |key: &str, raw: RawWindowLimit| -> Result<WindowLimit, ConfigError> {
        Ok(WindowLimit {
            count_max: raw.count_max,
            amount_max: raw
                .amount_max
                .map(|minor| check.amount(key, minor))
                .transpose()?,
        })
    };
    Ok(CardLimits {
        per_minute: window("card_limits.per_minute", raw.per_minute)?,
        per_hour: window("card_limits.per_hour", raw.per_hour)?,
        per_day: window("card_limits.per_day", raw.per_day)?,
    })
}

/// `[shards]`, with the limits every card and each merchant is held to.
pub(super) fn shards(
    check: &Check,
    raw: &RawShards,
    card_limits: CardLimits,
    merchants: HashMap<MerchantId, MerchantLimits>,
) -> Result<ShardConfig, ConfigError> {
    Ok(ShardConfig {
        shard_count: raw.count,
        mailbox_capacity: check.positive("shards.mailbox_capacity", raw.mailbox_capacity)?,
        card_limits,
        merchants,
    })
}

/// `[runtime] worker_threads`: the threads that serve requests (the
/// connections, the engine, the shards); 0 is one per core less one, and
/// at least one. The core left over is the journal writer's: it runs on a
/// thread of its own and spends most of a batch in `fdatasync` or in its
/// database's client, and every worker beyond what the cores can run at
/// once only adds wake-ups between threads. On two cores with the segment
/// log, one worker served 15% more requests one at a time, and spent 15%
/// less CPU on each at a steady 10 000/s, than two (docs/BENCHMARKS.md,
/// issue 12).
pub(super) fn worker_threads(configured: usize, cores: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        cores.saturating_sub(1).max(1)
    }
}

/// How long and how many answered requests are kept for recognizing
/// retransmissions in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateSettings {
    pub window_ms: u64,
    pub entries_max: usize,
}

/// `[duplicates]`: how long answered ISO requests are remembered in memory
/// for recognizing retransmissions, and how many at most.
pub(super) fn duplicates(
    check: &Check,
    raw: &RawDuplicates,
) -> Result<DuplicateSettings, ConfigError> {
    Ok(DuplicateSettings {
        window_ms: check.positive("duplicates.window_ms", raw.window_ms)?,
        entries_max: check.positive("duplicates.entries_max", raw.entries_max)?,
    })
}

/// `[overload]`: the admission limit's latency target and bounds.
///
/// The target, unless set, follows the journal `backend`: 40 ms on SQLite,
/// 20 ms on the others. SQLite's writer does each batch's B-tree work
/// itself, so it reaches its peak only with large group commits, and a
/// 20 ms target cut them short: at three times its peak it kept 0.70 of
/// the peak against 1.08-1.12 at 40 ms, with no answer late at either.
/// On the segment log, where the runtime worker is what saturates, the
/// same 40 ms let in more than the worker could read and answer in time:
/// 815 000 late answers (docs/BENCHMARKS.md, "Overload").
pub(super) fn overload(
    check: &Check,
    raw: &RawOverload,
    backend: Backend,
) -> Result<LoadSettings, ConfigError> {
    let limit_min = check.positive("overload.limit_min", raw.limit_min)?;
    let limit_max = check.positive("overload.limit_max", raw.limit_max)?;
    if limit_max < limit_min {
        return Err(check.error("overload.limit_max", "must be at least overload.limit_min"));
    }
    if !(limit_min..=limit_max).contains(&raw.limit_initial) {
        return Err(check.error(
            "overload.limit_initial",
            "must be from overload.limit_min to overload.limit_max",
        ));
    }
    Ok(LoadSettings {
        latency_target_us: match raw.latency_target_ms {
            Some(target_ms) => check.positive("overload.latency_target_ms", target_ms)?,
            None if backend == Backend::Sqlite => 40,
            None => 20,
        }
        .saturating_mul(1_000),
        limit_initial: raw.limit_initial,
        limit_min,
        limit_max,
        // 0 is allowed: no room, a stall refused like an overload.
        stall_room_us: raw.stall_room_ms.saturating_mul(1_000),
    })
}
