//! The fleet's velocity script against a real Redis, with time chosen by
//! the test: counts and amounts per window, a window sliding past its
//! oldest bucket, fields pruned once they leave every window, give-back
//! never below zero, and one Redis key per card.
//!
//! Needs `scripts/test-env` (REDIS_URL); skipped with one line otherwise,
//! failed under CI or SWITCH_REQUIRE_DATABASES.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use actors::{CardLimits, WindowLimit};
use protocol::Amount;
use protocol::domain::{DeclineReason, Token};
use storage::memory::MemoryBackend;
use storage::{AnyStore, Journal, JournalConfig};
use switch::clock::Stopwatch;
use switch::fleet::{Approval, Claim, Fleet, FleetStore, OnRedisDown, Velocity};

fn amount(minor: u64) -> Amount {
    Amount::from_minor(minor).unwrap()
}

/// A fleet on a Redis database of these tests' own, with a generation of
/// velocity built (from an empty journal: these tests count by hand).
async fn fleet(redis: &str) -> Fleet {
    let redis = format!("{}/6", redis.trim_end_matches('/'));
    let fleet = unbuilt_fleet(&redis);
    let journal = AnyStore::new(MemoryBackend::new());
    let waited = Stopwatch::start();
    // Another test may be building it this instant; it takes milliseconds.
    while fleet.keep_built(&journal, 0).await.unwrap() == 0 {
        assert!(waited.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    fleet
}

/// A connection to the tests' Redis database, and the generation of
/// velocity built there ([`fleet`]).
async fn built_generation(redis: &str) -> (redis::aio::MultiplexedConnection, u64) {
    let client = redis::Client::open(format!("{}/6", redis.trim_end_matches('/'))).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let generation: u64 = redis::cmd("GET")
        .arg("v:built")
        .query_async(&mut connection)
        .await
        .unwrap();
    (connection, generation)
}

fn unbuilt_fleet(redis: &str) -> Fleet {
    let limits = CardLimits {
        per_minute: WindowLimit {
            count_max: Some(3),
            amount_max: Some(amount(10_000)),
        },
        per_hour: WindowLimit {
            count_max: Some(5),
            amount_max: None,
        },
        per_day: WindowLimit::default(),
    };
    Fleet::new(redis, limits, 2_000, OnRedisDown::Decline, 60_000).unwrap()
}

/// A token no other run has used: Redis keeps state across tests.
fn fresh_token(n: u8) -> Token {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut bytes = [n; 16];
    bytes[..16].copy_from_slice(&nanos.to_be_bytes());
    bytes[0] = n;
    Token::from_bytes(bytes)
}

#[tokio::test]
async fn windows_count_slide_prune_and_give_back_in_one_hash_per_card() {
    let Some((_, redis)) = common::database_and_redis_urls() else {
        return;
    };
    let fleet = fleet(&redis).await;
    let (mut connection, generation) = built_generation(&redis).await;

    // 12:00:05 on some day, in ms: the minute window is 6 buckets of 10 s.
    let t0: u64 = 1_795_000_000_000 - 1_795_000_000_000 % 7_200_000 + 43_205_000;
    let card = fresh_token(1);
    let key = format!("v:{{{card}}}:{generation}");

    // Three approvals fit the minute; the fourth is declined for count
    // without being counted.
    for n in 0..3 {
        assert_eq!(
            fleet
                .reserve(&card, amount(100), t0 + n * 1_000)
                .await
                .unwrap(),
            Ok(()),
            "approval {n}"
        );
    }
    assert_eq!(
        fleet.reserve(&card, amount(100), t0 + 3_000).await.unwrap(),
        Err(DeclineReason::CardCountLimit)
    );
    // One Redis key holds the card: two fields per window, all in the
    // current buckets.
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(fields.len(), 6, "{fields:?}");
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl_ms > 86_400_000, "kept for the day window: {ttl_ms}");

    // 60 s later the first bucket has left the minute: room again, but the
    // hour (5) still counts all three.
    assert_eq!(
        fleet
            .reserve(&card, amount(100), t0 + 60_000)
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        fleet
            .reserve(&card, amount(100), t0 + 61_000)
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        fleet
            .reserve(&card, amount(100), t0 + 62_000)
            .await
            .unwrap(),
        Err(DeclineReason::CardCountLimit),
        "the hour holds 5"
    );
    // The minute bucket of t0 left the minute window and was pruned; the
    // hour and day still hold their buckets.
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    let minute_buckets: std::collections::BTreeSet<&str> = fields
        .iter()
        .filter(|f| f.starts_with("m:"))
        .map(|f| f.rsplit_once(':').unwrap().0)
        .collect();
    assert_eq!(minute_buckets.len(), 1, "{fields:?}");

    // A give-back of an approval in the current minute frees the hour by
    // one; giving back twice more than was counted never goes below zero.
    fleet
        .give_back(&card, amount(100), true, t0 + 61_000)
        .await
        .unwrap();
    assert_eq!(
        fleet
            .reserve(&card, amount(100), t0 + 63_000)
            .await
            .unwrap(),
        Ok(())
    );
    for _ in 0..3 {
        fleet
            .give_back(&card, amount(1_000_000), true, t0 + 63_000)
            .await
            .unwrap();
    }
    let held: Vec<Option<i64>> = redis::cmd("HMGET")
        .arg(&key)
        .arg(format!("m:{}:c", (t0 + 63_000) / 10_000))
        .arg(format!("m:{}:a", (t0 + 63_000) / 10_000))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(held, vec![Some(0), Some(0)]);

    // A partial reversal takes its amount off and leaves the approval
    // counted once, as replay counts it after a restart.
    let partly = fresh_token(3);
    assert_eq!(
        fleet.reserve(&partly, amount(100), t0).await.unwrap(),
        Ok(())
    );
    fleet
        .give_back(&partly, amount(30), false, t0)
        .await
        .unwrap();
    let held: Vec<Option<i64>> = redis::cmd("HMGET")
        .arg(format!("v:{{{partly}}}:{generation}"))
        .arg(format!("m:{}:c", t0 / 10_000))
        .arg(format!("m:{}:a", t0 / 10_000))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(held, vec![Some(1), Some(70)]);

    // The amount limit of the minute: 10 000 minor units.
    let rich = fresh_token(2);
    assert_eq!(
        fleet.reserve(&rich, amount(9_000), t0).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        fleet
            .reserve(&rich, amount(1_001), t0 + 1_000)
            .await
            .unwrap(),
        Err(DeclineReason::CardAmountLimit)
    );
    assert_eq!(
        fleet
            .reserve(&rich, amount(1_000), t0 + 2_000)
            .await
            .unwrap(),
        Ok(())
    );
}

/// A node whose clock runs two hours ahead counts its approval in its own
/// (future) buckets but must not prune the buckets the other nodes still
/// count: pruning follows Redis's own clock, not the caller's.
#[tokio::test]
async fn a_node_whose_clock_runs_ahead_does_not_prune_what_others_still_count() {
    let Some((_, redis)) = common::database_and_redis_urls() else {
        return;
    };
    let fleet = fleet(&redis).await;
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let ahead_ms = now_ms + 2 * 60 * 60 * 1000;
    let card = fresh_token(2);

    for n in 0..2 {
        assert_eq!(
            fleet.reserve(&card, amount(100), now_ms).await.unwrap(),
            Ok(()),
            "approval {n} on time"
        );
    }
    assert_eq!(
        fleet.reserve(&card, amount(100), ahead_ms).await.unwrap(),
        Ok(()),
        "the node ahead counts in its own buckets"
    );
    // The minute still holds the two approvals made on time: one more fits,
    // the next is over the minute's count of 3.
    assert_eq!(
        fleet.reserve(&card, amount(100), now_ms).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        fleet.reserve(&card, amount(100), now_ms).await.unwrap(),
        Err(DeclineReason::CardCountLimit),
        "the buckets counted on time were pruned by the node ahead"
    );
}

/// The claim of a request's keys, in Redis: a fresh claim, a copy told it
/// is pending, an answer read back; a claim that passed its pending time,
/// or was given up, is taken over as such (its winner asks the journal, the
/// lapsed node may have recorded an answer it could not share), and so is
/// a claim on absent keys while Redis has not held the fleet's claims for a
/// whole window (after a flush, with approvals in the journal); a claim's
/// pending state can be looked at without claiming it.
#[tokio::test]
async fn a_claim_that_lapsed_is_taken_over_not_claimed_afresh() {
    let Some((_, redis)) = common::database_and_redis_urls() else {
        return;
    };
    // A database of this test's own: it flushes `d:since`.
    let redis = format!("{}/8", redis.trim_end_matches('/'));
    let fleet = unbuilt_fleet(&redis);
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let flush = async |connection: &mut redis::aio::MultiplexedConnection| {
        let _: () = redis::cmd("DEL")
            .arg("d:since")
            .query_async(connection)
            .await
            .unwrap();
    };
    let key = |name: &str| format!("d:{{TEST{}}}:{name}", fresh_token(9));
    let now_ms = 1_795_000_000_000;
    let memory = MemoryBackend::new();
    let journal = AnyStore::new(memory.clone());

    // Before the node has read `d:since`, no claim vouches.
    assert_eq!(
        fleet.claim(&key("unknown"), 10_000).await.unwrap(),
        Claim::TakenOver
    );
    // An empty journal: nothing a claim could miss, so claims vouch at once.
    flush(&mut connection).await;
    fleet.keep_built(&journal, now_ms).await.unwrap();

    let answered = key("answered");
    assert_eq!(fleet.claim(&answered, 10_000).await.unwrap(), Claim::Mine);
    assert!(fleet.reversing(&answered).await.unwrap());
    assert_eq!(
        fleet.claim(&answered, 10_000).await.unwrap(),
        Claim::Pending
    );
    fleet
        .answer(&answered, "tx_1|approved", 60_000)
        .await
        .unwrap();
    assert!(!fleet.reversing(&answered).await.unwrap());
    assert_eq!(
        fleet.claim(&answered, 10_000).await.unwrap(),
        Claim::Answered("tx_1|approved".to_owned())
    );
    // Releasing an answered key leaves the answer.
    fleet.release(&answered).await.unwrap();
    assert_eq!(
        fleet.claim(&answered, 10_000).await.unwrap(),
        Claim::Answered("tx_1|approved".to_owned())
    );

    // A claim pending for 0 ms has passed its deadline at once (by Redis's
    // clock): the next claim takes it over, and is then pending itself.
    let lapsed = key("lapsed");
    assert_eq!(fleet.claim(&lapsed, 0).await.unwrap(), Claim::Mine);
    assert_eq!(
        fleet.claim(&lapsed, 10_000).await.unwrap(),
        Claim::TakenOver
    );
    assert_eq!(fleet.claim(&lapsed, 10_000).await.unwrap(), Claim::Pending);

    // Given up: taken over too, and kept for the window, not for ever.
    let released = key("released");
    assert_eq!(fleet.claim(&released, 10_000).await.unwrap(), Claim::Mine);
    fleet.release(&released).await.unwrap();
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&released)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl_ms > 10_000 && ttl_ms <= 60_000, "{ttl_ms}");
    assert_eq!(
        fleet.claim(&released, 10_000).await.unwrap(),
        Claim::TakenOver
    );

    // Redis loses its keys while the journal holds an approval of the
    // window: absent keys are not vouched for until a window has passed.
    let writer = Journal::start(memory, &JournalConfig::default());
    writer
        .append(common::journal::approval_of_another_card(now_ms, 1))
        .await
        .unwrap();
    flush(&mut connection).await;
    fleet.keep_built(&journal, now_ms).await.unwrap();
    assert_eq!(
        fleet.claim(&key("after-flush"), 10_000).await.unwrap(),
        Claim::TakenOver
    );
    writer.close().await;
}

