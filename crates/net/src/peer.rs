//! Channels to a member's peers, over TLS for `https://` peer URLs.

use std::time::Duration;

/// How a member speaks TLS to `https://` peer URLs.
#[derive(Clone)]
pub enum PeerTls {
    /// Verified against the peer CA, presenting this member's peer certificate.
    Verified(tonic::transport::ClientTlsConfig),
    /// `--peer-auto-tls`: encrypted, every member's certificate self-signed.
    Unverified(crate::tls::UnverifiedTls),
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Verified(_) => "PeerTls::Verified",
            Self::Unverified(_) => "PeerTls::Unverified",
        })
    }
}

/// A channel to a peer URL, over TLS for `https://` ones.
pub async fn connect(
    url: &str,
    tls: Option<&PeerTls>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?;
    match tls {
        Some(PeerTls::Verified(config)) if url.starts_with("https://") => {
            endpoint.tls_config(config.clone())?.connect().await
        }
        Some(PeerTls::Unverified(connector)) if url.starts_with("https://") => {
            // The connector speaks TLS itself; tonic sees a plain connection.
            let plain = tonic::transport::Endpoint::from_shared(url.replacen("https://", "http://", 1))?;
            plain.connect_with_connector(connector.clone()).await
        }
        _ => endpoint.connect().await,
    }
}

/// A channel to a peer URL that connects on first use, over TLS for `https://` ones.
pub fn lazy_channel(
    url: &str,
    tls: Option<&PeerTls>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    Ok(match tls {
        Some(PeerTls::Verified(config)) if url.starts_with("https://") => {
            endpoint.tls_config(config.clone())?.connect_lazy()
        }
        Some(PeerTls::Unverified(connector)) if url.starts_with("https://") => {
            let plain = tonic::transport::Endpoint::from_shared(url.replacen("https://", "http://", 1))?
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true);
            plain.connect_with_connector_lazy(connector.clone())
        }
        _ => endpoint.connect_lazy(),
    })
}
