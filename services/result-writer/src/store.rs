//! The MySQL side: creates the results database and tables, applies a batch
//! in one transaction guarded by the partition's applied version, keeps the
//! stale-cache marks and reads rows back for cache rebuilds.

use crate::domain::{PreparedBatch, PreparedPartial, RowChange};
use crate::layout::{self, ReportName, ResultsDatabase};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use mdp_report::ReportSet;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, Connection, MySql, QueryBuilder, Row};
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Attempts after a deadlock before the conflict is returned to the caller.
const DEADLOCK_RETRIES: u32 = 5;

/// Rows per multi-row statement (8 placeholders each).
const ROWS_PER_STATEMENT: usize = 500;

/// A failure talking to MySQL, classified by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// MySQL is unreachable or failing: keep the message, retry with backoff.
    #[error("results database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A lock conflict or a table dropped under us: retry soon.
    #[error("results database transaction conflict")]
    Conflict(#[source] sqlx::Error),
    /// The database refused the data itself: retrying cannot help.
    #[error("results database rejected the batch")]
    Rejected(#[source] sqlx::Error),
    /// The results URL cannot be parsed.
    #[error("invalid results database url")]
    Config(#[source] sqlx::Error),
    /// A partial delta does not merge into the group's stored state (state
    /// of another report definition, or a delta merged twice or lost).
    #[error("report {report}: partial delta does not merge")]
    Merge {
        report: String,
        #[source]
        source: mdp_report::EngineError,
    },
}

impl StoreError {
    fn classify(e: sqlx::Error) -> Self {
        let number = match &e {
            sqlx::Error::Database(db) => db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|m| m.number()),
            _ => None,
        };
        match number {
            // Deadlock, lock wait timeout, unknown table / database (dropped
            // while cached: the caller re-creates it).
            Some(1213 | 1205 | 1146 | 1049) => StoreError::Conflict(e),
            // Data too long, incorrect value, out of range, bad date, bad
            // JSON, NOT NULL violation, duplicate entry, packet too large.
            Some(1406 | 1366 | 1264 | 1292 | 3140 | 4025 | 1048 | 1062 | 1153) => {
                StoreError::Rejected(e)
            }
            _ => StoreError::Unavailable(e),
        }
    }

    /// Whether the transaction was chosen as a deadlock victim (or timed out
    /// waiting for a lock): retrying it is expected to succeed.
    pub fn is_deadlock(&self) -> bool {
        let StoreError::Conflict(sqlx::Error::Database(db)) = self else {
            return false;
        };
        matches!(
            db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|m| m.number()),
            Some(1213 | 1205)
        )
    }

    /// Whether the failure says MySQL itself is unhealthy (for the degrade machine).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Written and committed; `applied` rows upserted or deleted.
    Applied { rows: usize },
    /// The partition already holds this window or a later one: nothing written.
    /// `current` is true when the batch is exactly the last applied window (a
    /// redelivery after a crash between commit and ack), whose rows are still
    /// the newest and may be re-cached.
    Duplicate { applied_window: i64, current: bool },
}

/// A stale cache entry as stored in `mdp_cache_stale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleMark {
    pub report: String,
    /// The tenant, or `_` for reports not keyed by merchant.
    pub tenant: String,
    pub gen: i64,
}

/// One stored row, as read back for a cache rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub key_text: String,
    pub row_json: String,
    pub day: Option<NaiveDate>,
}

/// The applied version of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedVersion {
    pub partition: u32,
    pub window_id: i64,
    pub max_commit_ts_ms: i64,
    pub applied_at_ms: i64,
}

/// The results database.
pub struct Store {
    pool: MySqlPool,
    server: MySqlConnectOptions,
    database: String,
    schema_ready: AtomicBool,
    tables: Mutex<HashSet<ReportName>>,
    /// Reports whose `acc_<report>` table exists.
    acc_tables: Mutex<HashSet<ReportName>>,
}

