//! A result batch checked against the report definitions and turned into what
//! the stores write: hashed keys, row JSON, validated tenants and days.

use crate::layout::{self, ReportName, MAX_TENANT_LEN};
use chrono::NaiveDate;
use mdp_report::ReportSet;
use mdp_types::{ChangedRows, PartialDelta, ResultBatch, ResultNotice, ResultRow};
use std::collections::{BTreeMap, HashMap};

/// Why a batch cannot be applied; it is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is for partition {found}, consumed from partition {expected}")]
    PartitionMismatch { expected: u32, found: u32 },
    #[error("window id {0} does not fit a signed 64-bit integer")]
    WindowOutOfRange(u64),
    #[error(transparent)]
    InvalidReportName(#[from] layout::InvalidReportName),
    #[error("report {0} is not defined in this writer's reports directory")]
    UnknownReport(String),
    #[error("report {report}: row has {found} values, the report has {expected} columns")]
    ColumnMismatch {
        report: String,
        expected: usize,
        found: usize,
    },
    #[error("report {report}: row without tenant in a report keyed by merchant")]
    MissingTenant { report: String },
    #[error("report {report}: tenant is empty or longer than 64 characters")]
    InvalidTenant { report: String },
    #[error("report {report}: day {day:?} is not YYYY-MM-DD")]
    InvalidDay { report: String, day: String },
    #[error("report {report}: partial delta does not fit the report (keyed by merchant, or another key length)")]
    WrongShape { report: String },
}

impl BatchError {
    /// Low-cardinality label for `mdp_writer_rejected_messages_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            BatchError::PartitionMismatch { .. } => "partition_mismatch",
            BatchError::WindowOutOfRange(_) => "invalid_version",
            BatchError::InvalidReportName(_) => "invalid_report_name",
            BatchError::UnknownReport(_) => "unknown_report",
            BatchError::ColumnMismatch { .. } => "column_mismatch",
            BatchError::MissingTenant { .. } | BatchError::InvalidTenant { .. } => "invalid_tenant",
            BatchError::InvalidDay { .. } => "invalid_day",
            BatchError::WrongShape { .. } => "wrong_shape",
        }
    }
}

/// What happens to one report row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowChange {
    /// Insert or replace the row; `row_json` is the column → value object.
    Upsert { row_json: String },
    /// Remove the row.
    Delete,
}

/// One report row, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRow {
    pub key_text: String,
    pub key_hash: [u8; 32],
    /// Set for reports keyed by merchant, `None` otherwise.
    pub tenant: Option<String>,
    pub day: Option<NaiveDate>,
    pub change: RowChange,
}

impl PreparedRow {
    /// The `YYYY-MM-DD` of the row's day.
    pub fn day_text(&self) -> Option<String> {
        self.day.map(layout::day_text)
    }
}

/// One group's accumulator delta of a report not keyed by merchant, ready
/// to merge into the group's global state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPartial {
    pub key_text: String,
    pub key_hash: [u8; 32],
    pub delta: PreparedDelta,
}

/// The delta as received (wrapped so the prepared batch stays `Eq`).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedDelta(pub PartialDelta);

impl Eq for PreparedDelta {}

/// A validated batch: rows grouped by report, one row per key (the last one
/// in the batch wins), in first-seen order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedBatch {
    pub partition: u32,
    pub window_id: i64,
    pub first_window_id: u64,
    pub max_commit_ts_ms: i64,
    pub min_captured_at_ms: i64,
    pub reports: BTreeMap<ReportName, Vec<PreparedRow>>,
    /// Deltas of reports not keyed by merchant, by report, each report's in
    /// key hash order (the order groups are locked in).
    pub partials: BTreeMap<ReportName, Vec<PreparedPartial>>,
}

