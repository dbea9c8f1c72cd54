//! Test scaffolding: a results database and Redis keys seeded directly in
//! the layout result-writer writes, and the query service started in-process.

use mdp_query::Application;
use mdp_result_writer::layout::{self, ReportName};
use rand::Rng;
use sqlx::{Connection, MySqlConnection};
use std::collections::BTreeMap;

pub const MYSQL_SERVER: &str = "mysql://root@127.0.0.1:3306";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub const DAILY_SQL: &str = "SELECT merchant_id, DATE(created_at) AS day, COUNT(*) AS orders, \
     SUM(amount) AS gmv FROM orders GROUP BY merchant_id, DATE(created_at)";
pub const BY_STATUS_SQL: &str = "SELECT merchant_id, status, COUNT(*) AS orders FROM orders \
     GROUP BY merchant_id, status";

pub fn random_name(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}_{:012x}", n & 0xffff_ffff_ffff)
}

/// A seeded results database and Redis prefix, and a reports directory.
pub struct TestEnv {
    pub prefix: String,
    pub database: String,
    pub reports_dir: tempfile::TempDir,
    pub mysql_url: String,
    pub redis_url: String,
    pub page_size: usize,
    pub cache_ttl_ms: u64,
}

impl TestEnv {
    pub fn new() -> Self {
        let reports_dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(reports_dir.path().join("daily.sql"), DAILY_SQL).expect("write");
        std::fs::write(reports_dir.path().join("by_status.sql"), BY_STATUS_SQL).expect("write");
        std::fs::write(
            reports_dir.path().join("broken.sql"),
            "SELECT merchant_id FROM orders ORDER BY merchant_id",
        )
        .expect("write");
        let database = random_name("mdp_it_query");
        TestEnv {
            prefix: random_name("itq"),
            mysql_url: format!("{MYSQL_SERVER}/{database}"),
            database,
            reports_dir,
            redis_url: REDIS_URL.to_string(),
            page_size: 2,
            cache_ttl_ms: 0,
        }
    }

    pub fn settings(&self) -> mdp_config::Settings {
        let env = vec![
            ("MDP__RABBITMQ__PREFIX", self.prefix.clone()),
            ("MDP__PARTITIONING__PARTITIONS", "8".to_string()),
            ("MDP__RESULTS__URL", self.mysql_url.clone()),
            ("MDP__REDIS__URL", self.redis_url.clone()),
            ("MDP__REDIS__KEY_PREFIX", self.prefix.clone()),
            (
                "MDP__REPORTS__DIR",
                self.reports_dir.path().display().to_string(),
            ),
            ("MDP__QUERY__LISTEN", "127.0.0.1:0".to_string()),
            ("MDP__QUERY__PAGE_SIZE", self.page_size.to_string()),
            ("MDP__QUERY__CACHE_TTL_MS", self.cache_ttl_ms.to_string()),
        ];
        mdp_config::Settings::load_from(None, env.into_iter().map(|(k, v)| (k.to_string(), v)))
            .expect("settings")
    }

    /// Starts the service; returns its base URL and context.
    pub async fn spawn(&self) -> (String, mdp_service::ServiceContext) {
        let app = Application::build(self.settings())
            .await
            .expect("build query");
        let base = format!("http://127.0.0.1:{}", app.port());
        let ctx = app.context().clone();
        actix_web::rt::spawn(app.run());
        (base, ctx)
    }

