//! Integration tests of the query API against MariaDB and Redis, seeded
//! directly in the storage layout result-writer writes.

mod helpers;

use helpers::*;
use mdp_types::{partition_of, TenantId};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const M7: [DailyRow<'static>; 3] = [
    DailyRow {
        merchant: 7,
        day: "2026-11-21",
        orders: 3,
        gmv: "1250.5",
    },
    DailyRow {
        merchant: 7,
        day: "2026-11-19",
        orders: 1,
        gmv: "100",
    },
    DailyRow {
        merchant: 7,
        day: "2026-11-20",
        orders: 12,
        gmv: "9000",
    },
];

const M8: [DailyRow<'static>; 2] = [
    DailyRow {
        merchant: 8,
        day: "2026-11-20",
        orders: 2,
        gmv: "20",
    },
    DailyRow {
        merchant: 8,
        day: "2026-11-21",
        orders: 4,
        gmv: "40",
    },
];

/// Seeds MySQL with merchants 7 and 8, Redis with merchant 7 only.
async fn seeded() -> TestEnv {
    let env = TestEnv::new();
    let mut conn = env.create_tables().await;
    insert_mysql(&mut conn, &M7).await;
    insert_mysql(&mut conn, &M8).await;
    insert_redis(&env, &M7).await;
    let p7 = partition_of(&TenantId("7".into()), 8);
    let mut freshness = BTreeMap::new();
    freshness.insert(p7, (42u64, 1_700_000_000_000i64, 1_700_000_000_500i64));
    set_freshness(&env, &freshness).await;
    env
}

