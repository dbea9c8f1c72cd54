//! A whole platform for one test or benchmark run: the six services as
//! processes against the real RabbitMQ, MariaDB (results on 3306, binlog
//! source on 3307) and Redis, with their own databases, queue prefix, Redis
//! key prefix, ports and data directories; plus the oracle (the same SQL run
//! in MariaDB) and the comparison of report rows.
//!
//! Test and benchmark support: setup failures panic with a message.

use rand::Rng;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{AssertSqlSafe, Column, Row, TypeInfo};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SERVICES: [&str; 6] = [
    "ingest",
    "flow-control",
    "window-compute",
    "result-writer",
    "query",
    "admin",
];

/// Where the binlog-enabled source MariaDB listens (started by scripts/source-db.sh).
pub fn source_server() -> String {
    std::env::var("MDP_TEST_SOURCE_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3307".into())
}

/// The MariaDB holding report tables.
pub fn results_server() -> String {
    std::env::var("MDP_TEST_RESULTS_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The servers a platform runs against. Each platform makes its own
/// databases, queue prefix and key prefix on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Infra {
    /// Binlog-enabled MariaDB server URL, without a database.
    pub source: String,
    /// MariaDB server URL for report tables, without a database.
    pub results: String,
    pub amqp: String,
    pub redis: String,
}

impl Infra {
    /// The machine's shared servers (`MDP_TEST_SOURCE_URL` and
    /// `MDP_TEST_RESULTS_URL` override the MariaDB ones).
    pub fn shared() -> Infra {
        Infra {
            source: source_server(),
            results: results_server(),
            amqp: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            redis: "redis://127.0.0.1:6379/0".into(),
        }
    }
}

impl Default for Infra {
    fn default() -> Self {
        Infra::shared()
    }
}

/// The report definitions shipped in the repository's `reports/` directory.
pub fn repo_reports() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reports");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("reports dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .map(|p| {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            (name, std::fs::read_to_string(&p).expect("read report"))
        })
        .collect();
    out.sort();
    out
}

/// Resolves on SIGINT or SIGTERM: runs that start processes stop them then.
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// Directory holding the service binaries (`cargo build --workspace --bins`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MDP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // A test binary: target/<profile>/deps/e2e-HASH → target/<profile>;
    // a binary of this crate: target/<profile>/mdp-chaos → target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("target dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn random_suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{:012x}", n & 0xffff_ffff_ffff)
}

/// A running platform for one test.
pub struct Platform {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// HTTP port of each instance (an instance is a service or a named replica).
    pub ports: BTreeMap<String, u16>,
    pub source_db: String,
    pub results_db: String,
    pub prefix: String,
    pub extra_env: Vec<(String, String)>,
    pub reports: Vec<(String, String)>,
    pub infra: Infra,
    procs: BTreeMap<String, Child>,
    /// Set by `teardown`; otherwise dropping the platform cleans up.
    torn_down: bool,
}

pub struct PlatformOptions {
    pub tables: Vec<&'static str>,
    /// (report name, SQL)
    pub reports: Vec<(String, String)>,
    pub extra_env: Vec<(String, String)>,
    pub window_ms: u64,
    pub infra: Infra,
}

