//! Helpers for the tests against a real PostgreSQL server: finding it, a
//! fresh database per test, raw connections, and a TCP proxy that can stop
//! forwarding, as a network that drops a server would.
//!
//! The server comes from `DATABASE_URL`, which `scripts/test-env` sets. When
//! it is not set these tests cannot run: with `CI` or
//! `SWITCH_REQUIRE_DATABASES` set they fail, saying so; otherwise each one
//! returns at once after one line on stderr, so `cargo test` still works on
//! a machine without PostgreSQL.

use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, Row};
use storage::{JournalConfig, PostgresConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

static SKIP_NOTICE: Once = Once::new();

fn set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.is_empty() && value != "0" && value != "false")
}

/// The server's URL, or `None` (after saying so) when these tests are to be
/// skipped. Panics when they are required.
pub fn database_url() -> Option<String> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.is_empty()
    {
        return Some(url);
    }
    if set("CI") || set("SWITCH_REQUIRE_DATABASES") {
        panic!(
            "DATABASE_URL is not set, and CI or SWITCH_REQUIRE_DATABASES requires the \
             PostgreSQL tests: run them under scripts/test-env, for example \
             `scripts/test-env cargo test -p storage`"
        );
    }
    SKIP_NOTICE.call_once(|| {
        // Straight to the process's stderr: libtest captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: DATABASE_URL not set (run under scripts/test-env)"
        );
    });
    None
}

/// `url` with its database name replaced by `name`, query kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |at| at + 3);
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// `url` pointing at `127.0.0.1:port` instead of its own host and port.
pub fn with_address(url: &str, port: u16) -> String {
    let authority = url.find("://").map_or(0, |at| at + 3);
    let rest = &url[authority..];
    let host_start = rest.find('@').map_or(0, |at| at + 1);
    let host_end = rest[host_start..]
        .find(['/', '?'])
        .map_or(rest.len(), |end| host_start + end);
    format!(
        "{}{}127.0.0.1:{port}{}",
        &url[..authority],
        &rest[..host_start],
        &rest[host_end..]
    )
}

static NEXT_DATABASE: AtomicU64 = AtomicU64::new(1);

/// A database of its own for one test, made from `DATABASE_URL`.
pub struct TestDatabase {
    /// The URL of this test's database.
    pub url: String,
    pub name: String,
    admin_url: String,
}

impl TestDatabase {
    /// A new, empty database, or `None` when the tests are skipped.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = database_url()?;
        let name = format!(
            "switch_test_{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to DATABASE_URL");
        // Two statements: one query string would run them as one
        // transaction, where neither may run.
        for statement in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin.execute(sqlx::raw_sql(&statement)).await.unwrap();
        }
        admin.close().await.unwrap();
        Some(TestDatabase {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        })
    }

    /// A connection of the test's own, as another process would have.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// A connection to the database `DATABASE_URL` names, for operations
    /// on this one (ALTER DATABASE, terminating its sessions).
    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.admin_url).await.unwrap()
    }

    /// The server's address from `DATABASE_URL`.
    pub fn server(&self) -> (String, u16) {
        let options = PgConnectOptions::from_str(&self.url).unwrap();
        (options.get_host().to_owned(), options.get_port())
    }

    /// Terminates every session on this database from `application_name`;
    /// returns how many.
    pub async fn terminate(&self, application_name: &str) -> i64 {
        let mut admin = self.admin().await;
        let killed: i64 = sqlx::query(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = $2",
        )
        .bind(&self.name)
        .bind(application_name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get(0);
        admin.close().await.unwrap();
        killed
    }

    /// Drops the database. A test that fails leaves its database behind for
    /// a look; the cluster of scripts/test-env goes away with it anyway.
    pub async fn drop(self) {
        let mut admin = self.admin().await;
        admin
            .execute(sqlx::raw_sql(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .await
            .unwrap();
        admin.close().await.unwrap();
    }
}

/// Settings for tests: small enough to fail fast, large enough for a busy
/// 2-core machine.
pub fn config(writer_connections: usize) -> PostgresConfig {
    PostgresConfig {
        journal: JournalConfig {
            queue_capacity: 4096,
            batch_rows_max: 1024,
            busy_timeout_ms: 5000,
        },
        writer_connections,
        read_connections: 4,
        connect_timeout_ms: 5000,
        statement_timeout_ms: 10_000,
    }
}

/// How many rows of `table` hold each of `ids` in `column`, summed.
pub async fn count_ids(
    conn: &mut PgConnection,
    table: &str,
    column: &str,
    ids: &[protocol::domain::TransactionId],
) -> i64 {
    let ids: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
    sqlx::query(&format!(
        "SELECT count(*) FROM {table} WHERE {column} = ANY($1::bytea[])"
    ))
    .bind(ids)
    .fetch_one(conn)
    .await
    .unwrap()
    .get(0)
}

/// Rows in `table`.
pub async fn count_rows(conn: &mut PgConnection, table: &str) -> i64 {
    sqlx::query(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(conn)
        .await
        .unwrap()
        .get(0)
}

/// A TCP proxy in front of the server. `freeze` makes it stop forwarding
/// in both directions while keeping every socket open, and accept new
/// connections without connecting them anywhere: to a client the server has
/// gone silent, as behind a network partition, with no reset to notice.
pub struct Proxy {
    pub port: u16,
    frozen: Arc<AtomicBool>,
    turns: Arc<Turns>,
    task: tokio::task::JoinHandle<()>,
}

/// Round trips through a [`Proxy`]: each time a client sends after the
/// server last spoke is one.
#[derive(Default)]
struct Turns {
    client_spoke_last: AtomicBool,
    count: AtomicU64,
}

impl Proxy {
    pub async fn start(upstream: (String, u16)) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let turns = Arc::new(Turns::default());
        let task = tokio::spawn({
            let frozen = Arc::clone(&frozen);
            let turns = Arc::clone(&turns);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let frozen = Arc::clone(&frozen);
                    let turns = Arc::clone(&turns);
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        while frozen.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::spawn(pump(
                            client_read,
                            server_write,
                            Arc::clone(&frozen),
                            (Arc::clone(&turns), true),
                        ));
                        tokio::spawn(pump(server_read, client_write, frozen, (turns, false)));
                    });
                }
            }
        });
        Proxy {
            port,
            frozen,
            turns,
            task,
        }
    }

    /// Round trips so far, over every connection through the proxy: the
    /// times a client sent after the server had last sent.
    pub fn round_trips(&self) -> u64 {
        self.turns.count.load(Ordering::SeqCst)
    }

    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::Relaxed);
    }

    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, holding what it read while frozen, and counts
/// `turns` (`true`: `from` is the client).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    (turns, from_client): (Arc<Turns>, bool),
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        // Set before the bytes go on, so the server's answer to them
        // cannot be seen first.
        if turns.client_spoke_last.swap(from_client, Ordering::SeqCst) != from_client && from_client
        {
            turns.count.fetch_add(1, Ordering::SeqCst);
        }
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
