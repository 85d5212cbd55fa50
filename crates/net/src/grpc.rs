//! gRPC plumbing as etcd's clients expect it: listeners whose small frames go out at
//! once, grpc-go's text for an oversize request, and a channel to services served
//! inside the process.

use tokio::net::TcpListener;
use tonic::codegen::http;
use tonic::transport::Server;

/// Plain TCP connections accepted on `listener`, with `TCP_NODELAY`: without it a
/// small frame written while another is unacknowledged waits for the peer's delayed
/// ACK (40 ms on Linux), which made every linearizable read on a follower take 44 ms.
pub fn plain_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A channel to `routes` served inside the process, over in-memory pipes, with
/// grpc-go's oversize error ([`oversize_as_etcd`]): what a translation layer such as a
/// JSON gateway calls the services through. Must be called on a tokio runtime.
pub fn in_process_channel(routes: tonic::service::Routes) -> tonic::transport::Channel {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<tokio::io::DuplexStream>();
    let incoming = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|stream| (Ok::<_, std::io::Error>(stream), receiver))
    });
    tokio::spawn(async move {
        let mut server = Server::builder().layer(tower::util::MapResponseLayer::new(oversize_as_etcd));
        if let Err(error) = server.add_routes(routes).serve_with_incoming(incoming).await {
            tracing::error!(%error, "the in-process gRPC server failed");
        }
    });
    tonic::transport::Endpoint::from_static("http://in-process.invalid").connect_with_connector_lazy(
        tower::service_fn(move |_: http::Uri| {
            let sender = sender.clone();
            async move {
                let (client, server) = tokio::io::duplex(256 * 1024);
                sender.send(server).map_err(|_| std::io::Error::other("the in-process server stopped"))?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
            }
        }),
    )
}

/// grpc-go's answer to a request over the receive limit, which etcd's clients see:
/// `ResourceExhausted` "grpc: received message larger than max (N vs. M)", where tonic
/// answers `OutOfRange` "Error, decoded message length too large: found N bytes, the
/// limit is: M bytes". Rewrites the status of such an answer; leaves the rest alone.
pub fn oversize_as_etcd(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_some_and(|code| code == "11")
        && let Some(message) = headers.get("grpc-message").and_then(|message| message.to_str().ok())
        && let Some(rewritten) = etcd_oversize_message(&percent_decoded(message))
        && let Ok(value) = http::HeaderValue::from_str(&rewritten)
    {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        headers.insert("grpc-message", value);
    }
    response
}

/// `grpc-message` is percent-encoded (tonic encodes spaces too).
fn percent_decoded(message: &str) -> String {
    let bytes = message.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes.get(at + 1..at + 3).and_then(|hex| std::str::from_utf8(hex).ok());
        match (bytes[at], hex.and_then(|hex| u8::from_str_radix(hex, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// grpc-go's text for tonic's, or `None` when `message` is not tonic's oversize error.
pub fn etcd_oversize_message(message: &str) -> Option<String> {
    let rest = message.strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    let (found, limit): (u64, u64) = (found.parse().ok()?, limit.parse().ok()?);
    Some(format!("grpc: received message larger than max ({found} vs. {limit})"))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    #[test]
    fn tonics_oversize_error_reads_as_grpc_gos() {
        let tonic = "Error, decoded message length too large: found 528394 bytes, the limit is: 528384 bytes";
        assert_eq!(
            super::etcd_oversize_message(tonic).as_deref(),
            Some("grpc: received message larger than max (528394 vs. 528384)")
        );
        assert_eq!(super::etcd_oversize_message("etcdserver: request is too large"), None);
        assert_eq!(super::percent_decoded("a%20b%2Cc%"), "a b,c%");
    }

    #[tokio::test]
    async fn accepted_connections_send_small_frames_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut incoming = super::plain_incoming(listener);
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
