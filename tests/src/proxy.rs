//! A TCP proxy on loopback that a test can cut and restore, to take Postgres or Redis away
//! from a running app the way an outage does: open connections are dropped and new ones are
//! refused until it is restored.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Connections refused while cut.
    refused: Arc<AtomicU64>,
    /// Bumped on every cut: connections opened before it end.
    generation: watch::Sender<u64>,
}

impl Proxy {
    /// Proxies to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let target: SocketAddr = tokio::net::lookup_host(target)
            .await
            .unwrap()
            .next()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(AtomicU64::new(0));
        let (generation, _) = watch::channel(0u64);
        let (flag, gen_tx, count) = (up.clone(), generation.clone(), refused.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    count.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let mut cut = gen_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            refused,
            generation,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// How many connections were refused while cut.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `url` with its `host:port` replaced by this proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let userinfo = authority
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        let path = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        format!("{scheme}://{userinfo}{}{path}", self.addr)
    }

    /// `host:port` of a URL, for [`Proxy::start`].
    pub fn target_of(url: &str) -> String {
        let rest = url.split_once("://").unwrap().1;
        let authority = rest.split('/').next().unwrap();
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, hp)| hp)
            .to_owned()
    }
}
