//! The seams the gate is generic over.

use std::future::Future;

use cairn_auth::AuthInfo;
use tokio::time::Instant;

use crate::Result;

/// What the gate stamps on every request: etcd's `RequestHeader`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// The request's unique ID, from the member's ID generator.
    pub id: u64,
    /// The caller's user name; empty when auth is off or the caller sent no token.
    pub username: String,
    /// The auth revision the caller's token stands for; 0 without a user.
    pub auth_revision: u64,
}

/// A request the gate can stamp and encode: the server's `InternalRaftRequest`.
pub trait Request {
    /// etcd's legacy request ID, under which the waiter is registered when non-zero.
    fn legacy_id(&self) -> u64 {
        0
    }

    /// Whether this is an Authenticate request, which carries no caller identity: a
    /// stale token in the metadata must not stop a login.
    fn is_authenticate(&self) -> bool {
        false
    }

    /// Whether the request may use twice the gap (etcd 3.7 marks lease revocation).
    fn is_priority(&self) -> bool {
        false
    }

    /// A short name of the request kind, for metrics (`put`, `txn`, ...).
    fn kind(&self) -> &'static str {
        "request"
    }

    /// Sets the header.
    fn set_header(&mut self, header: Header);

    /// The bytes to propose.
    fn encode(&self) -> Vec<u8>;
}

/// Hands encoded requests to consensus.
pub trait Proposer: Send + Sync {
    /// Proposes `data`. Completes when consensus accepted the proposal for
    /// replication (not when it is applied); may wait while there is no leader, which
    /// the gate bounds with the request's deadline.
    ///
    /// # Errors
    ///
    /// [`crate::Error::ProposalDropped`] when the proposal was refused, or
    /// [`crate::Error::Stopped`].
    fn propose(&self, data: Vec<u8>) -> impl Future<Output = Result<()>> + Send;
}

/// The member's raft indexes.
pub trait IndexSource: Send + Sync {
    /// The index of the last entry applied to the state machine.
    fn applied_index(&self) -> u64;
    /// The index of the last entry known committed.
    fn committed_index(&self) -> u64;
}

/// What the member knows of leadership and connectivity, to classify timeouts.
pub trait Leadership: Send + Sync {
    /// This member's ID.
    fn member_id(&self) -> u64;
    /// The current leader, if any.
    fn leader(&self) -> Option<u64>;
    /// When this member last saw a leader elected (itself or another).
    fn leader_elected_at(&self) -> Option<Instant>;
    /// The voting members, this one included.
    fn members(&self) -> Vec<u64>;
    /// Since when the transport has been continuously connected to `peer`; `None`
    /// when it is not connected now.
    fn connected_since(&self, peer: u64) -> Option<Instant>;
}

/// Establishes who sent a request, from its metadata.
pub trait AuthSource: Send + Sync {
    /// The caller's identity: `None` when auth is disabled or no token was sent.
    ///
    /// # Errors
    ///
    /// [`cairn_auth::Error::InvalidAuthToken`] for a token that is not valid.
    fn auth_info(&self, metadata: &[(&str, &str)]) -> Result<Option<AuthInfo>, cairn_auth::Error>;
}

impl AuthSource for std::sync::RwLock<cairn_auth::AuthStore> {
    fn auth_info(&self, metadata: &[(&str, &str)]) -> Result<Option<AuthInfo>, cairn_auth::Error> {
        let store = self.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        store.auth_info(metadata.iter().copied())
    }
}

impl<T: AuthSource + ?Sized> AuthSource for std::sync::Arc<T> {
    fn auth_info(&self, metadata: &[(&str, &str)]) -> Result<Option<AuthInfo>, cairn_auth::Error> {
        (**self).auth_info(metadata)
    }
}

impl<T: IndexSource + ?Sized> IndexSource for std::sync::Arc<T> {
    fn applied_index(&self) -> u64 {
        (**self).applied_index()
    }
    fn committed_index(&self) -> u64 {
        (**self).committed_index()
    }
}

impl<T: Leadership + ?Sized> Leadership for std::sync::Arc<T> {
    fn member_id(&self) -> u64 {
        (**self).member_id()
    }
    fn leader(&self) -> Option<u64> {
        (**self).leader()
    }
    fn leader_elected_at(&self) -> Option<Instant> {
        (**self).leader_elected_at()
    }
    fn members(&self) -> Vec<u64> {
        (**self).members()
    }
    fn connected_since(&self, peer: u64) -> Option<Instant> {
        (**self).connected_since(peer)
    }
}

impl<T: Proposer + ?Sized> Proposer for std::sync::Arc<T> {
    fn propose(&self, data: Vec<u8>) -> impl Future<Output = Result<()>> + Send {
        (**self).propose(data)
    }
}
