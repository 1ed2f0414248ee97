//! The HTTP side: the telemetry path and a landing page.
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn serve(
    address: SocketAddr,
    telemetry_path: &str,
    registry: Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let registry = Arc::new(registry);
    let landing = landing_page(telemetry_path);
    let app = Router::new()
        .route(telemetry_path, get(metrics))
        .route("/", get(move || async move { Html(landing) }))
        .with_state(registry);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address} (--web.listen-address)"))?;
    log::info!("serving metrics on http://{address}{telemetry_path}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server")
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    match crate::metrics::render(&registry) {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}")).into_response(),
    }
}

fn landing_page(telemetry_path: &str) -> String {
    format!(
        "<!doctype html><html><head><title>Job monitor</title></head><body>\
         <h1>Job monitor</h1><p>Kernel-level per-job metrics.</p>\
         <p><a href=\"{telemetry_path}\">Metrics</a></p></body></html>"
    )
}
