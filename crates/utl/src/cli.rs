//! The `snapshot` command line, with the commands and flags of `etcdctl snapshot
//! save` and `etcdutl snapshot status|restore`.

use std::path::PathBuf;

use crate::Error;
use crate::snapshot::{self, NewCluster, TlsFiles};

/// The commands a binary carries next to its own (`cairn snapshot ...`).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Backups in etcd's backend format (`etcdctl`/`etcdutl snapshot`).
    #[command(subcommand)]
    Snapshot(Snapshot),
}

/// `snapshot …`.
#[derive(Debug, clap::Subcommand)]
pub enum Snapshot {
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

/// Runs `command` to the end, printing what etcd's tools print.
pub fn run(command: Command) -> Result<(), Error> {
    let Command::Snapshot(snapshot) = command;
    match snapshot {
        Snapshot::Save { file, endpoints, user, cacert, cert, key } => {
            let tls = TlsFiles { cacert, cert, key };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::io("cannot start the tokio runtime"))?
                .block_on(snapshot::save(&file, &endpoints, user.as_deref(), &tls))?;
            println!("Snapshot saved at {}", file.display());
        }
        Snapshot::Status { file, write_out } => println!("{}", snapshot::status(&file, &write_out)?),
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
            let done = snapshot::restore(&file, &data_dir, &cluster, skip_hash_check)?;
            for member in &done.members {
                let urls = member.peer_ur_ls.join(",");
                println!("added member {:x} {urls:?} to cluster {:x}", member.id, done.cluster_id);
            }
            let restored = &done.restored;
            println!(
                "restored snapshot {} into {}: revision {}, compacted at {}, {} changes, {} leases",
                file.display(),
                data_dir.display(),
                restored.revisions.current,
                restored.revisions.compacted,
                restored.changes,
                restored.leases
            );
        }
    }
    Ok(())
}
