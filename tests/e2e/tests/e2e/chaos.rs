//! Crash recovery under load: while a seeded workload keeps changing the
//! source, every service is SIGKILLed and restarted in turn, and the active
//! window-compute replica is killed for good (its partitions must move to the
//! standby). Afterwards every report row equals the same SQL over the source.

use crate::helpers::Platform;
use crate::pipeline::{assert_converges, options, MERCHANTS};
use mdp_e2e::runner::{self, RunOptions};
use mdp_e2e::workload::WorkloadConfig;
use std::time::{Duration, Instant};

/// Kills, in order: (instance, restarted afterwards).
const FAULTS: &[(&str, bool)] = &[
    ("ingest", true),
    ("flow-control", true),
    ("result-writer", true),
    ("query", true),
    ("admin", true),
    // The replica that owns the partitions (it subscribed first), for good.
    ("window-compute", false),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_stay_exact_when_each_service_is_killed_under_load() {
    let _serial = crate::SERIAL.lock().await;
    let mut platform = Platform::prepare(options()).await;
    let source = platform.source_pool().await;
    mdp_e2e::schema::create_tables(&source)
        .await
        .expect("schema");
    crate::pipeline::apply_changes(&source, 21, 300).await;
    platform.start_all().await;
    platform.start_instance("window-compute-2", "window-compute");
    platform.wait_healthy("window-compute-2").await;

    // Continuous load for the whole fault schedule.
    let cfg = WorkloadConfig {
        seed: 22,
        merchants: MERCHANTS,
        history_days: 5,
        ..WorkloadConfig::default()
    };
    let (planners, _) = runner::prepare(&source, &cfg, 2)
        .await
        .expect("prepare workload");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load_pool = source.clone();
    let load = tokio::spawn(async move {
        let opts = RunOptions {
            rate_per_s: Some(250.0),
            max_duration: Some(Duration::from_secs(120)),
            ..RunOptions::default()
        };
        runner::run(&load_pool, planners, &opts, stop_rx).await
    });

    for (instance, restart) in FAULTS {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let killed_at = Instant::now();
        platform.kill(instance);
        tokio::time::sleep(Duration::from_millis(700)).await;
        if *restart {
            let service = if *instance == "window-compute-2" {
                "window-compute"
            } else {
                instance
            };
            platform.start_instance(instance, service);
            platform.wait_healthy(instance).await;
            eprintln!(
                "chaos: {instance} killed and back in {:?}",
                killed_at.elapsed()
            );
        } else {
            eprintln!("chaos: {instance} killed for good");
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let stats = load.await.expect("load task").expect("workload");
    assert!(
        stats.changes > 500,
        "the load made only {} changes",
        stats.changes
    );
    eprintln!("chaos: {} changes applied during the faults", stats.changes);

    assert_converges(&platform, &source, Duration::from_secs(180)).await;
    platform.teardown().await;
}
