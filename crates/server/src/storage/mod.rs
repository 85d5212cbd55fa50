//! Everything on disk: the write-ahead log (raft entries and hard state) in
//! `member/wal`, and one redb database in `member/cairn.redb` holding the MVCC
//! key-value state, the applied index and the rest of the state machine.
//!
//! An entry is in the fsync'd log before it is applied. The state machine and its
//! applied index change in one transaction, committed durably only now and then: a
//! crash loses the state since the last durable commit, and a restart replays its
//! entries from the log, so no entry is applied twice or skipped.

pub(crate) mod backup;
pub(crate) mod defrag;
pub(crate) mod raft_log;
pub(crate) mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use redb::{Database, ReadTransaction, TableDefinition, WriteTransaction};

pub(crate) use cairn_mvcc as mvcc;
pub(crate) use cairn_mvcc::{KV, META};

/// Raft state that goes with the state machine, by name: `conf_state`, and
/// `restored`, the snapshot it was last replaced by.
pub(crate) const RAFT_STATE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_state");
/// Leases: ID to `(granted TTL, remaining TTL at the last checkpoint)`, in seconds.
pub(crate) const LEASES: TableDefinition<'_, i64, (i64, i64)> = TableDefinition::new("leases");
/// The members of the cluster: ID to an encoded `etcdserverpb.Member`.
pub(crate) const MEMBERS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("members");
/// The auth store, as `cairn_auth::AuthStore::snapshot` bytes under `store`.
pub(crate) const AUTH: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("auth");
/// Raised alarms: (member ID, `etcdserverpb.AlarmType`) to nothing.
pub(crate) const ALARMS: TableDefinition<'_, (u64, i32), ()> = TableDefinition::new("alarms");

/// Storage failures: redb's, or undecodable data. The server cannot go on after one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StorageError {
    #[error("storage: {0}")]
    Redb(String),
    #[error("storage: corrupt {0}")]
    Corrupt(&'static str),
    /// Damage in the write-ahead log that a torn write cannot explain: reading on
    /// would silently drop acknowledged entries, so the member refuses to start.
    #[error("storage: corrupt write-ahead log: {0}")]
    CorruptWal(String),
}

impl From<cairn_wal::Error> for StorageError {
    fn from(error: cairn_wal::Error) -> Self {
        match error {
            cairn_wal::Error::Undecodable(what) => Self::Corrupt(what),
            cairn_wal::Error::Corrupt(why) => Self::CorruptWal(why),
            other => Self::Redb(other.to_string()),
        }
    }
}

impl From<cairn_mvcc::Error> for StorageError {
    fn from(error: cairn_mvcc::Error) -> Self {
        match error {
            cairn_mvcc::Error::Corrupt(what) => Self::Corrupt(what),
            other => Self::Redb(other.to_string().trim_start_matches("storage: ").to_owned()),
        }
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StorageError {
            fn from(error: $error) -> Self {
                Self::Redb(error.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// The state machine's database, which a defragmentation replaces as a whole: every
/// user takes the current one for each transaction, and a transaction begun on the old
/// one finishes there.
pub(crate) struct Store {
    current: RwLock<Arc<Database>>,
    path: PathBuf,
    /// The file's size as of the last commit ([`Store::refresh_size`]).
    size: std::sync::atomic::AtomicU64,
    /// Held through a defragmentation: one at a time.
    pub(crate) defragmenting: Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Opens (or creates) the database in `data_dir`, with every table present.
    pub(crate) fn open(data_dir: &Path) -> Result<Self, StorageError> {
        let path = data_dir.join("member").join(DB_FILE);
        // A defragmentation that stopped before its rename left a copy that was never used.
        let _ = std::fs::remove_file(defrag::copy_path(&path));
        let db = open(data_dir)?;
        let store = Self {
            current: RwLock::new(Arc::new(db)),
            path,
            size: std::sync::atomic::AtomicU64::new(0),
            defragmenting: Arc::new(tokio::sync::Mutex::new(())),
        };
        store.refresh_size();
        Ok(store)
    }

    /// The current database.
    pub(crate) fn get(&self) -> Arc<Database> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Makes `db` the current database, giving back the one it replaces (which
    /// transactions begun on it may still hold).
    pub(crate) fn replace(&self, db: Database) -> Arc<Database> {
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner),
            Arc::new(db),
        );
        self.refresh_size();
        old
    }

    /// The database file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The size of the database file, as etcd reports its backend's (and measures it
    /// against the quota), as of the last [`Store::refresh_size`].
    pub(crate) fn size(&self) -> u64 {
        self.size.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reads the file's size again; the apply loop calls this after each commit.
    pub(crate) fn refresh_size(&self) {
        let size = self.path.metadata().map(|metadata| metadata.len()).unwrap_or_default();
        self.size.store(size, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, redb::TransactionError> {
        redb::ReadableDatabase::begin_read(&*self.get())
    }

    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, redb::TransactionError> {
        self.get().begin_write()
    }
}

/// The database file in `member/`.
pub(crate) const DB_FILE: &str = "cairn.redb";

/// Opens (or creates) the database in `data_dir`, with every table present.
pub(crate) fn open(data_dir: &Path) -> Result<Database, StorageError> {
    let member = data_dir.join("member");
    std::fs::create_dir_all(&member).map_err(|error| StorageError::Redb(error.to_string()))?;
    let db = Database::create(member.join(DB_FILE))?;
    create_tables(&db)?;
    Ok(db)
}

/// Creates every table that `db` lacks.
pub(crate) fn create_tables(db: &Database) -> Result<(), StorageError> {
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
