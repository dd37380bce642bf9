//! The shards against a reference model that keeps every approval as a
//! timestamped entry and recounts the windows from scratch for each request.
//! The model knows nothing of rings, saturation, eviction or shards; where
//! they agree on thousands of random decisions, give-backs, restores and
//! clock moves, the fixed-memory machinery is doing what the plain reading of
//! the limits says.
//!
//! Each run prints its seed; replay one with
//! `ACTORS_MODEL_SEED=<seed> cargo test -p actors --test model`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use actors::{CardCheck, CardLimits, GiveBack, MerchantLimits, Restore, Window, WindowLimit};
use common::*;
use protocol::domain::{DeclineReason, Token};
use protocol::ids::{MerchantId, Text};

const CARDS: u64 = 6;
const STEPS: usize = 3_000;
const RUNS: u64 = 8;
const MS_PER_DAY: u64 = 86_400_000;

#[derive(Debug, Clone, Copy)]
struct Approval {
    card: usize,
    merchant: usize,
    amount: u64,
    at_ms: u64,
}

struct Model {
    card_limits: CardLimits,
    merchants: Vec<(MerchantId, MerchantLimits)>,
    /// Approvals that stand (not given back), restored ones included.
    approvals: Vec<Approval>,
    /// Per merchant, the seconds of its approvals (the TPS ceiling is never
    /// given back).
    approval_seconds: Vec<Vec<u64>>,
}

impl Model {
    /// Approvals of `card` in `window` at `now_ms`: the bucket of `now_ms`
    /// and the `K - 1` before it, the window's definition.
    fn window(&self, card: usize, window: Window, now_ms: u64) -> (u64, u64) {
        let bucket_ms = u64::from(window.bucket_s()) * 1000;
        let buckets = u64::from(window.bucket_count());
        self.approvals
            .iter()
            .filter(|a| a.card == card)
            .filter(|a| now_ms / bucket_ms - a.at_ms / bucket_ms < buckets)
            .fold((0, 0), |(count, amount), a| (count + 1, amount + a.amount))
    }

    fn decide(
        &mut self,
        card: usize,
        merchant: usize,
        mcc: Option<Text<4>>,
        amount: u64,
        now_ms: u64,
    ) -> Result<(), DeclineReason> {
        for window in Window::ALL {
            let limit = self.card_limits.of(window);
            let (count, total) = self.window(card, window, now_ms);
            if limit
                .count_max
                .is_some_and(|max| count + 1 > u64::from(max))
            {
                return Err(DeclineReason::CardCountLimit);
            }
            if limit
                .amount_max
                .is_some_and(|max| total + amount > max.minor())
            {
                return Err(DeclineReason::CardAmountLimit);
            }
        }
        let Some((_, limits)) = self.merchants.get(merchant) else {
            return Err(DeclineReason::UnknownMerchant);
        };
        if limits
            .amount_max_per_transaction
            .is_some_and(|max| amount > max.minor())
        {
            return Err(DeclineReason::MerchantAmountLimit);
        }
        if let (Some(allowed), Some(mcc)) = (&limits.allowed_mccs, mcc)
            && !allowed.contains(&mcc)
        {
            return Err(DeclineReason::MccNotAllowed);
        }
        let second = now_ms / 1000;
        let this_second = self.approval_seconds[merchant]
            .iter()
            .filter(|&&s| s == second)
            .count();
        if limits
            .tps_max
            .is_some_and(|max| u64::try_from(this_second).unwrap() >= u64::from(max))
        {
            return Err(DeclineReason::MerchantTpsCeiling);
        }
        let today: u64 = self
            .approvals
            .iter()
            .filter(|a| a.merchant == merchant && a.at_ms / MS_PER_DAY == now_ms / MS_PER_DAY)
            .map(|a| a.amount)
            .sum();
        if limits
            .daily_volume_max
            .is_some_and(|max| today + amount > max.minor())
        {
            return Err(DeclineReason::MerchantDailyVolume);
        }
        self.approvals.push(Approval {
            card,
            merchant,
            amount,
            at_ms: now_ms,
        });
        self.approval_seconds[merchant].push(second);
        Ok(())
    }
}

