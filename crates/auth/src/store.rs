//! The auth store: users, roles, permissions, the enabled flag and the auth revision.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::info::{AuthInfo, token_from_metadata};
use crate::password::PasswordCheck;
use crate::perms::MergedPermissions;
use crate::token::{SimpleTokens, TokenProvider};
use crate::{Error, Result};

/// The name of both the superuser and the role that grants everything.
pub const ROOT: &str = "root";

/// What a permission allows. The numbers are etcd's `authpb.Permission.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PermissionType {
    /// Range (get, watch).
    Read = 0,
    /// Put and delete.
    Write = 1,
    /// Both.
    ReadWrite = 2,
}

impl PermissionType {
    /// The type with etcd's number `value`, if there is one.
    pub fn from_i32(value: i32) -> Option<Self> {
        match value {
            0 => Some(Self::Read),
            1 => Some(Self::Write),
            2 => Some(Self::ReadWrite),
            _ => None,
        }
    }
}

/// The kind of access a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reading keys.
    Read,
    /// Writing or deleting keys.
    Write,
}

/// A grant over one key or a key range, as etcd's `authpb.Permission`.
///
/// `range_end` empty: the single key `key`. `range_end` `"\0"`: every key from `key`
/// on. Otherwise the keys in `[key, range_end)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    /// What is allowed.
    pub perm_type: PermissionType,
    /// The key, or the first key of the range.
    pub key: Vec<u8>,
    /// The end of the range (exclusive), `"\0"` for open-ended, empty for one key.
    pub range_end: Vec<u8>,
}

impl Permission {
    /// A grant over `[key, range_end)` with etcd's conventions for `range_end`.
    pub fn new(perm_type: PermissionType, key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Self { perm_type, key: key.into(), range_end: range_end.into() }
    }

    /// A grant over the single key `key`.
    pub fn key(perm_type: PermissionType, key: impl Into<Vec<u8>>) -> Self {
        Self::new(perm_type, key, Vec::new())
    }

    /// A grant over every key starting with `prefix` (`etcdctl --prefix`).
    pub fn prefix(perm_type: PermissionType, prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        Self { perm_type, key, range_end }
    }

    /// A grant over every key at or after `key` (`etcdctl --from-key`).
    pub fn from_key(perm_type: PermissionType, key: impl Into<Vec<u8>>) -> Self {
        Self::new(perm_type, key, vec![0])
    }
}

/// The end of the range of keys starting with `prefix`: the prefix with its last byte
/// below 0xff incremented and what follows dropped, or `"\0"` (every key) when there
/// is no such byte, as etcd's clients compute it.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&byte| byte < 0xff) {
        Some(last) => {
            let mut end = prefix[..=last].to_vec();
            end[last] += 1;
            end
        }
        None => vec![0],
    }
}

/// How a user proves who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserPassword {
    /// A bcrypt hash, from [`crate::hash_password`]. Never the password itself.
    Hashed(String),
    /// The user has no password and can only be used through other means (a client
    /// certificate's common name).
    NoPassword,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    /// The bcrypt hash; `None` for a user created without a password.
    pub(crate) password: Option<String>,
    /// Sorted, without duplicates.
    pub(crate) roles: Vec<String>,
}

impl User {
    fn has_role(&self, role: &str) -> bool {
        self.roles.binary_search_by(|held| held.as_str().cmp(role)).is_ok()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Role {
    /// Sorted by key, then range end; at most one per `(key, range_end)`.
    pub(crate) permissions: Vec<Permission>,
}

/// etcd's auth store as a deterministic state machine.
///
/// Mutations (`&mut self`) are meant to be applied in raft log order on every member;
/// each one that changes something bumps [`AuthStore::revision`] and rebuilds the
/// merged permissions of every user, so checks (`&self`) take no lock and do no
/// allocation. Two stores given the same mutations in the same order compare equal.
/// Issued tokens are kept by the [`TokenProvider`], outside the compared state.
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Each user's permissions merged across roles, valid for the current revision.
    merged: HashMap<String, MergedPermissions>,
    tokens: Arc<dyn TokenProvider>,
}

impl AuthStore {
    /// An empty, disabled store at revision 1 (etcd's starting revision) that issues
    /// simple tokens with the default TTL on the system clock.
    pub fn new() -> Self {
        Self::with_tokens(Arc::new(SimpleTokens::default()))
    }

    /// An empty, disabled store at revision 1 whose tokens come from `tokens`.
    pub fn with_tokens(tokens: Arc<dyn TokenProvider>) -> Self {
        Self::from_parts(false, 1, BTreeMap::new(), BTreeMap::new(), tokens)
    }

