//! The writer's degrade machines: MySQL and Redis outages, simulated by a
//! proxy that cuts connections, and the recovery that follows.

use crate::helpers::*;
use mdp_types::Value;
use std::collections::HashMap;
use std::time::Duration;

async fn writer_status(port: u16) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{port}/v1/writer"))
        .await
        .expect("status")
        .json()
        .await
        .expect("status json")
}

fn machine_state(status: &serde_json::Value, machine: &str) -> String {
    status["degrade"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["machine"] == machine))
        .and_then(|m| m["state"].as_str())
        .unwrap_or("missing")
        .to_string()
}

async fn hgetall(r: &mut redis::aio::MultiplexedConnection, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(r)
        .await
        .expect("hgetall")
}

#[actix_web::test]
async fn mysql_outage_keeps_batches_unacknowledged_and_serves_them_from_redis() {
    let proxy = Proxy::start("127.0.0.1:3306").await;
    let mut env = TestEnv::new(1);
    env.mysql_url = format!("mysql://root@127.0.0.1:{}/{}", proxy.port, env.database);
    let publisher = TestPublisher::new(env.topology()).await;
    let (port, ctx) = env.spawn_writer().await;
    let hash = format!("{}:rpt:daily:t:4", env.prefix);

    publisher
        .batch(&batch(0, 1, vec![daily(4, "2026-11-21", 1, Value::I(10))]))
        .await;
    let conn = env.mysql();
    wait_applied(&conn, 0, 1).await;

    proxy.down();
    publisher
        .batch(&batch(0, 2, vec![daily(4, "2026-11-21", 2, Value::I(20))]))
        .await;
    publisher
        .batch(&batch(0, 3, vec![daily(4, "2026-11-21", 3, Value::I(30))]))
        .await;

    // Both batches wait unacknowledged, already written to Redis.
    let status = eventually(
        "batches cached ahead",
        Duration::from_secs(20),
        || async move {
            let s = writer_status(port).await;
            (s["partitions"]["0"]["cached_ahead"] == 2).then_some(s)
        },
    )
    .await;
    assert_eq!(status["partitions"]["0"]["pending"], 2);
    assert_eq!(machine_state(&status, "mysql"), "degraded");
    let mut r = env.redis().await;
    assert_eq!(
        hgetall(&mut r, &hash).await,
        [(
            "4\u{1f}2026-11-21".to_string(),
            r#"{"merchant_id":4,"day":"2026-11-21","orders":3,"gmv":30,"_day":"2026-11-21"}"#
                .to_string()
        )]
        .into_iter()
        .collect()
    );
    assert_eq!(applied_window(&conn, 0).await, Some(1));

    // MySQL comes back: the probe commits both batches in order.
    proxy.up();
    wait_applied(&conn, 0, 3).await;
    let row: String = sqlx::query_scalar("SELECT row_json FROM rpt_daily WHERE tenant = '4'")
        .fetch_one(&conn)
        .await
        .expect("row");
    assert_eq!(
        row,
        r#"{"merchant_id":4,"day":"2026-11-21","orders":3,"gmv":30}"#
    );
    let status = eventually("backlog drained", Duration::from_secs(10), || async move {
        let s = writer_status(port).await;
        (s["partitions"]["0"]["pending"] == 0).then_some(s)
    })
    .await;
    assert_eq!(status["partitions"]["0"]["applied_window"], 3);
    assert_eq!(
        publisher.queue_len(&env.topology().results_queue(0)).await,
        0
    );
    ctx.cancel.cancel();
    env.cleanup().await;
}

#[actix_web::test]
async fn redis_outage_writes_mysql_only_and_rebuilds_the_cache_afterwards() {
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let mut env = TestEnv::new(1);
    env.redis_url = format!("redis://127.0.0.1:{}/0", proxy.port);
    let publisher = TestPublisher::new(env.topology()).await;
    let (port, ctx) = env.spawn_writer().await;
    let hash = |t: &str| format!("{}:rpt:daily:t:{t}", env.prefix);
    let mut r = env.redis().await;

    publisher
        .batch(&batch(
            0,
            1,
            vec![
                daily(5, "2026-11-20", 1, Value::I(10)),
                daily(5, "2026-11-21", 2, Value::I(20)),
            ],
        ))
        .await;
    eventually("window 1 cached", Duration::from_secs(30), || {
        let mut r = r.clone();
        let key = hash("5");
        async move {
            let n: i64 = redis::cmd("HLEN")
                .arg(&key)
                .query_async(&mut r)
                .await
                .ok()?;
            (n == 2).then_some(())
        }
    })
    .await;

    proxy.down();
    publisher
        .batch(&batch(
            0,
            2,
            vec![
                daily(5, "2026-11-20", 5, Value::I(50)),
                daily_deleted(5, "2026-11-21"),
                daily(6, "2026-11-21", 1, Value::I(7)),
            ],
        ))
        .await;
    let conn = env.mysql();
    wait_applied(&conn, 0, 2).await;
    let status = eventually("redis degraded", Duration::from_secs(20), || async move {
        let s = writer_status(port).await;
        (machine_state(&s, "redis") == "degraded").then_some(s)
    })
    .await;
    assert_eq!(status["partitions"]["0"]["pending"], 0);
    // Redis still holds the old rows; the entries to rebuild are recorded.
    assert_eq!(hgetall(&mut r, &hash("5")).await.len(), 2);
    let marks: Vec<(String, String)> =
        sqlx::query_as("SELECT report, tenant FROM mdp_cache_stale ORDER BY tenant")
            .fetch_all(&conn)
            .await
            .expect("marks");
    assert_eq!(
        marks,
        vec![
            ("daily".to_string(), "5".to_string()),
            ("daily".to_string(), "6".to_string())
        ]
    );

    // Redis comes back: both entries are rebuilt from MySQL.
    proxy.up();
    eventually("cache rebuilt", Duration::from_secs(30), || {
        let conn = conn.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mdp_cache_stale")
                .fetch_one(&conn)
                .await
                .ok()?;
            (n == 0).then_some(())
        }
    })
    .await;
    assert_eq!(
        hgetall(&mut r, &hash("5")).await,
        [(
            "5\u{1f}2026-11-20".to_string(),
            r#"{"merchant_id":5,"day":"2026-11-20","orders":5,"gmv":50,"_day":"2026-11-20"}"#
                .to_string()
        )]
        .into_iter()
        .collect()
    );
    assert_eq!(
        hgetall(&mut r, &hash("6")).await,
        [(
            "6\u{1f}2026-11-21".to_string(),
            r#"{"merchant_id":6,"day":"2026-11-21","orders":1,"gmv":7,"_day":"2026-11-21"}"#
                .to_string()
        )]
        .into_iter()
        .collect()
    );
    let freshness: Option<String> = redis::cmd("HGET")
        .arg(format!("{}:freshness", env.prefix))
        .arg("0")
        .query_async(&mut r)
        .await
        .expect("freshness");
    let freshness: serde_json::Value =
        serde_json::from_str(&freshness.expect("freshness of partition 0")).expect("json");
    assert_eq!(freshness["window_id"], 2);
    let stale_members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{}:stale", env.prefix))
        .query_async(&mut r)
        .await
        .expect("smembers");
    assert!(stale_members.is_empty(), "{stale_members:?}");
    ctx.cancel.cancel();
    env.cleanup().await;
}
