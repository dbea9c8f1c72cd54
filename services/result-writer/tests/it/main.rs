//! Integration tests of result-writer against RabbitMQ, MariaDB and Redis.
//! Each test uses its own AMQP prefix, MySQL database and Redis key prefix.

mod degrade;
mod helpers;
mod partials;

use helpers::*;
use mdp_types::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A stored row of `rpt_daily`: (tenant, day, row_json, version partition, version window).
type Stored = (Option<String>, Option<String>, String, i32, i64);
type StoredWithKey = (String, Option<String>, Option<String>, String, i32, i64);

/// Stored rows of `rpt_daily` by key text.
async fn table_rows(conn: &sqlx::MySqlPool) -> BTreeMap<String, Stored> {
    let rows: Vec<StoredWithKey> = sqlx::query_as(
        "SELECT key_text, tenant, DATE_FORMAT(day, '%Y-%m-%d'), row_json, version_partition, \
         version_window FROM rpt_daily",
    )
    .fetch_all(conn)
    .await
    .expect("select rpt_daily");
    rows.into_iter()
        .map(|(k, t, d, j, p, w)| (k, (t, d, j, p, w)))
        .collect()
}

fn key(merchant: i64, day: &str) -> String {
    format!("{merchant}\u{1f}{day}")
}

