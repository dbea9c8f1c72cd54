//! Freshness probes: orders of a merchant the workload never touches, each
//! committed to the source and then looked for in the query API. The time
//! from commit to visibility is the end-to-end freshness; a probe becoming
//! visible after a fault shows the whole pipeline carries changes again.

use crate::platform::Platform;
use sqlx::MySqlPool;
use std::time::Instant;

/// The merchant whose orders are the probes; workload merchants are numbered
/// from 1 and far below this.
pub const PROBE_MERCHANT: i64 = 990_001;
/// Probe order ids start here, far above the ids the workload assigns.
pub const PROBE_ORDER_ID_BASE: i64 = 9_000_000_000_000;
/// The report the probes are read from (orders per merchant and day).
pub const PROBE_REPORT: &str = "merchant_daily_orders";

/// Creates the probe merchant. Call after the workload's planners have read
/// the merchants, so the workload never touches it.
pub async fn create_merchant(pool: &MySqlPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO merchants (id, name, city, created_at) VALUES (?, 'freshness probe', 'Hangzhou', UTC_TIMESTAMP())",
    )
    .bind(PROBE_MERCHANT)
    .execute(pool)
    .await
    .map(|_| ())
}

/// Commits probe order `n` (1, 2, …) and returns when the commit returned.
pub async fn commit(pool: &MySqlPool, n: usize) -> Result<Instant, sqlx::Error> {
    let now = chrono::Utc::now().naive_utc();
    let id = PROBE_ORDER_ID_BASE + n as i64;
    sqlx::query(
        "INSERT INTO orders (id, merchant_id, customer_id, status, amount_cents, refund_cents, created_at, updated_at) \
         VALUES (?, ?, ?, 'paid', ?, 0, ?, ?)",
    )
    .bind(id)
    .bind(PROBE_MERCHANT)
    .bind(id)
    .bind(1_000 + n as i64)
    .bind(now)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(Instant::now())
}

/// Orders of the probe merchant the query API serves (over all days), or
/// None when the query API does not answer.
pub async fn visible(client: &reqwest::Client, platform: &Platform) -> Option<usize> {
    let url = platform.url("query", &format!("/v1/reports/{PROBE_REPORT}/rows"));
    let resp = client
        .get(url)
        .query(&[("merchant_id", PROBE_MERCHANT.to_string())])
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: serde_json::Value = resp.json().await.ok()?;
    let rows = body["rows"].as_array()?;
    Some(
        rows.iter()
            .filter_map(|r| r["orders"].as_f64())
            .sum::<f64>()
            .round() as usize,
    )
}
