//! bcrypt password hashing and checking, kept off the apply path.

use crate::{Error, Result};

/// bcrypt's cost when none is configured (etcd's `--bcrypt-cost` default).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// The lowest bcrypt cost accepted.
pub const MIN_BCRYPT_COST: u32 = 4;
/// The highest bcrypt cost accepted.
pub const MAX_BCRYPT_COST: u32 = 31;

/// Hashes `password` with bcrypt at `cost`, giving the hash the raft request carries.
///
/// The server calls this before proposing, so the plain password never reaches the
/// log; it is slow on purpose (about 50 ms at cost 10), so it must not run on the
/// apply path.
///
/// # Errors
///
/// [`Error::InvalidBcryptCost`] for a cost outside 4..=31.
pub fn hash_password(password: &str, cost: u32) -> Result<String> {
    if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(Error::InvalidBcryptCost(cost));
    }
    bcrypt::hash(password, cost).map_err(|error| Error::Crypto(error.to_string()))
}

/// What checking a user's password needs, taken from the store under its lock so that
/// the slow bcrypt comparison ([`PasswordCheck::verify`]) runs after the lock is gone.
#[derive(Debug, Clone)]
pub struct PasswordCheck {
    pub(crate) hash: String,
    pub(crate) revision: u64,
}

impl PasswordCheck {
    /// Checks `password`, giving the auth revision the check was made at. If the
    /// store's revision has moved by the time a token is issued, the caller checks
    /// again (etcd's Authenticate loop).
    ///
    /// # Errors
    ///
    /// [`Error::AuthFailed`] for a wrong password.
    pub fn verify(&self, password: &str) -> Result<u64> {
        match bcrypt::verify(password, &self.hash) {
            Ok(true) => Ok(self.revision),
            Ok(false) | Err(_) => Err(Error::AuthFailed),
        }
    }

    /// The auth revision at which the hash was read.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}
