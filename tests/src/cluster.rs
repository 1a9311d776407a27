//! The loopback Redis Cluster `scripts/test` starts (three masters, a replica each) and its
//! primary watched by Redis Sentinel, for the cluster suite: which master serves a key, the
//! keys each master holds, and killing a master or the primary (then starting it again, as the
//! replica it comes back as).

use std::time::Duration;

use herald_core::Config;
use redis::aio::MultiplexedConnection;

use crate::{app::test_config, eventually};

/// `redis+cluster://127.0.0.1:port,...`, set by `scripts/test`.
pub fn cluster_url() -> String {
    std::env::var("HERALD_TEST_REDIS_CLUSTER_URL").expect(
        "HERALD_TEST_REDIS_CLUSTER_URL is not set: run the suite with scripts/test, which starts a Redis Cluster",
    )
}

/// A test configuration on the cluster, with the default partitions (sixteen per queue).
pub async fn cluster_config() -> Config {
    let mut config = test_config().await;
    config.redis_url = herald_core::config::Secret::new(cluster_url());
    config
}

/// `redis+sentinel://127.0.0.1:port/herald`, set by `scripts/test`.
pub fn sentinel_url() -> String {
    std::env::var("HERALD_TEST_REDIS_SENTINEL_URL").expect(
        "HERALD_TEST_REDIS_SENTINEL_URL is not set: run the suite with scripts/test, which starts a Redis Sentinel",
    )
}

/// A test configuration on the primary Redis Sentinel watches.
pub async fn sentinel_config() -> Config {
    let mut config = test_config().await;
    config.redis_url = herald_core::config::Secret::new(sentinel_url());
    config
}

/// The primary's address as the sentinel names it now (`None`: the sentinel did not answer,
/// as it may not while it fails over on a busy machine).
pub async fn sentinel_primary() -> Option<String> {
    let url = sentinel_url();
    let addr = url
        .trim_start_matches("redis+sentinel://")
        .split('/')
        .next()?;
    let mut conn = node(addr).await.ok()?;
    let (host, port): (String, String) = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg("herald")
        .query_async(&mut conn)
        .await
        .ok()?;
    Some(format!("{host}:{port}"))
}

/// The seed nodes' addresses, `127.0.0.1:port`.
fn seeds() -> Vec<String> {
    cluster_url()
        .trim_start_matches("redis+cluster://")
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// A plain connection to one node.
pub async fn node(addr: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}"))?;
    tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))?
}

/// A master as `CLUSTER NODES` shows it: its address and slot ranges.
#[derive(Debug, Clone)]
pub struct Master {
    pub addr: String,
    pub slots: Vec<(u16, u16)>,
}

/// The live masters serving slots, as the first seed that answers sees them.
pub async fn masters() -> Vec<Master> {
    for seed in seeds() {
        let Ok(mut conn) = node(&seed).await else {
            continue;
        };
        let Ok(text) = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async::<String>(&mut conn)
            .await
        else {
            continue;
        };
        return text
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let flags = f.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let addr = f.get(1)?.split('@').next()?.to_owned();
                let slots: Vec<(u16, u16)> = f
                    .iter()
                    .skip(8)
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| match s.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => s.parse().ok().map(|n| (n, n)),
                    })
                    .collect();
                (!slots.is_empty()).then_some(Master { addr, slots })
            })
            .collect();
    }
    panic!("no node of the Redis Cluster answered");
}

/// The slot of `key` (its hash tag's, if it has one).
pub async fn slot_of(key: &str) -> u16 {
    for seed in seeds() {
        if let Ok(mut conn) = node(&seed).await
            && let Ok(slot) = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async::<u16>(&mut conn)
                .await
        {
            return slot;
        }
    }
    panic!("no node of the Redis Cluster answered");
}