fn seed() -> u64 {
    match std::env::var("ACTORS_MODEL_SEED") {
        Ok(text) => text.trim().parse().expect("ACTORS_MODEL_SEED is a u64"),
        // The low 64 bits of the nanoseconds: they change fastest.
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            u64::try_from(nanos & u128::from(u64::MAX)).unwrap()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_agree_with_a_list_of_approvals() {
    let seed = seed();
    println!("ACTORS_MODEL_SEED={seed}");
    let mut seen = HashMap::new();
    for run in 0..RUNS {
        let run_seed = Rng(seed ^ run).next();
        run_model(run_seed, &mut seen)
            .await
            .unwrap_or_else(|step| panic!("ACTORS_MODEL_SEED={seed}: run {run} {step}"));
    }
    println!("{seen:?}");
    // The sequences must reach every answer the actors can give, or the
    // agreement above says less than it seems.
    for answer in [
        Ok(()),
        Err(DeclineReason::CardCountLimit),
        Err(DeclineReason::CardAmountLimit),
        Err(DeclineReason::MerchantAmountLimit),
        Err(DeclineReason::MccNotAllowed),
        Err(DeclineReason::MerchantTpsCeiling),
        Err(DeclineReason::MerchantDailyVolume),
        Err(DeclineReason::UnknownMerchant),
    ] {
        assert!(
            seen.contains_key(&answer),
            "ACTORS_MODEL_SEED={seed}: never {answer:?}"
        );
    }
}

async fn run_model(
    run_seed: u64,
    seen: &mut HashMap<Result<(), DeclineReason>, usize>,
) -> Result<(), String> {
    let mut rng = Rng(run_seed);
    let card_limits = CardLimits {
        per_minute: WindowLimit {
            count_max: Some(3),
            amount_max: Some(minor(1_500)),
        },
        per_hour: WindowLimit {
            count_max: Some(8),
            amount_max: Some(minor(4_000)),
        },
        per_day: WindowLimit {
            count_max: Some(20),
            amount_max: Some(minor(9_000)),
        },
    };
    let merchants = vec![
        (merchant("OPEN"), MerchantLimits::default()),
        (
            merchant("STRICT"),
            MerchantLimits {
                amount_max_per_transaction: Some(minor(800)),
                daily_volume_max: Some(minor(6_000)),
                allowed_mccs: Some(vec![mcc("5411")]),
                tps_max: Some(2),
            },
        ),
    ];
    // Three shards: some cards share their merchant's shard, some do not.
    let (shards, clock) = start(3, card_limits, merchants.clone());
    let start_ms = T0 + rng.below(MS_PER_DAY);
    clock.set(start_ms);
    let tokens: Vec<Token> = (0..CARDS).map(|n| token(run_seed ^ n)).collect();
    let mut model = Model {
        card_limits,
        merchants: merchants.clone(),
        approvals: Vec::new(),
        approval_seconds: vec![Vec::new(); merchants.len()],
    };
    let mut now_ms = start_ms;

    for step in 0..STEPS {
        let roll = rng.below(100);
        if roll < 55 {
            let card = rng.index(tokens.len());
            // Now and then a merchant nobody configured.
            let merchant = rng.index(merchants.len() * 10 + 1) / 10;
            let merchant_id = merchants
                .get(merchant)
                .map_or_else(|| common::merchant("NOBODY"), |(id, _)| *id);
            let mcc = [None, Some(mcc("5411")), Some(mcc("7995"))][rng.index(3)];
            let amount = 1 + rng.below(1_000);
            let expected = model.decide(card, merchant, mcc, amount, now_ms);
            let check = CardCheck {
                token: tokens[card],
                merchant_id,
                mcc,
                amount: minor(amount),
            };
            let actual = shards.decide(check).await;
            *seen.entry(actual).or_default() += 1;
            if actual != expected {
                return Err(format!(
                    "step {step}: card {card} merchant {merchant} {mcc:?} amount {amount} \
                     at +{} ms: shards {actual:?}, model {expected:?}",
                    now_ms - start_ms
                ));
            }
        } else if roll < 70 {
            if model.approvals.is_empty() {
                continue;
            }
            let index = rng.index(model.approvals.len());
            let approval = model.approvals.swap_remove(index);
            let give_back = GiveBack {
                token: tokens[approval.card],
                merchant_id: merchants[approval.merchant].0,
                amount: minor(approval.amount),
                original_at_ms: approval.at_ms,
                whole: true,
            };
            shards.give_back(give_back).await;
        } else if roll < 73 {
            // A journal record from up to 30 hours ago.
            let card = rng.index(tokens.len());
            let merchant = rng.index(merchants.len());
            let amount = 1 + rng.below(1_000);
            let at_ms = now_ms.saturating_sub(rng.below(30 * HOUR));
            model.approvals.push(Approval {
                card,
                merchant,
                amount,
                at_ms,
            });
            let restore = Restore {
                token: tokens[card],
                merchant_id: merchants[merchant].0,
                amount: minor(amount),
                at_ms,
            };
            shards.restore(restore).await;
        } else {
            now_ms += match rng.below(20) {
                0..=11 => rng.below(3 * SECOND),
                12..=17 => rng.below(15 * MINUTE),
                18 => rng.below(5 * HOUR),
                // Long enough for every window to empty and the sweep to
                // evict the cards, which must then decide as new ones.
                _ => 20 * HOUR + rng.below(10 * HOUR),
            };
            clock.set(now_ms);
        }
    }
    let shortfalls = shards.stats().await.give_back_shortfall_total;
    if shortfalls != 0 {
        return Err(format!("{shortfalls} give-backs fell short"));
    }
    Ok(())
}

#[test]
fn the_model_reads_windows_as_the_card_does() {
    // A guard on the model itself: an approval five buckets old is in the
    // minute window, six buckets old is out.
    let mut model = Model {
        card_limits: CardLimits::default(),
        merchants: Vec::new(),
        approvals: vec![Approval {
            card: 0,
            merchant: 0,
            amount: 5,
            at_ms: T0 + 9_999,
        }],
        approval_seconds: Vec::new(),
    };
    assert_eq!(model.window(0, Window::Minute, T0 + 59_999), (1, 5));
    assert_eq!(model.window(0, Window::Minute, T0 + 60_000), (0, 0));
    model.approvals.clear();
    assert_eq!(model.window(0, Window::Day, T0), (0, 0));
}