impl Platform {
    /// Creates the source and results databases and writes the config; no
    /// service is started yet (see `start_all`).
    pub async fn prepare(opts: PlatformOptions) -> Platform {
        let suffix = random_suffix();
        let dir = tempfile::tempdir().expect("temp dir");
        let reports_dir = dir.path().join("reports");
        std::fs::create_dir_all(&reports_dir).expect("reports dir");
        for (file, sql) in &opts.reports {
            std::fs::write(reports_dir.join(format!("{file}.sql")), sql).expect("write report");
        }
        let source_db = format!("shop_{suffix}");
        let results_db = format!("mdp_results_{suffix}");
        let prefix = format!("mdp_{suffix}");
        let mut ports = BTreeMap::new();
        for s in SERVICES {
            ports.insert(s.to_string(), free_port());
        }
        let tables = opts
            .tables
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            r#"[source]
url = "{source}/{source_db}"
server_id = {server_id}
tables = [{tables}]
tenant_column = "merchant_id"
[source.tenant_columns]
merchants = "id"

[reports]
dir = "{reports}"

[rabbitmq]
url = "{amqp}"
prefix = "{prefix}"

[results]
url = "{results}/{results_db}"

[redis]
url = "{redis}"
key_prefix = "{prefix}"

[telemetry]
log_format = "json"
log_filter = "info"

[ingest]
listen = "127.0.0.1:{p_ingest}"
data_dir = "{d}/ingest"

[flow_control]
listen = "127.0.0.1:{p_flow}"
data_dir = "{d}/flow-control"
window_ms = {window_ms}

[window_compute]
listen = "127.0.0.1:{p_compute}"
state_dir = "{d}/window-compute"

[result_writer]
listen = "127.0.0.1:{p_writer}"

[query]
listen = "127.0.0.1:{p_query}"

[admin]
listen = "127.0.0.1:{p_admin}"
"#,
            source = opts.infra.source,
            amqp = opts.infra.amqp,
            redis = opts.infra.redis,
            server_id = 5000 + rand::rng().random_range(0..100_000u32),
            reports = reports_dir.display(),
            results = opts.infra.results,
            d = dir.path().display(),
            window_ms = opts.window_ms,
            p_ingest = ports["ingest"],
            p_flow = ports["flow-control"],
            p_compute = ports["window-compute"],
            p_writer = ports["result-writer"],
            p_query = ports["query"],
            p_admin = ports["admin"],
        );
        let config_path = dir.path().join("mdp.toml");
        std::fs::write(&config_path, config).expect("write config");

        let server = MySqlPool::connect(&opts.infra.source)
            .await
            .unwrap_or_else(|e| panic!("source MariaDB {}: {e}", opts.infra.source));
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE `{source_db}`")))
            .execute(&server)
            .await
            .expect("create source db");
        server.close().await;

