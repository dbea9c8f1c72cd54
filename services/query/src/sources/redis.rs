//! The hot path: a report's rows of one tenant from its Redis hash, with the
//! stale flag, the freshness hash and the cache epoch, in one round trip.

use crate::domain::ReportRow;
use mdp_result_writer::layout::{Freshness, RedisKeys, ReportName};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A Redis failure.
#[derive(Debug, thiserror::Error)]
pub enum HotError {
    #[error("redis url is invalid")]
    Config(#[source] redis::RedisError),
    #[error("redis unavailable")]
    Unavailable(#[from] redis::RedisError),
}

/// What Redis holds for one (report, tenant).
#[derive(Debug, Clone, Default)]
pub struct HotEntry {
    /// Every row of the hash (empty: the hash does not exist).
    pub rows: Vec<ReportRow>,
    /// The writer is rebuilding this hash from MySQL: it may be out of date.
    pub stale: bool,
    /// Partition → freshness, as cached.
    pub freshness: BTreeMap<u32, Freshness>,
    /// Values that could not be parsed (skipped).
    pub unreadable: usize,
}

/// Reader of the Redis side of the report storage.
#[derive(Clone)]
pub struct HotCache {
    conn: ConnectionManager,
    keys: RedisKeys,
}

impl HotCache {
    /// A lazy connection that fails fast while Redis is down.
    pub fn new(url: &str, key_prefix: &str) -> Result<Self, HotError> {
        let client = redis::Client::open(url).map_err(HotError::Config)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(300)))
            .set_response_timeout(Some(Duration::from_millis(1000)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(HotError::Config)?;
        Ok(HotCache {
            conn,
            keys: RedisKeys::new(key_prefix),
        })
    }

    /// The hash of `report` for `tenant` (`None`: reports not keyed by merchant).
    #[tracing::instrument(skip(self, key_columns), fields(report = %report))]
    pub async fn fetch(
        &self,
        report: &ReportName,
        tenant: Option<&str>,
        key_columns: &[String],
    ) -> Result<HotEntry, HotError> {
        let key = self.keys.report_hash(report, tenant);
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL")
            .arg(&key)
            .cmd("SISMEMBER")
            .arg(self.keys.stale_set())
            .arg(&key)
            .cmd("HGETALL")
            .arg(self.keys.freshness())
            .cmd("EXISTS")
            .arg(self.keys.cache_epoch());
        let mut conn = self.conn.clone();
        let (fields, stale, freshness, epoch): (
            HashMap<String, String>,
            bool,
            HashMap<String, String>,
            bool,
        ) = pipe.query_async(&mut conn).await?;
        let mut entry = HotEntry {
            rows: Vec::with_capacity(fields.len()),
            // Without the epoch key Redis lost its data and the writer is
            // still rebuilding it: no hash can be trusted yet.
            stale: stale || !epoch,
            freshness: parse_freshness(freshness),
            unreadable: 0,
        };
        for (key_text, json) in fields {
            match ReportRow::parse(&key_text, &json, None, key_columns) {
                Ok(row) => entry.rows.push(row),
                Err(error) => {
                    entry.unreadable += 1;
                    tracing::warn!(hash = %key, error = %error, "unreadable cached row skipped");
                }
            }
        }
        Ok(entry)
    }

    /// The freshness hash alone.
    pub async fn freshness(&self) -> Result<BTreeMap<u32, Freshness>, HotError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.freshness())
            .query_async(&mut conn)
            .await?;
        Ok(parse_freshness(all))
    }
}

fn parse_freshness(all: HashMap<String, String>) -> BTreeMap<u32, Freshness> {
    all.into_iter()
        .filter_map(|(p, v)| Some((p.parse().ok()?, serde_json::from_str(&v).ok()?)))
        .collect()
}