/// The claim and the card's check-and-count are one script: an approval is
/// counted only for the claim's holder (won afresh or taken over), so a
/// copy whose keys another node holds, pending or answered, leaves the
/// card's velocity untouched; a request without keys is counted alone. A
/// reversal that finds no claim marks the keys, and the original arriving
/// after it reads `reversed`, claims nothing and counts nothing.
#[tokio::test]
async fn only_the_claims_holder_counts_the_approval() {
    let Some((_, redis)) = common::database_and_redis_urls() else {
        return;
    };
    let fleet = fleet(&redis).await;
    let (mut connection, generation) = built_generation(&redis).await;
    let now_ms = 1_795_000_000_000;
    let card = fresh_token(11);
    let counted = async |connection: &mut redis::aio::MultiplexedConnection| -> u64 {
        let fields: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(format!("v:{{{card}}}:{generation}"))
            .query_async(connection)
            .await
            .unwrap();
        fields
            .iter()
            .filter(|(field, _)| field.starts_with("m:") && field.ends_with(":c"))
            .map(|(_, count)| *count)
            .sum()
    };
    let approval = Some(Approval {
        token: card,
        amount: amount(100),
        at_ms: now_ms,
    });
    let key = format!("d:{{TEST{}}}:settle", fresh_token(12));

    let first = fleet.settle(Some(&key), 10_000, approval).await.unwrap();
    assert!(first.claim.is_this_nodes(), "{first:?}");
    assert_eq!(first.velocity, Velocity::Counted);
    assert_eq!(counted(&mut connection).await, 1);

    // A copy while the first is pending, then once it is answered.
    let copy = fleet.settle(Some(&key), 10_000, approval).await.unwrap();
    assert_eq!(
        (copy.claim, copy.velocity),
        (Claim::Pending, Velocity::NotAsked)
    );
    fleet.answer(&key, "tx_1|approved", 60_000).await.unwrap();
    let copy = fleet.settle(Some(&key), 10_000, approval).await.unwrap();
    assert_eq!(copy.velocity, Velocity::NotAsked);
    assert_eq!(copy.claim, Claim::Answered("tx_1|approved".to_owned()));
    assert_eq!(counted(&mut connection).await, 1, "copies count nothing");

    // A decline claims without counting; no keys: counted alone.
    let declined = format!("d:{{TEST{}}}:declined", fresh_token(13));
    let settled = fleet.settle(Some(&declined), 10_000, None).await.unwrap();
    assert_eq!(settled.velocity, Velocity::NotAsked);
    let keyless = fleet.settle(None, 10_000, approval).await.unwrap();
    assert_eq!(
        (keyless.claim, keyless.velocity),
        (Claim::Mine, Velocity::Counted)
    );
    assert_eq!(counted(&mut connection).await, 2);

    // A reversal finds no claim, or one that lapsed: the late original is
    // not decided; one pending is waited for, and left as it is.
    let lapsed = format!("d:{{TEST{}}}:lapsed", fresh_token(15));
    assert_eq!(fleet.claim(&lapsed, 0).await.unwrap(), Claim::Mine);
    assert!(!fleet.reversing(&lapsed).await.unwrap());
    assert_eq!(fleet.claim(&lapsed, 10_000).await.unwrap(), Claim::Reversed);
    let pending = format!("d:{{TEST{}}}:pending", fresh_token(16));
    assert_eq!(fleet.claim(&pending, 10_000).await.unwrap(), Claim::Mine);
    assert!(fleet.reversing(&pending).await.unwrap());
    assert_eq!(fleet.claim(&pending, 10_000).await.unwrap(), Claim::Pending);
    let late = format!("d:{{TEST{}}}:late", fresh_token(14));
    assert!(!fleet.reversing(&late).await.unwrap());
    let original = fleet.settle(Some(&late), 10_000, approval).await.unwrap();
    assert_eq!(
        (original.claim, original.velocity),
        (Claim::Reversed, Velocity::NotAsked)
    );
    assert_eq!(counted(&mut connection).await, 2);
}
