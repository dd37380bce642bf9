//! Decisions through running shards, with a manual clock: every decline the
//! actors give, windows expiring as time moves, give-backs, restores,
//! shedding, eviction, and a dropped request leaving no trace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actors::{
    CardLimits, Clock, GiveBack, Limits, ManualClock, MerchantLimits, Restore, ShardConfig, Shards,
    WindowLimit,
};
use common::*;
use protocol::domain::DeclineReason;

fn per_minute_count(limit: u32) -> CardLimits {
    CardLimits {
        per_minute: WindowLimit {
            count_max: Some(limit),
            amount_max: None,
        },
        ..CardLimits::default()
    }
}

#[tokio::test]
async fn five_a_minute_then_65_then_approved_after_61_seconds() {
    let m = merchant("M1");
    let (shards, clock) = start(2, per_minute_count(5), vec![(m, MerchantLimits::default())]);
    let card = token(1);
    for _ in 0..5 {
        assert_eq!(shards.decide(check(card, m, 100)).await, Ok(()));
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(
        shards.decide(check(card, m, 100)).await,
        Err(DeclineReason::CardCountLimit)
    );
    // Another card is not affected.
    assert_eq!(shards.decide(check(token(2), m, 100)).await, Ok(()));
    clock.set(T0 + 61 * SECOND);
    assert_eq!(shards.decide(check(card, m, 100)).await, Ok(()));
}

/// A configuration reload hands the engine new limits: the counters the
/// shards hold are kept and judged by them from the next decision on, a
/// merchant they add is decided, one they drop is declined as unknown, and
/// a decision under the old limits is still judged by the old ones.
#[tokio::test]
async fn new_limits_judge_the_counters_kept_from_before() {
    let (m, gone, new) = (merchant("M1"), merchant("GONE"), merchant("NEW"));
    let day_volume = |max| MerchantLimits {
        daily_volume_max: Some(minor(max)),
        ..MerchantLimits::default()
    };
    let (shards, clock) = start(
        2,
        per_minute_count(5),
        vec![(m, day_volume(1_000)), (gone, MerchantLimits::default())],
    );
    let old = shards.limits_at_start();
    for same_shard in [true, false] {
        let card = token_where(&shards, &m, same_shard);
        for _ in 0..3 {
            let decided = shards.decide_at(check(card, m, 100), T0, &old).await;
            assert_eq!(decided, Ok(()), "{same_shard}");
        }
    }
    // Three approvals per card and 600 of M1's volume are counted. Lower
    // limits: three a minute per card, 700 a day for M1.
    let lower = Arc::new(Limits {
        card_limits: per_minute_count(3),
        merchants: [(m, day_volume(700)), (new, MerchantLimits::default())]
            .into_iter()
            .collect(),
    });
    for same_shard in [true, false] {
        let card = token_where(&shards, &m, same_shard);
        assert_eq!(
            shards.decide_at(check(card, m, 100), T0, &lower).await,
            Err(DeclineReason::CardCountLimit),
            "{same_shard}: the card's three approvals count against the new limit"
        );
        // The old limits still allow a fourth: a decision started before
        // the reload is judged by them.
        assert_eq!(shards.decide_at(check(card, m, 50), T0, &old).await, Ok(()));
    }
    let other = token(9_999);
    assert_eq!(
        shards.decide_at(check(other, m, 100), T0, &lower).await,
        Err(DeclineReason::MerchantDailyVolume),
        "700 is M1's volume now; 700 counted plus 100 is over"
    );
    assert_eq!(
        shards.decide_at(check(other, new, 100), T0, &lower).await,
        Ok(()),
        "a merchant the new limits add is decided"
    );
    assert_eq!(shards.merchant_day(new).await, Some(minor(100)));
    assert_eq!(
        shards
            .decide_at(check(token(7), gone, 100), T0, &lower)
            .await,
        Err(DeclineReason::UnknownMerchant),
        "a merchant the new limits drop is declined as unknown"
    );
    // Velocity moves on as before: a minute later the cards are free again.
    clock.set(T0 + 61 * SECOND);
    let card = token_where(&shards, &m, true);
    let now = clock.now_ms();
    let later = shards.decide_at(check(card, new, 100), now, &lower).await;
    assert_eq!(later, Ok(()));
    assert_eq!(shards.stats().await.give_back_shortfall_total, 0);
}

#[tokio::test]
async fn amount_limits_per_hour_and_per_day_decline_61() {
    let m = merchant("M1");
    let limits = CardLimits {
        per_hour: WindowLimit {
            count_max: None,
            amount_max: Some(minor(1_000)),
        },
        per_day: WindowLimit {
            count_max: Some(4),
            amount_max: Some(minor(2_500)),
        },
        ..CardLimits::default()
    };
    let (shards, clock) = start(2, limits, vec![(m, MerchantLimits::default())]);
    let card = token(7);
    assert_eq!(shards.decide(check(card, m, 900)).await, Ok(()));
    assert_eq!(
        shards.decide(check(card, m, 101)).await,
        Err(DeclineReason::CardAmountLimit)
    );
    clock.set(T0 + HOUR);
    assert_eq!(shards.decide(check(card, m, 1_000)).await, Ok(()));
    clock.set(T0 + 2 * HOUR);
    assert_eq!(shards.decide(check(card, m, 500)).await, Ok(()));
    // 2 400 today: 101 more passes the day's amount.
    assert_eq!(
        shards.decide(check(card, m, 101)).await,
        Err(DeclineReason::CardAmountLimit)
    );
    assert_eq!(shards.decide(check(card, m, 100)).await, Ok(()));
    // Four approvals today: the fifth passes the day's count.
    clock.set(T0 + 5 * HOUR);
    assert_eq!(
        shards.decide(check(card, m, 1)).await,
        Err(DeclineReason::CardCountLimit)
    );
    // The first approval (T0) leaves the day at T0 + 24 h.
    clock.set(T0 + 24 * HOUR);
    assert_eq!(shards.decide(check(card, m, 1)).await, Ok(()));
}

#[tokio::test]
async fn every_merchant_decline_reason() {
    let strict = merchant("STRICT");
    let limits = MerchantLimits {
        amount_max_per_transaction: Some(minor(500)),
        daily_volume_max: Some(minor(1_000)),
        allowed_mccs: Some(vec![mcc("5411")]),
        tps_max: Some(2),
    };
    let (shards, clock) = start(2, CardLimits::default(), vec![(strict, limits)]);
    let mut n = 0;
    let mut ask = async |merchant_id, mcc_code: Option<&str>, amount| {
        n += 1;
        let mut request = check(token(n), merchant_id, amount);
        request.mcc = mcc_code.map(mcc);
        shards.decide(request).await
    };
    assert_eq!(
        ask(merchant("NOBODY"), None, 1).await,
        Err(DeclineReason::UnknownMerchant)
    );
    assert_eq!(
        ask(strict, None, 501).await,
        Err(DeclineReason::MerchantAmountLimit)
    );
    assert_eq!(
        ask(strict, Some("7995"), 1).await,
        Err(DeclineReason::MccNotAllowed)
    );
    assert_eq!(ask(strict, Some("5411"), 400).await, Ok(()));
    assert_eq!(ask(strict, None, 400).await, Ok(()));
    assert_eq!(
        ask(strict, None, 1).await,
        Err(DeclineReason::MerchantTpsCeiling)
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        ask(strict, None, 201).await,
        Err(DeclineReason::MerchantDailyVolume)
    );
    assert_eq!(ask(strict, None, 200).await, Ok(()));
    // UTC midnight resets the day's volume.
    clock.set(T0 + 12 * HOUR);
    assert_eq!(ask(strict, None, 500).await, Ok(()));
}

#[tokio::test]
async fn a_merchant_decline_releases_the_card_reservation() {
    let m = merchant("M1");
    let merchant_limits = MerchantLimits {
        amount_max_per_transaction: Some(minor(100)),
        ..MerchantLimits::default()
    };
    let (shards, _clock) = start(2, per_minute_count(1), vec![(m, merchant_limits)]);
    // Both paths: card and merchant on one shard (one message) and on two
    // (a reservation held across two shards).
    for same_shard in [true, false] {
        let card = token_where(&shards, &m, same_shard);
        assert_eq!(
            shards.decide(check(card, m, 101)).await,
            Err(DeclineReason::MerchantAmountLimit),
            "same shard: {same_shard}"
        );
        // Had the card kept the declined 101, its one approval a minute
        // would be used up.
        assert_eq!(shards.decide(check(card, m, 100)).await, Ok(()));
        assert_eq!(
            shards.decide(check(card, m, 100)).await,
            Err(DeclineReason::CardCountLimit)
        );
    }
    assert_eq!(shards.stats().await.give_back_shortfall_total, 0);
}

#[tokio::test]
async fn a_give_back_restores_headroom_exactly_once() {
    let m = merchant("M1");
    let card_limits = CardLimits {
        per_day: WindowLimit {
            count_max: Some(2),
            amount_max: Some(minor(1_000)),
        },
        ..CardLimits::default()
    };
    let merchant_limits = MerchantLimits {
        daily_volume_max: Some(minor(1_500)),
        ..MerchantLimits::default()
    };
    let (shards, clock) = start(2, card_limits, vec![(m, merchant_limits)]);
    let card = token(3);
    assert_eq!(shards.decide(check(card, m, 600)).await, Ok(()));
    let first_at = clock.now_ms();
    clock.advance(Duration::from_secs(90));
    assert_eq!(shards.decide(check(card, m, 400)).await, Ok(()));
    assert_eq!(
        shards.decide(check(card, m, 1)).await,
        Err(DeclineReason::CardCountLimit)
    );
    // A reversal of the first approval, an hour later.
    clock.advance(Duration::from_secs(3_600));
    let reversal = GiveBack {
        token: card,
        merchant_id: m,
        amount: minor(600),
        original_at_ms: first_at,
        whole: true,
    };
    shards.give_back(reversal).await;
    // Exactly 600 and one approval came back: 601 is too much, 600 fits.
    assert_eq!(
        shards.decide(check(card, m, 601)).await,
        Err(DeclineReason::CardAmountLimit)
    );
    assert_eq!(shards.decide(check(card, m, 600)).await, Ok(()));
    assert_eq!(
        shards.decide(check(card, m, 1)).await,
        Err(DeclineReason::CardCountLimit)
    );
    // The merchant got its 600 back too: 1 600 approved, 1 000 stands.
    let other = token(4);
    assert_eq!(
        shards.decide(check(other, m, 501)).await,
        Err(DeclineReason::MerchantDailyVolume)
    );
    assert_eq!(shards.decide(check(other, m, 500)).await, Ok(()));
    assert_eq!(shards.stats().await.give_back_shortfall_total, 0);
}

#[tokio::test]
async fn restore_counts_toward_limits() {
    let m = merchant("M1");
    let merchant_limits = MerchantLimits {
        daily_volume_max: Some(minor(1_000)),
        ..MerchantLimits::default()
    };
    let (shards, clock) = start(2, per_minute_count(2), vec![(m, merchant_limits)]);
    clock.set(T0 + 30 * SECOND);
    let card = token(5);
    let restore = |at_ms, amount| Restore {
        token: card,
        merchant_id: m,
        amount: minor(amount),
        at_ms,
    };
    shards.restore(restore(T0 + 20 * SECOND, 300)).await;
    shards.restore(restore(T0 - 2 * HOUR, 300)).await;
    // A day and more ago: it counts nowhere and creates no card.
    shards.restore(restore(T0 - 30 * HOUR, 300)).await;
    // A request behind the restores on the card's shard, declined by the
    // merchant, so the card's state is as the restores left it.
    assert_eq!(
        shards.decide(check(card, merchant("NOBODY"), 1)).await,
        Err(DeclineReason::UnknownMerchant)
    );
    let cards: usize = shards.stats().await.shards.iter().map(|s| s.cards).sum();
    assert_eq!(cards, 1);

    assert_eq!(shards.decide(check(card, m, 100)).await, Ok(()));
    assert_eq!(
        shards.decide(check(card, m, 100)).await,
        Err(DeclineReason::CardCountLimit)
    );
    // The merchant holds 300 + 300 (both today) + 100.
    assert_eq!(
        shards.decide(check(token(9), m, 301)).await,
        Err(DeclineReason::MerchantDailyVolume)
    );
    assert_eq!(shards.decide(check(token(9), m, 300)).await, Ok(()));
}

#[tokio::test]
async fn a_full_mailbox_declines_91_at_once_and_is_counted() {
    let m = merchant("M1");
    let config = ShardConfig {
        shard_count: 1,
        mailbox_capacity: 1,
        merchants: [(m, MerchantLimits::default())].into(),
        ..ShardConfig::default()
    };
    let shards = Shards::start(config, Arc::new(ManualClock::new(T0)));
    // This test runs on the current-thread runtime: the shard runs only when
    // the test task waits, so the first request fills the mailbox and the
    // next two find it full.
    let (first, second, third) = tokio::join!(
        shards.decide(check(token(1), m, 1)),
        shards.decide(check(token(2), m, 1)),
        shards.decide(check(token(3), m, 1)),
    );
    assert_eq!(first, Ok(()));
    assert_eq!(second, Err(DeclineReason::Overloaded));
    assert_eq!(third, Err(DeclineReason::Overloaded));
    let stats = shards.stats().await;
    assert_eq!(stats.shed_total, 2);
    assert_eq!(stats.shards[0].mailbox_depth, 0);
    // A give-back is never shed: it waits for room.
    let (approved, ()) = tokio::join!(
        shards.decide(check(token(4), m, 1)),
        shards.give_back(GiveBack {
            token: token(1),
            merchant_id: m,
            amount: minor(1),
            original_at_ms: T0,
            whole: true,
        }),
    );
    assert_eq!(approved, Ok(()));
    let stats = shards.stats().await;
    assert_eq!(stats.shed_total, 2);
    assert_eq!(stats.undelivered_total, 0);
    assert_eq!(stats.give_back_shortfall_total, 0);
}

#[tokio::test]
async fn a_dropped_request_leaves_no_reservation() {
    let m = merchant("M1");
    let merchant_limits = MerchantLimits {
        daily_volume_max: Some(minor(100)),
        ..MerchantLimits::default()
    };
    let (shards, _clock) = start(2, per_minute_count(1), vec![(m, merchant_limits)]);
    let give_back = |card| GiveBack {
        token: card,
        merchant_id: m,
        amount: minor(100),
        original_at_ms: T0,
        whole: true,
    };
    for same_shard in [true, false] {
        let card = token_where(&shards, &m, same_shard);
        // Poll the request once, twice, three times, letting the shards run
        // between polls, and drop it: whatever step it reached, what it
        // reserved must be undone. A request that finished in time is an
        // approval its caller owns, and gives back as a reversal would.
        for polls in 1..=3 {
            let limits = shards.limits_at_start();
            let mut request = Box::pin(shards.decide_at(check(card, m, 100), T0, &limits));
            for _ in 0..polls {
                let poll = std::future::poll_fn(|cx| Poll::Ready(request.as_mut().poll(cx))).await;
                if let Poll::Ready(result) = poll {
                    assert_eq!(result, Ok(()), "{same_shard} {polls}");
                    shards.give_back(give_back(card)).await;
                    break;
                }
                tokio::task::yield_now().await;
            }
            drop(request);
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        // One approval a minute for the card, 100 a day for the merchant:
        // both are still free.
        let limits = shards.limits_at_start();
        let approved = shards.decide_at(check(card, m, 100), T0, &limits).await;
        assert_eq!(approved, Ok(()), "{same_shard}");
        shards.give_back(give_back(card)).await;
    }
    assert_eq!(shards.stats().await.give_back_shortfall_total, 0);
}

#[tokio::test]
async fn idle_cards_are_evicted_and_come_back_empty() {
    let m = merchant("M1");
    let (shards, clock) = start(1, per_minute_count(1), vec![(m, MerchantLimits::default())]);
    for n in 0..100 {
        assert_eq!(shards.decide(check(token(n), m, 10)).await, Ok(()));
    }
    assert_eq!(shards.stats().await.shards[0].cards, 100);
    // Within the day nothing is idle, however much traffic passes.
    clock.set(T0 + 23 * HOUR);
    for _ in 0..100 {
        let _ = shards.decide(check(token(1_000), m, 10)).await;
    }
    assert_eq!(shards.stats().await.shards[0].cards, 101);
    // A day on, the sweep drops them as other traffic passes.
    clock.set(T0 + 24 * HOUR);
    for _ in 0..100 {
        let _ = shards.decide(check(token(1_000), m, 10)).await;
    }
    assert_eq!(shards.stats().await.shards[0].cards, 1);
    // An evicted card decides as a new one.
    assert_eq!(shards.decide(check(token(0), m, 10)).await, Ok(()));
    assert_eq!(
        shards.decide(check(token(0), m, 10)).await,
        Err(DeclineReason::CardCountLimit)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_pass_a_limit() {
    let m = merchant("M1");
    let limits = CardLimits {
        per_minute: WindowLimit {
            count_max: Some(10),
            amount_max: None,
        },
        ..CardLimits::default()
    };
    let (shards, _clock) = start(2, limits, vec![(m, MerchantLimits::default())]);
    let card = token_where(&shards, &m, false);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let shards = shards.clone();
            tokio::spawn(async move { shards.decide(check(card, m, 1)).await })
        })
        .collect();
    let mut approved = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => approved += 1,
            Err(reason) => assert!(
                matches!(
                    reason,
                    DeclineReason::CardCountLimit | DeclineReason::Overloaded
                ),
                "{reason:?}"
            ),
        }
    }
    assert_eq!(approved, 10);
}
