//! etcd's auth model on its own: users, roles and key-range permissions, a login that
//! issues a token, checks of what the token's holder may touch, a stale identity
//! refused after a change, and a snapshot that restores an equal store.
//!
//! Run with `cargo run -p cairn-auth --example rbac`.

use std::sync::Arc;

use cairn_auth::{
    Access, AuthStore, Error, MIN_BCRYPT_COST, Permission, PermissionType, ROOT, SimpleTokens, UserPassword,
    hash_password, simple_token_index,
};

fn main() -> Result<(), Error> {
    let mut store = AuthStore::new();

    // Auth can be enabled only once user root holds role root, so nobody is locked out.
    store.user_add(ROOT, UserPassword::NoPassword)?;
    assert_eq!(store.enable(), Err(Error::RootRoleNotExist));
    store.role_add(ROOT)?;
    store.user_grant_role(ROOT, ROOT)?;

    // A server hashes the password before proposing it; the lowest cost keeps this fast.
    store.user_add("app", UserPassword::Hashed(hash_password("s3cret", MIN_BCRYPT_COST)?))?;
    store.role_add("app-rw")?;
    store.role_grant_permission("app-rw", Permission::prefix(PermissionType::ReadWrite, "/app/"))?;
    store.role_add("config-ro")?;
    store.role_grant_permission("config-ro", Permission::key(PermissionType::Read, "/config"))?;
    store.user_grant_role("app", "app-rw")?;
    store.user_grant_role("app", "config-ro")?;
    store.enable()?;
    println!("auth enabled at revision {}; users {:?}", store.revision(), store.user_list());

    // Login: check the password (slow, outside any lock), then issue the token when the
    // Authenticate request is applied, here at raft index 42.
    let check = store.password_check("app")?;
    assert_eq!(check.verify("wrong"), Err(Error::AuthFailed));
    check.verify("s3cret")?;
    let token = store.authenticate("app", &store.tokens().token_prefix(), 42)?;
    assert_eq!(simple_token_index(&token), Some(42));

    // Each request carries the token in its metadata.
    let bearer = format!("Bearer {token}");
    let info = store.auth_info([("authorization", bearer.as_str())])?.expect("a token was sent");
    println!("the token stands for {:?} at revision {}", info.username, info.revision);
    assert_eq!(store.auth_info([("token", "forged.42")]), Err(Error::InvalidAuthToken));

    // An empty range end means one key; "\0" means every key from `key` on.
    let check = |what: &str, key: &[u8], range_end: &[u8], access: Access, allowed: bool| {
        let outcome = store.is_permitted(Some(&info), key, range_end, access);
        match &outcome {
            Ok(()) => println!("  {what:<20} allowed"),
            Err(error) => println!("  {what:<20} {error} (gRPC code {})", error.grpc_code()),
        }
        assert_eq!(outcome.is_ok(), allowed, "{what}");
    };
    check("write /app/config", b"/app/config", b"", Access::Write, true);
    check("read [/app/, /app0)", b"/app/", b"/app0", Access::Read, true);
    check("read /config", b"/config", b"", Access::Read, true);
    check("write /config", b"/config", b"", Access::Write, false);
    check("read /app/ onwards", b"/app/", b"\0", Access::Read, false);
    check("read /other", b"/other", b"", Access::Read, false);
    assert_eq!(store.is_permitted(None, b"/app/x", b"", Access::Read), Err(Error::UserEmpty));

    // Any change bumps the revision: an identity established before it is refused, and
    // the caller authenticates again.
    store.role_revoke_permission("config-ro", b"/config", b"")?;
    let stale = store.is_permitted(Some(&info), b"/app/config", b"", Access::Read);
    println!("after a revoke (revision {}): {}", store.revision(), stale.clone().unwrap_err());
    assert_eq!(stale, Err(Error::AuthOldRevision));
    let fresh = store.auth_info([("token", token.as_str())])?.expect("a token was sent");
    assert!(store.is_permitted(Some(&fresh), b"/app/config", b"", Access::Read).is_ok());
    assert_eq!(store.is_permitted(Some(&fresh), b"/config", b"", Access::Read), Err(Error::PermissionDenied));

    // A snapshot restores an equal store; simple tokens are not part of it.
    let snapshot = store.snapshot();
    let restored = AuthStore::restore(&snapshot, Arc::new(SimpleTokens::default()))?;
    assert_eq!(restored, store);
    assert_eq!(restored.auth_info([("token", token.as_str())]), Err(Error::InvalidAuthToken));
    println!("snapshot of {} bytes restores an equal store; the old token must log in again", snapshot.len());
    Ok(())
}