#[actix_web::test]
async fn batches_are_applied_once_in_order_to_mysql_and_redis() {
    let env = TestEnv::new(2);
    let publisher = TestPublisher::new(env.topology()).await;
    let mut notices = publisher.notices().await;
    let (port, ctx) = env.spawn_writer().await;
    let dup_before = metric("mdp_writer_duplicate_batches_total").await;

    // Partition 0: two windows, a duplicate and a stale replay, two bad
    // messages, then a last window that marks the end of the sequence.
    publisher
        .batch(&batch(
            0,
            1,
            vec![
                daily(7, "2026-11-20", 2, dec("1500.00")),
                daily(7, "2026-11-21", 1, dec("250.50")),
                daily(8, "2026-11-21", 3, Value::I(900)),
            ],
        ))
        .await;
    let w2 = batch(
        0,
        2,
        vec![
            daily(7, "2026-11-21", 2, dec("600.25")),
            daily_deleted(8, "2026-11-21"),
        ],
    );
    publisher.batch(&w2).await;
    publisher.batch(&w2).await;
    publisher
        .batch(&batch(0, 1, vec![daily(7, "2026-11-21", 99, Value::I(99))]))
        .await;
    publisher.raw(0, b"this is not json").await;
    let mut unknown = daily(7, "2026-11-22", 1, Value::I(1));
    unknown.report = "no_such_report".into();
    publisher.batch(&batch(0, 3, vec![unknown])).await;
    publisher
        .batch(&batch(0, 4, vec![daily(10, "2026-11-22", 1, Value::I(5))]))
        .await;
    // Partition 1: one window.
    publisher
        .batch(&batch(
            1,
            3,
            vec![daily(9, "2026-11-21", 5, Value::I(5000))],
        ))
        .await;

    let conn = env.mysql();
    wait_applied(&conn, 0, 4).await;
    wait_applied(&conn, 1, 3).await;

    // Readers were told which merchants' rows changed, and nothing of the
    // dead-lettered batches.
    let told = notices.changed(Duration::from_secs(2)).await;
    let daily = |m: &str| ("daily".to_string(), Some(m.to_string()));
    assert_eq!(
        told,
        [daily("7"), daily("8"), daily("9"), daily("10")]
            .into_iter()
            .collect()
    );

    // MySQL holds exactly the newest version of every row.
    let rows = table_rows(&conn).await;
    let expected: BTreeMap<String, Stored> = [
        (
            key(7, "2026-11-20"),
            (
                Some("7".to_string()),
                Some("2026-11-20".to_string()),
                r#"{"merchant_id":7,"day":"2026-11-20","orders":2,"gmv":1500}"#.to_string(),
                0,
                1,
            ),
        ),
        (
            key(7, "2026-11-21"),
            (
                Some("7".to_string()),
                Some("2026-11-21".to_string()),
                r#"{"merchant_id":7,"day":"2026-11-21","orders":2,"gmv":600.25}"#.to_string(),
                0,
                2,
            ),
        ),
        (
            key(9, "2026-11-21"),
            (
                Some("9".to_string()),
                Some("2026-11-21".to_string()),
                r#"{"merchant_id":9,"day":"2026-11-21","orders":5,"gmv":5000}"#.to_string(),
                1,
                3,
            ),
        ),
        (
            key(10, "2026-11-22"),
            (
                Some("10".to_string()),
                Some("2026-11-22".to_string()),
                r#"{"merchant_id":10,"day":"2026-11-22","orders":1,"gmv":5}"#.to_string(),
                0,
                4,
            ),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(rows, expected);

    let applied: Vec<(i32, i64, i64)> = sqlx::query_as(
        "SELECT `partition`, window_id, max_commit_ts_ms FROM mdp_applied ORDER BY `partition`",
    )
    .fetch_all(&conn)
    .await
    .expect("mdp_applied");
    assert_eq!(
        applied,
        vec![(0, 4, 1_700_000_000_004), (1, 3, 1_700_000_000_003)]
    );
    let key_hash: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM rpt_daily WHERE key_text = ?")
        .bind(key(9, "2026-11-21"))
        .fetch_one(&conn)
        .await
        .expect("key hash");
    assert_eq!(
        key_hash,
        mdp_result_writer::layout::key_hash(&key(9, "2026-11-21")).to_vec()
    );

    // Redis holds the same rows plus `_day`; the deleted row is gone.
    let mut r = env.redis().await;
    let hash = |tenant: &str| format!("{}:rpt:daily:t:{tenant}", env.prefix);
    let m7: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(hash("7"))
        .query_async(&mut r)
        .await
        .expect("hgetall");
    let expected_m7: HashMap<String, String> = [
        (
            key(7, "2026-11-20"),
            r#"{"merchant_id":7,"day":"2026-11-20","orders":2,"gmv":1500,"_day":"2026-11-20"}"#
                .to_string(),
        ),
        (
            key(7, "2026-11-21"),
            r#"{"merchant_id":7,"day":"2026-11-21","orders":2,"gmv":600.25,"_day":"2026-11-21"}"#
                .to_string(),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(m7, expected_m7);
    let m8: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(hash("8"))
        .query_async(&mut r)
        .await
        .expect("hgetall");
    assert!(m8.is_empty(), "deleted row still cached: {m8:?}");
    let m9: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(hash("9"))
        .query_async(&mut r)
        .await
        .expect("hgetall");
    assert_eq!(
        m9,
        [(
            key(9, "2026-11-21"),
            r#"{"merchant_id":9,"day":"2026-11-21","orders":5,"gmv":5000,"_day":"2026-11-21"}"#
                .to_string()
        )]
        .into_iter()
        .collect()
    );
    let freshness: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{}:freshness", env.prefix))
        .query_async(&mut r)
        .await
        .expect("freshness");
    let windows: BTreeMap<String, (u64, i64)> = freshness
        .iter()
        .map(|(p, v)| {
            let f: serde_json::Value = serde_json::from_str(v).expect("freshness json");
            (
                p.clone(),
                (
                    f["window_id"].as_u64().expect("window_id"),
                    f["max_commit_ts_ms"].as_i64().expect("max_commit_ts_ms"),
                ),
            )
        })
        .collect();
    assert_eq!(
        windows,
        [
            ("0".to_string(), (4, 1_700_000_000_004)),
            ("1".to_string(), (3, 1_700_000_000_003))
        ]
        .into_iter()
        .collect()
    );
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", env.prefix))
        .query_async(&mut r)
        .await
        .expect("keys");
    keys.sort();
    let mut expected_keys = vec![
        hash("10"),
        hash("7"),
        hash("9"),
        format!("{}:freshness", env.prefix),
        format!("{}:writer:cache_epoch", env.prefix),
    ];
    expected_keys.sort();
    assert_eq!(keys, expected_keys);

    // The malformed message and the unknown report went to the dead-letter queue.
    let dlq = env.topology().dead_letter_queue(mdp_amqp::Stage::Results);
    let dead = eventually("dead letters", Duration::from_secs(10), || {
        let publisher = &publisher;
        let dlq = dlq.clone();
        async move {
            let n = publisher.queue_len(&dlq).await;
            (n >= 2).then_some(n)
        }
    })
    .await;
    assert_eq!(dead, 2);
    assert!(metric("mdp_writer_duplicate_batches_total").await >= dup_before + 2.0);
    for p in 0..2 {
        assert_eq!(
            publisher.queue_len(&env.topology().results_queue(p)).await,
            0,
            "partition {p} has unacknowledged or waiting messages"
        );
    }

    // The status route reports the applied windows.
    let status: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/v1/writer"))
        .await
        .expect("status")
        .json()
        .await
        .expect("status json");
    assert_eq!(status["partitions"]["0"]["applied_window"], 4);
    assert_eq!(status["partitions"]["1"]["applied_window"], 3);
    assert_eq!(status["partitions"]["0"]["pending"], 0);
    let machines: Vec<&str> = status["degrade"]
        .as_array()
        .expect("degrade")
        .iter()
        .filter_map(|m| m["machine"].as_str())
        .collect();
    assert!(
        machines.contains(&"mysql") && machines.contains(&"redis"),
        "{status}"
    );

    ctx.cancel.cancel();
    env.cleanup().await;
}

#[actix_web::test]
async fn replay_of_the_last_window_after_a_lost_cache_write_recaches_it() {
    let env = TestEnv::new(1);
    let publisher = TestPublisher::new(env.topology()).await;
    let (_port, ctx) = env.spawn_writer().await;
    let w1 = batch(0, 1, vec![daily(3, "2026-11-21", 4, Value::I(40))]);
    publisher.batch(&w1).await;
    let conn = env.mysql();
    wait_applied(&conn, 0, 1).await;
    let mut r = env.redis().await;
    let hash = format!("{}:rpt:daily:t:3", env.prefix);
    eventually("row cached", Duration::from_secs(10), || {
        let mut r = r.clone();
        let hash = hash.clone();
        async move {
            let n: i64 = redis::cmd("HLEN")
                .arg(&hash)
                .query_async(&mut r)
                .await
                .ok()?;
            (n == 1).then_some(())
        }
    })
    .await;
    // The cache write is lost (as when the writer dies between commit and
    // Redis); the broker redelivers the same window.
    let _: () = redis::cmd("DEL")
        .arg(&hash)
        .query_async(&mut r)
        .await
        .expect("del");
    publisher.batch(&w1).await;
    let cached: String = eventually("row cached again", Duration::from_secs(10), || {
        let mut r = r.clone();
        let hash = hash.clone();
        async move {
            redis::cmd("HGET")
                .arg(&hash)
                .arg(key(3, "2026-11-21"))
                .query_async::<Option<String>>(&mut r)
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    assert_eq!(
        cached,
        r#"{"merchant_id":3,"day":"2026-11-21","orders":4,"gmv":40,"_day":"2026-11-21"}"#
    );
    assert_eq!(applied_window(&conn, 0).await, Some(1));
    ctx.cancel.cancel();
    env.cleanup().await;
}

/// Value of an unlabelled metric in this process's registry.
pub async fn metric(name: &str) -> f64 {
    mdp_telemetry::render_metrics()
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
