//! Brings Redis back in line with MySQL after an outage: probes Redis while
//! it is degraded, notices when Redis lost its data (cache epoch key gone),
//! and rebuilds every stale (report, tenant) hash from the report tables.
//!
//! Readers trust Redis only while the epoch key exists. After Redis lost its
//! data, the epoch is set again only once every hash has been rebuilt, so the
//! hashes partition writers refill in the meantime (holding only the rows
//! changed since) are never served.

use crate::events;
use crate::layout::{Freshness, ReportName};
use crate::writer::Writer;
use actix::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the cache is checked.
pub const REBUILD_INTERVAL: Duration = Duration::from_millis(500);
/// Stale entries rebuilt per round.
const MARKS_PER_ROUND: u32 = 200;

/// Stale entries waiting, as last counted (for status).
#[derive(Debug, Default, Clone)]
pub struct StaleCount(pub Arc<AtomicI64>);

impl StaleCount {
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The cache rebuilder.
pub struct CacheRebuilder {
    writer: Arc<Writer>,
    service: mdp_service::ServiceContext,
    stale: StaleCount,
    busy: bool,
    /// Redis lost its data and the rebuild has not finished: the epoch key
    /// is set when it has.
    epoch_pending: Arc<AtomicBool>,
}

impl CacheRebuilder {
    pub fn new(
        writer: Arc<Writer>,
        service: mdp_service::ServiceContext,
        stale: StaleCount,
    ) -> Self {
        CacheRebuilder {
            writer,
            service,
            stale,
            busy: false,
            epoch_pending: Arc::new(AtomicBool::new(false)),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let writer = self.writer.clone();
        let stale = self.stale.clone();
        let service = self.service.clone();
        let epoch_pending = self.epoch_pending.clone();
        ctx.spawn(
            async move {
                match round(&writer, &epoch_pending).await {
                    Ok(remaining) => {
                        stale.0.store(remaining, Ordering::Relaxed);
                        service
                            .stats
                            .set("mdp_writer_cache_stale_entries", remaining as f64);
                    }
                    Err(RoundError::Skipped) => {}
                    Err(e) => tracing::debug!(
                        error = %mdp_telemetry::error_chain(&e),
                        "cache rebuild round stopped"
                    ),
                }
            }
            .into_actor(self)
            .map(|(), act, _| act.busy = false),
        );
    }
}

impl Actor for CacheRebuilder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let cancel = self.service.cancel.clone();
        ctx.spawn(
            async move { cancel.cancelled().await }
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        );
        ctx.run_interval(REBUILD_INTERVAL, |act, ctx| act.tick(ctx));
        self.tick(ctx);
    }
}

