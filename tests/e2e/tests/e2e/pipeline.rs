//! The whole pipeline against real services: the shop schema in the
//! binlog-enabled MariaDB, a seeded stream of order lifecycles (cart edits,
//! payments, refunds, hard deletes, late corrections days later), and every
//! report row from the query API compared with the same SQL run directly over
//! the final source tables.

use crate::helpers::{repo_reports, Infra, Platform, PlatformOptions};
use mdp_e2e::runner::{self, RunOptions};
use mdp_e2e::workload::WorkloadConfig;
use sqlx::MySqlPool;
use std::time::Duration;

pub const MERCHANTS: u64 = 15;

pub fn options() -> PlatformOptions {
    PlatformOptions {
        tables: mdp_e2e::schema::TABLES.to_vec(),
        reports: repo_reports(),
        extra_env: vec![],
        window_ms: 300,
        infra: Infra::shared(),
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

/// Polls until every report served equals the oracle, or panics with the
/// differences and the services' logs after `timeout`.
pub async fn assert_converges(platform: &Platform, source: &MySqlPool, timeout: Duration) {
    if let Err(problems) =
        mdp_e2e::oracle::wait_converged(platform, source, MERCHANTS, timeout).await
    {
        panic!(
            "reports did not converge:\n{problems}\n\nlogs:\n{}",
            platform.all_logs_tail()
        );
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
