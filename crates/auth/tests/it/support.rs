//! Shared setup: a store with root and auth ready to enable, a manual clock.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cairn_auth::{AuthStore, ManualClock, ROOT, SimpleTokens, UserPassword};

pub(crate) fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000)))
}

/// A store with user `root` holding role `root`, not yet enabled.
pub(crate) fn store_with_root() -> AuthStore {
    let mut store = AuthStore::with_tokens(Arc::new(SimpleTokens::new(clock(), Duration::from_secs(300))));
    store.user_add(ROOT, UserPassword::NoPassword).unwrap();
    store.role_add(ROOT).unwrap();
    store.user_grant_role(ROOT, ROOT).unwrap();
    store
}
