//! A member's whole state in one [redb](https://docs.rs/redb) database, as etcd's
//! backend holds it in its buckets: the MVCC tables of [`cairn_mvcc`] (`kv`, `meta`),
//! and beside them leases, members, the auth store, alarms and the raft state that
//! goes with the state machine.
//!
//! Around that database:
//! - [`Store`], the handle a defragmentation swaps: every user takes the current
//!   database for each transaction;
//! - [`backup`]: the state as an etcd backend file (bbolt, etcd's buckets), which
//!   `etcdctl snapshot status/restore` and `etcdutl` read, and an etcd backend read
//!   back; `etcd`'s hashes of such a file; the SHA-256 trailer of a saved snapshot;
//! - [`defrag`]: the database rewritten into a compact file in two steps, the second
//!   short enough to run between two applies;
//! - [`snapshot`]: the state as bytes for a raft snapshot, and its restore;
//! - [`members`]: the cluster's members as every member keeps them;
//! - [`alarms`]: the raised alarms, what NOSPACE and CORRUPT refuse, and the quota.
//!
//! No raft, no gRPC: a server wires these to its consensus and its services.
//!
//! **Invariant:** a backup, a raft snapshot or a defragmentation copies the whole state
//! as one read transaction saw it, and a restore replaces the whole state in the
//! caller's one write transaction: no reader ever sees half of one.

pub mod alarms;
pub mod backup;
pub mod defrag;
pub mod members;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use redb::{Database, ReadTransaction, TableDefinition, WriteTransaction};

/// The errors of this crate are the store's: redb's, undecodable data, or a bbolt
/// file that could not be written or read.
pub use cairn_mvcc::Error;
pub use cairn_mvcc::{KV, META};

/// Raft state that goes with the state machine, by name: `conf_state`, and
/// `restored`, the snapshot it was last replaced by.
pub const RAFT_STATE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_state");
/// Leases: ID to `(granted TTL, remaining TTL at the last checkpoint)`, in seconds.
pub const LEASES: TableDefinition<'_, i64, (i64, i64)> = TableDefinition::new("leases");
/// The members of the cluster: ID to an encoded `etcdserverpb.Member`.
pub const MEMBERS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("members");
/// The auth store, as `cairn_auth::AuthStore::snapshot` bytes under `store`.
pub const AUTH: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("auth");
/// Raised alarms: (member ID, `etcdserverpb.AlarmType`) to nothing.
pub const ALARMS: TableDefinition<'_, (u64, i32), ()> = TableDefinition::new("alarms");

/// The database file in a data dir's `member/`.
pub const DB_FILE: &str = "cairn.redb";

fn io_error(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |error| Error::Redb(format!("{what}: {error}"))
}

/// The state machine's database, which a defragmentation replaces as a whole: every
/// user takes the current one for each transaction, and a transaction begun on the old
/// one finishes there.
#[derive(Debug)]
pub struct Store {
    current: RwLock<Arc<Database>>,
    path: PathBuf,
    /// The file's size as of the last [`Store::refresh_size`].
    size: AtomicU64,
    /// Held through a defragmentation: one at a time.
    defragmenting: Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Opens (or creates) the database in `data_dir`, with every table present.
    pub fn open(data_dir: &Path) -> Result<Self, Error> {
        let path = data_dir.join("member").join(DB_FILE);
        // A defragmentation that stopped before its rename left a copy that was never used.
        let _ = std::fs::remove_file(defrag::copy_path(&path));
        let db = open(data_dir)?;
        let store = Self {
            current: RwLock::new(Arc::new(db)),
            path,
            size: AtomicU64::new(0),
            defragmenting: Arc::new(tokio::sync::Mutex::new(())),
        };
        store.refresh_size();
        Ok(store)
    }

    /// The current database.
    pub fn get(&self) -> Arc<Database> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes `db` the current database, giving back the one it replaces (which
    /// transactions begun on it may still hold).
    pub fn replace(&self, db: Database) -> Arc<Database> {
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
            Arc::new(db),
        );
        self.refresh_size();
        old
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size of the database file, as etcd reports its backend's (and measures it
    /// against the quota), as of the last [`Store::refresh_size`].
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Reads the file's size again; a server calls this after each commit.
    pub fn refresh_size(&self) {
        let size = self.path.metadata().map(|metadata| metadata.len()).unwrap_or_default();
        self.size.store(size, Ordering::Release);
    }

    /// Waits for this store's turn to defragment: one defragmentation at a time, as
    /// they share the copy's file.
    pub async fn defrag_turn(&self) -> defrag::Turn {
        defrag::Turn(Arc::clone(&self.defragmenting).lock_owned().await)
    }

    /// This store's turn to defragment, if no defragmentation holds it.
    pub fn try_defrag_turn(&self) -> Option<defrag::Turn> {
        Arc::clone(&self.defragmenting).try_lock_owned().ok().map(defrag::Turn)
    }

    /// A read transaction on the current database.
    pub fn begin_read(&self) -> Result<ReadTransaction, redb::TransactionError> {
        redb::ReadableDatabase::begin_read(&*self.get())
    }

    /// A write transaction on the current database.
    pub fn begin_write(&self) -> Result<WriteTransaction, redb::TransactionError> {
        self.get().begin_write()
    }

    /// Commits `txn` (begun on this store), recording how long it took as etcd's
    /// `etcd_disk_backend_commit_duration_seconds`, and reads the file's size again.
    pub fn commit(&self, txn: WriteTransaction) -> Result<(), redb::CommitError> {
        let started = std::time::Instant::now();
        let committed = txn.commit();
        commit_seconds().record(started.elapsed().as_secs_f64(), &[]);
        self.refresh_size();
        committed
    }
}

/// etcd's `etcd_disk_backend_commit_duration_seconds` (buckets from 1 ms doubling to
/// about 8 s), on the global meter provider as it is at the first commit.
fn commit_seconds() -> &'static opentelemetry::metrics::Histogram<f64> {
    static HISTOGRAM: std::sync::OnceLock<opentelemetry::metrics::Histogram<f64>> =
        std::sync::OnceLock::new();
    HISTOGRAM.get_or_init(|| {
        opentelemetry::global::meter("cairn-backend")
            .f64_histogram("etcd_disk_backend_commit_duration_seconds")
            .with_description("The latency distributions of commit called by backend.")
            .with_boundaries((0..14).map(|i| 0.001 * f64::from(1u32 << i)).collect())
            .build()
    })
}

/// Opens (or creates) the database in `data_dir`'s `member/`, with every table present.
pub fn open(data_dir: &Path) -> Result<Database, Error> {
    let member = data_dir.join("member");
    std::fs::create_dir_all(&member).map_err(io_error("cannot create member/"))?;
    let db = Database::create(member.join(DB_FILE))?;
    create_tables(&db)?;
    Ok(db)
}

/// Creates every table that `db` lacks.
pub fn create_tables(db: &Database) -> Result<(), Error> {
    let txn = db.begin_write()?;
    txn.open_table(RAFT_STATE)?;
    txn.open_table(KV)?;
    txn.open_table(META)?;
    txn.open_table(AUTH)?;
    txn.open_table(LEASES)?;
    txn.open_table(MEMBERS)?;
    txn.open_table(ALARMS)?;
    txn.commit()?;
    Ok(())
}
