//! The apply pipeline shared by every partition: MySQL first (the version
//! check makes it idempotent), then Redis, with both degrade machines and the
//! stale-cache bookkeeping that lets Redis be rebuilt after an outage.

use crate::cache::Cache;
use crate::domain::PreparedBatch;
use crate::events;
use crate::layout::ReportName;
use crate::store::{ApplyOutcome, Store, StoreError};
use mdp_degrade::DegradeMachine;
use mdp_report::ReportSet;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Try again later; the message stays unacknowledged.
    #[error("mysql apply must be retried ({kind})")]
    Retry {
        kind: &'static str,
        #[source]
        source: StoreError,
    },
    /// The database refused the batch's data: dead-letter it.
    #[error("mysql refused the batch")]
    Rejected(#[source] StoreError),
}

/// A committed (or already applied) batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub outcome: ApplyOutcome,
}

/// One (report, tenant) cache entry.
pub type CacheEntry = (ReportName, Option<String>);

/// Everything a partition needs to apply batches.
pub struct Writer {
    pub store: Store,
    pub cache: Cache,
    pub reports: Arc<ReportSet>,
    pub mysql: DegradeMachine,
    pub redis: DegradeMachine,
    /// Redis writes of applies hold it shared; a cache rebuild holds it
    /// exclusively, so a rebuild never overwrites a newer write with rows it
    /// read before that write was committed.
    pub cache_gate: RwLock<()>,
    /// Stale marks not yet recorded in MySQL (MySQL failed right after Redis did).
    unrecorded_stale: Mutex<BTreeSet<CacheEntry>>,
}

impl Writer {
    pub fn new(
        store: Store,
        cache: Cache,
        reports: Arc<ReportSet>,
        mysql: DegradeMachine,
        redis: DegradeMachine,
    ) -> Self {
        Writer {
            store,
            cache,
            reports,
            mysql,
            redis,
            cache_gate: RwLock::new(()),
            unrecorded_stale: Mutex::new(BTreeSet::new()),
        }
    }

