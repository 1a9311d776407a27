//! Herald's binaries run as real processes, for tests where a process must start, stop or die.

use std::{path::PathBuf, process::Stdio};

use tokio::process::{Child, Command};

/// `target/debug` (or whichever profile built this test).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash>
    exe.parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf()
}

/// The path of a workspace binary, which `scripts/test` builds before the suite runs.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// A running binary, killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    /// Starts `name` with exactly these environment variables (plus PATH).
    pub fn start(name: &str, env: &[(String, String)]) -> Self {
        Self::start_args(name, &[], env)
    }

    /// Starts `name` with these arguments and exactly these environment variables (plus PATH).
    pub fn start_args(name: &str, args: &[String], env: &[(String, String)]) -> Self {
        let mut cmd = Command::new(bin(name));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
        }
    }

    /// Starts `name` with its standard output collected line by line (its JSON logs).
    pub fn start_logged(
        name: &str,
        env: &[(String, String)],
    ) -> (Self, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = Command::new(bin(name));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        (
            Self {
                name: name.to_owned(),
                child,
            },
            lines,
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// Sends a signal by name (`TERM`, `KILL`, `INT`).
    pub async fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill -{sig} {}", self.name);
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait(&mut self) -> Option<i32> {
        self.child.wait().await.ok().and_then(|s| s.code())
    }
}

/// A free loopback port (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The environment that makes a Herald binary run with `config` (the parts tests change):
/// its database, Redis prefix, timings, providers, and no metrics listener.
pub fn herald_env(config: &herald_core::Config) -> Vec<(String, String)> {
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    let mut env = vec![
        ("HERALD_DATABASE_URL", config.database_url.expose().clone()),
        ("HERALD_REDIS_URL", config.redis_url.expose().clone()),
        ("HERALD_QUEUE_PREFIX", config.queue_prefix.clone()),
        ("HERALD_PUBLIC_URL", config.public_url.clone()),
        ("HERALD_MAX_ATTEMPTS", config.max_attempts.to_string()),
        ("HERALD_RETRY_BASE_MS", ms(config.retry_base)),
        ("HERALD_RETRY_MAX_MS", ms(config.retry_max)),
        ("HERALD_LEASE_MS", ms(config.lease)),
        ("HERALD_PROVIDER_TIMEOUT_MS", ms(config.provider_timeout)),
        ("HERALD_SHUTDOWN_TIMEOUT_MS", ms(config.shutdown_timeout)),
        (
            "HERALD_WORKER_CONCURRENCY",
            config.worker_concurrency.to_string(),
        ),
        (
            "HERALD_DATABASE_POOL_SIZE",
            config.database_pool_size.to_string(),
        ),
        (
            "HERALD_WEBHOOK_ALLOW_PRIVATE",
            config.webhook_allow_private.to_string(),
        ),
        ("HERALD_WORKER_METRICS_LISTEN", "off".to_owned()),
        ("HERALD_SCHEDULER_METRICS_LISTEN", "off".to_owned()),
        ("HERALD_LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    if config.sms_provider == herald_core::config::SmsProviderKind::Twilio {
        env.push(("HERALD_SMS_PROVIDER", "twilio".to_owned()));
        env.push((
            "HERALD_TWILIO_ACCOUNT_SID",
            config.twilio.account_sid.clone().unwrap_or_default(),
        ));
        env.push((
            "HERALD_TWILIO_AUTH_TOKEN",
            config
                .twilio
                .auth_token
                .as_ref()
                .map(|t| t.expose().clone())
                .unwrap_or_default(),
        ));
        env.push(("HERALD_TWILIO_BASE_URL", config.twilio.base_url.clone()));
    }
    if let Some(n) = config.queue_partitions {
        env.push(("HERALD_QUEUE_PARTITIONS", n.to_string()));
    }
    if let Some(ops) = &config.ops_token {
        env.push(("HERALD_OPS_TOKEN", ops.expose().clone()));
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