impl Store {
    /// A lazy pool: nothing is contacted until the first use, so the service
    /// starts while MySQL is down.
    pub fn new(url: &str, max_connections: u32) -> Result<Self, crate::configuration::ConfigError> {
        let db = ResultsDatabase::from_url(url)?;
        let server = MySqlConnectOptions::from_str(&db.server_url)
            .map_err(crate::configuration::ConfigError::ResultsUrlOptions)?;
        let options = server.clone().database(&db.database);
        let pool = MySqlPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Store {
            pool,
            server,
            database: db.database,
            schema_ready: AtomicBool::new(false),
            tables: Mutex::new(HashSet::new()),
            acc_tables: Mutex::new(HashSet::new()),
        })
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Creates the database and the fixed tables if missing (once per process,
    /// again after a failure).
    #[tracing::instrument(skip(self), fields(database = %self.database))]
    pub async fn ensure_schema(&self) -> Result<(), StoreError> {
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut conn = sqlx::mysql::MySqlConnection::connect_with(&self.server)
            .await
            .map_err(StoreError::classify)?;
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        )
        .bind(&self.database)
        .fetch_optional(&mut conn)
        .await
        .map_err(StoreError::classify)?;
        if exists.is_none() {
            // The name is checked to be [A-Za-z0-9_]+ by ResultsDatabase.
            let create = format!(
                "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
                self.database
            );
            sqlx::query(AssertSqlSafe(create))
                .execute(&mut conn)
                .await
                .map_err(StoreError::classify)?;
            tracing::info!(database = %self.database, "results database created");
        }
        let _ = conn.close().await;
        sqlx::query(layout::CREATE_APPLIED_TABLE)
            .execute(&self.pool)
            .await
            .map_err(StoreError::classify)?;
        sqlx::query(layout::CREATE_STALE_TABLE)
            .execute(&self.pool)
            .await
            .map_err(StoreError::classify)?;
        self.schema_ready.store(true, Ordering::Release);
        tracing::info!(database = %self.database, "results schema ready");
        Ok(())
    }

    /// Creates `rpt_<report>` if this process has not seen it yet.
    async fn ensure_report_table(&self, report: &ReportName) -> Result<(), StoreError> {
        if self.known_table(report) {
            return Ok(());
        }
        sqlx::query(AssertSqlSafe(layout::create_report_table_sql(report)))
            .execute(&self.pool)
            .await
            .map_err(StoreError::classify)?;
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(report.clone());
        tracing::info!(report = %report, table = %report.table(), "report table ready");
        Ok(())
    }

    /// Creates `acc_<report>` if this process has not seen it yet.
    async fn ensure_acc_table(&self, report: &ReportName) -> Result<(), StoreError> {
        let known = self
            .acc_tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(report);
        if known {
            return Ok(());
        }
        sqlx::query(AssertSqlSafe(layout::create_acc_table_sql(report)))
            .execute(&self.pool)
            .await
            .map_err(StoreError::classify)?;
        self.acc_tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(report.clone());
        tracing::info!(report = %report, table = %report.acc_table(), "accumulator table ready");
        Ok(())
    }

    fn known_table(&self, report: &ReportName) -> bool {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(report)
    }

