use std::sync::Arc;
use std::time::Duration;

use cairn_auth::{
    AuthInfo, AuthStore, DEFAULT_SIMPLE_TOKEN_TTL, Error, ROOT, SimpleTokens, TokenProvider, UserPassword,
    hash_password, simple_token_index, token_from_metadata,
};

use crate::support::clock;

#[test]
fn token_is_taken_from_token_then_authorization_metadata() {
    assert_eq!(token_from_metadata([("token", "t1"), ("authorization", "t2")]), Some("t1"));
    assert_eq!(token_from_metadata([("authorization", "t2"), ("token", "t1")]), Some("t1"));
    assert_eq!(token_from_metadata([("authorization", "Bearer t2")]), Some("t2"));
    assert_eq!(token_from_metadata([("token", "Bearer t1")]), Some("t1"));
    assert_eq!(token_from_metadata([("authorization", "Basic t2")]), Some("Basic t2"));
    assert_eq!(token_from_metadata([("user-agent", "x")]), None);
    assert_eq!(token_from_metadata(std::iter::empty()), None);
}

#[test]
fn simple_tokens_have_etcds_shape() {
    let tokens = SimpleTokens::default();
    let prefix = tokens.token_prefix();
    assert_eq!(prefix.len(), 16);
    assert!(prefix.bytes().all(|byte| byte.is_ascii_alphabetic()));
    assert_ne!(prefix, tokens.token_prefix(), "prefixes are random");
    let token = tokens.assign(&prefix, "alice", 7, 42).unwrap();
    assert_eq!(token, format!("{prefix}.42"));
    assert_eq!(simple_token_index(&token), Some(42));
    assert_eq!(simple_token_index("short.42"), None);
    assert_eq!(simple_token_index("abcdefghijklmnop"), None);
    assert_eq!(tokens.assign("", "alice", 7, 42), Err(Error::InvalidAuthToken));
    assert_eq!(DEFAULT_SIMPLE_TOKEN_TTL, Duration::from_secs(300));
}

#[test]
fn simple_tokens_expire_after_their_ttl_and_each_use_refreshes_it() {
    let clock = clock();
    let tokens = SimpleTokens::new(clock.clone(), Duration::from_secs(300));
    let token = tokens.assign("abcdefghijklmnop", "alice", 1, 9).unwrap();
    // The info carries the store's current revision, not the one at issue.
    assert_eq!(tokens.info(&token, 5), Some(AuthInfo::new("alice", 5)));

    clock.advance(Duration::from_secs(299));
    assert!(tokens.info(&token, 5).is_some(), "used at 299 s, so it lives until 599 s");
    clock.advance(Duration::from_secs(299));
    assert!(tokens.info(&token, 5).is_some(), "used at 598 s");
    clock.advance(Duration::from_secs(300));
    assert_eq!(tokens.info(&token, 5), None, "300 s without use");
    assert!(tokens.is_empty(), "an expired token found is dropped");
}

#[test]
fn sweeping_drops_only_expired_tokens() {
    let clock = clock();
    let tokens = SimpleTokens::new(clock.clone(), Duration::from_secs(10));
    let old = tokens.assign("aaaaaaaaaaaaaaaa", "alice", 1, 1).unwrap();
    clock.advance(Duration::from_secs(6));
    let young = tokens.assign("bbbbbbbbbbbbbbbb", "bob", 1, 2).unwrap();
    clock.advance(Duration::from_secs(5));
    tokens.sweep_expired();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens.info(&old, 1), None);
    assert_eq!(tokens.info(&young, 1), Some(AuthInfo::new("bob", 1)));
}

/// A store with users root and alice (password "secret"), auth enabled, on a manual
/// clock with a 300 s token TTL.
fn enabled_store() -> (AuthStore, Arc<cairn_auth::ManualClock>) {
    let clock = clock();
    let mut store =
        AuthStore::with_tokens(Arc::new(SimpleTokens::new(clock.clone(), Duration::from_secs(300))));
    store.user_add(ROOT, UserPassword::Hashed(hash_password("rootpw", 4).unwrap())).unwrap();
    store.user_grant_role(ROOT, ROOT).unwrap();
    store.user_add("alice", UserPassword::Hashed(hash_password("secret", 4).unwrap())).unwrap();
    store.enable().unwrap();
    (store, clock)
}

fn login(store: &AuthStore, user: &str, password: &str, index: u64) -> Result<String, Error> {
    let revision = store.password_check(user)?.verify(password)?;
    assert_eq!(revision, store.revision());
    let prefix = store.tokens().token_prefix();
    store.authenticate(user, &prefix, index)
}

