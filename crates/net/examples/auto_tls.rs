//! A listener with etcd's `--auto-tls`: a self-signed certificate made at start, TLS
//! connections accepted off the accept loop, and a client with `--peer-auto-tls`'s
//! connector, which encrypts without verifying.
//!
//! Run with `cargo run -p cairn-net --example auto_tls`.

use cairn_net::tls::{self, TlsFiles, UnverifiedTls};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower_service::Service as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cairn-net-example-{}", std::process::id()));
    let files = TlsFiles { auto_tls: true, ..TlsFiles::default() };
    let config = tls::server_config(&files, &dir)?.expect("a TLS flag is set");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let mut incoming = Box::pin(tls::accept(listener, config));
    let server = tokio::spawn(async move {
        let mut stream = incoming.next().await.expect("a connection")?;
        let mut line = [0u8; 4];
        stream.read_exact(&mut line).await?;
        stream.write_all(b"pong").await?;
        stream.flush().await?;
        std::io::Result::Ok(line)
    });

    let uri = format!("https://localhost:{}", address.port()).parse()?;
    let mut client = UnverifiedTls::new()?.call(uri).await?.into_inner();
    println!("handshake done, ALPN {:?}", client.get_ref().1.alpn_protocol().map(String::from_utf8_lossy));
    client.write_all(b"ping").await?;
    let mut reply = [0u8; 4];
    client.read_exact(&mut reply).await?;
    let received = server.await??;
    println!(
        "server got {:?}, client got {:?}",
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(&reply)
    );
    assert_eq!((&received, &reply), (b"ping", b"pong"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
