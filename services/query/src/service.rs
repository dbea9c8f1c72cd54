//! Answering a rows request: the in-process cache in front, then Redis (hot,
//! per tenant), then MySQL (complete), steered by the `redis` and `mysql`
//! degrade machines.
//!
//! - Redis down: MySQL answers, entries stay longer in the local cache and
//!   MySQL reads beyond a budget get 429.
//! - MySQL down: Redis answers alone; an answer that may lack rows (tenant
//!   not in Redis, or its hash being rebuilt) is marked partial.

use crate::domain::{sort_rows, DayRange, ReportRow, RowsParams};
use crate::events;
use crate::notices::ChangeMarks;
use crate::sources::mysql::TenantFilter;
use crate::sources::{HotCache, HotEntry, ReportTables, TableError};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use mdp_degrade::DegradeMachine;
use mdp_report::{ColumnRole, Report};
use mdp_result_writer::layout::{Freshness, ReportName};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lifetime of cache entries loaded while Redis is degraded (at least).
pub const DEGRADED_CACHE_TTL: Duration = Duration::from_secs(5);
/// MySQL reads per second allowed while Redis is degraded.
pub const DEGRADED_MYSQL_READS_PER_SECOND: u32 = 500;
/// Most rows the local cache holds across entries.
const CACHE_MAX_ROWS: u64 = 2_000_000;

/// Where an answer's rows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Redis,
    Mysql,
}

/// How an answer was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedBy {
    Redis,
    Mysql,
    Cache,
}

impl ServedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ServedBy::Redis => "redis",
            ServedBy::Mysql => "mysql",
            ServedBy::Cache => "cache",
        }
    }
}

/// All rows of one (report, tenant, day range), sorted, with freshness.
#[derive(Debug)]
pub struct Snapshot {
    pub rows: Vec<ReportRow>,
    pub source: Source,
    pub freshness: BTreeMap<u32, Freshness>,
    /// Why the rows may be incomplete, when they may be.
    pub partial: Option<&'static str>,
    /// Loaded without Redis: kept longer in the local cache.
    pub without_redis: bool,
    /// The change number current when the load began (see [`ChangeMarks`]).
    pub seen: u64,
}

/// A snapshot and how it was obtained.
#[derive(Debug, Clone)]
pub struct Answer {
    pub snapshot: Arc<Snapshot>,
    pub served_by: ServedBy,
}

/// Why no answer could be given.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("too many requests: redis is degraded and the mysql read budget of {per_second}/s is used up")]
    RateLimited { per_second: u32 },
    /// Neither store answered (details are logged where each failed).
    #[error("report storage unavailable: redis {redis}, mysql {mysql}")]
    Unavailable {
        redis: &'static str,
        mysql: &'static str,
    },
    #[error("stored rows of report {0} are unreadable")]
    Corrupt(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    report: String,
    tenant: Option<String>,
    all_merchants: bool,
    range: DayRange,
}

struct SnapshotExpiry {
    ttl: Duration,
    degraded_ttl: Duration,
}

impl moka::Expiry<CacheKey, Arc<Snapshot>> for SnapshotExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Snapshot>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if value.without_redis {
            self.degraded_ttl
        } else {
            self.ttl
        })
    }
}

/// The rows service.
pub struct RowsService {
    hot: HotCache,
    tables: ReportTables,
    redis: DegradeMachine,
    mysql: DegradeMachine,
    cache: Option<moka::future::Cache<CacheKey, Arc<Snapshot>>>,
    marks: Arc<ChangeMarks>,
    limiter: DefaultDirectRateLimiter,
}

impl RowsService {
    pub fn new(
        hot: HotCache,
        tables: ReportTables,
        redis: DegradeMachine,
        mysql: DegradeMachine,
        cache_ttl: Duration,
        marks: Arc<ChangeMarks>,
    ) -> Self {
        let cache = (!cache_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(CACHE_MAX_ROWS)
                .weigher(|_k: &CacheKey, v: &Arc<Snapshot>| {
                    u32::try_from(v.rows.len() + 1).unwrap_or(u32::MAX)
                })
                .expire_after(SnapshotExpiry {
                    ttl: cache_ttl,
                    degraded_ttl: cache_ttl.max(DEGRADED_CACHE_TTL),
                })
                .build()
        });
        let per_second =
            NonZeroU32::new(DEGRADED_MYSQL_READS_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        RowsService {
            hot,
            tables,
            redis,
            mysql,
            cache,
            marks,
            limiter: RateLimiter::direct(Quota::per_second(per_second)),
        }
    }

    /// All rows of `report` for the request's tenant and range.
    pub async fn rows(&self, report: &Report, params: &RowsParams) -> Result<Answer, LoadError> {
        let name =
            ReportName::parse(&report.name).map_err(|_| LoadError::Corrupt(report.name.clone()))?;
        let tenant = params.merchant.as_ref().map(|m| m.as_str().to_string());
        let scope = match (&tenant, params.all_merchants) {
            (Some(t), _) => TenantFilter::One(t.as_str()),
            (None, true) => TenantFilter::Any,
            (None, false) => TenantFilter::Unkeyed,
        };
        let range = params.range;
        let (snapshot, from_cache) = match &self.cache {
            None => (
                Arc::new(self.load(&name, report, scope, range).await?),
                false,
            ),
            Some(cache) => {
                let key = CacheKey {
                    report: report.name.clone(),
                    tenant: tenant.clone(),
                    all_merchants: params.all_merchants,
                    range,
                };
                let mut entry = self.cached(cache, &key, &name, report, scope).await?;
                // Rows of the answer changed since it was loaded: load again.
                if !entry.is_fresh()
                    && self
                        .marks
                        .changed_since(&key.report, tenant.as_deref(), entry.value().seen)
                {
                    events::cache_outdated();
                    cache.invalidate(&key).await;
                    entry = self.cached(cache, &key, &name, report, scope).await?;
                }
                let from_cache = !entry.is_fresh();
                (entry.into_value(), from_cache)
            }
        };
        let served_by = match (from_cache, snapshot.source) {
            (true, _) => ServedBy::Cache,
            (false, Source::Redis) => ServedBy::Redis,
            (false, Source::Mysql) => ServedBy::Mysql,
        };
        events::served(served_by);
        Ok(Answer {
            snapshot,
            served_by,
        })
    }

