//! One connection type for one Redis and for a Redis Cluster, chosen from `redis_url`.
//!
//! `redis_url` is one URL (`redis://host:port[/db]`) or several separated by commas. Several are
//! the seed nodes of a Redis Cluster; one is a single Redis, unless that Redis says it is a
//! cluster node (`INFO cluster`: `cluster_enabled:1`), when it is the cluster's seed. A single
//! Redis is reached through redis-rs's `ConnectionManager` (reconnects by itself), a cluster
//! through its async cluster client (routes each command to the node of its key's slot, follows
//! `MOVED` and `ASK`, reconnects, refreshes the slot map).
//!
//! A cluster pipeline must stay in one hash slot, so commands of several slots go through
//! [`RedisConn::grouped`]: one pipeline on one Redis, one pipeline per slot group, run at once,
//! on a cluster.

use crate::StoreError;
use futures_util::future::{try_join_all, FutureExt};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// A connection to one Redis or to a Redis Cluster; cheap to clone (shared).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

fn invalid(urls: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("redis_url {urls:?}: {e}"))
}

/// Connects to `urls` (see the module docs): 2 s to connect, `response` to answer, `retries`
/// attempts per command.
pub async fn connect(
    urls: &str,
    response: Duration,
    retries: usize,
) -> Result<RedisConn, StoreError> {
    let nodes: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let [first, more @ ..] = nodes.as_slice() else {
        return Err(invalid(urls, "no URL"));
    };
    if more.is_empty() {
        let client = redis::Client::open(*first).map_err(|e| invalid(urls, e))?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(response)
            .set_number_of_retries(retries);
        let mut single = ConnectionManager::new_with_config(client, cfg).await?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut single)
            .await?;
        if !info.contains("cluster_enabled:1") {
            return Ok(RedisConn::Single(single));
        }
    }
    let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(response)
        .retries(u32::try_from(retries).unwrap_or(u32::MAX))
        .build()
        .map_err(|e| invalid(urls, e))?;
    Ok(RedisConn::Cluster(client.get_async_connection().await?))
}

impl RedisConn {
    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Runs `cmds`, each given with its slot group (every key of one group is in one hash slot:
    /// thermo's groups are log partitions, see `redis_hot.rs`), and returns their answers in
    /// order: one pipeline on one Redis (one round trip), one pipeline per group, all at once, on
    /// a cluster.
    pub async fn grouped<T: FromRedisValue>(
        &self,
        cmds: Vec<(i32, Cmd)>,
    ) -> Result<Vec<T>, StoreError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let n = cmds.len();
        let mut groups: BTreeMap<i32, (Vec<usize>, Pipeline)> = BTreeMap::new();
        for (i, (group, cmd)) in cmds.into_iter().enumerate() {
            let group = if self.is_cluster() { group } else { 0 };
            let (at, pipe) = groups
                .entry(group)
                .or_insert_with(|| (Vec::new(), redis::pipe()));
            at.push(i);
            pipe.add_command(cmd);
        }
        let answers = try_join_all(groups.into_values().map(|(at, pipe)| {
            let mut c = self.clone();
            async move {
                let answers: Vec<T> = pipe.query_async(&mut c).await?;
                Ok::<_, StoreError>(at.into_iter().zip(answers))
            }
            .boxed()
        }))
        .await?;
        let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
        for (i, answer) in answers.into_iter().flatten() {
            out[i] = Some(answer);
        }
        let out: Vec<T> = out.into_iter().flatten().collect();
        if out.len() != n {
            return Err(StoreError::Corrupt {
                what: "redis pipeline",
                detail: format!("{} answers to {n} commands", out.len()),
            });
        }
        Ok(out)
    }
}