    pub(crate) fn from_parts(
        enabled: bool,
        revision: u64,
        users: BTreeMap<String, User>,
        roles: BTreeMap<String, Role>,
        tokens: Arc<dyn TokenProvider>,
    ) -> Self {
        let mut store = Self { enabled, revision, users, roles, merged: HashMap::new(), tokens };
        store.rebuild_merged();
        store
    }

    pub(crate) fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }

    pub(crate) fn roles(&self) -> &BTreeMap<String, Role> {
        &self.roles
    }

    /// The token provider this store issues and checks tokens with.
    pub fn tokens(&self) -> &Arc<dyn TokenProvider> {
        &self.tokens
    }

    /// Whether authentication is enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: 1 for a new store, bumped by every mutation.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn commit(&mut self) {
        self.revision += 1;
        self.rebuild_merged();
    }

    fn rebuild_merged(&mut self) {
        let roles = &self.roles;
        self.merged = self
            .users
            .iter()
            .map(|(name, user)| {
                let permissions = user
                    .roles
                    .iter()
                    .filter_map(|role| roles.get(role))
                    .flat_map(|role| role.permissions.iter());
                (name.clone(), MergedPermissions::new(permissions))
            })
            .collect();
    }

    // ---- Enabling ----

    /// Enables authentication. Needs user `root` holding role `root`. Enabling an
    /// enabled store changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::RootUserNotExist`], [`Error::RootRoleNotExist`].
    pub fn enable(&mut self) -> Result<()> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT).ok_or(Error::RootUserNotExist)?;
        if !root.has_role(ROOT) {
            return Err(Error::RootRoleNotExist);
        }
        self.enabled = true;
        self.tokens.enable();
        self.commit();
        Ok(())
    }

    /// Disables authentication and drops every issued token. Disabling a disabled store
    /// changes nothing.
    pub fn disable(&mut self) {
        if !self.enabled {
            return;
        }
        self.enabled = false;
        self.tokens.disable();
        self.commit();
    }

    // ---- Users ----

    /// Adds a user without roles.
    ///
    /// # Errors
    ///
    /// [`Error::UserEmpty`] for an empty name, [`Error::UserAlreadyExist`].
    pub fn user_add(&mut self, name: &str, password: UserPassword) -> Result<()> {
        if name.is_empty() {
            return Err(Error::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(Error::UserAlreadyExist);
        }
        let password = match password {
            UserPassword::Hashed(hash) => Some(hash),
            UserPassword::NoPassword => None,
        };
        self.users.insert(name.to_owned(), User { password, roles: Vec::new() });
        self.commit();
        Ok(())
    }

    /// Deletes a user and invalidates their tokens.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAuthMgmt`] for `root` while auth is enabled,
    /// [`Error::UserNotFound`].
    pub fn user_delete(&mut self, name: &str) -> Result<()> {
        if self.enabled && name == ROOT {
            return Err(Error::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(Error::UserNotFound)?;
        self.tokens.invalidate_user(name);
        self.commit();
        Ok(())
    }

    /// Changes a user's password and invalidates their tokens. A user created without
    /// a password keeps having none, as in etcd.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`].
    pub fn user_change_password(&mut self, name: &str, password: UserPassword) -> Result<()> {
        let user = self.users.get_mut(name).ok_or(Error::UserNotFound)?;
        if user.password.is_some() {
            user.password = match password {
                UserPassword::Hashed(hash) => Some(hash),
                UserPassword::NoPassword => None,
            };
        }
        self.tokens.invalidate_user(name);
        self.commit();
        Ok(())
    }

    /// Grants `role` to `user`. Role `root` need not exist to be granted. Granting a
    /// role the user holds changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`], [`Error::RoleNotFound`].
    pub fn user_grant_role(&mut self, user: &str, role: &str) -> Result<()> {
        if !self.users.contains_key(user) {
            return Err(Error::UserNotFound);
        }
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(Error::RoleNotFound);
        }
        let roles = &mut self.users.get_mut(user).ok_or(Error::UserNotFound)?.roles;
        match roles.binary_search_by(|held| held.as_str().cmp(role)) {
            Ok(_) => return Ok(()),
            Err(at) => roles.insert(at, role.to_owned()),
        }
        self.commit();
        Ok(())
    }

    /// Revokes `role` from `user`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAuthMgmt`] for role `root` of user `root` while auth is enabled,
    /// [`Error::UserNotFound`], [`Error::RoleNotGranted`].
    pub fn user_revoke_role(&mut self, user: &str, role: &str) -> Result<()> {
        if self.enabled && user == ROOT && role == ROOT {
            return Err(Error::InvalidAuthMgmt);
        }
        let roles = &mut self.users.get_mut(user).ok_or(Error::UserNotFound)?.roles;
        let at = roles.binary_search_by(|held| held.as_str().cmp(role)).map_err(|_| Error::RoleNotGranted)?;
        roles.remove(at);
        self.commit();
        Ok(())
    }

    /// The roles of `name`, sorted.
    ///
    /// # Errors
    ///
    /// [`Error::UserNotFound`].
    pub fn user_get(&self, name: &str) -> Result<Vec<String>> {
        self.users.get(name).map(|user| user.roles.clone()).ok_or(Error::UserNotFound)
    }

    /// Every user name, sorted.
    pub fn user_list(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Whether `user` exists and holds `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users.get(user).is_some_and(|user| user.has_role(role))
    }

    // ---- Roles ----

    /// Adds a role without permissions.
    ///
    /// # Errors
    ///
    /// [`Error::RoleEmpty`] for an empty name, [`Error::RoleAlreadyExist`].
    pub fn role_add(&mut self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(Error::RoleAlreadyExist);
        }
        self.roles.insert(name.to_owned(), Role::default());
        self.commit();
        Ok(())
    }

    /// Deletes a role and revokes it from every user holding it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAuthMgmt`] for `root` while auth is enabled,
    /// [`Error::RoleNotFound`].
    pub fn role_delete(&mut self, name: &str) -> Result<()> {
        if self.enabled && name == ROOT {
            return Err(Error::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(Error::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.retain(|role| role != name);
        }
        self.commit();
        Ok(())
    }

    /// The permissions of role `name`, sorted by key. Role `root` shows its implicit
    /// grant of everything, as etcd shows it.
    ///
    /// # Errors
    ///
    /// [`Error::RoleNotFound`].
    pub fn role_get(&self, name: &str) -> Result<Vec<Permission>> {
        let role = self.roles.get(name).ok_or(Error::RoleNotFound)?;
        if name == ROOT {
            return Ok(vec![Permission::from_key(PermissionType::ReadWrite, Vec::new())]);
        }
        Ok(role.permissions.clone())
    }

    /// Every role name, sorted.
    pub fn role_list(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// Grants `permission` to `role`; a grant over the same key and range end replaces
    /// its type.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAuthMgmt`] for an empty key or a range end at or below the key
    /// (other than `"\0"`), [`Error::RoleNotFound`].
    pub fn role_grant_permission(&mut self, role: &str, permission: Permission) -> Result<()> {
        if !is_valid_permission_range(&permission.key, &permission.range_end) {
            return Err(Error::InvalidAuthMgmt);
        }
        let permissions = &mut self.roles.get_mut(role).ok_or(Error::RoleNotFound)?.permissions;
        let found = permissions.binary_search_by(|held| {
            (held.key.as_slice(), held.range_end.as_slice())
                .cmp(&(permission.key.as_slice(), permission.range_end.as_slice()))
        });
        match found {
            Ok(at) => permissions[at].perm_type = permission.perm_type,
            Err(at) => permissions.insert(at, permission),
        }
        self.commit();
        Ok(())
    }

    /// Revokes the grant over exactly `key` and `range_end` from `role`.
    ///
    /// # Errors
    ///
    /// [`Error::RoleNotFound`], [`Error::PermissionNotGranted`].
    pub fn role_revoke_permission(&mut self, role: &str, key: &[u8], range_end: &[u8]) -> Result<()> {
        let permissions = &mut self.roles.get_mut(role).ok_or(Error::RoleNotFound)?.permissions;
        let at = permissions
            .binary_search_by(|held| (held.key.as_slice(), held.range_end.as_slice()).cmp(&(key, range_end)))
            .map_err(|_| Error::PermissionNotGranted)?;
        permissions.remove(at);
        self.commit();
        Ok(())
    }

    // ---- Authentication ----

    /// Takes what checking `name`'s password needs, so that the bcrypt comparison can
    /// run after any lock around the store is released.
    ///
    /// # Errors
    ///
    /// [`Error::AuthNotEnabled`], [`Error::AuthFailed`] for an unknown user,
    /// [`Error::NoPasswordUser`] for a user without a password.
    pub fn password_check(&self, name: &str) -> Result<PasswordCheck> {
        if !self.enabled {
            return Err(Error::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(Error::AuthFailed)?;
        let hash = user.password.clone().ok_or(Error::NoPasswordUser)?;
        Ok(PasswordCheck { hash, revision: self.revision })
    }

    /// Issues a token to `name`, when the Authenticate entry proposed with `prefix`
    /// (from [`TokenProvider::token_prefix`]) is applied at raft index `index`. The
    /// password was checked before proposing.
    ///
    /// # Errors
    ///
    /// [`Error::AuthNotEnabled`], [`Error::AuthFailed`] when the user is gone or has no
    /// password, or the provider's error.
    pub fn authenticate(&self, name: &str, prefix: &str, index: u64) -> Result<String> {
        if !self.enabled {
            return Err(Error::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(Error::AuthFailed)?;
        if user.password.is_none() {
            return Err(Error::AuthFailed);
        }
        self.tokens.assign(prefix, name, self.revision, index)
    }

    /// Who sent a request with this metadata: `None` when auth is disabled or no token
    /// was sent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAuthToken`] for a token the provider does not accept.
    pub fn auth_info<'a>(
        &self,
        metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<AuthInfo>> {
        if !self.enabled {
            return Ok(None);
        }
        match token_from_metadata(metadata) {
            Some(token) => self.tokens.info(token, self.revision).map(Some).ok_or(Error::InvalidAuthToken),
            None => Ok(None),
        }
    }

    /// Who is calling, as etcd establishes it: the token's user, or else the verified
    /// client certificate's common name (etcd's `AuthInfoFromTLS`) at the current
    /// revision; `None` when auth is disabled or neither is given. `certificate_user`
    /// is the name the server took from the TLS connection, never from the client's
    /// metadata.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAuthToken`] for a token the provider does not accept.
    pub fn caller<'a>(
        &self,
        metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
        certificate_user: Option<&str>,
    ) -> Result<Option<AuthInfo>> {
        if let Some(info) = self.auth_info(metadata)? {
            return Ok(Some(info));
        }
        Ok(certificate_user.filter(|_| self.enabled).map(|name| AuthInfo::new(name, self.revision)))
    }

    // ---- Checks ----

    /// Whether `info` may access the key `key` (when `range_end` is empty) or the range
    /// `[key, range_end)` (`"\0"`: every key from `key` on).
    ///
    /// In etcd's order: allowed when auth is disabled; [`Error::UserEmpty`] without a
    /// user; [`Error::AuthOldRevision`] when `info` predates the store's revision;
    /// allowed for holders of role `root`; otherwise allowed only when the user's
    /// roles together cover the whole range, else [`Error::PermissionDenied`].
    ///
    /// # Errors
    ///
    /// As above.
    pub fn is_permitted(
        &self,
        info: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let info =
            info.filter(|info| !info.username.is_empty() && info.revision != 0).ok_or(Error::UserEmpty)?;
        if info.revision < self.revision {
            return Err(Error::AuthOldRevision);
        }
        let user = self.users.get(&info.username).ok_or(Error::PermissionDenied)?;
        if user.has_role(ROOT) {
            return Ok(());
        }
        match self.merged.get(&info.username) {
            Some(merged) if merged.allows(key, range_end, access) => Ok(()),
            _ => Err(Error::PermissionDenied),
        }
    }

    /// Whether `info` may change the auth store (or list users and roles): allowed when
    /// auth is disabled, else only for holders of role `root`.
    ///
    /// # Errors
    ///
    /// [`Error::UserEmpty`] without a user, [`Error::UserNotFound`],
    /// [`Error::PermissionDenied`].
    pub fn is_admin(&self, info: Option<&AuthInfo>) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let info = info.filter(|info| !info.username.is_empty()).ok_or(Error::UserEmpty)?;
        let user = self.users.get(&info.username).ok_or(Error::UserNotFound)?;
        if user.has_role(ROOT) { Ok(()) } else { Err(Error::PermissionDenied) }
    }
}

/// etcd's rule for a permission's range: a non-empty key, and a range end that is
/// empty (one key), `"\0"` (open-ended), or above the key.
fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || key < range_end)
}

impl Default for AuthStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Stores are equal when their state is: enabled flag, revision, users and roles.
impl PartialEq for AuthStore {
    fn eq(&self, other: &Self) -> bool {
        self.enabled == other.enabled
            && self.revision == other.revision
            && self.users == other.users
            && self.roles == other.roles
    }
}

impl Eq for AuthStore {}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthStore")
            .field("enabled", &self.enabled)
            .field("revision", &self.revision)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("roles", &self.roles.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_etcds() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn permission_ranges_follow_etcds_rule() {
        assert!(is_valid_permission_range(b"a", b""));
        assert!(is_valid_permission_range(b"a", b"\0"));
        assert!(is_valid_permission_range(b"a", b"b"));
        assert!(!is_valid_permission_range(b"", b"b"));
        assert!(!is_valid_permission_range(b"b", b"a"));
        assert!(!is_valid_permission_range(b"a", b"a"));
    }
}
