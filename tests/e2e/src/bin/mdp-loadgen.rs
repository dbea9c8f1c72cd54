//! `mdp-loadgen`: writes a realistic stream of shop changes (orders, items,
//! refunds, late corrections) into a MySQL/MariaDB database, for demos,
//! end-to-end tests and benchmarks.

use mdp_e2e::runner::{self, RunOptions};
use mdp_e2e::schema;
use mdp_e2e::workload::WorkloadConfig;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::watch;

const USAGE: &str = "\
usage: mdp-loadgen [options]

Writes shop changes (carts, items, payments, shipments, refunds, cart deletes,
late corrections of past days' orders) into the database at --url.

options:
  --url URL          mysql://user[:password]@host:port/database
                     (default mysql://root@127.0.0.1:3307/shop)
  --create-schema    create the database and the shop tables if missing
  --seed N           random seed (default 42); same seed, same changes
  --rate R           row changes per second (default 0 = as fast as possible)
  --changes N        stop after N row changes
  --duration-s S     stop after S seconds
  --merchants M      merchants 1..=M exist, missing ones are created (default 100)
  --workers W        concurrent connections (default 1)
  --zipf S           skew of merchant activity (default 1.1; 0 = uniform)
  --history-days D   late orders are up to D days old (default 7)
  --progress-s S     progress line on stderr every S seconds (default 10; 0 = off)
  -h, --help         this text

Without --changes and --duration-s it runs until SIGINT or SIGTERM.
Only one mdp-loadgen may write to a database at a time (ids are assigned here).";

#[derive(Debug)]
struct Args {
    url: String,
    create_schema: bool,
    rate: f64,
    changes: Option<u64>,
    duration_s: Option<f64>,
    workers: u32,
    progress_s: u64,
    workload: WorkloadConfig,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        url: "mysql://root@127.0.0.1:3307/shop".to_string(),
        create_schema: false,
        rate: 0.0,
        changes: None,
        duration_s: None,
        workers: 1,
        progress_s: 10,
        workload: WorkloadConfig::default(),
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (flag.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{name}: not a valid number: {v:?}"))
        }
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--url" => args.url = value("a URL")?,
            "--create-schema" => args.create_schema = true,
            "--seed" => args.workload.seed = num(&name, value("a number")?)?,
            "--rate" => args.rate = num(&name, value("a number")?)?,
            "--changes" => args.changes = Some(num(&name, value("a number")?)?),
            "--duration-s" => args.duration_s = Some(num(&name, value("a number")?)?),
            "--merchants" => args.workload.merchants = num(&name, value("a number")?)?,
            "--workers" => args.workers = num(&name, value("a number")?)?,
            "--zipf" => args.workload.zipf_exponent = num(&name, value("a number")?)?,
            "--history-days" => args.workload.history_days = num(&name, value("a number")?)?,
            "--progress-s" => args.progress_s = num(&name, value("a number")?)?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err("--rate must be 0 or more".into());
    }
    if args
        .duration_s
        .is_some_and(|d| !(d >= 0.0 && d.is_finite()))
    {
        return Err("--duration-s must be 0 or more".into());
    }
    if args.workers == 0 || args.workers > 64 {
        return Err("--workers must be between 1 and 64".into());
    }
    if args.workload.merchants == 0 {
        return Err("--merchants must be at least 1".into());
    }
    Ok(Some(args))
}

/// The URL with any password replaced, for printing.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => match rest.split_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:****@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let pool = if args.create_schema {
        schema::create(&args.url, args.workers + 1).await?
    } else {
        schema::connect(&args.url, args.workers + 1).await?
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("loadgen: stopping");
        let _ = stop_tx.send(true);
        // Keep the sender alive so workers see the stop, not a closed channel.
        std::future::pending::<()>().await;
    });

    let (planners, setup_changes) = runner::prepare(&pool, &args.workload, args.workers).await?;
    let merchants: usize = planners.iter().map(|p| p.merchant_count()).sum();
    eprintln!(
        "loadgen: {} with {merchants} merchants, seed {}, {} worker(s), rate {}; setup wrote {setup_changes} rows",
        redacted(&args.url),
        args.workload.seed,
        args.workers,
        if args.rate > 0.0 { format!("{}/s", args.rate) } else { "unlimited".into() },
    );
    let opts = RunOptions {
        rate_per_s: (args.rate > 0.0).then_some(args.rate),
        max_changes: args.changes,
        max_duration: args.duration_s.map(Duration::from_secs_f64),
        progress_every: (args.progress_s > 0).then(|| Duration::from_secs(args.progress_s)),
    };
    let stats = if args.changes == Some(0) {
        runner::RunStats::default()
    } else {
        runner::run(&pool, planners, &opts, stop_rx).await?
    };
    let kinds: Vec<String> = stats
        .per_kind
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    println!(
        "loadgen: done: {} changes in {} transactions over {:.1} s ({:.0} changes/s), {} retries; setup {} rows",
        stats.changes,
        stats.actions,
        stats.elapsed.as_secs_f64(),
        stats.rate(),
        stats.retries,
        setup_changes
    );
    if !kinds.is_empty() {
        println!("loadgen: transactions: {}", kinds.join(" "));
    }
    let counts = schema::row_counts(&pool).await?;
    let counts: Vec<String> = counts.iter().map(|(t, n)| format!("{t}={n}")).collect();
    println!("loadgen: rows: {}", counts.join(" "));
    pool.close().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mdp-loadgen: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mdp-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("mdp-loadgen: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Option<Args>, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn options_are_parsed() {
        let a = parse(&[
            "--url",
            "mysql://u@h:1/db",
            "--create-schema",
            "--seed=9",
            "--rate",
            "250",
            "--changes",
            "2000",
            "--merchants",
            "30",
            "--workers",
            "3",
        ])
        .expect("valid")
        .expect("not help");
        assert_eq!(a.url, "mysql://u@h:1/db");
        assert!(a.create_schema);
        assert_eq!(a.workload.seed, 9);
        assert_eq!(a.rate, 250.0);
        assert_eq!(a.changes, Some(2000));
        assert_eq!(a.workload.merchants, 30);
        assert_eq!(a.workers, 3);
        assert_eq!(a.duration_s, None);
    }

    #[test]
    fn bad_options_are_named() {
        assert!(parse(&["--rate", "fast"])
            .expect_err("bad")
            .contains("--rate"));
        assert!(parse(&["--bogus"]).expect_err("bad").contains("--bogus"));
        assert!(parse(&["--changes"])
            .expect_err("bad")
            .contains("--changes needs"));
        assert!(parse(&["--workers", "0"])
            .expect_err("bad")
            .contains("--workers"));
        assert!(parse(&["--help"]).expect("help").is_none());
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(redacted("mysql://u:secret@h:1/db"), "mysql://u:****@h:1/db");
        assert_eq!(redacted("mysql://root@h:1/db"), "mysql://root@h:1/db");
    }
}
