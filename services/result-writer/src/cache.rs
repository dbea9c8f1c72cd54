//! The Redis hot cache: per (report, tenant) hashes of row JSON, the
//! freshness hash, the stale set and the cache epoch key.

use crate::domain::{PreparedBatch, RowChange};
use crate::layout::{self, Freshness, RedisKeys, ReportName};
use crate::store::StoredRow;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::time::Duration;

/// Fields per HSET command in a rebuild.
const FIELDS_PER_COMMAND: usize = 1000;

/// A failure talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis url is invalid")]
    Config(#[source] redis::RedisError),
    #[error("redis unavailable")]
    Unavailable(#[from] redis::RedisError),
}

/// Writer of the Redis side of the report storage.
#[derive(Clone)]
pub struct Cache {
    conn: ConnectionManager,
    keys: RedisKeys,
}

impl Cache {
    /// A lazy connection: nothing is contacted until the first command, and
    /// each command fails fast while Redis is down.
    pub fn new(url: &str, key_prefix: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(CacheError::Config)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(CacheError::Config)?;
        Ok(Cache {
            conn,
            keys: RedisKeys::new(key_prefix),
        })
    }

    pub fn keys(&self) -> &RedisKeys {
        &self.keys
    }

    /// Writes the batch's rows (HSET / HDEL) and the partition's freshness in
    /// one MULTI/EXEC.
    #[tracing::instrument(skip_all, fields(partition = batch.partition, window_id = batch.window_id))]
    pub async fn write_batch(
        &self,
        batch: &PreparedBatch,
        applied_at_ms: i64,
    ) -> Result<(), CacheError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (report, rows) in &batch.reports {
            for row in rows {
                let key = self.keys.report_hash(report, row.tenant.as_deref());
                match &row.change {
                    RowChange::Upsert { row_json } => {
                        let value = layout::cache_json(row_json, row.day_text().as_deref());
                        pipe.hset(key, &row.key_text, value).ignore();
                    }
                    RowChange::Delete => {
                        pipe.hdel(key, &row.key_text).ignore();
                    }
                }
            }
        }
        let freshness = Freshness {
            window_id: u64::try_from(batch.window_id).unwrap_or(0),
            max_commit_ts_ms: batch.max_commit_ts_ms,
            applied_at_ms,
        };
        pipe.hset(
            self.keys.freshness(),
            batch.partition.to_string(),
            freshness_json(&freshness),
        )
        .ignore();
        let mut conn = self.conn.clone();
        pipe.exec_async(&mut conn).await?;
        Ok(())
    }

    /// The window the cache holds for `partition`, if any.
    pub async fn cached_window(&self, partition: u32) -> Result<Option<u64>, CacheError> {
        let mut conn = self.conn.clone();
        let text: Option<String> = redis::cmd("HGET")
            .arg(self.keys.freshness())
            .arg(partition.to_string())
            .query_async(&mut conn)
            .await?;
        Ok(text
            .and_then(|t| serde_json::from_str::<Freshness>(&t).ok())
            .map(|f| f.window_id))
    }

    /// Every partition's freshness as cached.
    pub async fn freshness(&self) -> Result<HashMap<u32, Freshness>, CacheError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.freshness())
            .query_async(&mut conn)
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(p, v)| Some((p.parse().ok()?, serde_json::from_str(&v).ok()?)))
            .collect())
    }

    /// Sets the freshness of the given partitions.
    pub async fn set_freshness(&self, entries: &[(u32, Freshness)]) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let items: Vec<(String, String)> = entries
            .iter()
            .map(|(p, f)| (p.to_string(), freshness_json(f)))
            .collect();
        let mut conn = self.conn.clone();
        redis::cmd("HSET")
            .arg(self.keys.freshness())
            .arg(&items)
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Adds hashes to the stale set: readers skip them until rebuilt.
    pub async fn add_stale(&self, hashes: &[String]) -> Result<(), CacheError> {
        if hashes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("SADD")
            .arg(self.keys.stale_set())
            .arg(hashes)
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Replaces one hash with `rows` and takes it off the stale set, atomically.
    pub async fn replace_entry(
        &self,
        report: &ReportName,
        tenant: Option<&str>,
        rows: &[StoredRow],
    ) -> Result<(), CacheError> {
        let key = self.keys.report_hash(report, tenant);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(&key).ignore();
        let fields: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                let day = r.day.map(layout::day_text);
                (
                    r.key_text.clone(),
                    layout::cache_json(&r.row_json, day.as_deref()),
                )
            })
            .collect();
        for chunk in fields.chunks(FIELDS_PER_COMMAND) {
            pipe.cmd("HSET").arg(&key).arg(chunk).ignore();
        }
        pipe.srem(self.keys.stale_set(), &key).ignore();
        let mut conn = self.conn.clone();
        pipe.exec_async(&mut conn).await?;
        Ok(())
    }

    /// Whether the cache epoch key is present (absent: Redis lost its data).
    pub async fn epoch_present(&self) -> Result<bool, CacheError> {
        let mut conn = self.conn.clone();
        let n: i64 = redis::cmd("EXISTS")
            .arg(self.keys.cache_epoch())
            .query_async(&mut conn)
            .await?;
        Ok(n > 0)
    }

    /// Sets the cache epoch key.
    pub async fn set_epoch(&self, now_ms: i64) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.keys.cache_epoch())
            .arg(now_ms)
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    /// A round trip, for probes.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").exec_async(&mut conn).await?;
        Ok(())
    }
}

fn freshness_json(f: &Freshness) -> String {
    serde_json::to_string(f).unwrap_or_else(|_| "{}".to_string())
}
