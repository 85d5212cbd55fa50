//! etcd's auth requests applied to the store: who may make them, and what a write
//! needs permission for.

use cairn_api::authpb;
use cairn_api::etcdserverpb::request_op::Request as Op;
use cairn_api::etcdserverpb::{
    AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthUserAddRequest, AuthUserGetRequest, Compare,
    InternalRaftRequest, PutRequest, RequestOp, TxnRequest,
};
use cairn_auth::etcd::{self, AuthApplied};
use cairn_auth::{AuthInfo, AuthStore, Error, Permission, PermissionType, ROOT, UserPassword};

/// Auth enabled: root, and alice with role `app`, which may read and write `app/`.
fn store() -> AuthStore {
    let mut store = AuthStore::new();
    store.user_add(ROOT, UserPassword::NoPassword).unwrap();
    store.user_grant_role(ROOT, ROOT).unwrap();
    store.user_add("alice", UserPassword::NoPassword).unwrap();
    store.role_add("app").unwrap();
    store.role_grant_permission("app", Permission::new(PermissionType::ReadWrite, "app/", "app0")).unwrap();
    store.user_grant_role("alice", "app").unwrap();
    store.enable().unwrap();
    store
}

fn as_user(store: &AuthStore, name: &str) -> AuthInfo {
    AuthInfo::new(name, store.revision())
}

fn put(key: &str, prev_kv: bool) -> PutRequest {
    PutRequest { key: key.into(), prev_kv, ..PutRequest::default() }
}

#[test]
fn writes_need_write_access_and_what_they_read_needs_read_access() {
    let mut store = store();
    store.role_add("writer").unwrap();
    store.role_grant_permission("writer", Permission::new(PermissionType::Write, "w/", "w0")).unwrap();
    store.user_add("bob", UserPassword::NoPassword).unwrap();
    store.user_grant_role("bob", "writer").unwrap();
    let (alice, bob) = (as_user(&store, "alice"), as_user(&store, "bob"));
    let request = |put: PutRequest| InternalRaftRequest { put: Some(put), ..Default::default() };

    assert_eq!(etcd::check_write(&store, &alice, &request(put("app/x", true))), Ok(()));
    assert_eq!(
        etcd::check_write(&store, &alice, &request(put("other", false))),
        Err(Error::PermissionDenied)
    );
    assert_eq!(etcd::check_write(&store, &bob, &request(put("w/x", false))), Ok(()));
    assert_eq!(
        etcd::check_write(&store, &bob, &request(put("w/x", true))),
        Err(Error::PermissionDenied),
        "prev_kv reads"
    );
    // A txn needs read access to what it compares, in every branch.
    let txn = TxnRequest {
        compare: vec![Compare { key: b"w/x".to_vec(), ..Compare::default() }],
        success: vec![RequestOp { request: Some(Op::RequestPut(put("w/x", false))) }],
        failure: Vec::new(),
    };
    let txn = InternalRaftRequest { txn: Some(txn), ..Default::default() };
    assert_eq!(etcd::check_write(&store, &bob, &txn), Err(Error::PermissionDenied));
    assert_eq!(
        etcd::check_lease_keys(&store, &bob, &[b"w/a".to_vec(), b"app/b".to_vec()]),
        Err(Error::PermissionDenied)
    );
}

#[test]
fn auth_requests_need_root_except_reading_ones_own_user_and_roles() {
    let mut store = store();
    let alice = as_user(&store, "alice");
    let add = InternalRaftRequest {
        auth_user_add: Some(AuthUserAddRequest { name: "carol".into(), ..Default::default() }),
        ..Default::default()
    };
    assert!(etcd::is_auth_request(&add));
    assert_eq!(etcd::apply(&mut store, &alice, &add, 10), Some(Err(Error::PermissionDenied)));
    let root = as_user(&store, ROOT);
    assert_eq!(etcd::apply(&mut store, &root, &add, 11), Some(Ok(AuthApplied::Done)));

    let alice = as_user(&store, "alice");
    let get_self = InternalRaftRequest {
        auth_user_get: Some(AuthUserGetRequest { name: "alice".into() }),
        ..Default::default()
    };
    assert_eq!(
        etcd::apply(&mut store, &alice, &get_self, 12),
        Some(Ok(AuthApplied::Roles(vec!["app".into()])))
    );
    let get_role = InternalRaftRequest {
        auth_role_get: Some(AuthRoleGetRequest { role: "app".into() }),
        ..Default::default()
    };
    let wire = authpb::Permission {
        perm_type: PermissionType::ReadWrite as i32,
        key: b"app/".to_vec(),
        range_end: b"app0".to_vec(),
    };
    assert_eq!(
        etcd::apply(&mut store, &alice, &get_role, 13),
        Some(Ok(AuthApplied::Permissions(vec![wire])))
    );

    let no_perm = InternalRaftRequest {
        auth_role_grant_permission: Some(AuthRoleGrantPermissionRequest { name: "app".into(), perm: None }),
        ..Default::default()
    };
    let root = as_user(&store, ROOT);
    assert_eq!(etcd::apply(&mut store, &root, &no_perm, 14), Some(Err(Error::PermissionNotGiven)));
    let put = InternalRaftRequest { put: Some(put("app/x", false)), ..Default::default() };
    assert!(!etcd::is_auth_request(&put));
    assert_eq!(etcd::apply(&mut store, &root, &put, 15), None);
}
