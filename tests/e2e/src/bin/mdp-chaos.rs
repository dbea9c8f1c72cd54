//! `mdp-chaos`: the chaos run of `just chaos` (loopback only, bounded in
//! time). It starts its own RabbitMQ, Redis and MariaDB
//! (`scripts/chaos-infra.sh`) and the six services (two window-compute
//! replicas), keeps a seeded workload running, injects every fault of the
//! schedule at seeded random points, prints per fault the time to recover
//! and the deliveries replayed, and finally compares every report row with
//! MariaDB's recomputation over the source tables. Exit status 0 on PASS.
//!
//! Needs `cargo build --workspace --bins` (the recipe builds first).

use mdp_e2e::chaos::{self, ChaosOptions};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: mdp-chaos
environment:
  MDP_CHAOS_SEED        seed of the workload and the fault timing (default 7)
  MDP_CHAOS_RATE        row changes per second of the load (default 300)
  MDP_CHAOS_MERCHANTS   merchants of the workload (default 20)
  MDP_CHAOS_GAP_S       longest load time before each fault, seconds (default 10)
  MDP_CHAOS_ROUNDS      times the fault schedule is repeated (default 1)";

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn options() -> Result<ChaosOptions, String> {
    let defaults = ChaosOptions::default();
    let gap_s: u64 = env_num("MDP_CHAOS_GAP_S", 10)?;
    let rounds: usize = env_num("MDP_CHAOS_ROUNDS", 1)?;
    if !(1..=600).contains(&gap_s) || !(1..=10).contains(&rounds) {
        return Err("MDP_CHAOS_GAP_S must be 1..=600 and MDP_CHAOS_ROUNDS 1..=10".into());
    }
    let mut faults = Vec::new();
    for round in 0..rounds {
        let mut schedule = chaos::full_schedule();
        if round + 1 < rounds {
            // Only the last round kills a replica for good.
            schedule.retain(|f| !matches!(f, chaos::Fault::Kill { for_good: true, .. }));
        }
        faults.extend(schedule);
    }
    Ok(ChaosOptions {
        seed: env_num("MDP_CHAOS_SEED", defaults.seed)?,
        rate_per_s: env_num("MDP_CHAOS_RATE", defaults.rate_per_s)?,
        merchants: env_num("MDP_CHAOS_MERCHANTS", defaults.merchants)?,
        gap: (
            Duration::from_secs(gap_s).min(defaults.gap.0),
            Duration::from_secs(gap_s),
        ),
        faults,
        ..defaults
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mdp-chaos: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // On SIGINT/SIGTERM the run is dropped (its service processes are
    // killed with it) and the private infrastructure is stopped.
    let report = tokio::select! {
        r = chaos::run(&opts) => r,
        _ = mdp_e2e::platform::interrupted() => {
            eprintln!("mdp-chaos: interrupted, stopping what the run started");
            chaos::PrivateInfra::default().down().await;
            return ExitCode::from(130);
        }
    };
    println!("{report}");
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