#[test]
fn the_store_resolves_tokens_from_metadata() {
    let (store, clock) = enabled_store();
    let token = login(&store, "alice", "secret", 10).unwrap();
    let info = store.auth_info([("token", token.as_str())]).unwrap();
    assert_eq!(info, Some(AuthInfo::new("alice", store.revision())));
    let bearer = format!("Bearer {token}");
    assert_eq!(store.auth_info([("authorization", bearer.as_str())]).unwrap(), info);
    assert_eq!(store.auth_info(std::iter::empty()), Ok(None), "no token, no info");
    assert_eq!(store.auth_info([("token", "nope.1")]), Err(Error::InvalidAuthToken));
    clock.advance(Duration::from_secs(300));
    assert_eq!(store.auth_info([("token", token.as_str())]), Err(Error::InvalidAuthToken), "expired");
}

#[test]
fn deleting_a_user_or_changing_their_password_invalidates_their_tokens() {
    let (mut store, _clock) = enabled_store();
    let alice = login(&store, "alice", "secret", 10).unwrap();
    let root = login(&store, ROOT, "rootpw", 11).unwrap();
    store.user_change_password("alice", UserPassword::Hashed(hash_password("new", 4).unwrap())).unwrap();
    assert_eq!(store.auth_info([("token", alice.as_str())]), Err(Error::InvalidAuthToken));
    assert!(store.auth_info([("token", root.as_str())]).unwrap().is_some(), "others keep theirs");
    assert_eq!(login(&store, "alice", "secret", 12), Err(Error::AuthFailed));
    let alice = login(&store, "alice", "new", 13).unwrap();
    store.user_delete("alice").unwrap();
    assert_eq!(store.auth_info([("token", alice.as_str())]), Err(Error::InvalidAuthToken));
    assert_eq!(login(&store, "alice", "new", 14), Err(Error::AuthFailed));
}

#[test]
fn disabling_auth_drops_every_token_and_gives_no_info() {
    let (mut store, _clock) = enabled_store();
    let token = login(&store, "alice", "secret", 10).unwrap();
    store.disable();
    assert_eq!(store.auth_info([("token", token.as_str())]), Ok(None), "disabled: no info");
    store.enable().unwrap();
    assert_eq!(store.auth_info([("token", token.as_str())]), Err(Error::InvalidAuthToken));
}

#[test]
fn authentication_needs_auth_enabled_and_a_password() {
    let (mut store, _clock) = enabled_store();
    store.user_add("cert-only", UserPassword::NoPassword).unwrap();
    assert_eq!(login(&store, "cert-only", "", 10).unwrap_err(), Error::NoPasswordUser);
    assert_eq!(store.authenticate("cert-only", "abcdefghijklmnop", 10), Err(Error::AuthFailed));
    assert_eq!(login(&store, "ghost", "x", 10).unwrap_err(), Error::AuthFailed);
    assert_eq!(
        Error::AuthFailed.to_string(),
        "etcdserver: authentication failed, invalid user ID or password"
    );
    store.disable();
    assert_eq!(login(&store, "alice", "secret", 10).unwrap_err(), Error::AuthNotEnabled);
    assert_eq!(store.authenticate("alice", "abcdefghijklmnop", 10), Err(Error::AuthNotEnabled));
}

#[test]
fn auth_token_specs_choose_the_provider_or_say_what_is_wrong() {
    let simple = cairn_auth::provider_from_spec("simple", Duration::from_secs(300), clock()).unwrap();
    assert_eq!(simple.token_prefix().len(), 16);
    let cases = [
        ("", "auth: invalid auth options: unknown token type \"\", expected simple or jwt"),
        ("bogus", "auth: invalid auth options: unknown token type \"bogus\", expected simple or jwt"),
        ("simple,ttl=5m", "auth: invalid auth options: simple tokens take no options"),
        ("jwt", "auth: invalid auth options: jwt needs sign-method="),
        (
            "jwt,sign-method",
            "auth: invalid auth options: \"sign-method\" is not key=value in \"jwt,sign-method\"",
        ),
        (
            "jwt,sign-method=RS256,sign-method=ES256",
            "auth: invalid auth options: option \"sign-method\" given twice in \"jwt,sign-method=RS256,sign-method=ES256\"",
        ),
        ("jwt,sign-method=XX999", "auth: invalid auth options: unsupported sign-method \"XX999\""),
        ("jwt,sign-method=HS256,color=blue", "auth: invalid auth options: unknown jwt option \"color\""),
        (
            "jwt,sign-method=HS256,ttl=forever",
            "auth: invalid auth options: ttl \"forever\" is not a duration such as 5m",
        ),
        ("jwt,sign-method=HS256", "auth: invalid key: HMAC needs the shared secret as priv-key"),
        ("jwt,sign-method=RS256", "auth: invalid key: neither priv-key nor pub-key given"),
    ];
    for (spec, expected) in cases {
        let error = cairn_auth::provider_from_spec(spec, Duration::from_secs(300), clock()).unwrap_err();
        assert_eq!(error.to_string(), expected, "spec {spec:?}");
    }
    let missing = cairn_auth::provider_from_spec(
        "jwt,sign-method=RS256,priv-key=/no/such/key.pem",
        Duration::ZERO,
        clock(),
    )
    .unwrap_err()
    .to_string();
    assert!(missing.starts_with("auth: invalid key: priv-key file /no/such/key.pem: "), "{missing}");
}
