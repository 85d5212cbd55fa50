use cairn_auth::{AuthStore, Error, Permission, PermissionType, ROOT, UserPassword};

use crate::support::store_with_root;

#[test]
fn a_new_store_is_disabled_at_revision_one() {
    let store = AuthStore::new();
    assert!(!store.is_enabled());
    assert_eq!(store.revision(), 1);
    assert!(store.user_list().is_empty());
}

#[test]
fn enabling_needs_root_user_holding_root_role() {
    let mut store = AuthStore::new();
    assert_eq!(store.enable(), Err(Error::RootUserNotExist));
    assert_eq!(Error::RootUserNotExist.to_string(), "etcdserver: root user does not exist");
    store.user_add(ROOT, UserPassword::NoPassword).unwrap();
    assert_eq!(store.enable(), Err(Error::RootRoleNotExist));
    assert_eq!(Error::RootRoleNotExist.to_string(), "etcdserver: root user does not have root role");
    // Role root may be granted before it is created, as in etcd.
    store.user_grant_role(ROOT, ROOT).unwrap();
    store.enable().unwrap();
    assert!(store.is_enabled());
}

#[test]
fn every_mutation_bumps_the_revision_and_no_op_changes_do_not() {
    let mut store = store_with_root();
    let mut last = store.revision();
    let mut bumped = |store: &AuthStore, what: &str| {
        assert_eq!(store.revision(), last + 1, "{what} bumps the revision");
        last = store.revision();
    };
    store.user_add("u", UserPassword::Hashed("h".into())).unwrap();
    bumped(&store, "user_add");
    store.role_add("r").unwrap();
    bumped(&store, "role_add");
    store.role_grant_permission("r", Permission::key(PermissionType::Read, "k")).unwrap();
    bumped(&store, "role_grant_permission");
    store.user_grant_role("u", "r").unwrap();
    bumped(&store, "user_grant_role");
    store.user_change_password("u", UserPassword::Hashed("h2".into())).unwrap();
    bumped(&store, "user_change_password");
    store.enable().unwrap();
    bumped(&store, "enable");
    store.role_revoke_permission("r", b"k", b"").unwrap();
    bumped(&store, "role_revoke_permission");
    store.user_revoke_role("u", "r").unwrap();
    bumped(&store, "user_revoke_role");
    store.role_delete("r").unwrap();
    bumped(&store, "role_delete");
    store.user_delete("u").unwrap();
    bumped(&store, "user_delete");
    store.disable();
    bumped(&store, "disable");

    // Changes that change nothing, and failures, leave the revision alone.
    store.disable();
    store.user_grant_role(ROOT, ROOT).unwrap();
    assert_eq!(store.user_add(ROOT, UserPassword::NoPassword), Err(Error::UserAlreadyExist));
    assert_eq!(store.revision(), last);
    store.enable().unwrap();
    store.enable().unwrap();
    assert_eq!(store.revision(), last + 1);
}

#[test]
fn root_is_protected_while_auth_is_enabled() {
    let mut store = store_with_root();
    store.enable().unwrap();
    assert_eq!(store.user_delete(ROOT), Err(Error::InvalidAuthMgmt));
    assert_eq!(store.user_revoke_role(ROOT, ROOT), Err(Error::InvalidAuthMgmt));
    assert_eq!(store.role_delete(ROOT), Err(Error::InvalidAuthMgmt));
    assert_eq!(Error::InvalidAuthMgmt.to_string(), "etcdserver: invalid auth management");
    assert!(store.has_role(ROOT, ROOT));

    // Once disabled, root may be changed like anyone else.
    store.disable();
    store.user_revoke_role(ROOT, ROOT).unwrap();
    store.role_delete(ROOT).unwrap();
    store.user_delete(ROOT).unwrap();
    assert!(store.user_list().is_empty());
}

