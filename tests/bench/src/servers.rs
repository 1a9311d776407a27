//! Private Redis and Postgres servers for one benchmark run, on free loopback ports, removed
//! when dropped.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

static CLUSTER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether every [`RedisServer`] of the run is a Redis Cluster (`--redis-cluster`).
pub fn use_cluster(on: bool) {
    CLUSTER.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A private Redis for the run, removed when dropped: one redis-server, or with
/// [`use_cluster`] a Redis Cluster of three masters with a replica each.
pub struct RedisServer {
    children: Vec<Child>,
    pub url: String,
    dir: PathBuf,
}

impl RedisServer {
    /// The (first master's) redis-server process.
    pub fn pid(&self) -> u32 {
        self.children.first().and_then(Child::id).unwrap_or(0)
    }

    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("herald-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        if !CLUSTER.load(std::sync::atomic::Ordering::Relaxed) {
            let child = redis_server(&dir, port, &[])?;
            let url = format!("redis://127.0.0.1:{port}");
            answers(port).await?;
            return Ok(Self {
                children: vec![child],
                url,
                dir,
            });
        }
        let mut server = Self {
            children: Vec::new(),
            url: String::new(),
            dir,
        };
        let mut nodes = Vec::new();
        for i in 0..6 {
            let port = if i == 0 { port } else { free_port()? };
            let bus = free_port()?;
            let node_dir = server.dir.join(format!("node-{i}"));
            std::fs::create_dir_all(&node_dir)?;
            server.children.push(redis_server(
                &node_dir,
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-require-full-coverage",
                    "no",
                ],
            )?);
            answers(port).await?;
            nodes.push(format!("127.0.0.1:{port}"));
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .await?;
        if !created.success() {
            bail!("redis-cli --cluster create failed");
        }
        // Up once every node sees the cluster ok and the three replicas.
        for node in &nodes {
            let client = redis::Client::open(format!("redis://{node}"))?;
            let mut c = client.get_multiplexed_async_connection().await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut c)
                    .await?;
                let map: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut c)
                    .await?;
                if info.contains("cluster_state:ok") && map.matches("slave").count() == 3 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the Redis Cluster did not come up within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        server.url = format!("redis+cluster://{}", nodes.join(","));
        Ok(server)
    }
}

/// A redis-server on `port` with its data in `dir` (AOF on, fsync every second, as in
/// production) and `extra` arguments.
fn redis_server(dir: &std::path::Path, port: u16, extra: &[&str]) -> anyhow::Result<Child> {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server (install it: apt-get install redis-server)")
}

/// Waits until the redis-server on `port` answers PING.
async fn answers(port: u16) -> anyhow::Result<()> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("redis-server on port {port} did not answer within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Postgres cluster with production settings (fsync and synchronous commit on).
pub struct PostgresServer {
    pub url: String,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|d| d.join("initdb").exists())
        .context("Postgres is not installed (apt-get install postgresql)")
}

impl PostgresServer {
    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            std::process::Command::new(path)
        }
    }

    /// The postmaster's pid (its backends are its children).
    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("data").join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .unwrap_or(0)
    }

    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("herald-bench-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let as_postgres = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.trim_ascii() == b"0")
            .unwrap_or(false);
        if as_postgres {
            std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?;
        }
        let server = Self {
            url: format!("postgres://herald@127.0.0.1:{port}/postgres"),
            dir: dir.clone(),
            bin: postgres_bin_dir()?,
            as_postgres,
        };
        let data = dir.join("data");
        let ok = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "herald", "--no-locale", "-E", "UTF8"])
            .stdout(Stdio::null())
            .status()?
            .success();
        if !ok {
            bail!("initdb failed");
        }
        let extra = std::env::var("HERALD_BENCH_PG_OPTS").unwrap_or_default();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB {extra}",
            dir.display()
        );
        let ok = server
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .args(["-o", &opts, "-w", "start"])
            .stdout(Stdio::null())
            .status()?
            .success();
        if !ok {
            bail!(
                "pg_ctl start failed; see {}",
                dir.join("postgres.log").display()
            );
        }
        Ok(server)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `url` answers HTTP 200.
pub async fn wait_http(url: &str, within: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Herald binary next to this one (build them with `cargo build --release --workspace --bins`).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("no parent dir")?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release --workspace --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// Starts a Herald binary with these environment variables.
pub fn herald(name: &str, env: &[(&str, String)]) -> anyhow::Result<Child> {
    let mut cmd = Command::new(sibling(name)?);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    Ok(cmd.spawn()?)
}

/// A private Postgres (migrated) and Redis for one benchmark, with a pool on the database.
pub struct Stack {
    pub pg: PostgresServer,
    pub redis: RedisServer,
    pub pool: sqlx::PgPool,
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        herald_core::install_crypto();
        let pg = PostgresServer::start().await?;
        let redis = RedisServer::start().await?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .connect(&pg.url)
            .await?;
        herald_core::db::migrate(&pool).await?;
        Ok(Self { pg, redis, pool })
    }

    /// A tenant sending SMS from `from`, with no quiet hours.
    pub async fn tenant(
        &self,
        name: &str,
        from: &str,
    ) -> anyhow::Result<herald_core::services::tenants::CreatedTenant> {
        use herald_core::{
            domain::{PhoneNumber, TimeZone},
            services::tenants::{self, NewTenant},
        };
        Ok(tenants::create(
            &self.pool,
            &NewTenant {
                name: name.to_owned(),
                timezone: TimeZone::parse("UTC")?,
                sms_from: Some(PhoneNumber::parse(from)?),
                email_from: None,
                quiet_hours: None,
                help_text: None,
                system_prompt: None,
                canned_reply: None,
                missed_call_text: None,
                missed_call_cooldown_minutes: 10,
                require_consent_for_bulk: false,
                frequency_cap: None,
                messaging_service_sid: None,
                // The throughput figures measure Herald, not a carrier's pace.
                sms_mps: Some(10_000.0),
                retention_days: tenants::DEFAULT_RETENTION_DAYS,
            },
            None,
        )
        .await?)
    }
}

/// Serves `app` on a free loopback port in the background; returns its base URL.
pub async fn serve(app: axum::Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Twilio's 201 for the `n`th message created: a sid and `queued`.
pub fn twilio_created(n: usize) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = format!(r#"{{"sid":"SM{n:032x}","status":"queued"}}"#);
    (
        axum::http::StatusCode::CREATED,
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

/// CPU time a process has used so far (user and system), in clock ticks (0 when gone).
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // After the command name in parentheses: state, ppid, ...; utime and stime are the
    // 14th and 15th fields of the line.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// The parent of a process (0 when gone).
fn parent(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time used so far by a process and its living children, in clock ticks.
pub fn tree_cpu_ticks(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| *p == pid || parent(*p) == pid)
        .map(cpu_ticks)
        .sum()
}

/// A process's peak resident memory so far, in KiB (`VmHWM`; 0 when it cannot be read).
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