    /// The cached answer for `key`, loaded when there is none.
    async fn cached(
        &self,
        cache: &moka::future::Cache<CacheKey, Arc<Snapshot>>,
        key: &CacheKey,
        name: &ReportName,
        report: &Report,
        scope: TenantFilter<'_>,
    ) -> Result<moka::Entry<CacheKey, Arc<Snapshot>>, LoadError> {
        cache
            .entry_by_ref(key)
            .or_try_insert_with(async {
                self.load(name, report, scope, key.range)
                    .await
                    .map(Arc::new)
            })
            .await
            .map_err(|e| (*e).clone())
    }

    async fn load(
        &self,
        name: &ReportName,
        report: &Report,
        scope: TenantFilter<'_>,
        range: DayRange,
    ) -> Result<Snapshot, LoadError> {
        let seen = self.marks.current();
        let key_columns = key_columns(report);
        let mut answered: Option<HotEntry> = None;
        let hot_tenant = match scope {
            TenantFilter::One(t) => Some(Some(t)),
            TenantFilter::Unkeyed => Some(None),
            // Redis holds one hash per merchant: every merchant is read from MySQL.
            TenantFilter::Any => None,
        };
        let redis_error = if let Some(tenant) = hot_tenant.filter(|_| self.redis.allow_primary()) {
            match self.hot.fetch(name, tenant, &key_columns).await {
                Ok(entry) => {
                    self.redis.record_success();
                    if !entry.rows.is_empty() && !entry.stale {
                        return Ok(Snapshot {
                            rows: filtered(entry.rows, range),
                            source: Source::Redis,
                            freshness: entry.freshness,
                            partial: None,
                            without_redis: false,
                            seen,
                        });
                    }
                    answered = Some(entry);
                    "answered"
                }
                Err(e) => {
                    let text = mdp_telemetry::error_chain(&e);
                    self.redis.record_failure(&text);
                    events::SourceFailed {
                        source: "redis",
                        error: &text,
                    }
                    .emit();
                    "failed"
                }
            }
        } else if hot_tenant.is_none() {
            "not used for every merchant"
        } else {
            "degraded"
        };
        // Reading every merchant bypasses Redis by design, not because it failed.
        let without_redis = answered.is_none() && hot_tenant.is_some();

        let mysql_error = if without_redis && self.limiter.check().is_err() {
            events::rate_limited();
            return Err(LoadError::RateLimited {
                per_second: DEGRADED_MYSQL_READS_PER_SECOND,
            });
        } else if self.mysql.allow_primary() {
            match self.tables.fetch(name, scope, range, &key_columns).await {
                Ok(mut rows) => {
                    self.mysql.record_success();
                    sort_rows(&mut rows);
                    let freshness = match answered {
                        Some(entry) => entry.freshness,
                        None => self.tables.freshness().await.unwrap_or_default(),
                    };
                    return Ok(Snapshot {
                        rows,
                        source: Source::Mysql,
                        freshness,
                        partial: None,
                        without_redis,
                        seen,
                    });
                }
                Err(TableError::Corrupt { report, source }) => {
                    self.mysql.record_success();
                    tracing::error!(report = %report, error = %source, "unreadable report row");
                    return Err(LoadError::Corrupt(report));
                }
                Err(e) => {
                    let text = mdp_telemetry::error_chain(&e);
                    self.mysql.record_failure(&text);
                    events::SourceFailed {
                        source: "mysql",
                        error: &text,
                    }
                    .emit();
                    "failed"
                }
            }
        } else {
            "degraded"
        };

        match answered {
            Some(entry) => {
                let partial = if entry.stale {
                    "the cached rows are being rebuilt and mysql is unavailable: rows may be out of date"
                } else {
                    "mysql is unavailable: rows not held in the redis cache are missing"
                };
                Ok(Snapshot {
                    rows: filtered(entry.rows, range),
                    source: Source::Redis,
                    freshness: entry.freshness,
                    partial: Some(partial),
                    without_redis: false,
                    seen,
                })
            }
            None => Err(LoadError::Unavailable {
                redis: redis_error,
                mysql: mysql_error,
            }),
        }
    }
}

/// Names of the key columns other than the date column, in select order.
pub fn key_columns(report: &Report) -> Vec<String> {
    report
        .columns
        .iter()
        .enumerate()
        .filter(|(i, c)| c.role == ColumnRole::Key && Some(*i) != report.date_column)
        .map(|(_, c)| c.name.clone())
        .collect()
}

fn filtered(rows: Vec<ReportRow>, range: DayRange) -> Vec<ReportRow> {
    let mut rows: Vec<ReportRow> = rows
        .into_iter()
        .filter(|r| range.contains(r.day()))
        .collect();
    sort_rows(&mut rows);
    rows
}
