//! Accepting and serving HTTP connections on the web port and the API
//! socket, with bounds a local user cannot talk the daemon out of: at most
//! `max_connections` at once (the rest wait in the kernel's backlog, not in
//! the daemon's descriptors), request headers within `header_timeout` (an
//! idle keep-alive connection is closed after it too), a TLS handshake
//! within `handshake_timeout`, and no connection older than
//! `max_lifetime`. No one peer holds more than `per_peer` of them: on the
//! API socket a peer is a uid; on the web port a remote address, with every
//! loopback address as one peer (local users cannot crowd out a remote
//! Prometheus; a connection over its share is closed at once).
use std::{convert::Infallible, future::Future, net::IpAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Request, Response, StatusCode, header},
    response::IntoResponse as _,
};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::Semaphore,
};
use tower::ServiceExt as _;

use super::settings::{WebConfigSource, WebSettings};
use crate::{api::Viewer, system::shares::Shares};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub per_peer: usize,
    pub header_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_lifetime: Duration,
}

impl Limits {
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            per_peer: (max_connections / 4).max(1),
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(300),
        }
    }
}

/// The web port: TLS and basic auth as the web configuration says.
pub async fn serve_tcp(
    listener: TcpListener,
    app: Router,
    source: Arc<WebConfigSource>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // A loopback peer is `None`: every local user together.
    let held = Shares::<Option<IpAddr>>::new(limits.per_peer);
    tokio::pin!(shutdown);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: wait rather than spin.
                    log::warn!("web port: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let peer_key = if peer.ip().to_canonical().is_loopback() {
            None
        } else {
            Some(peer.ip().to_canonical())
        };
        let Some(share) = held.take(peer_key) else {
            log::debug!(
                "web port: {peer} is over its share of connections ({})",
                limits.per_peer
            );
            continue;
        };
        let settings = source.current();
        let app = app.clone();
        tokio::spawn(async move {
            let (_slot, _share) = (slot, share);
            let served = tokio::time::timeout(limits.max_lifetime, async {
                match settings.tls.clone() {
                    None => serve_http(stream, app, settings, limits, None).await,
                    Some(tls) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                        match tokio::time::timeout(
                            limits.handshake_timeout,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(stream)) => serve_http(stream, app, settings, limits, None).await,
                            Ok(Err(e)) => log::debug!("TLS handshake with {peer}: {e}"),
                            Err(_) => log::debug!("TLS handshake with {peer}: timed out"),
                        }
                    }
                }
            });
            let _ = served.await;
        });
    }
}

/// The API socket: open to every local user, a share of the connections each.
pub async fn serve_unix(listener: UnixListener, app: Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let held = Shares::<u32>::new(limits.per_peer);
    let settings = Arc::new(WebSettings::open());
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("API socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(uid) = stream.peer_cred().ok().map(|cred| cred.uid()) else {
            continue;
        };
        let Some(share) = held.take(uid) else {
            // Dropped unanswered: the user's own connections are what hold the slots.
            log::debug!(
                "API socket: uid {uid} already holds {} connections",
                limits.per_peer
            );
            continue;
        };
        let (app, settings) = (app.clone(), settings.clone());
        tokio::spawn(async move {
            let (_slot, _share) = (slot, share);
            let _ = tokio::time::timeout(
                limits.max_lifetime,
                serve_http(stream, app, settings, limits, Some(uid)),
            )
            .await;
        });
    }
}

async fn serve_http<S>(
    stream: S,
    app: Router,
    settings: Arc<WebSettings>,
    limits: Limits,
    viewer: Option<u32>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (app, settings) = (app.clone(), settings.clone());
        async move { Ok::<_, Infallible>(respond(app, &settings, request, viewer).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        log::debug!("HTTP connection: {e}");
    }
}

async fn respond(
    app: Router,
    settings: &WebSettings,
    mut request: Request<Incoming>,
    viewer: Option<u32>,
) -> Response<Body> {
    request.extensions_mut().insert(Viewer(viewer));
    if !settings
        .auth
        .admits(request.headers().get(header::AUTHORIZATION))
        .await
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic")],
            "Unauthorized\n",
        )
            .into_response();
    }
    let Ok(mut response) = app.oneshot(request.map(Body::new)).await;
    for (name, value) in &settings.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}
