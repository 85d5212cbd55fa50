//! `cairn snapshot save | status | restore`: backups in etcd's format, with the
//! commands and flags of `etcdctl snapshot save` and `etcdutl snapshot status|restore`.
//!
//! `restore` takes a backup saved from Cairn or from etcd (3.4 or 3.5) and builds
//! the data dir of one member of a new cluster: the backup's keys, revisions, leases,
//! auth store and alarms, the membership of `--initial-cluster`, and a raft log that
//! starts after index N (the member count, as etcd's restore, which applies N
//! membership entries), so every member restored from the same file agrees.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_api::etcdserverpb::{AuthenticateRequest, Member, SnapshotRequest};
use cairn_mvcc::bbolt::BoltReader;
use sha2::{Digest, Sha256};

use crate::storage::{self, backup};

/// The subcommands next to the server.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Backups in etcd's backend format (`etcdctl`/`etcdutl snapshot`).
    #[command(subcommand)]
    Snapshot(Snapshot),
}

/// `cairn snapshot …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Snapshot {
    /// Streams a backup from one member into FILE (`etcdctl snapshot save`).
    Save {
        /// Where to write the backup.
        file: PathBuf,
        /// The member to ask: one client URL.
        #[arg(long, default_value = "127.0.0.1:2379")]
        endpoints: String,
        /// `user:password` with auth enabled (root's).
        #[arg(long)]
        user: Option<String>,
        /// The CA certificate that signed the member's (for `https`).
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// A client certificate, with `--key`.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// The client certificate's key.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Prints a backup's hash, revision, key count and size (`etcdutl snapshot status`).
    Status {
        /// The backup.
        file: PathBuf,
        /// `simple`, `table` or `json`.
        #[arg(short = 'w', long, default_value = "simple")]
        write_out: String,
    },
    /// Builds a member's data dir from a backup (`etcdutl snapshot restore`).
    Restore {
        /// The backup: saved from Cairn or from etcd.
        file: PathBuf,
        /// The data dir to create (default: `<name>.cairn`); it must be empty.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// This member's name in `--initial-cluster`.
        #[arg(long, default_value = "default")]
        name: String,
        /// The new cluster: `name=peer-url,...`.
        #[arg(long, default_value = "default=http://localhost:2380")]
        initial_cluster: String,
        /// The new cluster's token, which member and cluster IDs derive from.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs, as in `--initial-cluster`.
        #[arg(long, default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: String,
        /// Restore a file without the SHA-256 trailer of a saved snapshot (a copy of
        /// a member's database file).
        #[arg(long)]
        skip_hash_check: bool,
    },
}

/// Runs `command` to the end.
pub(crate) fn run(command: Command) -> anyhow::Result<()> {
    let Command::Snapshot(snapshot) = command;
    match snapshot {
        Snapshot::Save { file, endpoints, user, cacert, cert, key } => {
            let tls = TlsFlags { cacert, cert, key };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the tokio runtime")?
                .block_on(save(&file, &endpoints, user.as_deref(), &tls))
        }
        Snapshot::Status { file, write_out } => status(&file, &write_out),
        Snapshot::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            skip_hash_check,
        } => {
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.cairn")));
            let cluster = NewCluster {
                name,
                initial_cluster,
                token: initial_cluster_token,
                peer_urls: initial_advertise_peer_urls,
            };
            restore(&file, &data_dir, &cluster, skip_hash_check)
        }
    }
}

