//! The HTTP side: the telemetry path, the job API and a landing page on
//! the web port (under `--web.config.file`'s TLS and basic auth); the job
//! API alone on the API socket.
mod basic_auth;
pub mod config;
mod connections;
mod render_pool;
pub mod settings;
mod tls;

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::Context as _;
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};

pub use self::{connections::Limits, settings::WebConfigSource};
use crate::{
    api::ApiState,
    metrics::{Exposition, exposition::Format},
};

pub struct WebServer<'a> {
    pub address: SocketAddr,
    pub telemetry_path: &'a str,
    pub source: Arc<WebConfigSource>,
    pub limits: Limits,
}

pub async fn serve(
    server: WebServer<'_>,
    exposition: Exposition,
    api: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let WebServer {
        address,
        telemetry_path,
        source,
        limits,
    } = server;
    let exposition = Arc::new(exposition);
    let landing = landing_page(telemetry_path);
    let app = Router::new()
        .route(telemetry_path, get(metrics))
        .route("/", get(move || async move { Html(landing) }))
        .with_state(exposition)
        .merge(crate::api::routes().with_state(api));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address} (--web.listen-address)"))?;
    let scheme = if source.current().tls.is_some() {
        "https"
    } else {
        "http"
    };
    log::info!("serving metrics on {scheme}://{address}{telemetry_path}");
    connections::serve_tcp(listener, app, source, limits, shutdown).await;
    Ok(())
}

/// The job API on a Unix socket, for `monitor jobs` (read-only; every
/// user may connect, as every user may read /metrics).
pub async fn serve_api_socket(path: &Path, api: ApiState, limits: Limits) -> anyhow::Result<()> {
    let listener = crate::launcher::socket::bind(path)?;
    log::info!("job API socket at {}", path.display());
    connections::serve_unix(listener, crate::api::routes().with_state(api), limits).await;
    Ok(())
}

async fn metrics(State(exposition): State<Arc<Exposition>>, headers: HeaderMap) -> Response {
    let format = Format::accepted(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    // Encoding 10,000 jobs takes a while: off the async workers, at a
    // lower priority than registrations (see render_pool).
    let rendered = render_pool::render(move || exposition.render(format)).await;
    match rendered {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response(),
        Err(e @ render_pool::RenderError::Busy) => {
            (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}"),
        )
            .into_response(),
    }
}

fn landing_page(telemetry_path: &str) -> String {
    format!(
        "<!doctype html><html><head><title>Job monitor</title></head><body>\
         <h1>Job monitor</h1><p>Kernel-level per-job metrics.</p>\
         <p><a href=\"{telemetry_path}\">Metrics</a> &middot; <a href=\"/api/v1/jobs\">Jobs (JSON)</a></p></body></html>"
    )
}
