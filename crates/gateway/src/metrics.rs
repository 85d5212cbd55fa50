//! `/metrics`: every OpenTelemetry instrument of the process in Prometheus text, as
//! etcd serves its metrics on its client URLs and `--listen-metrics-urls`.
//!
//! [`install`] sets the global meter provider, so it must run before any instrument
//! is created: an instrument made before it records into nothing.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use tokio::net::TcpListener;

/// The Prometheus registry every instrument lands in, once installed.
#[derive(Clone)]
pub struct Registry {
    registry: prometheus::Registry,
    /// Kept alive: dropping the provider stops collection.
    _provider: SdkMeterProvider,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// Installs the global meter provider with a Prometheus exporter: instrument names
/// as given (no unit suffixes, no target or scope labels), as etcd's names are.
///
/// # Errors
/// The exporter's, as text.
pub fn install() -> Result<Registry, String> {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_units()
        .without_target_info()
        .scope_info_enabled(false)
        .build()
        .map_err(|error| format!("cannot build the Prometheus exporter: {error}"))?;
    let provider = SdkMeterProvider::builder().with_reader(exporter).build();
    opentelemetry::global::set_meter_provider(provider.clone());
    Ok(Registry { registry, _provider: provider })
}

impl Registry {
    /// `GET /metrics`.
    pub fn routes(&self) -> Router {
        let registry = self.registry.clone();
        Router::new().route("/metrics", get(move || metrics(registry.clone())))
    }
}

async fn metrics(registry: prometheus::Registry) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut text) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text),
        Err(error) => {
            (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], error.to_string())
        }
    }
}

/// Serves `app` over plain HTTP/1.1 on every listener (etcd's `--listen-metrics-urls`)
/// until the process ends.
pub fn serve(app: Router, listeners: Vec<TcpListener>) {
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, "serving metrics and health");
        }
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "metrics server failed");
            }
        });
    }
}
