//! etcd's command line: flag names, defaults and environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::net::TcpListener;

/// Cairn's configuration, spelled as etcd's flags.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about = "An etcd-compatible, raft-replicated key-value server")]
// etcd lets a later flag override an earlier one of the same name.
#[command(args_override_self = true)]
pub(crate) struct Config {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub(crate) name: String,

    /// Path to the data directory (default: `<name>.cairn` in the working directory).
    #[arg(long, env = "ETCD_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Comma-separated URLs to listen on for client traffic.
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", default_value = "http://localhost:2379")]
    listen_client_urls: String,

    /// Comma-separated client URLs of this member to advertise to the cluster.
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", default_value = "http://localhost:2379")]
    advertise_client_urls: String,
}

impl Config {
    /// The data directory: `--data-dir`, or `<name>.cairn` in the working directory.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name)))
    }

    /// Binds every `--listen-client-urls` address.
    pub(crate) async fn client_listeners(&self) -> anyhow::Result<Vec<TcpListener>> {
        let mut listeners = Vec::new();
        for url in split_urls(&self.listen_client_urls) {
            for addr in resolve(url).await? {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {url} ({addr})"))?;
                listeners.push(listener);
            }
        }
        if listeners.is_empty() {
            bail!("--listen-client-urls is empty");
        }
        Ok(listeners)
    }
}

fn split_urls(urls: &str) -> impl Iterator<Item = &str> {
    urls.split(',').map(str::trim).filter(|url| !url.is_empty())
}

/// The socket addresses of an `http://host:port` URL. `localhost` resolves to the
/// loopback addresses it names, as etcd binds it.
async fn resolve(url: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let host_port = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https" | "unixs", _)) => bail!("{url}: TLS is not available yet in cairn"),
        Some((scheme, _)) => bail!("{url}: unsupported URL scheme {scheme:?}, expected http"),
        None => bail!("{url}: a URL needs a scheme, as in http://127.0.0.1:2379"),
    };
    let host_port = host_port.trim_end_matches('/');
    if host_port.contains('/') {
        bail!("{url}: a listen URL takes no path");
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host_port)
        .await
        .with_context(|| format!("{url}: cannot resolve {host_port}"))?
        .collect();
    // `localhost` may resolve to both 127.0.0.1 and ::1; bind IPv4 only where both
    // come back, so one URL gives one listener even on hosts without IPv6.
    let v4: Vec<SocketAddr> = addrs.iter().copied().filter(SocketAddr::is_ipv4).collect();
    Ok(if v4.is_empty() { addrs } else { v4 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_etcds() {
        let config = Config::try_parse_from(["cairn"]).unwrap();
        assert_eq!(config.name, "default");
        assert_eq!(config.data_dir(), PathBuf::from("default.cairn"));
        assert_eq!(config.listen_client_urls, "http://localhost:2379");
    }

    #[test]
    fn both_flag_forms_and_repeats_are_accepted() {
        let config =
            Config::try_parse_from(["cairn", "--name", "a", "--name=b", "--data-dir=/tmp/x"]).unwrap();
        assert_eq!(config.name, "b");
        assert_eq!(config.data_dir(), PathBuf::from("/tmp/x"));
    }

    #[test]
    fn an_unknown_flag_is_an_error() {
        let error = Config::try_parse_from(["cairn", "--no-such-flag"]).unwrap_err();
        assert!(error.to_string().contains("--no-such-flag"), "{error}");
    }

    #[tokio::test]
    async fn urls_resolve_and_bad_ones_are_refused() {
        assert_eq!(resolve("http://127.0.0.1:2379").await.unwrap(), ["127.0.0.1:2379".parse().unwrap()]);
        assert_eq!(resolve("http://localhost:2379/").await.unwrap()[0].port(), 2379);
        let tls = resolve("https://127.0.0.1:2379").await.unwrap_err();
        assert_eq!(tls.to_string(), "https://127.0.0.1:2379: TLS is not available yet in cairn");
        assert!(resolve("127.0.0.1:2379").await.is_err());
        assert!(resolve("ftp://127.0.0.1:2379").await.is_err());
    }
}