    /// Creates the database with `rpt_daily` and `mdp_applied`.
    pub async fn create_tables(&self) -> MySqlConnection {
        let mut server = MySqlConnection::connect(MYSQL_SERVER).await.expect("mysql");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE `{}`",
            self.database
        )))
        .execute(&mut server)
        .await
        .expect("create database");
        let mut conn = MySqlConnection::connect(&format!("{MYSQL_SERVER}/{}", self.database))
            .await
            .expect("mysql db");
        let daily = ReportName::parse("daily").expect("name");
        sqlx::query(sqlx::AssertSqlSafe(layout::create_report_table_sql(&daily)))
            .execute(&mut conn)
            .await
            .expect("create rpt_daily");
        sqlx::query(layout::CREATE_APPLIED_TABLE)
            .execute(&mut conn)
            .await
            .expect("create mdp_applied");
        conn
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(REDIS_URL)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connect")
    }

    pub fn hash(&self, tenant: &str) -> String {
        format!("{}:rpt:daily:t:{tenant}", self.prefix)
    }

    /// Drops the database, the Redis keys and the exchanges the heartbeat declared.
    pub async fn cleanup(&self) {
        if let Ok(mut conn) = MySqlConnection::connect(MYSQL_SERVER).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS `{}`",
                self.database
            )))
            .execute(&mut conn)
            .await;
        }
        let mut r = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut r)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut r).await;
        }
        delete_exchanges(&self.prefix).await;
    }
}

/// Deletes the heartbeat and control exchanges of `prefix`.
pub async fn delete_exchanges(prefix: &str) {
    let cancel = tokio_util::sync::CancellationToken::new();
    let Ok(conn) = mdp_amqp::connect(RABBITMQ_URL, "it-cleanup", &cancel).await else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        let t = mdp_amqp::Topology::new(prefix, 8);
        for x in [
            t.heartbeats_exchange(),
            t.control_exchange(),
            t.notices_exchange(),
        ] {
            let _ = ch
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
    }
    let _ = conn.close(200, "done".into()).await;
}

/// One `daily` row: (merchant, day, orders, gmv as JSON text).
pub struct DailyRow<'a> {
    pub merchant: i64,
    pub day: &'a str,
    pub orders: i64,
    pub gmv: &'a str,
}

impl DailyRow<'_> {
    pub fn key_text(&self) -> String {
        format!("{}\u{1f}{}", self.merchant, self.day)
    }

    pub fn row_json(&self) -> String {
        format!(
            r#"{{"merchant_id":{},"day":"{}","orders":{},"gmv":{}}}"#,
            self.merchant, self.day, self.orders, self.gmv
        )
    }
}

/// Inserts rows into `rpt_daily`.
pub async fn insert_mysql(conn: &mut MySqlConnection, rows: &[DailyRow<'_>]) {
    for r in rows {
        sqlx::query(
            "INSERT INTO rpt_daily (key_hash, key_text, tenant, day, row_json, version_partition, \
             version_window, updated_at) VALUES (?, ?, ?, ?, ?, 0, 1, NOW(3))",
        )
        .bind(layout::key_hash(&r.key_text()).to_vec())
        .bind(r.key_text())
        .bind(r.merchant.to_string())
        .bind(r.day)
        .bind(r.row_json())
        .execute(&mut *conn)
        .await
        .expect("insert row");
    }
}

/// Writes rows into the merchant's Redis hash and, as the writer does once
/// its cache is complete, the cache epoch key.
pub async fn insert_redis(env: &TestEnv, rows: &[DailyRow<'_>]) {
    let mut r = env.redis().await;
    let _: () = redis::cmd("SET")
        .arg(layout::RedisKeys::new(&env.prefix).cache_epoch())
        .arg(1)
        .query_async(&mut r)
        .await
        .expect("set cache epoch");
    for row in rows {
        let _: () = redis::cmd("HSET")
            .arg(env.hash(&row.merchant.to_string()))
            .arg(row.key_text())
            .arg(layout::cache_json(&row.row_json(), Some(row.day)))
            .query_async(&mut r)
            .await
            .expect("hset");
    }
}

/// Sets the freshness of partitions in Redis.
pub async fn set_freshness(env: &TestEnv, entries: &BTreeMap<u32, (u64, i64, i64)>) {
    let mut r = env.redis().await;
    for (p, (w, c, a)) in entries {
        let json = serde_json::json!({"window_id": w, "max_commit_ts_ms": c, "applied_at_ms": a});
        let _: () = redis::cmd("HSET")
            .arg(format!("{}:freshness", env.prefix))
            .arg(p.to_string())
            .arg(json.to_string())
            .query_async(&mut r)
            .await
            .expect("hset freshness");
    }
}

pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(url).await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.json().await.expect("json body");
    (status, body)
}
