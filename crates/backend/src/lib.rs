//! A member's whole state in one [redb](https://docs.rs/redb) database, as etcd's
//! backend holds it in its buckets: the MVCC tables of [`cairn_mvcc`] (`kv`, `meta`),
//! and beside them leases, members, the auth store, alarms and the raft state that
//! goes with the state machine.
//!
//! Around that database:
//! - [`Store`], the handle a defragmentation or a restore swaps: every user takes the
//!   current database for each transaction, and a [`Read`] holds its database open;
//! - [`backup`]: the state as an etcd backend file (bbolt, etcd's buckets), which
//!   `etcdctl snapshot status/restore` and `etcdutl` read, and an etcd backend read
//!   back; `etcd`'s hashes of such a file; the SHA-256 trailer of a saved snapshot;
//! - [`defrag`]: the database rewritten into a compact file in two steps, the second
//!   short enough to run between two applies;
//! - [`snapshot`]: the state as chunks for a raft snapshot, and its restore into a
//!   new file that takes the database's place as a defragmentation's copy does;
//! - [`members`]: the cluster's members as every member keeps them;
//! - [`alarms`]: the raised alarms, what NOSPACE and CORRUPT refuse, and the quota.
//!
//! No raft, no gRPC: a server wires these to its consensus and its services.
//!
//! **Invariant:** a backup, a raft snapshot or a defragmentation copies the whole state
//! as one read transaction saw it, and a restore from a raft snapshot or the end of a
//! defragmentation replaces the whole database file at once, after it is durable: no
//! reader ever sees half of one, and a crash leaves the old file or the new one.

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

/// The state machine's database, which a defragmentation or a restore from a raft
/// snapshot replaces as a whole: every user takes the current one for each
/// transaction, and a read begun on the old one ([`Read`] holds it open) finishes
/// there.
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
        // So did a restore from a snapshot.
        let _ = std::fs::remove_file(snapshot::restore_path(&path));
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

    /// Puts the database file `db` was built in, at `from`, in the place of this
    /// store's: closes `db`, renames its file over the database file, opens it again
    /// with a store's cache, syncs the directory and makes it the current database.
    /// The old one is closed on a thread of its own, as closing a large file takes a
    /// while; a transaction begun on it finishes there. If the rename fails, `from`
    /// is deleted and the store is as it was.
    pub(crate) fn swap_in(&self, db: Database, from: &Path) -> Result<(), SwapFailed> {
        let io =
            |error: std::io::Error| Error::Redb(format!("cannot put {} in place: {error}", from.display()));
        // Closing a file all of whose transactions committed durably takes
        // milliseconds, and so does opening it again.
        if let Err(error) = db.close() {
            let _ = std::fs::remove_file(from);
            return Err(SwapFailed::Before(error.into()));
        }
        if let Err(error) = std::fs::rename(from, &self.path) {
            let _ = std::fs::remove_file(from);
            return Err(SwapFailed::Before(io(error)));
        }
        // The new file has the database's name now: whatever fails from here, the
        // member must not go on with the old, nameless file. Readers see the new state
        // only once the rename is durable: after a crash the member never starts on a
        // state older than one it served.
        let db = open_file(&self.path).map_err(|error| SwapFailed::After(error.into()))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|error| SwapFailed::After(io(error)))?;
        }
        let old = self.replace(db);
        // The last handle closes it, once the reads begun on it end.
        let _ = std::thread::Builder::new().name("db-close".into()).spawn(move || drop(old));
        Ok(())
    }

    /// A read transaction on the current database, which it holds open.
    pub fn begin_read(&self) -> Result<Read, redb::TransactionError> {
        Read::new(self.get())
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

/// A read transaction on a store's database, holding that database open: a read
/// begun before a defragmentation or a restore swapped the database reads on to its
/// end (redb fails the reads of a database whose last handle is dropped).
pub struct Read {
    // Dropped first: the transaction ends before the handle goes.
    txn: ReadTransaction,
    _db: Option<Arc<Database>>,
}

impl Read {
    /// A read transaction on `db`, holding it open.
    pub fn new(db: Arc<Database>) -> Result<Self, redb::TransactionError> {
        Ok(Self { txn: redb::ReadableDatabase::begin_read(&*db)?, _db: Some(db) })
    }
}

/// A transaction whose database the caller keeps open.
impl From<ReadTransaction> for Read {
    fn from(txn: ReadTransaction) -> Self {
        Self { txn, _db: None }
    }
}

impl std::ops::Deref for Read {
    type Target = ReadTransaction;

    fn deref(&self) -> &ReadTransaction {
        &self.txn
    }
}

impl std::borrow::Borrow<ReadTransaction> for Read {
    fn borrow(&self) -> &ReadTransaction {
        &self.txn
    }
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Read").finish_non_exhaustive()
    }
}

/// How [`Store::swap_in`] failed: before the rename (the store is as it was) or after.
#[derive(Debug)]
pub(crate) enum SwapFailed {
    Before(Error),
    After(Error),
}

impl SwapFailed {
    pub(crate) fn into_inner(self) -> Error {
        match self {
            Self::Before(error) | Self::After(error) => error,
        }
    }
}

/// Deletes a file when dropped, unless [`Removal::disarm`]ed: a new database file
/// that never took its place is not left behind.
#[derive(Debug)]
pub(crate) struct Removal(Option<PathBuf>);

impl Removal {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self(Some(path))
    }

    /// Keeps the file, giving back its path.
    pub(crate) fn disarm(mut self) -> PathBuf {
        self.0.take().expect("armed until disarmed")
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
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
    let db = open_file(&member.join(DB_FILE))?;
    create_tables(&db)?;
    Ok(db)
}

/// Bytes of redb's cache of a store's database. Pages past it are read from the
/// operating system's page cache: a member's memory does not grow with its store
/// (redb's default, 1 GiB, held a whole store of that size after a restart read it
/// through).
pub const CACHE_BYTES: usize = 256 * 1024 * 1024;

/// Opens (or creates) the database file at `path` with a store's cache.
pub(crate) fn open_file(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new().set_cache_size(CACHE_BYTES).create(path)
}

/// Bytes of redb's cache of a database being built (a restore's, a
/// defragmentation's copy), whose rows are written once and not read again there.
const BUILDING_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// Creates a database file to build at `path`: with a cache of its own size, which
/// [`Store::swap_in`] trades for a store's.
pub(crate) fn create_building(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new().set_cache_size(BUILDING_CACHE_BYTES).create(path)
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
