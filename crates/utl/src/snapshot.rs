//! Backups in etcd's backend format: saved from a member through
//! `Maintenance.Snapshot` (any etcd v3 endpoint: Cairn or etcd), inspected, and
//! restored into the data dir of one member of a new cluster.
//!
//! A restore takes a backup saved from Cairn or from etcd (3.4 or 3.5) and builds the
//! backup's keys, revisions, leases, auth store and alarms, the membership of
//! `--initial-cluster`, and a raft log that starts after index N (the member count,
//! as etcd's restore, which applies N membership entries), so every member restored
//! from the same file agrees.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_api::etcdserverpb::auth_client::AuthClient;
use cairn_api::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_api::etcdserverpb::{AuthenticateRequest, Member, SnapshotRequest};
use cairn_backend::{backup, members};
use cairn_mvcc::bbolt::BoltReader;
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::Error;

/// The files a TLS client presents (`--cacert`, `--cert`, `--key`).
#[derive(Debug, Default, Clone)]
pub struct TlsFiles {
    /// The CA certificate that signed the member's.
    pub cacert: Option<PathBuf>,
    /// A client certificate, with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    pub key: Option<PathBuf>,
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(Error::io(format!("cannot read --{flag} {}", path.display())))
}

/// `error` and its sources, as `cause: cause of cause`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn refused(status: tonic::Status) -> Error {
    Error::Refused(status.message().to_owned())
}

/// Streams a backup from the member at `endpoint` (`host:port` or a URL) into `file`
/// as `etcdctl snapshot save` does: as root when `user` (`name:password`) is given,
/// through `FILE.part`, kept under its name only once the stream's SHA-256 trailer
/// matched what came before it. Returns the backup's size.
pub async fn save(file: &Path, endpoint: &str, user: Option<&str>, tls: &TlsFiles) -> Result<u64, Error> {
    if endpoint.contains(',') {
        return Err(Error::Refused(format!(
            "snapshot must be requested to one selected node, not multiple [{endpoint}]"
        )));
    }
    let url = if endpoint.contains("://") { endpoint.to_owned() } else { format!("http://{endpoint}") };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|error| Error::Refused(format!("invalid endpoint {url}: {error}")))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if url.starts_with("https://") {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &tls.cacert {
            config = config.ca_certificate(Certificate::from_pem(read(ca, "cacert")?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            config = config.identity(Identity::from_pem(read(cert, "cert")?, read(key, "key")?));
        }
        endpoint = endpoint.tls_config(config).map_err(|error| Error::Refused(error.to_string()))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| Error::Refused(format!("cannot connect to {url}: {}", chain(&error))))?;
    let mut request = tonic::Request::new(SnapshotRequest {});
    if let Some(user) = user {
        let Some((name, password)) = user.split_once(':') else {
            return Err(Error::Refused("--user must be user:password".into()));
        };
        let login = AuthenticateRequest { name: name.to_owned(), password: password.to_owned() };
        let token = AuthClient::new(channel.clone()).authenticate(login).await.map_err(refused)?;
        let token =
            token.into_inner().token.parse().map_err(|_| Error::Refused("the token is not ASCII".into()))?;
        request.metadata_mut().insert("token", token);
    }
    let mut client = MaintenanceClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut stream = client.snapshot(request).await.map_err(refused)?.into_inner();
    let part = PathBuf::from(format!("{}.part", file.display()));
    let mut out =
        std::fs::File::create(&part).map_err(Error::io(format!("cannot create {}", part.display())))?;
    let write_error = || Error::io(format!("cannot write {}", part.display()));
    let mut hasher = Sha256::new();
    let mut last = Vec::new();
    let mut size = 0;
    while let Some(response) = stream.message().await.map_err(refused)? {
        // The hash comes last: hold each blob back until the next one arrives.
        hasher.update(&last);
        out.write_all(&last).map_err(write_error())?;
        size += last.len() as u64;
        last = response.blob;
    }
    if last.len() != 32 || hasher.finalize()[..] != last[..] {
        return Err(Error::Refused(format!(
            "the snapshot stream ended without a matching SHA-256; {} kept",
            part.display()
        )));
    }
    out.write_all(&last).map_err(write_error())?;
    out.sync_all().map_err(write_error())?;
    std::fs::rename(&part, file).map_err(Error::io(format!("cannot rename {}", part.display())))?;
    Ok(size + 32)
}

/// A backup's hash, revision, key count and size, as `etcdutl snapshot status`
/// prints them in `write_out` (`simple`, `table` or `json`).
pub fn status(file: &Path, write_out: &str) -> Result<String, Error> {
    let (status, total_size) = backup::status(file)?;
    let size = human_bytes(total_size);
    Ok(match write_out {
        "simple" => format!("{:x}, {}, {}, {size}", status.hash, status.revision, status.total_keys),
        "json" => format!(
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
            format!("+{rule}+\n|{}|\n+{rule}+\n|{}|\n+{rule}+", centred.join("|"), right.join("|"))
        }
        other => {
            return Err(Error::Refused(format!(
                "unsupported output format {other:?}: simple, table or json"
            )));
        }
    })
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

/// `--initial-cluster` (`name=peer-url,...`): each member's sorted peer URLs by name.
pub fn parse_initial_cluster(cluster: &str) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in cluster.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let Some((name, url)) = entry.split_once('=') else {
            return Err(Error::Refused(format!("--initial-cluster entry {entry:?} is not name=url")));
        };
        members.entry(name.to_owned()).or_default().push(url.to_owned());
    }
    for urls in members.values_mut() {
        urls.sort();
    }
    Ok(members)
}

