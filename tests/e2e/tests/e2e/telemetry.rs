//! One change's spans, exported over OTLP/HTTP by every service, form one
//! trace crossing ingest, flow-control, window-compute and result-writer.
//! The receiver is a minimal OTLP/HTTP (protobuf) endpoint on loopback.

use crate::helpers::Platform;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// trace id (hex) → (service name → span names)
type Traces = Arc<Mutex<BTreeMap<String, BTreeMap<String, BTreeSet<String>>>>>;

async fn serve_otlp(listener: TcpListener, traces: Traces) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let traces = traces.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream);
            loop {
                let mut content_length = 0usize;
                let mut line = String::new();
                // request line + headers
                loop {
                    line.clear();
                    match reader.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            content_length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; content_length];
                if reader.read_exact(&mut body).await.is_err() {
                    return;
                }
                if let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice()) {
                    let mut t = traces.lock().expect("traces lock");
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| r.attributes.iter())
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| kv.value.as_ref())
                            .and_then(|v| match &v.value {
                                Some(AnyValue::StringValue(s)) => Some(s.clone()),
                                _ => None,
                            })
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for span in ss.spans {
                                let id: String =
                                    span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                                t.entry(id)
                                    .or_default()
                                    .entry(service.clone())
                                    .or_default()
                                    .insert(span.name);
                            }
                        }
                    }
                }
                let resp = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                if reader.get_mut().write_all(resp).await.is_err() {
                    return;
                }
            }
        });
    }
}

const PIPELINE: [&str; 4] = ["ingest", "flow-control", "window-compute", "result-writer"];

fn service_matches(name: &str, service: &str) -> bool {
    name == service || name == format!("mdp-{service}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_is_one_trace_across_the_pipeline() {
    let _serial = crate::SERIAL.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind otlp receiver");
    let port = listener.local_addr().expect("addr").port();
    let traces: Traces = Arc::default();
    tokio::spawn(serve_otlp(listener, traces.clone()));

    let mut opts = crate::pipeline::options();
    opts.extra_env = vec![
        (
            "MDP__TELEMETRY__OTLP_ENDPOINT".into(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
    ];
    let mut platform = Platform::prepare(opts).await;
    let source = platform.source_pool().await;
    mdp_e2e::schema::create_tables(&source)
        .await
        .expect("schema");
    platform.start_all().await;

    sqlx::query("INSERT INTO orders (id, merchant_id, customer_id, status, amount_cents, refund_cents, created_at, updated_at) VALUES (1, 3, 7, 'paid', 1250, 0, NOW(), NOW())")
        .execute(&source)
        .await
        .expect("insert");

    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let hit = {
            let t = traces.lock().expect("traces lock");
            t.iter()
                .find(|(_, services)| {
                    PIPELINE
                        .iter()
                        .all(|want| services.keys().any(|s| service_matches(s, want)))
                })
                .map(|(id, services)| (id.clone(), services.clone()))
        };
        if let Some(hit) = hit {
            break hit;
        }
        if Instant::now() > deadline {
            let t = traces.lock().expect("traces lock");
            let summary: Vec<String> = t.iter().map(|(id, s)| format!("{id}: {:?}", s)).collect();
            panic!(
                "no trace crossed {PIPELINE:?} in 60 s; traces seen:\n{}\nlogs:\n{}",
                summary.join("\n"),
                platform.all_logs_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (trace_id, services) = found;
    assert_eq!(trace_id.len(), 32);
    for want in PIPELINE {
        let spans = services
            .iter()
            .find(|(s, _)| service_matches(s, want))
            .map(|(_, v)| v.len())
            .unwrap_or(0);
        assert!(spans >= 1, "{want} has no span in trace {trace_id}");
    }
    platform.teardown().await;
}
