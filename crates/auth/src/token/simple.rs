//! Simple tokens: random strings kept in memory with a TTL refreshed on each use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::Rng;

use super::TokenProvider;
use crate::clock::{Clock, SystemClock};
use crate::info::AuthInfo;
use crate::{Error, Result};

/// How long a simple token lives after its last use unless configured otherwise
/// (etcd's `--auth-token-ttl`).
pub const DEFAULT_SIMPLE_TOKEN_TTL: Duration = Duration::from_secs(300);

const PREFIX_LEN: usize = 16;
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// etcd's simple tokens: `<16 random letters>.<raft index>`.
///
/// A token exists on a member once that member applied the Authenticate entry that
/// issued it, so a server waits until its applied index reaches
/// [`simple_token_index`] before calling [`TokenProvider::info`]. Tokens are not
/// signed and not persisted: a restart logs every client out, as in etcd.
pub struct SimpleTokens {
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// Token to its user and expiry.
    tokens: Mutex<HashMap<String, (String, SystemTime)>>,
}

impl SimpleTokens {
    /// Tokens on `clock` that expire `ttl` after their last use.
    pub fn new(clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self { clock, ttl, tokens: Mutex::new(HashMap::new()) }
    }

    /// Number of live tokens (expired ones count until swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no token is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (String, SystemTime)>> {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for SimpleTokens {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock), DEFAULT_SIMPLE_TOKEN_TTL)
    }
}

impl std::fmt::Debug for SimpleTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimpleTokens").field("ttl", &self.ttl).field("tokens", &self.len()).finish()
    }
}

impl TokenProvider for SimpleTokens {
    fn token_prefix(&self) -> String {
        let mut rng = rand::rng();
        (0..PREFIX_LEN).map(|_| char::from(LETTERS[rng.random_range(0..LETTERS.len())])).collect()
    }

    fn assign(&self, prefix: &str, username: &str, _revision: u64, index: u64) -> Result<String> {
        if prefix.is_empty() {
            return Err(Error::InvalidAuthToken);
        }
        let token = format!("{prefix}.{index}");
        let expires = self.clock.now() + self.ttl;
        self.lock().insert(token.clone(), (username.to_owned(), expires));
        Ok(token)
    }

    fn info(&self, token: &str, current_revision: u64) -> Option<AuthInfo> {
        let now = self.clock.now();
        let mut tokens = self.lock();
        let (username, expires) = tokens.get_mut(token)?;
        if now >= *expires {
            tokens.remove(token);
            return None;
        }
        *expires = now + self.ttl;
        Some(AuthInfo::new(username.clone(), current_revision))
    }

    fn invalidate_user(&self, username: &str) {
        self.lock().retain(|_, (user, _)| user != username);
    }

    fn disable(&self) {
        self.lock().clear();
    }

    fn sweep_expired(&self) {
        let now = self.clock.now();
        self.lock().retain(|_, (_, expires)| now < *expires);
    }
}

/// The raft index a simple token was issued at: the member must have applied it
/// before the token is known there. `None` for anything not shaped like a simple
/// token.
pub fn simple_token_index(token: &str) -> Option<u64> {
    let (prefix, index) = token.split_once('.')?;
    if prefix.len() != PREFIX_LEN || !prefix.bytes().all(|byte| byte.is_ascii_alphabetic()) {
        return None;
    }
    index.parse().ok()
}
