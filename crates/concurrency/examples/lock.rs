//! etcd's lock service in front of a stock etcd: two workers take turns on one lock.
//!
//! Uses the etcd at `ETCD_ENDPOINT`, or starts `/usr/bin/etcd` (or `ETCD_BIN`) in a
//! temporary directory. Run with `cargo run -p cairn-concurrency --example lock`.

use std::time::Duration;

use cairn_api::v3lockpb::lock_client::LockClient;
use cairn_api::v3lockpb::{LockRequest, UnlockRequest};
use cairn_concurrency::Concurrency;

fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr().map(|address| address.port())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (endpoint, mut etcd) = match std::env::var("ETCD_ENDPOINT") {
        Ok(endpoint) => (endpoint, None),
        Err(_) => {
            let (client, peer) =
                (format!("http://127.0.0.1:{}", free_port()?), format!("http://127.0.0.1:{}", free_port()?));
            let binary = std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into());
            let child = std::process::Command::new(binary)
                .args(["--data-dir", &dir.path().display().to_string()])
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("default={peer}")])
                .stderr(std::process::Stdio::null())
                .spawn()?;
            (client, Some(child))
        }
    };
    let etcd_channel = tonic::transport::Endpoint::from_shared(endpoint)?.connect_lazy();

    // The lock service, served on a port of its own, calling etcd's KV, Lease and Watch.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let concurrency = Concurrency::new(etcd_channel);
    let server = tonic::transport::Server::builder().add_service(concurrency.lock_server());
    tokio::spawn(server.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    let services = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?.connect_lazy();

    let mut workers = Vec::new();
    for worker in 0..2 {
        let mut client = LockClient::new(services.clone());
        workers.push(tokio::spawn(async move {
            for turn in 0..2 {
                // Until etcd is up, a lock fails: try again.
                let held = loop {
                    match client.lock(LockRequest { name: b"report".to_vec(), lease: 0 }).await {
                        Ok(held) => break held.into_inner(),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                };
                println!(
                    "worker {worker} holds the lock (turn {turn}) as {}",
                    String::from_utf8_lossy(&held.key)
                );
                client.unlock(UnlockRequest { key: held.key }).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    if let Some(etcd) = &mut etcd {
        etcd.kill()?;
        etcd.wait()?;
    }
    Ok(())
}
