//! Auth on the server: the auth store applied through raft and persisted with the
//! key-value data, and the permission checks of every request.

pub(crate) use cairn_apply::{SharedAuth, auth_read as read};
use cairn_auth::AuthStore;
pub(crate) use cairn_auth::etcd::AuthApplied;

/// The metadata key under which the server passes a client certificate's common name
/// to the gate. Clients cannot set it: only `token` and `authorization` are taken
/// from their metadata.
pub(crate) const CERTIFICATE_USER: &str = "cairn-certificate-user";

/// Who is calling (`cairn-auth`'s [`caller`](AuthStore::caller)), with the
/// certificate's name the server put under [`CERTIFICATE_USER`].
pub(crate) fn caller(
    store: &AuthStore,
    pairs: &[(&str, &str)],
) -> cairn_auth::Result<Option<cairn_auth::AuthInfo>> {
    let certified = pairs.iter().find(|(key, _)| *key == CERTIFICATE_USER).map(|(_, name)| *name);
    store.caller(pairs.iter().copied(), certified)
}

/// The gate's view of who is calling.
#[derive(Clone)]
pub(crate) struct ServerAuth(pub(crate) SharedAuth);

impl cairn_proposal::AuthSource for ServerAuth {
    fn auth_info(&self, metadata: &[(&str, &str)]) -> cairn_auth::Result<Option<cairn_auth::AuthInfo>> {
        caller(&read(&self.0), metadata)
    }
}
