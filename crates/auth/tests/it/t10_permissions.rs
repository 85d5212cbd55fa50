use cairn_auth::{Access, AuthInfo, AuthStore, Error, Permission, PermissionType, UserPassword};

use crate::support::store_with_root;

/// An enabled store with user `u` holding roles `a` and `b`, each with `grants`.
fn store(grants_a: &[Permission], grants_b: &[Permission]) -> AuthStore {
    let mut store = store_with_root();
    store.user_add("u", UserPassword::NoPassword).unwrap();
    for (role, grants) in [("a", grants_a), ("b", grants_b)] {
        store.role_add(role).unwrap();
        for grant in grants {
            store.role_grant_permission(role, grant.clone()).unwrap();
        }
        store.user_grant_role("u", role).unwrap();
    }
    store.enable().unwrap();
    store
}

fn check(store: &AuthStore, key: &[u8], range_end: &[u8], access: Access) -> Result<(), Error> {
    store.is_permitted(Some(&AuthInfo::new("u", store.revision())), key, range_end, access)
}

use PermissionType::{Read, ReadWrite, Write};

#[test]
fn exact_key_grant_covers_only_that_key() {
    let store = store(&[Permission::key(Read, "k")], &[]);
    assert_eq!(check(&store, b"k", b"", Access::Read), Ok(()));
    assert_eq!(check(&store, b"k", b"", Access::Write), Err(Error::PermissionDenied));
    assert_eq!(check(&store, b"k0", b"", Access::Read), Err(Error::PermissionDenied));
    assert_eq!(check(&store, b"j", b"", Access::Read), Err(Error::PermissionDenied));
    // The range [k, k\0) holds exactly k.
    assert_eq!(check(&store, b"k", b"k\0", Access::Read), Ok(()));
    assert_eq!(check(&store, b"k", b"l", Access::Read), Err(Error::PermissionDenied));
}

#[test]
fn prefix_grant_covers_keys_and_ranges_inside_it() {
    let store = store(&[Permission::prefix(ReadWrite, "/app/")], &[]);
    for access in [Access::Read, Access::Write] {
        assert_eq!(check(&store, b"/app/", b"", access), Ok(()));
        assert_eq!(check(&store, b"/app/x/y", b"", access), Ok(()));
        assert_eq!(check(&store, b"/app/", b"/app0", access), Ok(()), "the whole prefix");
        assert_eq!(check(&store, b"/app/a", b"/app/b", access), Ok(()));
        assert_eq!(check(&store, b"/app", b"", access), Err(Error::PermissionDenied));
        assert_eq!(check(&store, b"/app0", b"", access), Err(Error::PermissionDenied));
        assert_eq!(
            check(&store, b"/app/", b"/app1", access),
            Err(Error::PermissionDenied),
            "past the prefix"
        );
        assert_eq!(check(&store, b"/app/", b"\0", access), Err(Error::PermissionDenied), "open-ended");
    }
}

#[test]
fn open_ended_grant_covers_everything_from_its_key() {
    let store = store(&[Permission::from_key(Write, "m")], &[]);
    assert_eq!(check(&store, b"m", b"", Access::Write), Ok(()));
    assert_eq!(check(&store, b"zzzz", b"", Access::Write), Ok(()));
    assert_eq!(check(&store, b"m", b"\0", Access::Write), Ok(()));
    assert_eq!(check(&store, b"x", b"\0", Access::Write), Ok(()));
    assert_eq!(check(&store, b"l", b"\0", Access::Write), Err(Error::PermissionDenied));
    assert_eq!(check(&store, b"l", b"", Access::Write), Err(Error::PermissionDenied));
    assert_eq!(check(&store, b"m", b"", Access::Read), Err(Error::PermissionDenied));
}

#[test]
fn explicit_range_grant_is_half_open() {
    let store = store(&[Permission::new(Read, "b", "d")], &[]);
    assert_eq!(check(&store, b"b", b"d", Access::Read), Ok(()));
    assert_eq!(check(&store, b"c", b"", Access::Read), Ok(()));
    assert_eq!(check(&store, b"d", b"", Access::Read), Err(Error::PermissionDenied));
    assert_eq!(check(&store, b"a", b"c", Access::Read), Err(Error::PermissionDenied));
    assert_eq!(check(&store, b"b", b"e", Access::Read), Err(Error::PermissionDenied));
    // An empty or inverted range is not covered, as in etcd.
    assert_eq!(check(&store, b"c", b"b", Access::Read), Err(Error::PermissionDenied));
}

#[test]
fn overlapping_and_adjacent_grants_from_two_roles_merge() {
    let store = store(
        &[Permission::new(Read, "a", "c"), Permission::new(ReadWrite, "x", "y")],
        &[Permission::new(Read, "b", "e"), Permission::new(Read, "e", "g"), Permission::key(Write, "x\0")],
    );
    // [a,c) ∪ [b,e) ∪ [e,g) = [a,g) for reading.
    assert_eq!(check(&store, b"a", b"g", Access::Read), Ok(()));
    assert_eq!(check(&store, b"c", b"f", Access::Read), Ok(()));
    assert_eq!(check(&store, b"a", b"g\0", Access::Read), Err(Error::PermissionDenied));
    assert_eq!(check(&store, b"a", b"c", Access::Write), Err(Error::PermissionDenied));
    // Write on [x,y) from role a and the point x\0 from role b.
    assert_eq!(check(&store, b"x", b"y", Access::Write), Ok(()));
    assert_eq!(check(&store, b"x\0", b"", Access::Write), Ok(()));
}