#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("redis is degraded and not due for a probe")]
    Skipped,
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Probes MySQL while its machine is degraded, so the state recovers (and
/// shows so) even when no batch arrives.
async fn probe_mysql(writer: &Writer) {
    let mysql = &writer.mysql;
    if !mysql.is_degraded() || !mysql.allow_primary() {
        return;
    }
    match writer.store.ping().await {
        Ok(()) => mysql.record_success(),
        Err(e) => mysql.record_failure(&mdp_telemetry::error_chain(&e)),
    }
}

/// One round: probes, epoch check, rebuild up to [`MARKS_PER_ROUND`]
/// entries. Returns the number of entries still stale.
async fn round(writer: &Writer, epoch_pending: &AtomicBool) -> Result<i64, RoundError> {
    probe_mysql(writer).await;
    let redis = &writer.redis;
    if redis.is_degraded() {
        if !redis.allow_primary() {
            return Err(RoundError::Skipped);
        }
        if let Err(e) = writer.cache.ping().await {
            let text = mdp_telemetry::error_chain(&e);
            redis.record_failure(&text);
            events::CacheFailed {
                operation: "probe",
                error: &text,
            }
            .emit();
            return Err(e.into());
        }
        redis.record_success();
    }
    writer.record_unrecorded_stale().await?;

    let epoch_present = cache_op(writer, "epoch", writer.cache.epoch_present()).await?;
    if epoch_present {
        // Another replica finished the rebuild.
        epoch_pending.store(false, Ordering::Relaxed);
    } else if !epoch_pending.load(Ordering::Relaxed) {
        let reports: Vec<ReportName> = writer
            .reports
            .reports()
            .iter()
            .filter_map(|r| ReportName::parse(&r.name).ok())
            .collect();
        let marked = writer.store.mark_all_stale(&reports).await?;
        epoch_pending.store(true, Ordering::Relaxed);
        tracing::info!(
            entries = marked,
            "redis holds no cache epoch: every cache entry is rebuilt from mysql, readers use mysql until then"
        );
    }

    let marks = writer.store.stale_marks(MARKS_PER_ROUND).await?;
    if marks.is_empty() {
        if epoch_pending.load(Ordering::Relaxed) {
            sync_freshness(writer).await?;
            cache_op(writer, "epoch", writer.cache.set_epoch(mdp_types::now_ms())).await?;
            epoch_pending.store(false, Ordering::Relaxed);
            tracing::info!("cache rebuilt from mysql: readers use redis again");
        }
        return Ok(0);
    }
    let hashes: Vec<String> = marks
        .iter()
        .filter_map(|m| {
            let report = ReportName::parse(&m.report).ok()?;
            let tenant = writer.tenant_of(&report, &m.tenant);
            Some(writer.cache.keys().report_hash(&report, tenant.as_deref()))
        })
        .collect();
    // Readers skip these hashes until they are rebuilt.
    cache_op(writer, "mark_stale", writer.cache.add_stale(&hashes)).await?;

    for mark in &marks {
        let Ok(report) = ReportName::parse(&mark.report) else {
            writer.store.clear_stale(mark).await?;
            continue;
        };
        let tenant = writer.tenant_of(&report, &mark.tenant);
        let _gate = writer.cache_gate.write().await;
        let rows = writer
            .store
            .rows_of(&report, tenant.as_deref())
            .await?
            .unwrap_or_default();
        cache_op(
            writer,
            "rebuild",
            writer
                .cache
                .replace_entry(&report, tenant.as_deref(), &rows),
        )
        .await?;
        writer.store.clear_stale(mark).await?;
        events::CacheEntryRebuilt {
            report: report.as_str(),
            tenant: &mark.tenant,
            rows: rows.len(),
        }
        .emit();
    }
    sync_freshness(writer).await?;
    Ok(writer.store.stale_count().await?)
}

/// Runs a Redis operation, feeding the outcome to the redis machine.
async fn cache_op<T>(
    writer: &Writer,
    operation: &'static str,
    fut: impl std::future::Future<Output = Result<T, crate::cache::CacheError>>,
) -> Result<T, RoundError> {
    match fut.await {
        Ok(v) => {
            writer.redis.record_success();
            Ok(v)
        }
        Err(e) => {
            let text = mdp_telemetry::error_chain(&e);
            writer.redis.record_failure(&text);
            events::CacheFailed {
                operation,
                error: &text,
            }
            .emit();
            Err(e.into())
        }
    }
}

/// Copies MySQL's applied versions to the freshness hash where Redis is behind.
async fn sync_freshness(writer: &Writer) -> Result<(), RoundError> {
    let applied = writer.store.applied_versions().await?;
    let cached = cache_op(writer, "freshness", writer.cache.freshness()).await?;
    let behind: Vec<(u32, Freshness)> = applied
        .iter()
        .filter_map(|a| {
            let window_id = u64::try_from(a.window_id).ok()?;
            let is_behind = cached
                .get(&a.partition)
                .is_none_or(|c| c.window_id < window_id);
            (is_behind && window_id > 0).then_some((
                a.partition,
                Freshness {
                    window_id,
                    max_commit_ts_ms: a.max_commit_ts_ms,
                    applied_at_ms: a.applied_at_ms,
                },
            ))
        })
        .collect();
    cache_op(writer, "freshness", writer.cache.set_freshness(&behind)).await?;
    Ok(())
}
