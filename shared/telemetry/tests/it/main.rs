//! Telemetry installed as the process-wide subscriber (once per test binary):
//! spans get trace ids, `traceparent` round-trips, and spans reach an OTLP/HTTP
//! collector, all from inside a tokio runtime.

use mdp_config::TelemetrySettings;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests received by the fake collector: (path, body).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Accepts OTLP/HTTP requests, records (path, body) and answers 200.
fn fake_collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    sink.lock().expect("lock").push((path, body));
                    let response = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if reader.get_mut().write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn trace_id_of(tp: &str) -> &str {
    tp.split('-').nth(1).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_propagates_and_exports_spans() {
    let (endpoint, received) = fake_collector();
    let settings = TelemetrySettings {
        otlp_endpoint: endpoint,
        log_format: "json".into(),
        // Quiet logs must not switch tracing off.
        log_filter: "warn".into(),
    };
    let guard = mdp_telemetry::init_telemetry("mdp-it-service", &settings);
    assert!(guard.is_exporting());

    // A second initialisation neither panics nor replaces the subscriber.
    let again = mdp_telemetry::init_telemetry("other", &settings);
    assert!(!again.is_exporting());
    drop(again);
    assert!(matches!(
        mdp_telemetry::try_init_telemetry("other", &settings),
        Err(mdp_telemetry::TelemetryError::AlreadyInitialized)
    ));

    let root = tracing::info_span!("it_root_span");
    let tp = {
        let _entered = root.enter();
        let tp = mdp_telemetry::current_traceparent().expect("span has a traceparent");
        assert_eq!(tp.len(), 55, "{tp}");
        assert!(tp.starts_with("00-") && tp.ends_with("-01"), "{tp}");
        assert_eq!(
            mdp_telemetry::current_trace_id().as_deref(),
            Some(trace_id_of(&tp))
        );
        tracing::info!(step = "inside", "work in the root span");
        tp
    };
    drop(root);

    // The receiving side: a new span parented to the remote traceparent keeps the trace id.
    let child = tracing::info_span!("it_remote_child");
    mdp_telemetry::set_parent(&child, Some(&tp));
    let child_tp = {
        let _entered = child.enter();
        mdp_telemetry::current_traceparent().expect("child has a traceparent")
    };
    assert_eq!(trace_id_of(&child_tp), trace_id_of(&tp));
    assert_ne!(
        child_tp, tp,
        "the child is a different span of the same trace"
    );
    drop(child);

    // Across an await on another task too.
    let task_tp = tokio::spawn(async {
        let span = tracing::info_span!("it_task_span");
        let _entered = span.enter();
        mdp_telemetry::current_traceparent()
    })
    .await
    .expect("task");
    assert!(task_tp.is_some());

    // An invalid parent makes a new root instead of failing.
    let orphan = tracing::info_span!("it_orphan");
    mdp_telemetry::set_parent(&orphan, Some("00-nonsense"));
    let orphan_tp = {
        let _entered = orphan.enter();
        mdp_telemetry::current_traceparent().expect("orphan has a traceparent")
    };
    assert_ne!(trace_id_of(&orphan_tp), trace_id_of(&tp));
    drop(orphan);

    assert!(guard.flush(), "flush to a listening collector succeeds");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = received.lock().expect("lock").clone();
        let all: Vec<u8> = got.iter().flat_map(|(_, b)| b.clone()).collect();
        if contains(&all, b"it_remote_child") && contains(&all, b"it_root_span") {
            assert!(
                got.iter().all(|(path, _)| path == "/v1/traces"),
                "{:?}",
                got.iter().map(|(p, _)| p).collect::<Vec<_>>()
            );
            assert!(contains(&all, b"service.name"));
            assert!(contains(&all, b"mdp-it-service"));
            // The trace id travels as 16 raw bytes in the protobuf.
            let raw: Vec<u8> = (0..16)
                .map(|i| u8::from_str_radix(&trace_id_of(&tp)[2 * i..2 * i + 2], 16).expect("hex"))
                .collect();
            assert!(contains(&all, &raw));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans did not reach the collector"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Dropping the guard on a runtime thread flushes without panicking.
    let started = Instant::now();
    drop(guard);
    assert!(started.elapsed() < Duration::from_secs(10));
    tracing::info!("logging after shutdown still works");

    let text = mdp_telemetry::render_metrics();
    assert!(text.is_empty() || text.contains("# TYPE"), "{text}");
}