#[actix_web::test]
async fn lists_reports_with_columns_and_rejections() {
    let env = TestEnv::new();
    let (base, ctx) = env.spawn().await;
    let (status, body) = get_json(&format!("{base}/v1/reports")).await;
    assert_eq!(status, 200);
    let mut reports = body["reports"].as_array().expect("reports").clone();
    reports.sort_by_key(|r| r["name"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        json!(reports),
        json!([
            {
                "name": "by_status",
                "columns": [
                    {"name": "merchant_id", "role": "key"},
                    {"name": "status", "role": "key"},
                    {"name": "orders", "role": "value"}
                ],
                "keyed_by_merchant": true,
                "date_column": null
            },
            {
                "name": "daily",
                "columns": [
                    {"name": "merchant_id", "role": "key"},
                    {"name": "day", "role": "key"},
                    {"name": "orders", "role": "value"},
                    {"name": "gmv", "role": "value"}
                ],
                "keyed_by_merchant": true,
                "date_column": "day"
            }
        ])
    );
    let rejected = body["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 1, "{body}");
    assert!(rejected[0]["file"]
        .as_str()
        .unwrap_or_default()
        .ends_with("broken.sql"));
    assert!(!rejected[0]["error"].as_str().unwrap_or_default().is_empty());
    ctx.cancel.cancel();
    env.cleanup().await;
}

#[actix_web::test]
async fn serves_redis_rows_sorted_and_paged_with_integers_kept() {
    let env = seeded().await;
    let (base, ctx) = env.spawn().await;
    let url = format!("{base}/v1/reports/daily/rows?merchant_id=7");
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"], "daily");
    assert_eq!(body["served_by"], "redis");
    assert_eq!(body["degraded"], false);
    assert_eq!(
        body["rows"],
        json!([
            {"merchant_id": 7, "day": "2026-11-19", "orders": 1, "gmv": 100},
            {"merchant_id": 7, "day": "2026-11-20", "orders": 12, "gmv": 9000}
        ])
    );
    assert!(body["rows"][0]["orders"].is_i64());
    assert!(body["rows"][0]["gmv"].is_i64());
    // Columns come in select order.
    let text = reqwest::get(&url)
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(r#""rows":[{"merchant_id":7,"day":"2026-11-19","orders":1,"gmv":100},"#),
        "{text}"
    );
    let p7 = partition_of(&TenantId("7".into()), 8).to_string();
    assert_eq!(body["freshness"]["as_of_ms"], 1_700_000_000_000i64);
    assert_eq!(
        body["freshness"]["partitions"],
        json!({ p7: {"window_id": 42, "max_commit_ts_ms": 1_700_000_000_000i64, "applied_at_ms": 1_700_000_000_500i64} })
    );
    assert!(body["freshness"]["lag_ms"].as_i64().expect("lag") > 0);

    let token = body["next_page_token"].as_str().expect("token").to_string();
    let (status, page2) = get_json(&format!("{url}&page_token={token}")).await;
    assert_eq!(status, 200, "{page2}");
    assert_eq!(
        page2["rows"],
        json!([{"merchant_id": 7, "day": "2026-11-21", "orders": 3, "gmv": 1250.5}])
    );
    assert_eq!(page2["next_page_token"], serde_json::Value::Null);

    // Date range, inclusive.
    let (status, ranged) = get_json(&format!("{url}&from=2026-11-20&to=2026-11-20")).await;
    assert_eq!(status, 200);
    assert_eq!(
        ranged["rows"],
        json!([{"merchant_id": 7, "day": "2026-11-20", "orders": 12, "gmv": 9000}])
    );
    assert_eq!(ranged["next_page_token"], serde_json::Value::Null);
    // A leading zero names the same merchant.
    let (_, same) = get_json(&format!(
        "{base}/v1/reports/daily/rows?merchant_id=007&limit=1"
    ))
    .await;
    assert_eq!(
        same["rows"],
        json!([{"merchant_id": 7, "day": "2026-11-19", "orders": 1, "gmv": 100}])
    );
    ctx.cancel.cancel();
    env.cleanup().await;
}

#[actix_web::test]
async fn falls_back_to_mysql_when_the_redis_hash_is_missing() {
    let env = seeded().await;
    let (base, ctx) = env.spawn().await;
    let (status, body) = get_json(&format!(
        "{base}/v1/reports/daily/rows?merchant_id=8&from=2026-11-01"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["served_by"], "mysql");
    assert_eq!(
        body["rows"],
        json!([
            {"merchant_id": 8, "day": "2026-11-20", "orders": 2, "gmv": 20},
            {"merchant_id": 8, "day": "2026-11-21", "orders": 4, "gmv": 40}
        ])
    );
    assert_eq!(body["next_page_token"], serde_json::Value::Null);
    // A merchant without rows anywhere.
    let (status, empty) = get_json(&format!("{base}/v1/reports/daily/rows?merchant_id=99")).await;
    assert_eq!(status, 200);
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(empty["served_by"], "mysql");
    // A report whose table does not exist yet has no rows.
    let (status, none) = get_json(&format!("{base}/v1/reports/by_status/rows?merchant_id=7")).await;
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["rows"], json!([]));
    assert_eq!(none["served_by"], "mysql");
    ctx.cancel.cancel();
    env.cleanup().await;
}

#[actix_web::test]
async fn redis_without_the_cache_epoch_is_not_trusted() {
    // Redis lost its data and the writer refilled part of a hash: until the
    // writer has rebuilt everything and set the epoch again, MySQL answers.
    let env = seeded().await;
    let mut r = env.redis().await;
    let _: () = redis::cmd("DEL")
        .arg(mdp_result_writer::layout::RedisKeys::new(&env.prefix).cache_epoch())
        .query_async(&mut r)
        .await
        .expect("del epoch");
    let _: () = redis::cmd("HDEL")
        .arg(env.hash("7"))
        .arg(M7[0].key_text())
        .query_async(&mut r)
        .await
        .expect("hdel");
    let (base, ctx) = env.spawn().await;
    let (status, body) = get_json(&format!(
        "{base}/v1/reports/daily/rows?merchant_id=7&from={}",
        M7[0].day
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["served_by"], "mysql");
    // The row missing from the refilled hash is served.
    let days: Vec<&str> = body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["day"].as_str())
        .collect();
    assert!(days.contains(&M7[0].day), "{body}");
    ctx.cancel.cancel();
    env.cleanup().await;
}

#[actix_web::test]
async fn without_merchant_id_every_merchant_is_read_from_mysql() {
    let env = seeded().await;
    let (base, ctx) = env.spawn().await;
    let (status, body) = get_json(&format!(
        "{base}/v1/reports/daily/rows?from=2026-11-20&to=2026-11-20"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["served_by"], "mysql");
    assert_eq!(
        body["rows"],
        json!([
            {"merchant_id": 7, "day": "2026-11-20", "orders": 12, "gmv": 9000},
            {"merchant_id": 8, "day": "2026-11-20", "orders": 2, "gmv": 20}
        ])
    );
    assert_eq!(body["degraded"], false);
    ctx.cancel.cancel();
    env.cleanup().await;
}

#[actix_web::test]
async fn bad_parameters_get_400_naming_the_parameter() {
    let env = seeded().await;
    let (base, ctx) = env.spawn().await;
    let rows = format!("{base}/v1/reports/daily/rows");
    let cases = [
        (
            "?merchant_id=7&from=2026-13-01",
            "from",
            "from: 2026-13-01 is not a valid calendar date",
        ),
        (
            "?merchant_id=7&to=yesterday",
            "to",
            "to: \"yesterday\" is not a date in YYYY-MM-DD form",
        ),
        (
            "?merchant_id=7&from=2026-11-21&to=2026-11-20",
            "from",
            "from: 2026-11-21 is after to (2026-11-20)",
        ),
        (
            "?merchant_id=7&limit=0",
            "limit",
            "limit: must be an integer from 1 to 2",
        ),
        (
            "?merchant_id=7&limit=3",
            "limit",
            "limit: must be an integer from 1 to 2",
        ),
        (
            "?merchant_id=7&page_token=garbage",
            "page_token",
            "page_token: is not a token returned by this API",
        ),
        (
            "?merchant_id=7&merchant_id=8",
            "merchant_id",
            "merchant_id: given more than once",
        ),
    ];
    for (query, param, message) in cases {
        let (status, body) = get_json(&format!("{rows}{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body,
            json!({"error": message, "parameter": param}),
            "{query}"
        );
    }
    let (status, body) = get_json(&format!(
        "{base}/v1/reports/by_status/rows?merchant_id=7&from=2026-11-01"
    ))
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "from: report by_status has no date column", "parameter": "from"})
    );
    let (status, body) = get_json(&format!("{base}/v1/reports/nope/rows?merchant_id=7")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "unknown report \"nope\"");
    ctx.cancel.cancel();
    env.cleanup().await;
}

#[actix_web::test]
async fn repeated_requests_are_served_by_the_local_cache() {
    let mut env = seeded().await;
    env.cache_ttl_ms = 60_000;
    let (base, ctx) = env.spawn().await;
    let url = format!("{base}/v1/reports/daily/rows?merchant_id=7&limit=1");
    let (_, first) = get_json(&url).await;
    assert_eq!(first["served_by"], "redis");
    let (_, second) = get_json(&url).await;
    assert_eq!(second["served_by"], "cache");
    assert_eq!(second["rows"], first["rows"]);
    // Paging reads the cached snapshot too.
    let token = second["next_page_token"].as_str().expect("token");
    let (_, next) = get_json(&format!("{url}&page_token={token}")).await;
    assert_eq!(next["served_by"], "cache");
    assert_eq!(
        next["rows"],
        json!([{"merchant_id": 7, "day": "2026-11-20", "orders": 12, "gmv": 9000}])
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("mdp_query_served_total{by=\"cache\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("mdp_query_requests_total{route=\"rows\",status=\"200\"}"));
    ctx.cancel.cancel();
    env.cleanup().await;
}

/// Publishes a change notice on the installation's notices exchange.
async fn notify(env: &TestEnv, changed: &[(&str, Option<&str>)]) {
    let cancel = tokio_util::sync::CancellationToken::new();
    let conn = mdp_amqp::connect(RABBITMQ_URL, "it-notify", &cancel)
        .await
        .expect("rabbitmq");
    let publisher = mdp_amqp::Publisher::new(&conn).await.expect("publisher");
    let notice = mdp_types::ResultNotice {
        partition: 0,
        window_id: 2,
        changed: changed
            .iter()
            .map(|(report, tenant)| mdp_types::ChangedRows {
                report: report.to_string(),
                tenant: tenant.map(str::to_string),
            })
            .collect(),
    };
    let exchange = mdp_amqp::Topology::new(&env.prefix, 8).notices_exchange();
    publisher
        .publish_json(&exchange, "", &notice, None)
        .await
        .expect("publish notice");
    let _ = conn.close(200, "done".into()).await;
}

/// Waits until `metric` (a full sample name with labels) reads at least `min`.
async fn wait_metric(base: &str, metric: &str, min: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(metric)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if value >= min {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{metric} stayed below {min}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_change_notice_drops_the_cached_answers_of_its_rows_only() {
    let mut env = seeded().await;
    env.cache_ttl_ms = 600_000;
    env.page_size = 10;
    insert_redis(&env, &M8).await;
    let (base, ctx) = env.spawn().await;
    wait_metric(&base, "mdp_query_notice_link_up", 1.0).await;
    let m7 = format!("{base}/v1/reports/daily/rows?merchant_id=7&limit=10");
    let m8 = format!("{base}/v1/reports/daily/rows?merchant_id=8&limit=10");
    let (_, first7) = get_json(&m7).await;
    let (_, first8) = get_json(&m8).await;
    assert_eq!(first7["served_by"], "redis");
    assert_eq!(first7["rows"].as_array().map(Vec::len), Some(3));
    assert_eq!(first8["rows"].as_array().map(Vec::len), Some(2));

    // Both merchants' rows change; only merchant 7's change is announced.
    let new7 = DailyRow {
        merchant: 7,
        day: "2026-11-22",
        orders: 5,
        gmv: "55",
    };
    let new8 = DailyRow {
        merchant: 8,
        day: "2026-11-22",
        orders: 6,
        gmv: "66",
    };
    insert_redis(&env, &[new7, new8]).await;
    let (_, cached7) = get_json(&m7).await;
    assert_eq!(cached7["served_by"], "cache");
    assert_eq!(cached7["rows"], first7["rows"]);

    notify(&env, &[("daily", Some("7")), ("by_status", Some("8"))]).await;
    wait_metric(&base, "mdp_query_notices_total{outcome=\"recorded\"}", 1.0).await;
    let (_, fresh7) = get_json(&m7).await;
    assert_eq!(fresh7["served_by"], "redis");
    assert_eq!(
        fresh7["rows"][3],
        json!({"merchant_id": 7, "day": "2026-11-22", "orders": 5, "gmv": 55})
    );
    let (_, again7) = get_json(&m7).await;
    assert_eq!(again7["served_by"], "cache");
    assert_eq!(again7["rows"], fresh7["rows"]);
    // Merchant 8's `daily` rows were not named: its cached answer stays.
    let (_, cached8) = get_json(&m8).await;
    assert_eq!(cached8["served_by"], "cache");
    assert_eq!(cached8["rows"], first8["rows"]);

    // A malformed notice is counted and dropped; the listener goes on.
    let cancel = tokio_util::sync::CancellationToken::new();
    let conn = mdp_amqp::connect(RABBITMQ_URL, "it-notify", &cancel)
        .await
        .expect("rabbitmq");
    let publisher = mdp_amqp::Publisher::new(&conn).await.expect("publisher");
    let exchange = mdp_amqp::Topology::new(&env.prefix, 8).notices_exchange();
    publisher
        .publish_bytes(&exchange, "", b"{not json".to_vec(), None)
        .await
        .expect("publish");
    let _ = conn.close(200, "done".into()).await;
    wait_metric(&base, "mdp_query_notices_total{outcome=\"malformed\"}", 1.0).await;
    notify(&env, &[("daily", Some("8"))]).await;
    wait_metric(&base, "mdp_query_notices_total{outcome=\"recorded\"}", 2.0).await;
    let (_, fresh8) = get_json(&m8).await;
    assert_eq!(fresh8["served_by"], "redis");
    assert_eq!(fresh8["rows"].as_array().map(Vec::len), Some(3));
    wait_metric(&base, "mdp_query_cache_outdated_total", 2.0).await;
    ctx.cancel.cancel();
    env.cleanup().await;
}

#[actix_web::test]
async fn mysql_down_serves_redis_alone_and_marks_misses_partial() {
    let mut env = seeded().await;
    // Nothing listens on port 1: every MySQL read fails.
    env.mysql_url = "mysql://root@127.0.0.1:1/nowhere".to_string();
    let (base, ctx) = env.spawn().await;
    let (status, hit) = get_json(&format!("{base}/v1/reports/daily/rows?merchant_id=7")).await;
    assert_eq!(status, 200, "{hit}");
    assert_eq!(hit["served_by"], "redis");
    assert_eq!(hit["rows"].as_array().map(Vec::len), Some(2));
    let (status, miss) = get_json(&format!("{base}/v1/reports/daily/rows?merchant_id=8")).await;
    assert_eq!(status, 200, "{miss}");
    assert_eq!(miss["served_by"], "redis");
    assert_eq!(miss["rows"], json!([]));
    assert_eq!(miss["degraded"]["partial"], true);
    let reasons = miss["degraded"]["reasons"].as_array().expect("reasons");
    assert!(
        reasons.iter().any(|r| r
            .as_str()
            .unwrap_or_default()
            .starts_with("partial: mysql is unavailable")),
        "{miss}"
    );
    // After repeated failures the mysql machine degrades and says so.
    for _ in 0..3 {
        let _ = get_json(&format!("{base}/v1/reports/daily/rows?merchant_id=8")).await;
    }
    let (_, later) = get_json(&format!("{base}/v1/reports/daily/rows?merchant_id=7")).await;
    let reasons = later["degraded"]["reasons"].as_array().expect("reasons");
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap_or_default().starts_with("mysql degraded")),
        "{later}"
    );
    assert_eq!(later["degraded"]["partial"], false);
    assert_eq!(later["served_by"], "redis");
    ctx.cancel.cancel();
    env.cleanup().await;
}

#[actix_web::test]
async fn redis_down_serves_mysql_and_says_so() {
    let mut env = seeded().await;
    env.redis_url = "redis://127.0.0.1:1/0".to_string();
    let (base, ctx) = env.spawn().await;
    let url = format!("{base}/v1/reports/daily/rows?merchant_id=7&from=2026-11-20");
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["served_by"], "mysql");
    assert_eq!(
        body["rows"],
        json!([
            {"merchant_id": 7, "day": "2026-11-20", "orders": 12, "gmv": 9000},
            {"merchant_id": 7, "day": "2026-11-21", "orders": 3, "gmv": 1250.5}
        ])
    );
    // Freshness comes from mdp_applied (empty here) while Redis is down.
    assert_eq!(body["freshness"]["as_of_ms"], serde_json::Value::Null);
    for _ in 0..3 {
        let _ = get_json(&url).await;
    }
    let (_, later) = get_json(&url).await;
    assert_eq!(later["served_by"], "mysql");
    let reasons = later["degraded"]["reasons"].as_array().expect("reasons");
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap_or_default().starts_with("redis degraded")),
        "{later}"
    );
    let status: serde_json::Value = reqwest::get(format!("{base}/v1/status"))
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let redis = status["degrade"]
        .as_array()
        .and_then(|d| d.iter().find(|m| m["machine"] == "redis"))
        .expect("redis machine");
    assert_eq!(redis["state"], "degraded");
    tokio::time::sleep(Duration::from_millis(10)).await;
    ctx.cancel.cancel();
    env.cleanup().await;
}