impl PreparedBatch {
    /// Checks `batch`, consumed from `partition`'s queue, against `reports`.
    pub fn prepare(
        batch: &ResultBatch,
        partition: u32,
        reports: &ReportSet,
    ) -> Result<Self, BatchError> {
        if batch.partition != partition {
            return Err(BatchError::PartitionMismatch {
                expected: partition,
                found: batch.partition,
            });
        }
        let window_id = i64::try_from(batch.window_id)
            .map_err(|_| BatchError::WindowOutOfRange(batch.window_id))?;
        let mut grouped: BTreeMap<ReportName, (Vec<PreparedRow>, HashMap<String, usize>)> =
            BTreeMap::new();
        for row in &batch.rows {
            let name = ReportName::parse(&row.report)?;
            let report = reports
                .get(name.as_str())
                .ok_or_else(|| BatchError::UnknownReport(name.to_string()))?;
            let prepared = prepare_row(row, report)?;
            let (rows, index) = grouped.entry(name).or_default();
            match index.get(&prepared.key_text) {
                Some(&i) => rows[i] = prepared,
                None => {
                    index.insert(prepared.key_text.clone(), rows.len());
                    rows.push(prepared);
                }
            }
        }
        let mut partials: BTreeMap<ReportName, Vec<PreparedPartial>> = BTreeMap::new();
        for delta in &batch.partials {
            let name = ReportName::parse(&delta.report)?;
            let report = reports
                .get(name.as_str())
                .ok_or_else(|| BatchError::UnknownReport(name.to_string()))?;
            if report.tenant_column.is_some() || delta.key.len() != report.key_len() {
                return Err(BatchError::WrongShape {
                    report: report.name.clone(),
                });
            }
            let key_text = delta.key_text();
            partials.entry(name).or_default().push(PreparedPartial {
                key_hash: layout::key_hash(&key_text),
                key_text,
                delta: PreparedDelta(delta.clone()),
            });
        }
        for list in partials.values_mut() {
            // Stable: deltas of one key keep their order.
            list.sort_by_key(|p| p.key_hash);
        }
        Ok(PreparedBatch {
            partials,
            partition,
            window_id,
            first_window_id: batch.first_window_id,
            max_commit_ts_ms: batch.max_commit_ts_ms,
            min_captured_at_ms: batch.min_captured_at_ms,
            reports: grouped
                .into_iter()
                .map(|(k, (rows, _))| (k, rows))
                .collect(),
        })
    }

    /// Number of distinct rows in the batch.
    pub fn row_count(&self) -> usize {
        self.reports.values().map(Vec::len).sum::<usize>()
            + self.partials.values().map(Vec::len).sum::<usize>()
    }

    /// What readers are told once the batch is written: every (report,
    /// tenant) it touches.
    pub fn notice(&self) -> ResultNotice {
        ResultNotice {
            partition: self.partition,
            window_id: u64::try_from(self.window_id).unwrap_or_default(),
            changed: self
                .cache_entries()
                .into_iter()
                .map(|(report, tenant)| ChangedRows {
                    report: report.to_string(),
                    tenant,
                })
                .collect(),
        }
    }

