//! Listeners for etcd's listen URLs (`--listen-client-urls`, `--listen-peer-urls`,
//! `--listen-metrics-urls`), and serving tonic routes on them as etcd serves a client
//! URL: gRPC and HTTP/1.1 on one port, plain or TLS.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, TryStreamExt as _};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tracing::info;

use crate::{Error, Result};

/// A bound listen URL: its listener, and whether the URL is `https`.
pub type Listener = (TcpListener, bool);

/// The listen backlog etcd asks for (Go's, the kernel's `somaxconn` permitting): a
/// burst of connections waits in it instead of being dropped and retried a second later.
pub const LISTEN_BACKLOG: u32 = 4096;

/// The HTTP/2 receive window of a client connection. The HTTP/2 layer closes a
/// connection (`GOAWAY ENHANCE_YOUR_CALM`) once the small DATA frames it buffers for
/// the application cost more than half this window in bookkeeping (about 240 bytes
/// each); a Go client sends every message in a frame of its own, so a burst of
/// thousands of watch creates on one stream, which Kubernetes' API server makes,
/// needs a window this large (gRPC-Go's own windows grow to 16 MiB as well).
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// The URLs of a comma-separated flag, blanks dropped.
pub fn split_urls(urls: &str) -> impl Iterator<Item = &str> {
    urls.split(',').map(str::trim).filter(|url| !url.is_empty())
}

/// Binds every address of the comma-separated `urls`, each with whether it is `https`.
pub async fn bind(urls: &str) -> Result<Vec<Listener>> {
    let mut listeners = Vec::new();
    for url in split_urls(urls) {
        let tls = url.starts_with("https://");
        for addr in resolve(url).await? {
            let listener = listen(addr)
                .map_err(|error| Error::Listen(format!("cannot listen on {url} ({addr}): {error}")))?;
            listeners.push((listener, tls));
        }
    }
    Ok(listeners)
}

/// A listener on `addr` with etcd's backlog, reusing the address as Go does.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The socket addresses of an `http://host:port` URL. `localhost` resolves to the
/// loopback addresses it names, as etcd binds it; where a name resolves to IPv4 and
/// IPv6 addresses, only the IPv4 ones, so that one URL gives one listener even on
/// hosts without IPv6.
pub async fn resolve(url: &str) -> Result<Vec<SocketAddr>> {
    let refuse = |why: String| Err(Error::Listen(format!("{url}: {why}")));
    let host_port = match url.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => return refuse(format!("unsupported URL scheme {scheme:?}, expected http")),
        None => return refuse("a URL needs a scheme, as in http://127.0.0.1:2379".into()),
    };
    let host_port = host_port.trim_end_matches('/');
    if host_port.contains('/') {
        return refuse("a listen URL takes no path".into());
    }
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(host_port).await {
        Ok(addrs) => addrs.collect(),
        Err(error) => return refuse(format!("cannot resolve {host_port}: {error}")),
    };
    let v4: Vec<SocketAddr> = addrs.iter().copied().filter(SocketAddr::is_ipv4).collect();
    Ok(if v4.is_empty() { addrs } else { v4 })
}

/// Serves `routes` on every listener as etcd serves its client URLs, until `shutdown`
/// completes: gRPC and HTTP/1.1 on each (told apart by the connection's first bytes,
/// or under TLS by ALPN `h2`/`http/1.1`), every connection with
/// [`AuthorityFix`](crate::authority::AuthorityFix), `TCP_NODELAY` and
/// [`CONNECTION_WINDOW`], and grpc-go's text for an oversize request. `https`
/// listeners use `tls`. Once `shutdown` completes, `stopping` runs, and connections
/// still open (watchers keep theirs) get `grace`, then are cut.
pub async fn serve_clients(
    routes: Routes,
    listeners: Vec<Listener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stopping: impl FnOnce(),
    grace: Duration,
) -> Result<()> {
    let shutdown = shutdown.boxed().shared();
    let tls = tls.map(|config| {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    });
    let mut servers = tokio::task::JoinSet::new();
    for (listener, is_tls) in listeners {
        let addr = listener.local_addr().map_err(|error| Error::Serve(format!("a listener: {error}")))?;
        let router = tonic::transport::Server::builder()
            .accept_http1(true)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .layer(tower::util::MapResponseLayer::new(crate::grpc::oversize_as_etcd))
            .add_routes(routes.clone());
        let server_shutdown = shutdown.clone();
        let failed = move |error: tonic::transport::Error| {
            Error::Serve(format!("gRPC server on {addr} failed: {error}"))
        };
        if is_tls {
            let Some(config) = tls.clone() else {
                return Err(Error::Tls(format!("{addr}: an https listener needs TLS configuration")));
            };
            let incoming = crate::tls::accept(listener, config).map_ok(crate::authority::AuthorityFix::new);
            servers.spawn(async move {
                router.serve_with_incoming_shutdown(incoming, server_shutdown).await.map_err(failed)
            });
            info!(address = %addr, "serving client traffic securely");
        } else {
            let incoming = crate::grpc::plain_incoming(listener).map_ok(crate::authority::AuthorityFix::new);
            servers.spawn(async move {
                router.serve_with_incoming_shutdown(incoming, server_shutdown).await.map_err(failed)
            });
            info!(address = %addr, "serving client traffic insecurely; this is strongly discouraged!");
        }
    }
    info!("ready to serve client requests");
    let all_done = async {
        while let Some(result) = servers.join_next().await {
            result.map_err(|error| Error::Serve(format!("a gRPC server task failed: {error}")))??;
        }
        Ok(())
    };
    let cut_off = async {
        shutdown.await;
        stopping();
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = all_done => result?,
        () = cut_off => info!(?grace, "closing connections still open after shutdown"),
    }
    info!("stopped serving client traffic");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM: what ends a server, as it ends etcd.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => info!("received SIGINT, shutting down"),
            _ = term.recv() => info!("received SIGTERM, shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        info!("received Ctrl-C, shutting down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_resolve_and_bad_ones_are_refused() {
        assert_eq!(resolve("http://127.0.0.1:2379").await.unwrap(), ["127.0.0.1:2379".parse().unwrap()]);
        assert_eq!(resolve("http://localhost:2379/").await.unwrap()[0].port(), 2379);
        assert_eq!(resolve("https://127.0.0.1:2379").await.unwrap(), ["127.0.0.1:2379".parse().unwrap()]);
        let error = resolve("127.0.0.1:2379").await.unwrap_err().to_string();
        assert_eq!(error, "127.0.0.1:2379: a URL needs a scheme, as in http://127.0.0.1:2379");
        let error = resolve("ftp://127.0.0.1:2379").await.unwrap_err().to_string();
        assert_eq!(error, "ftp://127.0.0.1:2379: unsupported URL scheme \"ftp\", expected http");
        let error = resolve("http://127.0.0.1:2379/v3").await.unwrap_err().to_string();
        assert_eq!(error, "http://127.0.0.1:2379/v3: a listen URL takes no path");
    }

    #[tokio::test]
    async fn every_url_gets_a_listener_that_knows_whether_it_is_https() {
        let listeners = bind("http://127.0.0.1:0, https://127.0.0.1:0,").await.unwrap();
        let tls: Vec<bool> = listeners.iter().map(|(_, tls)| *tls).collect();
        assert_eq!(tls, [false, true]);
        let taken = listeners[0].0.local_addr().unwrap();
        let error = bind(&format!("http://{taken}")).await.unwrap_err().to_string();
        assert!(error.starts_with(&format!("cannot listen on http://{taken} ({taken}): ")), "{error}");
    }
}
