//! The connection to Herald's Redis: one server, or a Redis Cluster.
//!
//! `HERALD_REDIS_URL` names a single server (`redis://host:port/db`), a cluster, either as
//! `redis+cluster://[user:password@]host:port,host:port,...` or as the redis crate's form, a
//! comma-separated list of `redis://` node URLs, or a primary watched by Redis Sentinel,
//! `redis+sentinel://[user:password@]host:port,host:port/service[/db]` (the sentinels'
//! addresses, the name they know the primary by; the password is the primary's). A few seed
//! nodes are enough: the client learns the rest (and every later change of who serves which
//! slot) from the cluster itself.
//!
//! Every kind connects lazily and reconnects by itself, with bounded connect and response
//! times, so a process starts while Redis is down and a Redis outage turns into a quick error
//! rather than a hung request. A cluster connection follows MOVED and ASK answers and, after a
//! failover, finds the promoted replica; a Sentinel connection asks the sentinels for the
//! primary again when it cannot reach it or it has become a replica.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use redis::{
    Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind,
    Value,
    aio::{ConnectionLike, ConnectionManager, PubSub},
    cluster::{ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};

use super::QueueError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to Herald's Redis, cheap to clone (clones share one multiplexed connection per
/// server).
#[derive(Clone)]
pub struct Redis {
    conn: Conn,
    /// One client per configured node, for pub/sub: a cluster broadcasts every `PUBLISH` to
    /// all its nodes, so subscribing on any live one hears every queue.
    nodes: Arc<[redis::Client]>,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<Watched>),
}

/// A primary found through Redis Sentinel, and the connection to it while it stays primary.
struct Watched {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    primary: Mutex<Option<ConnectionManager>>,
}

impl Watched {
    fn current(&self) -> Option<ConnectionManager> {
        self.primary
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connection to the primary, asking the sentinels who it is when there is none.
    async fn conn(&self) -> RedisResult<ConnectionManager> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let mut sentinels = self.sentinels.lock().await;
        // Another caller may have asked while this one waited.
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        // The sentinels name the primary; the client checks that it answers ROLE as one.
        let client = tokio::time::timeout(RESPONSE_TIMEOUT, sentinels.async_get_client())
            .await
            .map_err(|_| {
                RedisError::from((redis::ErrorKind::Io, "the sentinels did not answer in time"))
            })??;
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config())?;
        *self.primary.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// After an error that says the primary is gone or is one no more, the next command asks
    /// the sentinels again.
    fn check(&self, result: &RedisResult<impl Sized>) {
        if let Err(e) = result
            && (e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || e.kind() == redis::ErrorKind::Server(ServerErrorKind::ReadOnly))
        {
            *self.primary.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

fn manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// A Sentinel URL's sentinel addresses, service name and primary's settings.
fn sentinel_parts(url: &str) -> Option<RedisResult<(Vec<String>, String, String)>> {
    let rest = url.trim().strip_prefix("redis+sentinel://")?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), rest),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (service, db) = path.split_once('/').unwrap_or((path, ""));
    let sentinels: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{h}"))
        .collect();
    if sentinels.is_empty() || service.is_empty() {
        return Some(Err(RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "a Sentinel URL names its sentinels and the primary's service name: redis+sentinel://host:port,host:port/service",
        ))));
    }
    // The primary's own settings (password, database) as a redis:// URL would give them.
    let primary = format!("redis://{auth}sentinel-primary/{db}");
    Some(Ok((sentinels, service.to_owned(), primary)))
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Node URLs may carry a password: only their count.
        f.debug_struct("Redis")
            .field("cluster", &self.is_cluster())
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