    /// Every (report, tenant) cache entry the batch touches.
    pub fn cache_entries(&self) -> Vec<(ReportName, Option<String>)> {
        let mut out = Vec::new();
        for (report, rows) in &self.reports {
            let mut tenants: Vec<Option<String>> = rows.iter().map(|r| r.tenant.clone()).collect();
            tenants.sort();
            tenants.dedup();
            out.extend(tenants.into_iter().map(|t| (report.clone(), t)));
        }
        for report in self.partials.keys() {
            let entry = (report.clone(), None);
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
        out
    }
}

fn prepare_row(row: &ResultRow, report: &mdp_report::Report) -> Result<PreparedRow, BatchError> {
    let tenant = if report.tenant_column.is_some() {
        let tenant = row
            .tenant
            .clone()
            .ok_or_else(|| BatchError::MissingTenant {
                report: report.name.clone(),
            })?;
        if tenant.is_empty() || tenant.chars().count() > MAX_TENANT_LEN {
            return Err(BatchError::InvalidTenant {
                report: report.name.clone(),
            });
        }
        Some(tenant)
    } else {
        None
    };
    let day = match &row.day {
        Some(text) => Some(NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
            BatchError::InvalidDay {
                report: report.name.clone(),
                day: text.chars().take(40).collect(),
            }
        })?),
        None => None,
    };
    let change = if row.deleted {
        RowChange::Delete
    } else {
        if row.values.len() != report.columns.len() {
            return Err(BatchError::ColumnMismatch {
                report: report.name.clone(),
                expected: report.columns.len(),
                found: row.values.len(),
            });
        }
        RowChange::Upsert {
            row_json: layout::row_json(report.columns.iter().map(|c| c.name.as_str()), &row.values),
        }
    };
    let key_text = row.key_text();
    Ok(PreparedRow {
        key_hash: layout::key_hash(&key_text),
        key_text,
        tenant,
        day,
        change,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mdp_report::{Report, TenantColumns};
    use mdp_types::Value;

    fn reports() -> ReportSet {
        let daily = Report::parse(
            "daily",
            "daily.sql",
            "SELECT merchant_id, DATE(created_at) AS day, COUNT(*) AS orders, SUM(amount) AS gmv \
             FROM orders GROUP BY merchant_id, DATE(created_at)",
            &TenantColumns::default(),
        )
        .expect("daily parses");
        ReportSet::from_reports([daily])
    }

    fn row(merchant: i64, day: &str, orders: i64) -> ResultRow {
        let d = Value::Date(day.parse().expect("date"));
        ResultRow {
            report: "daily".into(),
            key: vec![Value::I(merchant), d.clone()],
            values: vec![
                Value::I(merchant),
                d,
                Value::I(orders),
                Value::D("12.50".parse().expect("dec")),
            ],
            deleted: false,
            tenant: Some(merchant.to_string()),
            day: Some(day.into()),
        }
    }

    fn batch(rows: Vec<ResultRow>) -> ResultBatch {
        ResultBatch {
            partition: 3,
            window_id: 9,
            first_window_id: 8,
            computed_at_ms: 1,
            max_commit_ts_ms: 2,
            min_captured_at_ms: 3,
            rows,
            partials: Vec::new(),
        }
    }

    #[test]
    fn prepares_rows_with_json_hash_and_day() {
        let p = PreparedBatch::prepare(&batch(vec![row(7, "2026-11-21", 2)]), 3, &reports())
            .expect("valid");
        assert_eq!(p.window_id, 9);
        assert_eq!(p.row_count(), 1);
        let name = ReportName::parse("daily").expect("name");
        let r = &p.reports[&name][0];
        assert_eq!(r.key_text, "7\u{1f}2026-11-21");
        assert_eq!(r.key_hash, layout::key_hash("7\u{1f}2026-11-21"));
        assert_eq!(r.tenant.as_deref(), Some("7"));
        assert_eq!(r.day_text().as_deref(), Some("2026-11-21"));
        assert_eq!(
            r.change,
            RowChange::Upsert {
                row_json: r#"{"merchant_id":7,"day":"2026-11-21","orders":2,"gmv":12.5}"#.into()
            }
        );
        assert_eq!(p.cache_entries(), vec![(name, Some("7".to_string()))]);
    }

    #[test]
    fn the_last_row_of_a_key_wins() {
        let mut deleted = row(7, "2026-11-21", 0);
        deleted.deleted = true;
        deleted.values.clear();
        let p = PreparedBatch::prepare(
            &batch(vec![
                row(7, "2026-11-21", 2),
                row(8, "2026-11-21", 1),
                deleted,
            ]),
            3,
            &reports(),
        )
        .expect("valid");
        let rows = &p.reports[&ReportName::parse("daily").expect("name")];
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key_text, "7\u{1f}2026-11-21");
        assert_eq!(rows[0].change, RowChange::Delete);
        assert_eq!(rows[1].key_text, "8\u{1f}2026-11-21");
        assert_eq!(p.cache_entries().len(), 2);
    }

    #[test]
    fn invalid_batches_are_refused_with_a_reason() {
        let set = reports();
        let check = |b: ResultBatch, partition: u32, reason: &str| {
            let e = PreparedBatch::prepare(&b, partition, &set).expect_err("must be refused");
            assert_eq!(e.reason(), reason, "{e}");
        };
        check(
            batch(vec![row(7, "2026-11-21", 1)]),
            2,
            "partition_mismatch",
        );
        let mut b = batch(vec![]);
        b.window_id = u64::MAX;
        check(b, 3, "invalid_version");
        let mut r = row(7, "2026-11-21", 1);
        r.report = "Daily; DROP TABLE x".into();
        check(batch(vec![r]), 3, "invalid_report_name");
        let mut r = row(7, "2026-11-21", 1);
        r.report = "weekly".into();
        check(batch(vec![r]), 3, "unknown_report");
        let mut r = row(7, "2026-11-21", 1);
        r.values.pop();
        check(batch(vec![r]), 3, "column_mismatch");
        let mut r = row(7, "2026-11-21", 1);
        r.tenant = None;
        check(batch(vec![r]), 3, "invalid_tenant");
        let mut r = row(7, "2026-11-21", 1);
        r.tenant = Some("x".repeat(65));
        check(batch(vec![r]), 3, "invalid_tenant");
        let mut r = row(7, "2026-11-21", 1);
        r.day = Some("21/11/2026".into());
        check(batch(vec![r]), 3, "invalid_day");
    }
}
