//! The whole pipeline against real services: the shop schema in the
//! binlog-enabled MariaDB, a seeded stream of order lifecycles (cart edits,
//! payments, refunds, hard deletes, late corrections days later), and every
//! report row from the query API compared with the same SQL run directly over
//! the final source tables.

use crate::helpers::{api_rows, diff_rows, mysql_rows, repo_reports, Platform, PlatformOptions};
use mdp_e2e::runner::{self, RunOptions};
use mdp_e2e::workload::WorkloadConfig;
use sqlx::MySqlPool;
use std::time::{Duration, Instant};

pub const MERCHANTS: u64 = 15;

pub fn options() -> PlatformOptions {
    PlatformOptions {
        tables: mdp_e2e::schema::TABLES.to_vec(),
        reports: repo_reports(),
        extra_env: vec![],
        window_ms: 300,
    }
}

/// Runs `changes` row changes of the seeded workload against the source.
pub async fn apply_changes(pool: &MySqlPool, seed: u64, changes: u64) {
    let cfg = WorkloadConfig {
        seed,
        merchants: MERCHANTS,
        history_days: 5,
        ..WorkloadConfig::default()
    };
    let (planners, _) = runner::prepare(pool, &cfg, 2)
        .await
        .expect("prepare workload");
    let opts = RunOptions {
        max_changes: Some(changes),
        max_duration: Some(Duration::from_secs(120)),
        ..RunOptions::default()
    };
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let stats = runner::run(pool, planners, &opts, stop)
        .await
        .expect("run workload");
    assert!(
        stats.changes >= changes,
        "workload made {} of {changes} changes",
        stats.changes
    );
}

/// The key columns of each report and whether it is keyed by merchant, as
/// the query API lists them.
async fn report_keys(platform: &Platform) -> Vec<(String, Vec<String>, bool)> {
    let body: serde_json::Value = reqwest::get(platform.url("query", "/v1/reports"))
        .await
        .expect("GET /v1/reports")
        .json()
        .await
        .expect("reports JSON");
    let reports = body["reports"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        reports.len(),
        platform.reports.len(),
        "reports listed: {body}"
    );
    reports
        .iter()
        .map(|r| {
            let keys = r["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["role"] == "key")
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect();
            let keyed = r["keyed_by_merchant"].as_bool().unwrap_or(true);
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                keys,
                keyed,
            )
        })
        .collect()
}

/// Polls until every report served equals the oracle, or panics with the
/// differences after `timeout`.
pub async fn assert_converges(platform: &Platform, source: &MySqlPool, timeout: Duration) {
    let keys = report_keys(platform).await;
    let deadline = Instant::now() + timeout;
    loop {
        let mut problems = Vec::new();
        for (name, sql) in &platform.reports {
            let listed = keys.iter().find(|(n, _, _)| n == name);
            let key: Vec<&str> = listed
                .map(|(_, k, _)| k.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let keyed_by_merchant = listed.is_none_or(|(_, _, keyed)| *keyed);
            let expected = mysql_rows(source, sql).await;
            if !keyed_by_merchant {
                // A report across merchants is read without merchant_id.
                match api_rows(platform, name, &[]).await {
                    Ok(all) => {
                        if let Some(d) = diff_rows(&expected, &all, &key) {
                            problems.push(format!("{name}: {d}"));
                        }
                    }
                    Err(e) => problems.push(format!("{name}: query failed: {e}")),
                }
                continue;
            }
            let mut actual = Vec::new();
            for m in 1..=MERCHANTS {
                match api_rows(platform, name, &[("merchant_id", m.to_string())]).await {
                    Ok(rows) => actual.extend(rows),
                    Err(e) => problems.push(format!("{name}: query failed: {e}")),
                }
            }
            assert!(!expected.is_empty() || actual.is_empty());
            if let Some(d) = diff_rows(&expected, &actual, &key) {
                problems.push(format!("{name}: {d}"));
            }
            // The same report read for every merchant at once.
            match api_rows(platform, name, &[]).await {
                Ok(all) => {
                    if let Some(d) = diff_rows(&expected, &all, &key) {
                        problems.push(format!("{name} (every merchant): {d}"));
                    }
                }
                Err(e) => problems.push(format!("{name} (every merchant): query failed: {e}")),
            }
        }
        if problems.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "reports did not converge:\n{}\n\nlogs:\n{}",
                problems.join("\n"),
                platform.all_logs_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_equal_source_sql_after_changes_and_ingest_restart() {
    let _serial = crate::SERIAL.lock().await;
    let mut platform = Platform::prepare(options()).await;
    let source = platform.source_pool().await;
    mdp_e2e::schema::create_tables(&source)
        .await
        .expect("schema");

    // Rows present before the first start arrive through the snapshot.
    apply_changes(&source, 11, 400).await;
    platform.start_all().await;

    // Changes after the start arrive through the binlog.
    apply_changes(&source, 12, 1500).await;
    assert_converges(&platform, &source, Duration::from_secs(120)).await;

    // SIGKILL ingest, keep changing the source while it is down, restart it:
    // nothing may be lost or counted twice.
    platform.kill("ingest");
    apply_changes(&source, 13, 600).await;
    platform.start("ingest");
    platform.wait_healthy("ingest").await;
    apply_changes(&source, 14, 300).await;
    assert_converges(&platform, &source, Duration::from_secs(120)).await;

    platform.teardown().await;
}