/// The node URLs of a cluster URL, or `None` for a single server's.
fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let url = url.trim();
    if let Some(rest) = url.strip_prefix("redis+cluster://") {
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        return Some(
            hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{auth}{h}"))
                .collect(),
        );
    }
    url.contains(',').then(|| {
        url.split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// What is wrong with a cluster or Sentinel URL's shape, for the configuration's message.
pub(crate) fn url_problem(url: &str) -> Option<&'static str> {
    if let Some(Err(_)) = sentinel_parts(url) {
        return Some(
            "a Sentinel URL names its sentinels and the primary's service name: redis+sentinel://host:port,host:port/service",
        );
    }
    match cluster_nodes(url) {
        Some(nodes) if nodes.is_empty() => {
            Some("a cluster URL names at least one node: redis+cluster://host:port,host:port")
        }
        _ => None,
    }
}

impl Redis {
    /// Connects (lazily) to the server, cluster or Sentinel-watched primary `url` names.
    pub fn connect(url: &str) -> Result<Self, QueueError> {
        if let Some(parts) = sentinel_parts(url) {
            let (sentinels, service, primary) = parts?;
            return Self::sentinel(&sentinels, &service, &primary);
        }
        match cluster_nodes(url) {
            Some(nodes) => Self::cluster(&nodes),
            None => Self::single(url),
        }
    }

    fn single(url: &str) -> Result<Self, QueueError> {
        let client = redis::Client::open(url)?;
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config())?;
        Ok(Self {
            conn: Conn::Single(manager),
            nodes: Arc::from([client]),
        })
    }

    fn cluster(nodes: &[String]) -> Result<Self, QueueError> {
        if nodes.is_empty() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a Redis Cluster URL names no node",
            ))
            .into());
        }
        let clients = nodes
            .iter()
            .map(|n| redis::Client::open(n.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            // A failover takes the cluster a few seconds (node timeout plus election): keep
            // trying that long before a command fails.
            .retries(8)
            .min_retry_wait(50)
            .max_retry_wait(1_000)
            .build()?;
        let config = ClusterConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let conn = client.get_pending_async_connection_with_config(config);
        Ok(Self {
            conn: Conn::Cluster(conn),
            nodes: clients.into(),
        })
    }

    fn sentinel(sentinels: &[String], service: &str, primary: &str) -> Result<Self, QueueError> {
        let settings = primary.into_connection_info()?.redis_settings().clone();
        let client = SentinelClient::build(
            sentinels.to_vec(),
            service.to_owned(),
            Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(settings)),
            SentinelServerType::Master,
        )?;
        Ok(Self {
            conn: Conn::Sentinel(Arc::new(Watched {
                sentinels: tokio::sync::Mutex::new(client),
                primary: Mutex::new(None),
            })),
            nodes: Arc::from([]),
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// A pub/sub connection; `attempt` picks which node of a cluster to try, so a caller that
    /// counts its attempts goes round the nodes while one is down. Under Sentinel, the
    /// primary's (as the sentinels name it now).
    pub async fn pubsub(&self, attempt: usize) -> redis::RedisResult<PubSub> {
        if let Conn::Sentinel(watched) = &self.conn {
            let client = watched.sentinels.lock().await.async_get_client().await?;
            return client.get_async_pubsub().await;
        }
        let node = &self.nodes[attempt % self.nodes.len()];
        node.get_async_pubsub().await
    }
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.conn {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(w) => Box::pin(async move {
                let result = w.conn().await?.req_packed_command(cmd).await;
                w.check(&result);
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.conn {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(w) => Box::pin(async move {
                let result = w
                    .conn()
                    .await?
                    .req_packed_commands(pipeline, offset, count)
                    .await;
                w.check(&result);
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.conn {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(w) => w.current().map_or(0, |c| c.get_db()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cluster_nodes, sentinel_parts};

    #[test]
    fn sentinel_urls_name_their_sentinels_and_service() {
        assert!(sentinel_parts("redis://a:1").is_none());
        let (sentinels, service, primary) =
            sentinel_parts("redis+sentinel://:pw@a:26379,b:26379/mymaster/2")
                .unwrap()
                .unwrap();
        assert_eq!(sentinels, ["redis://a:26379", "redis://b:26379"]);
        assert_eq!(service, "mymaster");
        assert_eq!(primary, "redis://:pw@sentinel-primary/2");
        assert!(sentinel_parts("redis+sentinel://a:26379").unwrap().is_err());
    }

    #[test]
    fn cluster_urls_name_their_nodes() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379/2"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/").unwrap(),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(
            cluster_nodes("redis+cluster://:s3cret@a:7000, b:7001").unwrap(),
            ["redis://:s3cret@a:7000", "redis://:s3cret@b:7001"]
        );
        assert_eq!(
            cluster_nodes("redis://a:7000,redis://b:7001").unwrap(),
            ["redis://a:7000", "redis://b:7001"]
        );
    }
}