struct TlsFlags {
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

async fn save(file: &Path, endpoints: &str, user: Option<&str>, tls: &TlsFlags) -> anyhow::Result<()> {
    if endpoints.contains(',') {
        bail!("snapshot must be requested to one selected node, not multiple [{endpoints}]");
    }
    let url = if endpoints.contains("://") { endpoints.to_owned() } else { format!("http://{endpoints}") };
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .with_context(|| format!("invalid endpoint {url}"))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if url.starts_with("https://") {
        let mut config = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &tls.cacert {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read --cacert {}", ca.display()))?;
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            let cert =
                std::fs::read(cert).with_context(|| format!("cannot read --cert {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("cannot read --key {}", key.display()))?;
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(config)?;
    }
    let channel = endpoint.connect().await.with_context(|| format!("cannot connect to {url}"))?;
    let mut request = tonic::Request::new(SnapshotRequest {});
    if let Some(user) = user {
        let Some((name, password)) = user.split_once(':') else {
            bail!("--user must be user:password");
        };
        let mut auth = cairn_api::etcdserverpb::auth_client::AuthClient::new(channel.clone());
        let token = auth
            .authenticate(AuthenticateRequest { name: name.to_owned(), password: password.to_owned() })
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner()
            .token;
        request.metadata_mut().insert("token", token.parse().context("the token is not ASCII")?);
    }
    let mut client = cairn_api::etcdserverpb::maintenance_client::MaintenanceClient::new(channel)
        .max_decoding_message_size(usize::MAX);
    let mut stream = client
        .snapshot(request)
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    let part = PathBuf::from(format!("{}.part", file.display()));
    let mut out =
        std::fs::File::create(&part).with_context(|| format!("cannot create {}", part.display()))?;
    let mut hasher = Sha256::new();
    let mut last = Vec::new();
    while let Some(response) =
        stream.message().await.map_err(|status| anyhow::anyhow!("{}", status.message()))?
    {
        // The hash comes last: hold each blob back until the next one arrives.
        hasher.update(&last);
        out.write_all(&last)?;
        last = response.blob;
    }
    if last.len() != 32 || hasher.finalize()[..] != last[..] {
        bail!("the snapshot stream ended without a matching SHA-256; {} kept", part.display());
    }
    out.write_all(&last)?;
    out.sync_all()?;
    std::fs::rename(&part, file)?;
    println!("Snapshot saved at {}", file.display());
    Ok(())
}

/// go-humanize's `Bytes`, which etcd prints sizes with: SI units, one decimal
/// below 10.
fn human_bytes(size: u64) -> String {
    if size < 10 {
        return format!("{size} B");
    }
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let exponent = ((size as f64).ln() / 1000f64.ln()).floor() as usize;
    let value = (size as f64 / 1000f64.powi(exponent as i32) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {}", units[exponent])
    } else {
        format!("{value:.0} {}", units[exponent])
    }
}

fn status(file: &Path, write_out: &str) -> anyhow::Result<()> {
    let (status, total_size) = backup::status(file)?;
    let size = human_bytes(total_size);
    match write_out {
        "simple" => println!("{:x}, {}, {}, {size}", status.hash, status.revision, status.total_keys),
        "json" => println!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}",
            status.hash, status.revision, status.total_keys, total_size
        ),
        "table" => {
            let cells = [
                format!("{:x}", status.hash),
                status.revision.to_string(),
                status.total_keys.to_string(),
                size,
            ];
            let headers = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
            let widths: Vec<usize> =
                headers.iter().zip(&cells).map(|(h, c)| h.len().max(c.len()) + 2).collect();
            let rule = widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("+");
            let centred = headers.iter().zip(&widths).map(|(h, w)| format!("{h:^w$}")).collect::<Vec<_>>();
            let right =
                cells.iter().zip(&widths).map(|(c, w)| format!("{c:>0$} ", w - 1)).collect::<Vec<_>>();
            println!("+{rule}+\n|{}|\n+{rule}+\n|{}|\n+{rule}+", centred.join("|"), right.join("|"));
        }
        other => bail!("unsupported output format {other:?}: simple, table or json"),
    }
    Ok(())
}

/// The new cluster a restored member belongs to.
struct NewCluster {
    name: String,
    initial_cluster: String,
    token: String,
    peer_urls: String,
}

fn restore(file: &Path, data_dir: &Path, cluster: &NewCluster, skip_hash_check: bool) -> anyhow::Result<()> {
    let not_empty = || anyhow::anyhow!("data-dir {:?} not empty or could not be read", data_dir.display());
    if data_dir.exists() && std::fs::read_dir(data_dir).map_err(|_| not_empty())?.next().is_some() {
        return Err(not_empty());
    }
    let initial = crate::config::parse_initial_cluster(&cluster.initial_cluster)?;
    let Some(my_urls) = initial.get(&cluster.name) else {
        bail!("couldn't find local name {:?} in the initial cluster configuration", cluster.name);
    };
    let mut advertised: Vec<String> =
        cluster.peer_urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    advertised.sort();
    if advertised != *my_urls {
        bail!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
            cluster.name,
            my_urls.join(","),
            cluster.peer_urls
        );
    }
    backup::verify_hash(file, skip_hash_check)?;
    let reader = BoltReader::open(file).with_context(|| format!("cannot read {}", file.display()))?;

    let members: Vec<Member> = initial
        .iter()
        .map(|(name, urls)| Member {
            id: crate::identity::member_id(urls, &cluster.token),
            name: name.clone(),
            peer_ur_ls: urls.clone(),
            ..Member::default()
        })
        .collect();
    let ids: Vec<u64> = members.iter().map(|member| member.id).collect();
    let member_id = crate::identity::member_id(my_urls, &cluster.token);
    let cluster_id = crate::identity::cluster_id(&ids);
    // As etcd's restore: the log starts after one entry per member.
    let index = members.len() as u64;

    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let built = (|| -> anyhow::Result<backup::Restored> {
        let db = storage::open(data_dir)?;
        let txn = db.begin_write()?;
        let restored = backup::restore(&reader, &txn)?;
        for member in &members {
            crate::members::save(&txn, member)?;
        }
        {
            let mut meta = txn.open_table(storage::META)?;
            meta.insert("applied_index", index)?;
            meta.insert("member_id", member_id)?;
            meta.insert("cluster_id", cluster_id)?;
        }
        let conf_state = raft::eraftpb::ConfState { voters: ids.clone(), ..Default::default() };
        storage::raft_log::save_conf_state(&txn, &conf_state)?;
        storage::raft_log::save_restored(&txn, index, 1)?;
        txn.commit()?;
        Ok(restored)
    })();
    let restored = match built {
        Ok(restored) => restored,
        Err(error) => {
            // Leave nothing half-built that a server would start from.
            let _ = std::fs::remove_dir_all(data_dir);
            return Err(error);
        }
    };
    for member in &members {
        println!("added member {:x} {:?} to cluster {cluster_id:x}", member.id, member.peer_ur_ls.join(","));
    }
    println!(
        "restored snapshot {} into {}: revision {}, compacted at {}, {} changes, {} leases",
        file.display(),
        data_dir.display(),
        restored.revisions.current,
        restored.revisions.compacted,
        restored.changes,
        restored.leases
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_go_humanize_prints_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(9), "9 B");
        assert_eq!(human_bytes(57_344), "57 kB");
        assert_eq!(human_bytes(2_109_440), "2.1 MB");
        assert_eq!(human_bytes(9_990), "10 kB");
        assert_eq!(human_bytes(24_576), "25 kB");
    }
}
