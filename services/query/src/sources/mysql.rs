//! The complete path: a report's rows from its MySQL table, and the applied
//! versions as freshness.

use crate::domain::{DayRange, ReportRow};
use mdp_result_writer::layout::{Freshness, ReportName};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, QueryBuilder, Row};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

/// A MySQL failure.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("results.url cannot be parsed as a MySQL URL")]
    Config(#[source] sqlx::Error),
    #[error("results database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("stored row of report {report} is unreadable")]
    Corrupt {
        report: String,
        #[source]
        source: crate::domain::rows::RowParseError,
    },
}

/// Which rows of a report table a read selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantFilter<'a> {
    /// One merchant of a report keyed by merchant.
    One(&'a str),
    /// Every merchant of a report keyed by merchant.
    Any,
    /// A report not keyed by merchant.
    Unkeyed,
}

/// Reader of the report tables.
#[derive(Clone)]
pub struct ReportTables {
    pool: MySqlPool,
}

/// MySQL error numbers that mean "nothing written yet": unknown table, unknown database.
fn is_missing(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|m| matches!(m.number(), 1146 | 1049)),
        _ => false,
    }
}

impl ReportTables {
    /// A lazy pool on `url` (the results database): the service starts while
    /// MySQL is down.
    pub fn new(url: &str, max_connections: u32) -> Result<Self, TableError> {
        let options = MySqlConnectOptions::from_str(url).map_err(TableError::Config)?;
        let pool = MySqlPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options);
        Ok(ReportTables { pool })
    }

    /// Rows of `report` for `tenant` within `range`. A report table that
    /// does not exist yet has no rows.
    #[tracing::instrument(skip(self, key_columns), fields(report = %report))]
    pub async fn fetch(
        &self,
        report: &ReportName,
        tenant: TenantFilter<'_>,
        range: DayRange,
        key_columns: &[String],
    ) -> Result<Vec<ReportRow>, TableError> {
        // The table name is `rpt_` + a validated [a-z0-9_]+ report name.
        let mut qb: QueryBuilder<MySql> = QueryBuilder::new(format!(
            "SELECT key_text, row_json, day FROM `{}` WHERE ",
            report.table()
        ));
        match tenant {
            TenantFilter::One(t) => {
                qb.push("tenant = ").push_bind(t.to_string());
            }
            TenantFilter::Any => {
                qb.push("tenant IS NOT NULL");
            }
            TenantFilter::Unkeyed => {
                qb.push("tenant IS NULL");
            }
        }
        if let Some(from) = range.from {
            qb.push(" AND day >= ").push_bind(from);
        }
        if let Some(to) = range.to {
            qb.push(" AND day <= ").push_bind(to);
        }
        qb.push(" ORDER BY day, key_text");
        let rows = match qb.build().fetch_all(&self.pool).await {
            Ok(rows) => rows,
            Err(e) if is_missing(&e) => return Ok(Vec::new()),
            Err(e) => return Err(TableError::Unavailable(e)),
        };
        rows.iter()
            .map(|r| {
                let key_text: String = r.try_get("key_text").map_err(TableError::Unavailable)?;
                let json: String = r.try_get("row_json").map_err(TableError::Unavailable)?;
                let day: Option<chrono::NaiveDate> =
                    r.try_get("day").map_err(TableError::Unavailable)?;
                let day = day.map(mdp_result_writer::layout::day_text);
                ReportRow::parse(&key_text, &json, day, key_columns).map_err(|source| {
                    TableError::Corrupt {
                        report: report.to_string(),
                        source,
                    }
                })
            })
            .collect()
    }

    /// Applied versions per partition (`mdp_applied`).
    pub async fn freshness(&self) -> Result<BTreeMap<u32, Freshness>, TableError> {
        let rows = match sqlx::query(
            "SELECT `partition`, window_id, max_commit_ts_ms, applied_at FROM mdp_applied",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(rows) => rows,
            Err(e) if is_missing(&e) => return Ok(BTreeMap::new()),
            Err(e) => return Err(TableError::Unavailable(e)),
        };
        let mut out = BTreeMap::new();
        for r in &rows {
            let partition: i32 = r.try_get("partition").map_err(TableError::Unavailable)?;
            let window_id: i64 = r.try_get("window_id").map_err(TableError::Unavailable)?;
            let applied_at: chrono::NaiveDateTime =
                r.try_get("applied_at").map_err(TableError::Unavailable)?;
            let (Ok(partition), Ok(window_id)) =
                (u32::try_from(partition), u64::try_from(window_id))
            else {
                continue;
            };
            out.insert(
                partition,
                Freshness {
                    window_id,
                    max_commit_ts_ms: r
                        .try_get("max_commit_ts_ms")
                        .map_err(TableError::Unavailable)?,
                    applied_at_ms: applied_at.and_utc().timestamp_millis(),
                },
            );
        }
        Ok(out)
    }
}