        Platform {
            dir,
            config_path,
            ports,
            source_db,
            results_db,
            prefix,
            extra_env: opts.extra_env,
            reports: opts.reports,
            infra: opts.infra,
            procs: BTreeMap::new(),
            torn_down: false,
        }
    }

    pub async fn source_pool(&self) -> MySqlPool {
        MySqlPoolOptions::new()
            .max_connections(4)
            .connect(&self.source_url())
            .await
            .expect("connect source db")
    }

    /// URL of this platform's source database.
    pub fn source_url(&self) -> String {
        format!("{}/{}", self.infra.source, self.source_db)
    }

    /// URL of this platform's results database.
    pub fn results_url(&self) -> String {
        format!("{}/{}", self.infra.results, self.results_db)
    }

    pub fn start(&mut self, service: &str) {
        self.start_instance(service, service);
    }

    /// Starts `instance` running `service`'s binary; an instance named other
    /// than its service is a replica with its own HTTP port.
    pub fn start_instance(&mut self, instance: &str, service: &str) {
        let bin = bin_dir().join(format!("mdp-{service}"));
        let port = *self
            .ports
            .entry(instance.to_string())
            .or_insert_with(free_port);
        assert!(
            bin.exists(),
            "{} missing: run `cargo build --workspace --bins` first",
            bin.display()
        );
        let log_path = self.dir.path().join(format!("{instance}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let mut cmd = Command::new(&bin);
        cmd.env("MDP_CONFIG", &self.config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        // MDP_E2E_LOG_FILTER=debug (or any EnvFilter) makes the services log more.
        if let Ok(filter) = std::env::var("MDP_E2E_LOG_FILTER") {
            cmd.env("MDP__TELEMETRY__LOG_FILTER", filter);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let section = service.replace('-', "_").to_uppercase();
        cmd.env(
            format!("MDP__{section}__LISTEN"),
            format!("127.0.0.1:{port}"),
        );
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.procs.insert(instance.to_string(), child);
    }

    pub async fn start_all(&mut self) {
        for s in SERVICES {
            self.start(s);
        }
        for s in SERVICES {
            self.wait_healthy(s).await;
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self, instance: &str) {
        if let Some(mut child) = self.procs.remove(instance) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The running instances and their process ids.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .map(|(instance, child)| (instance.clone(), child.id()))
            .collect()
    }

    pub fn url(&self, service: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.ports[service], path)
    }

    pub async fn wait_healthy(&mut self, service: &str) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(self.url(service, "/healthz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(child) = self.procs.get_mut(service) {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{service} exited with {status}; log:\n{}",
                        self.log_tail(service)
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "{service} not healthy in 60 s; log:\n{}",
                self.log_tail(service)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log_tail(&self, service: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{service}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn all_logs_tail(&self) -> String {
        self.ports
            .keys()
            .map(|s| format!("==== {s} ====\n{}\n", self.log_tail(s)))
            .collect()
    }

    /// Stops everything and removes what the test created on the shared servers.
    pub async fn teardown(mut self) {
        for (_, mut child) in std::mem::take(&mut self.procs) {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_created(
            self.infra.clone(),
            self.source_db.clone(),
            self.results_db.clone(),
            self.prefix.clone(),
        )
        .await;
        self.torn_down = true;
    }
}

/// Drops the platform's databases, queues, exchanges and Redis keys.
async fn remove_created(infra: Infra, source_db: String, results_db: String, prefix: String) {
    for (server, db) in [(&infra.source, &source_db), (&infra.results, &results_db)] {
        if let Ok(pool) = MySqlPool::connect(server).await {
            let _ = sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{db}`")))
                .execute(&pool)
                .await;
            pool.close().await;
        }
    }
    delete_amqp_topology(&infra.amqp, &prefix).await;
    delete_redis_prefix(&infra.redis, &prefix).await;
}

impl Drop for Platform {
    fn drop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.procs) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failed test keeps the services' logs next to the binaries.
        if std::thread::panicking() {
            let keep = bin_dir().join("e2e-logs").join(&self.prefix);
            if std::fs::create_dir_all(&keep).is_ok() {
                for s in self.ports.keys() {
                    let name = format!("{s}.log");
                    let _ = std::fs::copy(self.dir.path().join(&name), keep.join(&name));
                }
                eprintln!("service logs kept in {}", keep.display());
            }
        }
        // A test that failed before its teardown must not leave queues and
        // databases behind on the shared servers. Drop may run inside a
        // runtime, so the cleanup gets a thread and a runtime of its own.
        if !self.torn_down {
            let args = (
                self.infra.clone(),
                self.source_db.clone(),
                self.results_db.clone(),
                self.prefix.clone(),
            );
            let cleanup = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let (infra, source_db, results_db, prefix) = args;
                rt.block_on(async {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(30),
                        remove_created(infra, source_db, results_db, prefix),
                    )
                    .await;
                });
            });
            let _ = cleanup.join();
        }
    }
}

async fn delete_amqp_topology(url: &str, prefix: &str) {
    use mdp_amqp::lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(conn) = mdp_amqp::lapin::Connection::connect(url, Default::default()).await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    let topo = mdp_amqp::Topology::new(prefix, 8);
    for p in 0..8 {
        for q in [
            topo.changes_queue(p),
            topo.windows_queue(p),
            topo.results_queue(p),
        ] {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for stage in [
        mdp_amqp::Stage::Changes,
        mdp_amqp::Stage::Windows,
        mdp_amqp::Stage::Results,
    ] {
        let _ = ch
            .queue_delete(
                topo.dead_letter_queue(stage).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
    }
    for ex in [
        topo.changes_exchange(),
        topo.windows_exchange(),
        topo.results_exchange(),
        topo.heartbeats_exchange(),
        topo.control_exchange(),
        topo.dead_letter_exchange(),
    ] {
        let _ = ch
            .exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "test done".into()).await;
}

async fn delete_redis_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}

/// A report row as plain JSON values, keyed by column name.
pub type JsonRow = BTreeMap<String, serde_json::Value>;

/// Runs `sql` in MariaDB and returns rows as JSON with the same conventions
/// as the query API (integers as integers, decimals as numbers, dates as text).
pub async fn mysql_rows(pool: &MySqlPool, sql: &str) -> Vec<JsonRow> {
    try_mysql_rows(pool, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// [`mysql_rows`] returning the database error instead of panicking.
pub async fn try_mysql_rows(pool: &MySqlPool, sql: &str) -> Result<Vec<JsonRow>, sqlx::Error> {
    let rows: Vec<MySqlRow> = sqlx::query(AssertSqlSafe(sql.to_string()))
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(row_to_json).collect())
}

fn row_to_json(row: &MySqlRow) -> JsonRow {
    use serde_json::Value as J;
    let mut out = JsonRow::new();
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_info().name().to_ascii_uppercase();
        let v = if ty.contains("UNSIGNED") && ty.contains("INT") {
            row.try_get::<Option<u64>, _>(i).ok().flatten().map(J::from)
        } else if ty.contains("INT") {
            row.try_get::<Option<i64>, _>(i).ok().flatten().map(J::from)
        } else if ty == "DECIMAL" {
            row.try_get::<Option<rust_decimal::Decimal>, _>(i)
                .ok()
                .flatten()
                .map(|d| serde_json::from_str::<J>(&d.normalize().to_string()).unwrap_or(J::Null))
        } else if ty == "DOUBLE" || ty == "FLOAT" {
            row.try_get::<Option<f64>, _>(i).ok().flatten().map(J::from)
        } else if ty == "DATE" {
            row.try_get::<Option<chrono::NaiveDate>, _>(i)
                .ok()
                .flatten()
                .map(|d| J::from(d.format("%Y-%m-%d").to_string()))
        } else if ty == "DATETIME" || ty == "TIMESTAMP" {
            row.try_get::<Option<chrono::NaiveDateTime>, _>(i)
                .ok()
                .flatten()
                .map(|d| J::from(d.format("%Y-%m-%d %H:%M:%S").to_string()))
        } else {
            row.try_get::<Option<String>, _>(i)
                .ok()
                .flatten()
                .map(J::from)
        };
        out.insert(col.name().to_string(), v.unwrap_or(J::Null));
    }
    out
}

/// All rows of a report from the query API, following pages.
pub async fn api_rows(
    platform: &Platform,
    report: &str,
    params: &[(&str, String)],
) -> Result<Vec<JsonRow>, String> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut q: Vec<(&str, String)> = params.to_vec();
        if let Some(t) = &token {
            q.push(("page_token", t.clone()));
        }
        let resp = client
            .get(platform.url("query", &format!("/v1/reports/{report}/rows")))
            .query(&q)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {body}"));
        }
        for row in body["rows"].as_array().cloned().unwrap_or_default() {
            let obj: JsonRow = serde_json::from_value(row).map_err(|e| e.to_string())?;
            out.push(obj);
        }
        match body.get("next_page_token").and_then(|t| t.as_str()) {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    Ok(out)
}

/// Numbers equal when they differ by at most 1e-9 relative (decimal vs float
/// printing); everything else must be identical.
pub fn values_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

/// Compares two row sets by key columns; returns a description of the first
/// differences, or None when equal.
pub fn diff_rows(expected: &[JsonRow], actual: &[JsonRow], key: &[&str]) -> Option<String> {
    let index = |rows: &[JsonRow]| -> BTreeMap<String, JsonRow> {
        rows.iter()
            .map(|r| {
                (
                    key.iter()
                        .map(|k| r.get(*k).map(|v| v.to_string()).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join("|"),
                    r.clone(),
                )
            })
            .collect()
    };
    let e = index(expected);
    let a = index(actual);
    let mut problems = Vec::new();
    for (k, er) in &e {
        match a.get(k) {
            None => problems.push(format!("missing row {k}: expected {er:?}")),
            Some(ar) => {
                for (col, ev) in er {
                    let av = ar.get(col).unwrap_or(&serde_json::Value::Null);
                    if !values_equal(ev, av) {
                        problems.push(format!("row {k} column {col}: expected {ev}, got {av}"));
                    }
                }
            }
        }
    }
    for k in a.keys() {
        if !e.contains_key(k) {
            problems.push(format!("unexpected row {k}: {:?}", a[k]));
        }
    }
    if expected.len() != e.len() || actual.len() != a.len() {
        problems.push(format!(
            "duplicate keys: expected {} rows ({} keys), got {} rows ({} keys)",
            expected.len(),
            e.len(),
            actual.len(),
            a.len()
        ));
    }
    if problems.is_empty() {
        None
    } else {
        let n = problems.len();
        problems.truncate(12);
        Some(format!("{n} differences, first: \n{}", problems.join("\n")))
    }
}
