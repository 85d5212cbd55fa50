use std::sync::Arc;

use cairn_auth::{
    Access, AuthInfo, AuthStore, Error, Permission, PermissionType, ROOT, SimpleTokens, UserPassword,
};

use crate::support::store_with_root;

fn populated() -> AuthStore {
    let mut store = store_with_root();
    store.user_add("alice", UserPassword::Hashed("$2b$04$hash".into())).unwrap();
    store.user_add("bot", UserPassword::NoPassword).unwrap();
    store.role_add("reader").unwrap();
    store.role_add("writer").unwrap();
    store.role_grant_permission("reader", Permission::prefix(PermissionType::Read, "/a/")).unwrap();
    store.role_grant_permission("reader", Permission::from_key(PermissionType::Read, "z")).unwrap();
    store.role_grant_permission("writer", Permission::key(PermissionType::Write, "/a/x")).unwrap();
    store.user_grant_role("alice", "reader").unwrap();
    store.user_grant_role("alice", "writer").unwrap();
    store.user_grant_role("bot", "writer").unwrap();
    store.enable().unwrap();
    store
}

#[test]
fn restore_gives_an_equal_store_that_answers_the_same() {
    let store = populated();
    let restored = AuthStore::restore(&store.snapshot(), Arc::new(SimpleTokens::default())).unwrap();
    assert_eq!(restored, store);
    assert!(restored.is_enabled());
    assert_eq!(restored.revision(), store.revision());
    assert_eq!(restored.user_list(), store.user_list());
    assert_eq!(restored.role_get("reader"), store.role_get("reader"));
    assert_eq!(restored.user_get("alice"), store.user_get("alice"));
    let alice = AuthInfo::new("alice", store.revision());
    for (key, end, access) in [
        (&b"/a/1"[..], &b""[..], Access::Read),
        (b"/a/x", b"", Access::Write),
        (b"/a/y", b"", Access::Write),
        (b"zz", b"\0", Access::Read),
    ] {
        assert_eq!(
            restored.is_permitted(Some(&alice), key, end, access),
            store.is_permitted(Some(&alice), key, end, access)
        );
    }
    // The password hash and the no-password flag survive.
    assert_eq!(restored.password_check("bot").unwrap_err(), Error::NoPasswordUser);
    assert_eq!(restored.password_check("alice").unwrap().revision(), store.revision());
    // And it snapshots to the same bytes.
    assert_eq!(restored.snapshot(), store.snapshot());
}

#[test]
fn a_snapshot_of_a_new_store_restores_to_a_new_store() {
    let store = AuthStore::new();
    let restored = AuthStore::restore(&store.snapshot(), Arc::new(SimpleTokens::default())).unwrap();
    assert_eq!(restored, store);
    assert_eq!(restored.revision(), 1);
}

#[test]
fn mutations_after_restore_continue_the_revision() {
    let mut store = populated();
    let mut restored = AuthStore::restore(&store.snapshot(), Arc::new(SimpleTokens::default())).unwrap();
    for copy in [&mut store, &mut restored] {
        copy.user_revoke_role("alice", "writer").unwrap();
        assert_eq!(copy.user_delete(ROOT), Err(Error::InvalidAuthMgmt));
    }
    assert_eq!(restored, store);
}

#[test]
fn garbage_is_not_a_snapshot() {
    let error = AuthStore::restore(b"\xff\xff\xff", Arc::new(SimpleTokens::default())).unwrap_err();
    assert!(matches!(error, Error::InvalidSnapshot(_)), "{error}");
}