#[test]
fn user_rules_and_texts() {
    let mut store = store_with_root();
    assert_eq!(store.user_add("", UserPassword::NoPassword), Err(Error::UserEmpty));
    assert_eq!(store.user_add(ROOT, UserPassword::NoPassword), Err(Error::UserAlreadyExist));
    assert_eq!(Error::UserAlreadyExist.to_string(), "etcdserver: user name already exists");
    assert_eq!(store.user_delete("ghost"), Err(Error::UserNotFound));
    assert_eq!(Error::UserNotFound.to_string(), "etcdserver: user name not found");
    assert_eq!(store.user_change_password("ghost", UserPassword::NoPassword), Err(Error::UserNotFound));
    assert_eq!(store.user_get("ghost"), Err(Error::UserNotFound));
    assert_eq!(store.user_grant_role("ghost", ROOT), Err(Error::UserNotFound));
    assert_eq!(store.user_revoke_role("ghost", ROOT), Err(Error::UserNotFound));

    store.user_add("u", UserPassword::NoPassword).unwrap();
    assert_eq!(store.user_grant_role("u", "nope"), Err(Error::RoleNotFound));
    assert_eq!(store.user_revoke_role("u", ROOT), Err(Error::RoleNotGranted));
    assert_eq!(Error::RoleNotGranted.to_string(), "etcdserver: role is not granted to the user");

    store.role_add("b").unwrap();
    store.role_add("a").unwrap();
    store.user_grant_role("u", "b").unwrap();
    store.user_grant_role("u", "a").unwrap();
    assert_eq!(store.user_get("u").unwrap(), ["a", "b"], "roles are kept sorted");
    assert_eq!(store.user_list(), ["root", "u"]);
}

#[test]
fn role_rules_and_texts() {
    let mut store = store_with_root();
    assert_eq!(store.role_add(""), Err(Error::RoleEmpty));
    assert_eq!(Error::RoleEmpty.to_string(), "etcdserver: role name is empty");
    assert_eq!(store.role_add(ROOT), Err(Error::RoleAlreadyExist));
    assert_eq!(Error::RoleAlreadyExist.to_string(), "etcdserver: role name already exists");
    assert_eq!(store.role_delete("nope"), Err(Error::RoleNotFound));
    assert_eq!(Error::RoleNotFound.to_string(), "etcdserver: role name not found");
    assert_eq!(store.role_get("nope"), Err(Error::RoleNotFound));
    let grant = Permission::key(PermissionType::Read, "k");
    assert_eq!(store.role_grant_permission("nope", grant), Err(Error::RoleNotFound));
    assert_eq!(store.role_revoke_permission("nope", b"k", b""), Err(Error::RoleNotFound));

    store.role_add("r").unwrap();
    assert_eq!(store.role_revoke_permission("r", b"k", b""), Err(Error::PermissionNotGranted));
    assert_eq!(Error::PermissionNotGranted.to_string(), "etcdserver: permission is not granted to the role");
    // Invalid ranges: empty key, end below or at the key.
    for (key, end) in [("", ""), ("b", "a"), ("b", "b")] {
        let invalid = Permission::new(PermissionType::Read, key, end);
        assert_eq!(
            store.role_grant_permission("r", invalid),
            Err(Error::InvalidAuthMgmt),
            "{key:?}..{end:?}"
        );
    }
    store.role_grant_permission("r", Permission::key(PermissionType::Write, "z")).unwrap();
    store.role_grant_permission("r", Permission::prefix(PermissionType::Read, "a")).unwrap();
    store.role_grant_permission("r", Permission::from_key(PermissionType::ReadWrite, "m")).unwrap();
    assert_eq!(
        store.role_get("r").unwrap(),
        [
            Permission::new(PermissionType::Read, "a", "b"),
            Permission::new(PermissionType::ReadWrite, "m", "\0"),
            Permission::new(PermissionType::Write, "z", ""),
        ],
        "sorted by key"
    );
    // Root shows its implicit grant over every key.
    assert_eq!(store.role_get(ROOT).unwrap(), [Permission::new(PermissionType::ReadWrite, "", "\0")]);
    assert_eq!(store.role_list(), ["r", "root"]);
}