    /// Forgets which tables and schema exist (after "unknown table/database").
    pub fn forget_schema(&self) {
        self.schema_ready.store(false, Ordering::Release);
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.acc_tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Applies `batch` at most once: in one transaction, reads and locks the
    /// partition's applied window, skips the batch when it is not newer, else
    /// writes its rows (and `stale` cache marks) and bumps the version.
    ///
    /// Partial deltas of reports not keyed by merchant are merged in the same
    /// transaction into the groups' global states (`acc_<report>`, locked in
    /// report then key hash order) and the groups' rows rewritten from the
    /// merged states. A deadlock between partitions merging into the same
    /// groups is retried here with backoff.
    #[tracing::instrument(skip_all, fields(partition = batch.partition, window_id = batch.window_id))]
    pub async fn apply(
        &self,
        batch: &PreparedBatch,
        reports: &ReportSet,
        stale: &[(ReportName, Option<String>)],
        now: DateTime<chrono::Utc>,
    ) -> Result<ApplyOutcome, StoreError> {
        let mut attempt = 0u32;
        let result = loop {
            let result = self.apply_inner(batch, reports, stale, now).await;
            match &result {
                Err(e) if e.is_deadlock() && attempt < DEADLOCK_RETRIES => {
                    attempt += 1;
                    let base = 10u64 << attempt.min(6);
                    let jitter = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::from(d.subsec_nanos()));
                    let pause = base + jitter % base;
                    tracing::info!(
                        partition = batch.partition,
                        window_id = batch.window_id,
                        attempt,
                        pause_ms = pause,
                        "deadlock applying a batch; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                _ => break result,
            }
        };
        if let Err(e @ StoreError::Conflict(_)) = &result {
            if e.is_deadlock() {
                return result;
            }
            // A dropped table or database is re-created on the next attempt.
            self.forget_schema();
        }
        result
    }

    async fn apply_inner(
        &self,
        batch: &PreparedBatch,
        reports: &ReportSet,
        stale: &[(ReportName, Option<String>)],
        now: DateTime<chrono::Utc>,
    ) -> Result<ApplyOutcome, StoreError> {
        self.ensure_schema().await?;
        for report in batch.reports.keys().chain(batch.partials.keys()) {
            self.ensure_report_table(report).await?;
        }
        for report in batch.partials.keys() {
            self.ensure_acc_table(report).await?;
        }
        let now_dt: NaiveDateTime = now.naive_utc();
        let partition = i64::from(batch.partition);
        let mut tx = self.pool.begin().await.map_err(StoreError::classify)?;

        sqlx::query(
            "INSERT IGNORE INTO mdp_applied \
             (`partition`, window_id, applied_at, max_commit_ts_ms, min_captured_at_ms) \
             VALUES (?, 0, ?, 0, 0)",
        )
        .bind(partition)
        .bind(now_dt)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::classify)?;
        let applied: i64 = sqlx::query_scalar(
            "SELECT window_id FROM mdp_applied WHERE `partition` = ? FOR UPDATE",
        )
        .bind(partition)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::classify)?;
        if batch.window_id <= applied {
            tx.rollback().await.map_err(StoreError::classify)?;
            return Ok(ApplyOutcome::Duplicate {
                applied_window: applied,
                current: batch.window_id == applied,
            });
        }

        let mut rows = 0usize;
        for (report, report_rows) in &batch.reports {
            let table = report.table();
            let upserts: Vec<_> = report_rows
                .iter()
                .filter_map(|r| match &r.change {
                    RowChange::Upsert { row_json } => Some((r, row_json)),
                    RowChange::Delete => None,
                })
                .collect();
            for chunk in upserts.chunks(ROWS_PER_STATEMENT) {
                let mut qb: QueryBuilder<MySql> = QueryBuilder::new(format!(
                    "INSERT INTO `{table}` (key_hash, key_text, tenant, day, row_json, \
                     version_partition, version_window, updated_at) "
                ));
                qb.push_values(chunk, |mut b, (row, row_json)| {
                    b.push_bind(row.key_hash.to_vec())
                        .push_bind(row.key_text.clone())
                        .push_bind(row.tenant.clone())
                        .push_bind(row.day)
                        .push_bind((*row_json).clone())
                        .push_bind(partition)
                        .push_bind(batch.window_id)
                        .push_bind(now_dt);
                });
                qb.push(
                    " ON DUPLICATE KEY UPDATE key_text = VALUES(key_text), \
                     tenant = VALUES(tenant), day = VALUES(day), row_json = VALUES(row_json), \
                     version_partition = VALUES(version_partition), \
                     version_window = VALUES(version_window), updated_at = VALUES(updated_at)",
                );
                qb.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::classify)?;
                rows += chunk.len();
            }
            let deletes: Vec<_> = report_rows
                .iter()
                .filter(|r| r.change == RowChange::Delete)
                .collect();
            for chunk in deletes.chunks(ROWS_PER_STATEMENT) {
                let mut qb: QueryBuilder<MySql> =
                    QueryBuilder::new(format!("DELETE FROM `{table}` WHERE key_hash IN ("));
                let mut sep = qb.separated(", ");
                for row in chunk {
                    sep.push_bind(row.key_hash.to_vec());
                }
                qb.push(")");
                qb.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::classify)?;
                rows += chunk.len();
            }
        }

        for (report, partials) in &batch.partials {
            let def = reports
                .get(report.as_str())
                .ok_or_else(|| StoreError::Merge {
                    report: report.to_string(),
                    source: mdp_report::EngineError::CorruptState {
                        report: report.to_string(),
                        key: String::new(),
                        reason: "the report is not defined".into(),
                    },
                })?;
            for p in partials {
                merge_partial(&mut tx, report, def, p, partition, batch.window_id, now_dt).await?;
                rows += 1;
            }
        }

        if !stale.is_empty() {
            mark_stale(&mut tx, stale, now_dt).await?;
        }

        sqlx::query(
            "UPDATE mdp_applied SET window_id = ?, applied_at = ?, max_commit_ts_ms = ?, \
             min_captured_at_ms = ? WHERE `partition` = ?",
        )
        .bind(batch.window_id)
        .bind(now_dt)
        .bind(batch.max_commit_ts_ms)
        .bind(batch.min_captured_at_ms)
        .bind(partition)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::classify)?;
        tx.commit().await.map_err(StoreError::classify)?;
        Ok(ApplyOutcome::Applied { rows })
    }

    /// Records cache entries to rebuild (outside an apply).
    pub async fn mark_stale(
        &self,
        entries: &[(ReportName, Option<String>)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.ensure_schema().await?;
        let mut conn = self.pool.acquire().await.map_err(StoreError::classify)?;
        mark_stale(&mut conn, entries, chrono::Utc::now().naive_utc()).await
    }

    /// Marks every (report, tenant) of the given report tables stale: used
    /// when Redis lost its data.
    pub async fn mark_all_stale(&self, reports: &[ReportName]) -> Result<u64, StoreError> {
        self.ensure_schema().await?;
        let mut marked = 0;
        for report in reports {
            let sql = format!(
                "INSERT INTO mdp_cache_stale (report, tenant, gen, marked_at) \
                 SELECT ?, COALESCE(tenant, '_'), 1, ? FROM `{}` GROUP BY tenant \
                 ON DUPLICATE KEY UPDATE gen = gen + 1, marked_at = VALUES(marked_at)",
                report.table()
            );
            match sqlx::query(AssertSqlSafe(sql))
                .bind(report.as_str())
                .bind(chrono::Utc::now().naive_utc())
                .execute(&self.pool)
                .await
            {
                Ok(done) => marked += done.rows_affected(),
                Err(e) => match StoreError::classify(e) {
                    // No table: the report has no rows yet.
                    StoreError::Conflict(_) => {}
                    other => return Err(other),
                },
            }
        }
        Ok(marked)
    }

    /// Up to `limit` stale marks, oldest first.
    pub async fn stale_marks(&self, limit: u32) -> Result<Vec<StaleMark>, StoreError> {
        self.ensure_schema().await?;
        let rows = sqlx::query(
            "SELECT report, tenant, gen FROM mdp_cache_stale ORDER BY marked_at, report, tenant LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::classify)?;
        rows.iter()
            .map(|r| {
                Ok(StaleMark {
                    report: r.try_get("report")?,
                    tenant: r.try_get("tenant")?,
                    gen: r.try_get("gen")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::classify)
    }

    /// Removes a mark unless it was marked again since it was read.
    pub async fn clear_stale(&self, mark: &StaleMark) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM mdp_cache_stale WHERE report = ? AND tenant = ? AND gen = ?")
                .bind(&mark.report)
                .bind(&mark.tenant)
                .bind(mark.gen)
                .execute(&self.pool)
                .await
                .map_err(StoreError::classify)?;
        Ok(done.rows_affected() > 0)
    }

    /// Number of cache entries waiting for a rebuild.
    pub async fn stale_count(&self) -> Result<i64, StoreError> {
        self.ensure_schema().await?;
        sqlx::query_scalar("SELECT COUNT(*) FROM mdp_cache_stale")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::classify)
    }

    /// All rows of one cache entry. `None` when the report table does not exist.
    pub async fn rows_of(
        &self,
        report: &ReportName,
        tenant: Option<&str>,
    ) -> Result<Option<Vec<StoredRow>>, StoreError> {
        let table = report.table();
        let query = match tenant {
            Some(t) => sqlx::query(AssertSqlSafe(format!(
                "SELECT key_text, row_json, day FROM `{table}` WHERE tenant = ?"
            )))
            .bind(t.to_string()),
            None => sqlx::query(AssertSqlSafe(format!(
                "SELECT key_text, row_json, day FROM `{table}` WHERE tenant IS NULL"
            ))),
        };
        let rows = match query.fetch_all(&self.pool).await {
            Ok(rows) => rows,
            Err(e) => {
                return match StoreError::classify(e) {
                    StoreError::Conflict(_) => Ok(None),
                    other => Err(other),
                }
            }
        };
        rows.iter()
            .map(|r| {
                Ok(StoredRow {
                    key_text: r.try_get("key_text")?,
                    row_json: r.try_get("row_json")?,
                    day: r.try_get("day")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map(Some)
            .map_err(StoreError::classify)
    }

    /// Applied versions of every partition.
    pub async fn applied_versions(&self) -> Result<Vec<AppliedVersion>, StoreError> {
        self.ensure_schema().await?;
        let rows = sqlx::query(
            "SELECT `partition`, window_id, max_commit_ts_ms, applied_at FROM mdp_applied \
             ORDER BY `partition`",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::classify)?;
        rows.iter()
            .map(|r| {
                let partition: i32 = r.try_get("partition")?;
                let applied_at: NaiveDateTime = r.try_get("applied_at")?;
                Ok(AppliedVersion {
                    partition: u32::try_from(partition).unwrap_or(0),
                    window_id: r.try_get("window_id")?,
                    max_commit_ts_ms: r.try_get("max_commit_ts_ms")?,
                    applied_at_ms: applied_at.and_utc().timestamp_millis(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::classify)
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.ensure_schema().await?;
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(StoreError::classify)
    }
}

/// Merges one partial delta into its group's global state and rewrites the
/// group's report row (tenant NULL) from the merged state.
async fn merge_partial(
    tx: &mut sqlx::MySqlConnection,
    report: &ReportName,
    def: &mdp_report::Report,
    p: &PreparedPartial,
    partition: i64,
    window_id: i64,
    now: NaiveDateTime,
) -> Result<(), StoreError> {
    let acc = report.acc_table();
    let table = report.table();
    let merge_err = |source| StoreError::Merge {
        report: report.to_string(),
        source,
    };
    let current: Option<Option<Vec<u8>>> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT state FROM `{acc}` WHERE key_hash = ? FOR UPDATE"
    )))
    .bind(p.key_hash.to_vec())
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::classify)?;
    let merged = mdp_report::merge_partial(def, current.flatten().as_deref(), &p.delta.0)
        .map_err(merge_err)?;
    match &merged {
        Some(state) => sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO `{acc}` (key_hash, state, updated_at) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE state = VALUES(state), updated_at = VALUES(updated_at)"
        )))
        .bind(p.key_hash.to_vec())
        .bind(state.clone())
        .bind(now),
        None => sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM `{acc}` WHERE key_hash = ?"
        )))
        .bind(p.key_hash.to_vec()),
    }
    .execute(&mut *tx)
    .await
    .map_err(StoreError::classify)?;
    let row = mdp_report::partial_row(def, &p.delta.0.key, merged.as_deref()).map_err(merge_err)?;
    if row.deleted {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM `{table}` WHERE key_hash = ?"
        )))
        .bind(p.key_hash.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::classify)?;
        return Ok(());
    }
    let day = row
        .day
        .as_deref()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let row_json = layout::row_json(def.columns.iter().map(|c| c.name.as_str()), &row.values);
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO `{table}` (key_hash, key_text, tenant, day, row_json, \
         version_partition, version_window, updated_at) VALUES (?, ?, NULL, ?, ?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE key_text = VALUES(key_text), tenant = NULL, day = VALUES(day), \
         row_json = VALUES(row_json), version_partition = VALUES(version_partition), \
         version_window = VALUES(version_window), updated_at = VALUES(updated_at)"
    )))
    .bind(p.key_hash.to_vec())
    .bind(p.key_text.clone())
    .bind(day)
    .bind(row_json)
    .bind(partition)
    .bind(window_id)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::classify)?;
    Ok(())
}

async fn mark_stale(
    conn: &mut sqlx::MySqlConnection,
    entries: &[(ReportName, Option<String>)],
    now: NaiveDateTime,
) -> Result<(), StoreError> {
    for chunk in entries.chunks(ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<MySql> =
            QueryBuilder::new("INSERT INTO mdp_cache_stale (report, tenant, gen, marked_at) ");
        qb.push_values(chunk, |mut b, (report, tenant)| {
            b.push_bind(report.as_str().to_string())
                .push_bind(
                    tenant
                        .clone()
                        .unwrap_or_else(|| layout::NO_TENANT.to_string()),
                )
                .push_bind(1i64)
                .push_bind(now);
        });
        qb.push(" ON DUPLICATE KEY UPDATE gen = gen + 1, marked_at = VALUES(marked_at)");
        qb.build()
            .execute(&mut *conn)
            .await
            .map_err(StoreError::classify)?;
    }
    Ok(())
}
