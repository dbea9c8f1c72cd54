//! The chaos run, short: on a private RabbitMQ, Redis and MariaDB, under a
//! continuous seeded load, every service is SIGKILLed and restarted, the
//! broker, cache and database are restarted (the broker and the database
//! also crashed), and the window-compute replica owning the partitions is
//! killed for good. Every fault must be followed by a change carried end to
//! end, and at the end every report row must equal MariaDB's recomputation.
//! `just chaos` runs the same with longer gaps.

use mdp_e2e::chaos::{self, ChaosOptions, Fault};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_recovers_and_reports_stay_exact() {
    let _serial = crate::SERIAL.lock().await;
    let opts = ChaosOptions {
        seed: 22,
        merchants: 12,
        rate_per_s: 200.0,
        gap: (Duration::from_millis(1500), Duration::from_secs(3)),
        down: (Duration::from_millis(300), Duration::from_millis(1500)),
        ..ChaosOptions::default()
    };
    // Every kind of fault is in the schedule.
    let faults = &opts.faults;
    assert!(faults
        .iter()
        .any(|f| matches!(f, Fault::Kill { for_good: true, .. })));
    for service in mdp_e2e::platform::SERVICES {
        assert!(
            faults
                .iter()
                .any(|f| matches!(f, Fault::Kill { instance, .. } if instance == service)),
            "{service} is never killed"
        );
    }
    let report = chaos::run(&opts).await;
    eprintln!("{report}");
    assert!(report.error.is_none(), "{report}");
    assert_eq!(report.faults.len(), opts.faults.len(), "{report}");
    for f in &report.faults {
        assert!(
            f.recovered_after.is_some(),
            "{} did not recover:\n{report}",
            f.fault
        );
    }
    // Restarting the broker is noticed by the services that use it.
    let broker = report
        .faults
        .iter()
        .find(|f| {
            matches!(
                f.fault,
                Fault::Restart {
                    component: chaos::Component::Broker,
                    ..
                }
            )
        })
        .expect("a broker restart");
    assert!(
        broker.noticed_by.iter().any(|m| m.ends_with("/rabbitmq")),
        "no service reported the broker restart:\n{report}"
    );
    assert!(report.changes > 500, "{report}");
    assert!(report.converged_after.is_some(), "{report}");
    assert!(report.passed());
}
