//! Decisions per second through `actors::Shards::decide`, beside a bare tokio
//! mpsc + oneshot round trip to tasks that do nothing, in one run on one
//! machine: the ratio is what deciding costs over the messaging it rides on.
//!
//! Both sides use the same number of tasks (one per core), the same bounded
//! mailbox capacity, the same keys and the same number of asks in flight.
//! Asks pick one of 2^18 random tokens (a card seen again now and then, as in
//! traffic; a second variant uses 2^10, all in cache) and one merchant
//! without limits, and cards have no limits, so
//! every ask is approved and does all of its work: the card's windows, the
//! merchant's counters, and a second hop when the merchant lives on another
//! shard than the card.
//!
//! Run: `cargo bench -p benches --bench actors`.

// A benchmark that cannot set itself up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// Criterion's `iter_custom` is handed the wall time of each run of asks,
// which only a monotonic clock of this process can measure.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::{CardCheck, CardLimits, MerchantLimits, ShardConfig, Shards, SystemClock};
use benches::{splitmix, token};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use protocol::Amount;
use protocol::domain::{DeclineReason, Token, pad};
use protocol::ids::MerchantId;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

/// Cards asked about: 2^18 cards take about 60 MB, far past the caches, as
/// a real card base would.
const TOKENS: u64 = 1 << 18;
/// A card base that fits in cache, to show the decision's cost without the
/// memory misses that dominate it at scale.
const HOT_TOKENS: u64 = 1 << 10;
const MAILBOX_CAPACITY: usize = 1024;

/// The `i`th ask of client `client`: a random token of the first `pool`.
fn ask(client: u64, i: u64, merchant_id: MerchantId, pool: u64) -> CardCheck {
    CardCheck {
        token: token(splitmix((client << 40) | i) % pool),
        merchant_id,
        mcc: None,
        amount: Amount::from_minor(1_000).unwrap(),
    }
}

/// A key and a reply channel: what a decision message carries at least.
type EchoMessage = (Token, oneshot::Sender<Result<(), DeclineReason>>);

/// The baseline: tasks that answer every message at once, reached the way
/// `Shards` reaches its shards (by the token, `try_send`, a oneshot back).
#[derive(Clone)]
struct Echo {
    mailboxes: Arc<Vec<mpsc::Sender<EchoMessage>>>,
}

impl Echo {
    fn start(task_count: usize) -> Echo {
        let mailboxes = (0..task_count)
            .map(|_| {
                let (sender, mut receiver) = mpsc::channel::<EchoMessage>(MAILBOX_CAPACITY);
                tokio::spawn(async move {
                    let mut batch = Vec::with_capacity(64);
                    while receiver.recv_many(&mut batch, 64).await > 0 {
                        for (_, reply) in batch.drain(..) {
                            let _ = reply.send(Ok(()));
                        }
                    }
                });
                sender
            })
            .collect();
        Echo {
            mailboxes: Arc::new(mailboxes),
        }
    }

    async fn ask(&self, check: CardCheck) -> Result<(), DeclineReason> {
        let shard = usize::from(check.token.as_bytes()[0]) % self.mailboxes.len();
        let (reply, answer) = oneshot::channel();
        self.mailboxes[shard]
            .try_send((check.token, reply))
            .map_err(|_| DeclineReason::Overloaded)?;
        answer.await.unwrap_or(Err(DeclineReason::Overloaded))
    }
}

/// Runs `asks` asks split over `in_flight` client tasks, each waiting for
/// its answer before its next ask, and times them.
fn run<F, Fut>(runtime: &Runtime, asks: u64, in_flight: u64, ask_one: F) -> Duration
where
    F: Fn(u64, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), DeclineReason>> + Send,
{
    runtime.block_on(async move {
        let started = Instant::now();
        let clients: Vec<_> = (0..in_flight)
            .map(|client| {
                let ask_one = ask_one.clone();
                let share = asks / in_flight + u64::from(client < asks % in_flight);
                tokio::spawn(async move {
                    for i in 0..share {
                        assert_eq!(ask_one(client, i).await, Ok(()));
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
        started.elapsed()
    })
}

fn decisions(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let merchant_id: MerchantId = pad("BENCH").unwrap();
    let shards = runtime.block_on(async {
        Shards::start(
            ShardConfig {
                shard_count: 0,
                mailbox_capacity: MAILBOX_CAPACITY,
                card_limits: CardLimits::default(),
                merchants: HashMap::from([(merchant_id, MerchantLimits::default())]),
            },
            Arc::new(SystemClock),
        )
    });
    let echo = runtime.block_on(async { Echo::start(shards.shard_count()) });

    for in_flight in [1, 64] {
        let mut group = c.benchmark_group(format!("asks, {in_flight} in flight"));
        group.throughput(Throughput::Elements(1));
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(4));
        group.bench_function("mpsc+oneshot echo", |b| {
            b.iter_custom(|asks| {
                let echo = echo.clone();
                run(&runtime, asks, in_flight, move |client, i| {
                    let echo = echo.clone();
                    async move { echo.ask(ask(client, i, merchant_id, TOKENS)).await }
                })
            })
        });
        for (name, pool) in [
            ("Shards::decide", TOKENS),
            ("Shards::decide, cards in cache", HOT_TOKENS),
        ] {
            group.bench_function(name, |b| {
                b.iter_custom(|asks| {
                    let shards = shards.clone();
                    run(&runtime, asks, in_flight, move |client, i| {
                        let shards = shards.clone();
                        async move { shards.decide(ask(client, i, merchant_id, pool)).await }
                    })
                })
            });
        }
        group.finish();
    }

    let stats = runtime.block_on(shards.stats());
    assert_eq!(stats.shed_total, 0, "{stats:?}");
    println!(
        "shards: {}, cards held: {}",
        stats.shards.len(),
        stats.shards.iter().map(|s| s.cards).sum::<usize>()
    );
}

criterion_group!(benches, decisions);
criterion_main!(benches);
