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