#[test]
fn a_gap_between_grants_is_not_covered() {
    let store = store(&[Permission::new(Read, "a", "b")], &[Permission::new(Read, "c", "d")]);
    assert_eq!(check(&store, b"a", b"b", Access::Read), Ok(()));
    assert_eq!(check(&store, b"c", b"d", Access::Read), Ok(()));
    assert_eq!(check(&store, b"a", b"d", Access::Read), Err(Error::PermissionDenied));
    assert_eq!(check(&store, b"b", b"", Access::Read), Err(Error::PermissionDenied));
}

#[test]
fn revoking_a_grant_takes_effect_at_the_next_revision() {
    let mut store = store(&[Permission::prefix(Read, "p/")], &[]);
    let before = AuthInfo::new("u", store.revision());
    assert_eq!(store.is_permitted(Some(&before), b"p/1", b"", Access::Read), Ok(()));
    store.role_revoke_permission("a", b"p/", b"p0").unwrap();
    // The old info is stale, and a fresh one has lost the grant.
    assert_eq!(store.is_permitted(Some(&before), b"p/1", b"", Access::Read), Err(Error::AuthOldRevision));
    assert_eq!(check(&store, b"p/1", b"", Access::Read), Err(Error::PermissionDenied));
}

#[test]
fn revoking_a_role_or_deleting_it_removes_its_grants() {
    let mut store = store(&[Permission::key(Read, "k")], &[Permission::key(Read, "l")]);
    store.user_revoke_role("u", "a").unwrap();
    assert_eq!(check(&store, b"k", b"", Access::Read), Err(Error::PermissionDenied));
    assert_eq!(check(&store, b"l", b"", Access::Read), Ok(()));
    store.role_delete("b").unwrap();
    assert_eq!(check(&store, b"l", b"", Access::Read), Err(Error::PermissionDenied));
    assert_eq!(store.user_get("u").unwrap(), Vec::<String>::new());
}

#[test]
fn regranting_the_same_range_replaces_its_type() {
    let mut store = store(&[Permission::key(Read, "k")], &[]);
    store.role_grant_permission("a", Permission::key(Write, "k")).unwrap();
    assert_eq!(store.role_get("a").unwrap(), [Permission::key(Write, "k")]);
    assert_eq!(check(&store, b"k", b"", Access::Read), Err(Error::PermissionDenied));
    assert_eq!(check(&store, b"k", b"", Access::Write), Ok(()));
}

#[test]
fn checks_run_in_etcds_order() {
    let mut store = store(&[], &[]);
    let revision = store.revision();
    // Root is allowed everywhere, without grants.
    assert_eq!(
        store.is_permitted(Some(&AuthInfo::new("root", revision)), b"any", b"\0", Access::Write),
        Ok(())
    );
    // No user, an empty name or revision 0: user name is empty.
    assert_eq!(store.is_permitted(None, b"k", b"", Access::Read), Err(Error::UserEmpty));
    assert_eq!(
        store.is_permitted(Some(&AuthInfo::new("", revision)), b"k", b"", Access::Read),
        Err(Error::UserEmpty)
    );
    assert_eq!(
        store.is_permitted(Some(&AuthInfo::new("u", 0)), b"k", b"", Access::Read),
        Err(Error::UserEmpty)
    );
    // Old revision before role: even root is refused with a stale token.
    let stale = AuthInfo::new("root", revision - 1);
    assert_eq!(store.is_permitted(Some(&stale), b"k", b"", Access::Read), Err(Error::AuthOldRevision));
    assert_eq!(Error::AuthOldRevision.to_string(), "etcdserver: revision of auth store is old");
    // An unknown user is denied.
    let ghost = AuthInfo::new("ghost", revision);
    assert_eq!(store.is_permitted(Some(&ghost), b"k", b"", Access::Read), Err(Error::PermissionDenied));
    // Disabled: everything is allowed, even anonymously.
    store.disable();
    assert_eq!(store.is_permitted(None, b"k", b"", Access::Write), Ok(()));
    assert_eq!(store.is_admin(None), Ok(()));
}

#[test]
fn only_root_is_admin() {
    let store = store(&[Permission::from_key(ReadWrite, "\0")], &[]);
    let revision = store.revision();
    assert_eq!(store.is_admin(Some(&AuthInfo::new("root", revision))), Ok(()));
    assert_eq!(store.is_admin(Some(&AuthInfo::new("u", revision))), Err(Error::PermissionDenied));
    assert_eq!(store.is_admin(Some(&AuthInfo::new("ghost", revision))), Err(Error::UserNotFound));
    assert_eq!(store.is_admin(None), Err(Error::UserEmpty));
    assert!(store.has_role("u", "a"));
    assert!(!store.has_role("u", "root"));
}

#[test]
fn error_texts_and_codes_are_etcds() {
    assert_eq!(Error::PermissionDenied.to_string(), "etcdserver: permission denied");
    assert_eq!(Error::PermissionDenied.grpc_code(), 7);
    assert_eq!(Error::UserEmpty.to_string(), "etcdserver: user name is empty");
    assert_eq!(Error::UserEmpty.grpc_code(), 3);
    assert_eq!(Error::InvalidAuthToken.to_string(), "etcdserver: invalid auth token");
    assert_eq!(Error::InvalidAuthToken.grpc_code(), 16);
    assert_eq!(Error::AuthOldRevision.grpc_code(), 3);
    assert_eq!(Error::RoleNotFound.grpc_code(), 9);
}
