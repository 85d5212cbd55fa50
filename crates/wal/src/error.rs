//! The log's one error type.

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file system failed: a read, a write, an `fdatasync`, a rename.
    // Not a `source`: the text already carries it, and a report of the chain would
    // print it twice.
    #[error("wal: {0}")]
    Io(std::io::Error),
    /// A record whose checksum holds but whose payload does not decode, or a raft
    /// message that cannot be encoded.
    #[error("storage: corrupt {0}")]
    Undecodable(&'static str),
    /// Damage that a torn write cannot explain: reading on would silently drop
    /// acknowledged entries, so the log refuses to open. The text names the segment
    /// and offset.
    #[error("storage: corrupt write-ahead log: {0}")]
    Corrupt(String),
    /// raft-rs refused what the log held (entries that are not contiguous, a
    /// snapshot older than the log).
    #[error("storage: raft: {0}")]
    Raft(#[from] raft::Error),
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// The log's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
