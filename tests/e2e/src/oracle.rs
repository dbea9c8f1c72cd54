//! The independent recomputation: every report's SQL run directly over the
//! source tables in MariaDB, compared row by row with what the query API
//! serves, per merchant and for all merchants at once.

use crate::platform::{api_rows, diff_rows, try_mysql_rows, Platform};
use sqlx::MySqlPool;
use std::time::{Duration, Instant};

/// A report as the query API lists it: name, key columns, keyed by merchant.
#[derive(Debug, Clone)]
pub struct ReportKeys {
    pub name: String,
    pub keys: Vec<String>,
    pub keyed_by_merchant: bool,
}

/// The key columns of each report and whether it is keyed by merchant, as
/// the query API lists them.
pub async fn report_keys(platform: &Platform) -> Result<Vec<ReportKeys>, String> {
    let resp = reqwest::get(platform.url("query", "/v1/reports"))
        .await
        .map_err(|e| format!("GET /v1/reports: {e}"))?;
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("GET /v1/reports: {e}"))?;
    let reports = body["reports"].as_array().cloned().unwrap_or_default();
    if reports.len() != platform.reports.len() {
        return Err(format!(
            "the query API lists {} reports, {} are configured: {body}",
            reports.len(),
            platform.reports.len()
        ));
    }
    Ok(reports
        .iter()
        .map(|r| ReportKeys {
            name: r["name"].as_str().unwrap_or_default().to_string(),
            keys: r["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["role"] == "key")
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect(),
            keyed_by_merchant: r["keyed_by_merchant"].as_bool().unwrap_or(true),
        })
        .collect())
}

/// Every difference between the served reports and the oracle, one line
/// each; empty when they are equal. Merchant-keyed reports are read once per
/// merchant `1..=merchants` and once for all merchants.
pub async fn differences(
    platform: &Platform,
    source: &MySqlPool,
    keys: &[ReportKeys],
    merchants: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, sql) in &platform.reports {
        let listed = keys.iter().find(|r| &r.name == name);
        let key: Vec<&str> = listed
            .map(|r| r.keys.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let keyed_by_merchant = listed.is_none_or(|r| r.keyed_by_merchant);
        let expected = match try_mysql_rows(source, sql).await {
            Ok(rows) => rows,
            Err(e) => {
                problems.push(format!("{name}: the oracle query failed: {e}"));
                continue;
            }
        };
        if keyed_by_merchant {
            let mut actual = Vec::new();
            for m in 1..=merchants {
                match api_rows(platform, name, &[("merchant_id", m.to_string())]).await {
                    Ok(rows) => actual.extend(rows),
                    Err(e) => problems.push(format!("{name}: query failed: {e}")),
                }
            }
            // Rows of merchants outside 1..=merchants (e.g. probes) are
            // compared in the all-merchants read below.
            let in_range = |r: &crate::platform::JsonRow| {
                r.get("merchant_id")
                    .and_then(serde_json::Value::as_u64)
                    .is_none_or(|m| (1..=merchants).contains(&m))
            };
            let expected_in_range: Vec<_> =
                expected.iter().filter(|r| in_range(r)).cloned().collect();
            if let Some(d) = diff_rows(&expected_in_range, &actual, &key) {
                problems.push(format!("{name} (per merchant): {d}"));
            }
        }
        match api_rows(platform, name, &[]).await {
            Ok(all) => {
                if let Some(d) = diff_rows(&expected, &all, &key) {
                    problems.push(format!("{name} (all merchants): {d}"));
                }
            }
            Err(e) => problems.push(format!("{name} (all merchants): query failed: {e}")),
        }
    }
    problems
}

/// Polls until every report served equals the oracle; returns how long that
/// took, or the last differences after `timeout`.
pub async fn wait_converged(
    platform: &Platform,
    source: &MySqlPool,
    merchants: u64,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let problems = match report_keys(platform).await {
            Ok(keys) => differences(platform, source, &keys, merchants).await,
            Err(e) => vec![e],
        };
        if problems.is_empty() {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            return Err(problems.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
