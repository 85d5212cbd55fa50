//! TLS from etcd's flags: what a bad combination is told, and a handshake on an
//! `--auto-tls` listener.

use cairn_net::tls::{self, TlsFiles, UnverifiedTls};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower_service::Service as _;

fn error(files: &TlsFiles) -> String {
    let dir = tempfile::tempdir().unwrap();
    tls::server_config(files, dir.path()).unwrap_err().to_string()
}

#[test]
fn no_flag_means_no_tls_and_bad_combinations_name_the_flag_or_file() {
    let dir = tempfile::tempdir().unwrap();
    assert!(tls::server_config(&TlsFiles::default(), dir.path()).unwrap().is_none());
    let only_cert = TlsFiles { cert_file: "a.pem".into(), ..TlsFiles::default() };
    assert_eq!(error(&only_cert), "TLS needs both --cert-file and --key-file (or --auto-tls)");
    let auth_without_ca = TlsFiles { auto_tls: true, client_cert_auth: true, ..TlsFiles::default() };
    assert_eq!(error(&auth_without_ca), "--client-cert-auth needs --trusted-ca-file");
    let missing =
        TlsFiles { cert_file: "/nonexistent/c.pem".into(), key_file: "k.pem".into(), ..TlsFiles::default() };
    assert!(
        error(&missing).starts_with("cannot read certificate file /nonexistent/c.pem: "),
        "{}",
        error(&missing)
    );
}

#[test]
fn auto_tls_makes_its_certificate_once_with_an_owner_only_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles { auto_tls: true, ..TlsFiles::default() };
    tls::server_config(&files, dir.path()).unwrap().unwrap();
    let cert = std::fs::read(dir.path().join("cert.pem")).unwrap();
    let mode = std::fs::metadata(dir.path().join("key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    tls::server_config(&files, dir.path()).unwrap().unwrap();
    assert_eq!(std::fs::read(dir.path().join("cert.pem")).unwrap(), cert, "made once, then reused");
}

#[tokio::test]
async fn an_auto_tls_listener_speaks_h2_to_the_unverified_connector() {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles { auto_tls: true, ..TlsFiles::default() };
    let config = tls::server_config(&files, dir.path()).unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut incoming = Box::pin(tls::accept(listener, config));

    // A client that never completes its handshake does not hold up the next one.
    let _stalled = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let uri = format!("https://localhost:{port}").parse().unwrap();
    let mut client = UnverifiedTls::new().unwrap().call(uri).await.unwrap().into_inner();
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let mut server = incoming.next().await.unwrap().unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut received = [0u8; 4];
    server.read_exact(&mut received).await.unwrap();
    assert_eq!(&received, b"ping");
}

#[test]
fn etcds_tls_flags_parse_into_the_files_they_name() {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        client: cairn_net::tls::ClientTlsFlags,
        #[command(flatten)]
        peer: cairn_net::tls::PeerTlsFlags,
    }
    let parsed = Command::parse_from(
        [
            "etcd",
            "--cert-file=server.crt",
            "--key-file",
            "server.key",
            "--client-cert-auth",
            "--peer-auto-tls",
            "--peer-client-crl-file=ignored-by-name",
        ]
        .into_iter()
        .filter(|arg| !arg.starts_with("--peer-client-crl")),
    );
    let client = parsed.client.files();
    assert_eq!((client.cert_file.as_str(), client.key_file.as_str()), ("server.crt", "server.key"));
    assert!(client.client_cert_auth && !client.auto_tls && client.any());
    let peer = parsed.peer.files();
    assert!(peer.auto_tls && peer.cert_file.is_empty() && peer.any());
    assert!(!Command::parse_from(["etcd"]).client.files().any());
}
