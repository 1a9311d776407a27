//! The harness of Herald's black-box suite.
//!
//! `scripts/test` starts a real Postgres and a real Redis on loopback and exports their URLs
//! as `HERALD_TEST_DATABASE_URL` and `HERALD_TEST_REDIS_URL`. Every test gets its own Postgres
//! database (a copy of a migrated template) and its own Redis key prefix, so the suite runs in
//! parallel; providers are real HTTP servers on loopback speaking their wire formats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod browser;
pub mod cluster;
pub mod engine;
pub mod otlp;
pub mod process;
pub mod providers;
pub mod proxy;
pub mod standard_webhooks;
pub mod views;

use std::{future::Future, time::Duration};

use rand::RngExt;
use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor, PgConnection, PgPool};

pub use app::{Tenant, TestApp};

/// The admin URL of the test Postgres (its `postgres` database).
pub fn admin_database_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .expect("HERALD_TEST_DATABASE_URL is not set: run the suite with scripts/test, which starts Postgres and Redis")
}

pub fn redis_url() -> String {
    std::env::var("HERALD_TEST_REDIS_URL")
        .expect("HERALD_TEST_REDIS_URL is not set: run the suite with scripts/test, which starts Postgres and Redis")
}

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("a database URL ends with /<database>");
    format!("{base}/{db}")
}

/// A random lowercase name with a prefix, for databases and Redis prefixes.
pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}{n:016x}")
}

/// A fresh database with every migration applied; returns its URL.
///
/// The first test of a run migrates a template database (under an advisory lock, since the
/// tests run in many processes); every test then copies it, which takes milliseconds.
pub async fn fresh_database() -> String {
    let admin = admin_database_url();
    let mut hasher = Sha256::new();
    for m in herald_core::db::MIGRATOR.iter() {
        hasher.update(m.version.to_le_bytes());
        hasher.update(&*m.checksum);
    }
    let digest = hasher.finalize();
    let template = format!(
        "herald_tpl_{}",
        digest
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );

    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("connect to the test Postgres");
    conn.execute("SELECT pg_advisory_lock(7242001)")
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    if !exists {
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {template}")))
            .await
            .unwrap();
        let pool = PgPool::connect(&with_database(&admin, &template))
            .await
            .unwrap();
        herald_core::db::migrate(&pool)
            .await
            .expect("migrate the template database");
        pool.close().await;
    }
    conn.execute("SELECT pg_advisory_unlock(7242001)")
        .await
        .unwrap();

    let name = unique("t_");
    // Copying needs the template idle; another process may be closing its connection.
    let conn = tokio::sync::Mutex::new(conn);
    eventually_ok(
        Duration::from_secs(10),
        &format!("the template {template} is idle to copy it"),
        || async {
            let sql = format!("CREATE DATABASE {name} TEMPLATE {template}");
            match conn.lock().await.execute(sqlx::AssertSqlSafe(sql)).await {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("being accessed by other users") => {
                    Err(e.to_string())
                }
                Err(e) => panic!("create test database: {e}"),
            }
        },
    )
    .await;
    conn.into_inner().close().await.ok();
    with_database(&admin, &name)
}

/// Every Redis key matching `pattern`, by SCAN (never KEYS, which blocks the server).
pub async fn scan_keys<C>(redis: &C, pattern: &str) -> Vec<String>
where
    C: redis::aio::ConnectionLike + Clone,
{
    let mut conn = redis.clone();
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Milliseconds from `a` to `b`.
pub fn ms_between(a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>) -> i64 {
    (b - a).num_milliseconds()
}

/// Polls `check` until it yields `Some`, or panics with `what` after `within`.
///
/// When the failure should say what was seen instead, use [`eventually_ok`].
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_ok(within, what, || {
        let observed = check();
        async move { observed.await.ok_or_else(String::new) }
    })
    .await
}

/// Polls `check` until it yields `Ok`, or panics after `within` with `what` and the last
/// `Err`, which describes the last observation, so a timeout says how far things got.
pub async fn eventually_ok<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut poll_pause = Duration::from_millis(5);
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        if tokio::time::Instant::now() >= deadline {
            if last.is_empty() {
                panic!("timed out after {within:?} waiting for: {what}");
            }
            panic!("timed out after {within:?} waiting for: {what}; last seen: {last}");
        }
        tokio::time::sleep(poll_pause).await;
        poll_pause = (poll_pause * 2).min(Duration::from_millis(100));
    }
}

/// The value of the Prometheus sample named `name` (in the text format) whose labels include
/// every one of `labels` (each written `key="value"`).
pub fn prometheus_sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