/// The master serving `key` now.
pub async fn master_of(key: &str) -> Master {
    let slot = slot_of(key).await;
    masters()
        .await
        .into_iter()
        .find(|m| m.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .unwrap_or_else(|| panic!("no master serves slot {slot} of {key}"))
}

/// Keys matching `pattern` on one node (SCAN there).
pub async fn keys_on(addr: &str, pattern: &str) -> Vec<String> {
    let conn = node(addr).await.expect("connect to a master");
    crate::scan_keys(&conn, pattern).await
}

/// A master killed with SIGKILL, to be started again from its configuration file.
#[derive(Debug)]
pub struct Killed {
    pub addr: String,
    config_file: String,
    dir: String,
    /// Started again by [`Killed::restart`]; if not (the test failed first), dropping it
    /// starts it, so the shared cluster has its replica back for the next test.
    started: bool,
}

fn info_field(info: &str, name: &str) -> String {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// Kills the master at `addr` as a crash would (SIGKILL: no shutdown, no last write), and
/// waits until the cluster has promoted its replica in its place.
pub async fn kill_master(addr: &str) -> Killed {
    let killed = kill(addr).await;
    eventually(
        Duration::from_secs(30),
        "a replica is promoted in place of the killed master",
        || async {
            let masters = masters().await;
            let slots: u32 = masters
                .iter()
                .flat_map(|m| &m.slots)
                .map(|(a, b)| u32::from(b - a) + 1)
                .sum();
            (slots == 16_384 && masters.iter().all(|m| m.addr != killed.addr)).then_some(())
        },
    )
    .await;
    killed
}

/// Kills the primary Redis Sentinel watches, as a crash would, and waits until the sentinel
/// names its replica in its place.
pub async fn kill_sentinel_primary() -> Killed {
    let primary = eventually(
        Duration::from_secs(30),
        "the sentinel names the primary",
        || sentinel_primary(),
    )
    .await;
    let killed = kill(&primary).await;
    eventually(
        Duration::from_secs(30),
        "the sentinel promotes the replica",
        || async { sentinel_primary().await.filter(|p| *p != killed.addr) },
    )
    .await;
    killed
}

/// Kills the server at `addr` with SIGKILL, keeping what it takes to start it again.
async fn kill(addr: &str) -> Killed {
    let mut conn = node(addr).await.expect("connect to the master");
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    let pid = info_field(&info, "process_id");
    let config_file = info_field(&info, "config_file");
    let dir: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !config_file.is_empty(),
        "the master was started from a configuration file"
    );
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid}");
    Killed {
        addr: addr.to_owned(),
        config_file,
        dir: dir.get(1).cloned().unwrap_or_default(),
        started: false,
    }
}

impl Killed {
    /// Starts the server again from its configuration file (it rejoins as a replica of the
    /// node promoted in its place: the cluster or the sentinel tells it so), records its pid
    /// where `scripts/test` stops it from, and waits until it has synced.
    pub async fn restart(mut self) {
        self.start();
        synced(&self.addr).await;
    }

    fn start(&mut self) {
        // It daemonizes (out of this test's process group) and writes its own pid file.
        let started = std::process::Command::new("redis-server")
            .arg(&self.config_file)
            .args(["--daemonize", "yes", "--pidfile"])
            .arg(format!("{}/redis.pid", self.dir))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("start redis-server again");
        assert!(
            started.success(),
            "redis-server {} started",
            self.config_file
        );
        self.started = true;
    }
}

impl Drop for Killed {
    /// A test that failed before restarting its node: start it, and wait (up to a minute) for
    /// it to sync as a replica, so the next test of the shared cluster finds every master
    /// replicated again. Dropped inside the test's runtime, which cannot be blocked on, the
    /// wait runs on a runtime of its own.
    fn drop(&mut self) {
        if self.started {
            return;
        }
        self.start();
        let addr = self.addr.clone();
        let waited = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to wait in")
                .block_on(synced(&addr));
        });
        let _ = waited.join();
    }
}

/// Waits until the restarted node at `addr` has synced as a replica (it rejoins as one of
/// the node promoted in its place).
async fn synced(addr: &str) {
    eventually(
        Duration::from_secs(60),
        "the restarted node has synced as a replica",
        || async {
            let mut conn = node(addr).await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut conn)
                .await
                .ok()?;
            (info_field(&info, "role") == "slave"
                && info_field(&info, "master_link_status") == "up")
                .then_some(())
        },
    )
    .await;
}
