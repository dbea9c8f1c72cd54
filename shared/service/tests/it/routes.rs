//! The common routes, served in-process.

use crate::helpers::settings;
use actix_web::{test, web, App};
use mdp_degrade::{DegradeMachine, Policy};
use mdp_service::{common_routes, ServiceContext};
use mdp_types::Heartbeat;

fn context() -> ServiceContext {
    let ctx = ServiceContext::new("query", settings());
    ctx.set_http_addr(([127, 0, 0, 1], 8080).into());
    ctx
}

#[actix_web::test]
async fn healthz_is_ok() {
    let ctx = context();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(ctx))
            .configure(common_routes),
    )
    .await;
    let resp =
        test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = test::read_body_json(resp).await;
    assert_eq!(body, serde_json::json!({ "status": "ok" }));
}

#[actix_web::test]
async fn readyz_follows_the_checks() {
    let ctx = context();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(ctx.clone()))
            .configure(common_routes),
    )
    .await;

    ctx.readiness.set("mysql", Err("connection refused".into()));
    ctx.readiness.set("redis", Ok(()));
    let resp = test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = test::read_body_json(resp).await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["mysql"], "connection refused");
    assert_eq!(body["checks"]["redis"], "ok");

    ctx.readiness.set("mysql", Ok(()));
    let resp = test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = test::read_body_json(resp).await;
    assert_eq!(body["ready"], true);
}

#[actix_web::test]
async fn metrics_are_prometheus_text() {
    let ctx = context();
    // A machine exports its state gauge as soon as it exists.
    ctx.degrade.register(DegradeMachine::new(
        "routes-test",
        "redis",
        Policy::default(),
    ));
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(ctx))
            .configure(common_routes),
    )
    .await;
    let resp =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(
        content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = String::from_utf8_lossy(&test::read_body(resp).await).to_string();
    assert!(
        body.contains(r#"mdp_degrade_state{machine="redis",service="routes-test"} 0"#),
        "{body}"
    );
}

#[actix_web::test]
async fn status_is_the_heartbeat() {
    let ctx = context();
    let m = DegradeMachine::new("query", "redis", Policy::default());
    ctx.degrade.register(m.clone());
    m.set_override(mdp_types::Override::ForceDegraded, Some("drill".into()));
    ctx.partitions.insert(4);
    ctx.stats.set("queries_total", 12.0);
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(ctx.clone()))
            .configure(common_routes),
    )
    .await;
    let resp = test::call_service(
        &app,
        test::TestRequest::get().uri("/v1/status").to_request(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let hb: Heartbeat = test::read_body_json(resp).await;
    assert_eq!(hb.service, "query");
    assert_eq!(hb.instance, ctx.instance);
    assert_eq!(hb.http_addr, "127.0.0.1:8080");
    assert_eq!(hb.partitions, vec![4]);
    assert_eq!(hb.stats.get("queries_total"), Some(&12.0));
    assert_eq!(hb.degrade.len(), 1);
    assert_eq!(hb.degrade[0].machine, "redis");
    assert_eq!(hb.degrade[0].state, "degraded");
    assert_eq!(hb.degrade[0].forced.as_deref(), Some("degraded"));
    assert_eq!(
        hb.degrade[0].reason.as_deref(),
        Some("forced degraded by operator: drill")
    );
}
