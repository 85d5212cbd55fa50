//! `/metrics` exports what the process's instruments recorded, under their names.

use tower::ServiceExt as _;

#[tokio::test]
async fn instruments_created_after_install_are_exported_by_name() {
    let registry = cairn_gateway::metrics::install().unwrap();
    let meter = opentelemetry::global::meter("test");
    // A counter's name gets `_total`, as Prometheus names counters (and etcd's are).
    let counter = meter.u64_counter("etcd_test_requests").with_description("Requests.").build();
    counter.add(3, &[opentelemetry::KeyValue::new("From", "1")]);
    let request = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap();
    let response = registry.routes().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("# HELP etcd_test_requests_total Requests."), "{text}");
    assert!(text.contains("etcd_test_requests_total{From=\"1\"} 3"), "{text}");
}