/// The new cluster a restored member belongs to: etcdutl's restore flags.
#[derive(Debug, Clone)]
pub struct NewCluster {
    /// This member's name in `initial_cluster` (`--name`).
    pub name: String,
    /// The new cluster: `name=peer-url,...` (`--initial-cluster`).
    pub initial_cluster: String,
    /// The token member and cluster IDs derive from (`--initial-cluster-token`).
    pub token: String,
    /// This member's peer URLs, as in `initial_cluster`
    /// (`--initial-advertise-peer-urls`).
    pub peer_urls: String,
}

/// What a restore built.
#[derive(Debug)]
pub struct Restored {
    /// The state taken from the backup.
    pub restored: backup::Restored,
    /// The new cluster's members.
    pub members: Vec<Member>,
    /// The new cluster's ID.
    pub cluster_id: u64,
}

/// Builds the data dir of `cluster`'s member from the backup `file` (saved from Cairn
/// or from etcd), as `etcdutl snapshot restore` does. `data_dir` must be empty or
/// absent; on any failure it is removed again. `skip_hash_check` takes a file without
/// the SHA-256 trailer of a saved snapshot (a copy of a member's database file).
pub fn restore(
    file: &Path,
    data_dir: &Path,
    cluster: &NewCluster,
    skip_hash_check: bool,
) -> Result<Restored, Error> {
    let not_empty =
        || Error::Refused(format!("data-dir {:?} not empty or could not be read", data_dir.display()));
    if data_dir.exists() && std::fs::read_dir(data_dir).map_err(|_| not_empty())?.next().is_some() {
        return Err(not_empty());
    }
    let initial = parse_initial_cluster(&cluster.initial_cluster)?;
    let Some(my_urls) = initial.get(&cluster.name) else {
        return Err(Error::Refused(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            cluster.name
        )));
    };
    let mut advertised: Vec<String> =
        cluster.peer_urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    advertised.sort();
    if advertised != *my_urls {
        return Err(Error::Refused(format!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
            cluster.name,
            my_urls.join(","),
            cluster.peer_urls
        )));
    }
    backup::verify_hash(file, skip_hash_check)?;
    let reader = BoltReader::open(file)
        .map_err(|error| Error::Refused(format!("cannot read {}: {error}", file.display())))?;

    let members: Vec<Member> = initial
        .iter()
        .map(|(name, urls)| Member {
            id: members::member_id(urls, &cluster.token),
            name: name.clone(),
            peer_ur_ls: urls.clone(),
            ..Member::default()
        })
        .collect();
    let ids: Vec<u64> = members.iter().map(|member| member.id).collect();
    let member_id = members::member_id(my_urls, &cluster.token);
    let cluster_id = members::cluster_id(&ids);
    // As etcd's restore: the log starts after one entry per member.
    let index = members.len() as u64;

    std::fs::create_dir_all(data_dir).map_err(Error::io(format!("cannot create {}", data_dir.display())))?;
    let built = (|| -> Result<backup::Restored, Error> {
        let db = cairn_backend::open(data_dir)?;
        let txn = db.begin_write()?;
        let restored = backup::restore(&reader, &txn)?;
        for member in &members {
            members::save(&txn, member)?;
        }
        members::store_ids(&txn, (member_id, cluster_id))?;
        txn.open_table(cairn_backend::META)?.insert("applied_index", index)?;
        let conf_state = raft::eraftpb::ConfState { voters: ids.clone(), ..Default::default() };
        crate::raft_state::save_conf_state(&txn, &conf_state)?;
        crate::raft_state::save_restored(&txn, index, 1)?;
        txn.commit()?;
        Ok(restored)
    })();
    match built {
        Ok(restored) => Ok(Restored { restored, members, cluster_id }),
        Err(error) => {
            // Leave nothing half-built that a server would start from.
            let _ = std::fs::remove_dir_all(data_dir);
            Err(error)
        }
    }
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

    #[test]
    fn the_initial_cluster_groups_and_sorts_each_members_urls() {
        let parsed = parse_initial_cluster("b=http://b:2,a=http://a:9, a=http://a:1 ,").unwrap();
        assert_eq!(parsed["a"], ["http://a:1", "http://a:9"]);
        assert_eq!(parsed["b"], ["http://b:2"]);
        let error = parse_initial_cluster("a=http://a:1,oops").unwrap_err();
        assert_eq!(error.to_string(), "--initial-cluster entry \"oops\" is not name=url");
    }
}