    /// Applies `batch` to MySQL, then (unless `cached_ahead`: the batch was
    /// already written to Redis while MySQL was down) to Redis.
    pub async fn commit(
        &self,
        batch: &PreparedBatch,
        cached_ahead: bool,
    ) -> Result<Committed, ApplyError> {
        let started = Instant::now();
        let now = chrono::Utc::now();
        let entries = batch.cache_entries();
        // Redis known down: record the entries to rebuild in the same
        // transaction, so the marks survive a crash.
        let mark_in_tx = !cached_ahead && self.redis.is_degraded();
        // Rows of reports not keyed by merchant are computed inside the
        // transaction from the merged states; their cache entries are
        // rebuilt from MySQL (in commit order, whichever partition wrote last).
        let merged: Vec<CacheEntry> = batch.partials.keys().map(|r| (r.clone(), None)).collect();
        let marks: &[CacheEntry] = if mark_in_tx { &entries } else { &merged };
        let outcome = match self.store.apply(batch, &self.reports, marks, now).await {
            Ok(outcome) => {
                self.mysql.record_success();
                outcome
            }
            Err(e @ StoreError::Unavailable(_)) | Err(e @ StoreError::Config(_)) => {
                self.mysql.record_failure(&mdp_telemetry::error_chain(&e));
                return Err(ApplyError::Retry {
                    kind: "unavailable",
                    source: e,
                });
            }
            Err(e @ StoreError::Conflict(_)) => {
                self.mysql.record_success();
                return Err(ApplyError::Retry {
                    kind: "conflict",
                    source: e,
                });
            }
            Err(e @ (StoreError::Rejected(_) | StoreError::Merge { .. })) => {
                self.mysql.record_success();
                return Err(ApplyError::Rejected(e));
            }
        };
        let refresh_cache = match outcome {
            ApplyOutcome::Applied { .. } => !cached_ahead && !mark_in_tx,
            ApplyOutcome::Duplicate {
                applied_window,
                current,
            } => {
                events::DuplicateBatch {
                    partition: batch.partition,
                    window_id: batch.window_id,
                    applied_window,
                }
                .emit();
                events::applied_window(batch.partition, applied_window);
                // The last applied window may not have reached Redis before a
                // crash: its rows are still the newest, write them again.
                current && !cached_ahead
            }
        };
        if refresh_cache {
            self.write_cache(batch, &entries, now.timestamp_millis())
                .await;
        }
        if let ApplyOutcome::Applied { rows } = outcome {
            // Measured once the rows are readable (MySQL, and Redis when up).
            let end_to_end = (batch.min_captured_at_ms > 0)
                .then(|| mdp_types::now_ms() - batch.min_captured_at_ms)
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis);
            events::BatchApplied {
                partition: batch.partition,
                window_id: batch.window_id,
                rows,
                elapsed: started.elapsed(),
                end_to_end,
            }
            .emit();
        }
        Ok(Committed { outcome })
    }

    /// Writes a committed batch to Redis; on failure, records its entries
    /// for a rebuild.
    async fn write_cache(&self, batch: &PreparedBatch, entries: &[CacheEntry], now_ms: i64) {
        let _gate = self.cache_gate.read().await;
        if !self.redis.allow_primary() {
            self.record_stale(entries).await;
            return;
        }
        match self.cache.write_batch(batch, now_ms).await {
            Ok(()) => self.redis.record_success(),
            Err(e) => {
                let text = mdp_telemetry::error_chain(&e);
                self.redis.record_failure(&text);
                events::CacheFailed {
                    operation: "write_batch",
                    error: &text,
                }
                .emit();
                self.record_stale(entries).await;
            }
        }
    }

    /// Writes a batch to Redis ahead of MySQL (MySQL unavailable). Returns
    /// whether Redis now holds this batch's window or a later one.
    pub async fn cache_ahead(&self, batch: &PreparedBatch) -> bool {
        let _gate = self.cache_gate.read().await;
        if !self.redis.allow_primary() {
            return false;
        }
        let window = u64::try_from(batch.window_id).unwrap_or(0);
        let result = async {
            if let Some(cached) = self.cache.cached_window(batch.partition).await? {
                if cached >= window {
                    return Ok(true);
                }
            }
            self.cache
                .write_batch(batch, mdp_types::now_ms())
                .await
                .map(|()| {
                    events::CacheOnlyWrite {
                        partition: batch.partition,
                        window_id: batch.window_id,
                    }
                    .emit();
                    true
                })
        }
        .await;
        match result {
            Ok(done) => {
                self.redis.record_success();
                done
            }
            Err(e) => {
                let text = mdp_telemetry::error_chain(&e);
                self.redis.record_failure(&text);
                events::CacheFailed {
                    operation: "cache_ahead",
                    error: &text,
                }
                .emit();
                false
            }
        }
    }

    /// Records entries whose Redis copy is stale: in MySQL when possible,
    /// else in memory until the next rebuild round records them.
    pub async fn record_stale(&self, entries: &[CacheEntry]) {
        if entries.is_empty() {
            return;
        }
        if let Err(e) = self.store.mark_stale(entries).await {
            tracing::warn!(
                error = %mdp_telemetry::error_chain(&e),
                entries = entries.len(),
                "stale cache entries kept in memory until mysql is reachable"
            );
            self.unrecorded_stale
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(entries.iter().cloned());
        }
    }

    /// Moves stale marks kept in memory to MySQL.
    pub async fn record_unrecorded_stale(&self) -> Result<(), StoreError> {
        let entries: Vec<CacheEntry> = {
            let mut set = self
                .unrecorded_stale
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *set).into_iter().collect()
        };
        if entries.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.mark_stale(&entries).await {
            self.unrecorded_stale
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(entries);
            return Err(e);
        }
        Ok(())
    }

    /// Number of stale marks waiting in memory.
    pub fn unrecorded_stale_count(&self) -> usize {
        self.unrecorded_stale
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether `report` is keyed by merchant (unknown reports: by the tenant text).
    pub fn tenant_of(&self, report: &ReportName, tenant: &str) -> Option<String> {
        match self.reports.get(report.as_str()) {
            Some(r) if r.tenant_column.is_some() => Some(tenant.to_string()),
            Some(_) => None,
            None => (tenant != crate::layout::NO_TENANT).then(|| tenant.to_string()),
        }
    }
}
