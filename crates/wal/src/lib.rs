//! A write-ahead log for [raft-rs](https://docs.rs/raft): raft entries and hard state
//! appended as CRC-checked records to segment files and made durable with one
//! `fdatasync` per batch, as etcd's `wal` package does, and [`WalStorage`], a
//! `raft::Storage` over it that any raft-rs program can use in place of `MemStorage`.
//!
//! **Invariant:** what [`Wal::append`] wrote with `sync` is on disk when it returns, and
//! a reopen gives back exactly what was appended, less what [`Wal::compact`] and
//! [`Wal::restart_at`] dropped; or it refuses to open with [`Error::Corrupt`]. The only
//! damage it repairs is a torn write at the very end of the last segment (a record cut
//! short, or one with a never-written, all-zero sector), which no caller can have been
//! told was durable; a checksum mismatch anywhere else, damage in a closed segment, or
//! a missing segment is never read past.
//!
//! ```
//! use cairn_wal::Wal;
//! use raft::eraftpb::{Entry, HardState};
//!
//! let dir = tempfile::tempdir()?;
//! let (mut wal, recovered) = Wal::open(dir.path())?;
//! assert!(recovered.entries.is_empty());
//! let entry = Entry { index: 1, term: 1, data: b"put a 1".to_vec().into(), ..Default::default() };
//! let hard_state = HardState { term: 1, vote: 1, commit: 1, ..Default::default() };
//! wal.append(&[entry], Some(&hard_state), true)?; // durable on return
//! drop(wal);
//!
//! let (_wal, recovered) = Wal::open(dir.path())?;
//! assert_eq!(recovered.entries[0].data, b"put a 1"[..]);
//! assert_eq!(recovered.hard_state.unwrap().commit, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod storage;
mod wal;

pub use error::{Error, Result};
pub use storage::{WalStorage, recover};
pub use wal::{Recovered, SEGMENT_BYTES, Wal};
