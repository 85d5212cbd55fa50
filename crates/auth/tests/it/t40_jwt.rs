use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cairn_auth::{
    Access, AuthInfo, AuthStore, Error, JwtTokens, ManualClock, ROOT, SignMethod, TokenProvider,
    UserPassword, hash_password, provider_from_spec,
};
use rand_core::{OsRng, RngCore};

use crate::support::clock;

/// A private key PEM and its public key PEM.
struct KeyPair {
    private: String,
    public: String,
}

fn rsa_pair() -> &'static KeyPair {
    static PAIR: OnceLock<KeyPair> = OnceLock::new();
    PAIR.get_or_init(new_rsa_pair)
}

fn new_rsa_pair() -> KeyPair {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    KeyPair {
        private: private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public: private.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
    }
}

fn p256_pair() -> KeyPair {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = p256::SecretKey::random(&mut OsRng);
    KeyPair {
        private: private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public: private.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
    }
}

fn p384_pair() -> KeyPair {
    use p384::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let private = p384::SecretKey::random(&mut OsRng);
    KeyPair {
        private: private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public: private.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
    }
}

fn ed25519_pair() -> KeyPair {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let private = ed25519_dalek::SigningKey::from_bytes(&seed);
    KeyPair {
        private: private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public: private.verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
    }
}

fn hmac_secret() -> KeyPair {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let secret: String = secret.iter().map(|byte| format!("{byte:02x}")).collect();
    KeyPair { private: secret.clone(), public: secret }
}

fn provider(method: SignMethod, keys: &KeyPair, clock: Arc<ManualClock>) -> JwtTokens {
    let public = (!method_is_hmac(method)).then_some(keys.public.as_bytes());
    JwtTokens::new(method, Some(keys.private.as_bytes()), public, Duration::from_secs(300), clock).unwrap()
}

fn method_is_hmac(method: SignMethod) -> bool {
    matches!(method, SignMethod::HS256 | SignMethod::HS384 | SignMethod::HS512)
}

/// Every method with a fresh key pair, and a second pair of the same kind.
fn all_methods() -> Vec<(SignMethod, KeyPair, KeyPair)> {
    vec![
        (SignMethod::HS256, hmac_secret(), hmac_secret()),
        (SignMethod::HS512, hmac_secret(), hmac_secret()),
        (SignMethod::RS256, new_rsa_pair(), new_rsa_pair()),
        (SignMethod::PS256, KeyPair { ..clone(rsa_pair()) }, new_rsa_pair()),
        (SignMethod::ES256, p256_pair(), p256_pair()),
        (SignMethod::ES384, p384_pair(), p384_pair()),
        (SignMethod::EdDSA, ed25519_pair(), ed25519_pair()),
    ]
}

fn clone(pair: &KeyPair) -> KeyPair {
    KeyPair { private: pair.private.clone(), public: pair.public.clone() }
}

/// Flips one character of the token at `at`, keeping it base64url.
fn altered(token: &str, at: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn every_method_issues_tokens_it_verifies() {
    for (method, keys, _) in all_methods() {
        let tokens = provider(method, &keys, clock());
        assert_eq!(tokens.token_prefix(), "", "{method:?} needs no prefix");
        let token = tokens.assign("", "alice", 17, 3).unwrap();
        assert_eq!(token.split('.').count(), 3, "{method:?} gives a JWS compact token");
        // The revision comes from the token, whatever the store's.
        assert_eq!(tokens.info(&token, 99), Some(AuthInfo::new("alice", 17)), "{method:?}");
    }
}

#[test]
fn a_token_altered_in_one_byte_is_rejected() {
    for (method, keys, _) in all_methods() {
        let tokens = provider(method, &keys, clock());
        let token = tokens.assign("", "alice", 17, 3).unwrap();
        let header_end = token.find('.').unwrap();
        let signature_start = token.rfind('.').unwrap() + 1;
        for at in [1, header_end + 2, signature_start + 2, token.len() - 3] {
            assert_eq!(tokens.info(&altered(&token, at), 1), None, "{method:?} altered at {at}");
        }
    }
}

#[test]
fn a_token_signed_by_another_key_is_rejected() {
    for (method, keys, other_keys) in all_methods() {
        let ours = provider(method, &keys, clock());
        let theirs = provider(method, &other_keys, clock());
        let foreign = theirs.assign("", "root", 17, 3).unwrap();
        assert_eq!(ours.info(&foreign, 1), None, "{method:?}");
    }
}

#[test]
fn a_token_of_another_method_is_rejected() {
    let secret = hmac_secret();
    let hs256 = provider(SignMethod::HS256, &secret, clock());
    let hs512 = provider(SignMethod::HS512, &secret, clock());
    let token = hs512.assign("", "alice", 1, 1).unwrap();
    assert_eq!(hs256.info(&token, 1), None);
    assert_eq!(hs256.info("not a token", 1), None);
}

#[test]
fn tokens_expire_on_the_injected_clock() {
    let clock = clock();
    let tokens = JwtTokens::new(
        SignMethod::ES256,
        Some(p256_pair().private.as_bytes()),
        None,
        Duration::from_secs(60),
        clock.clone(),
    )
    .unwrap();
    let token = tokens.assign("", "alice", 2, 1).unwrap();
    clock.advance(Duration::from_secs(59));
    assert!(tokens.info(&token, 2).is_some());
    clock.advance(Duration::from_secs(1));
    assert_eq!(tokens.info(&token, 2), None, "expired at exp");
}

#[test]
fn a_jwt_carrying_an_old_revision_is_rejected_after_any_auth_change() {
    let keys = p256_pair();
    let tokens = Arc::new(provider(SignMethod::ES256, &keys, clock()));
    let mut store = AuthStore::with_tokens(tokens);
    store.user_add(ROOT, UserPassword::NoPassword).unwrap();
    store.user_grant_role(ROOT, ROOT).unwrap();
    store.user_add("alice", UserPassword::Hashed(hash_password("pw", 4).unwrap())).unwrap();
    store.role_add("all").unwrap();
    store
        .role_grant_permission(
            "all",
            cairn_auth::Permission::from_key(cairn_auth::PermissionType::ReadWrite, "\0"),
        )
        .unwrap();
    store.user_grant_role("alice", "all").unwrap();
    store.enable().unwrap();

    store.password_check("alice").unwrap().verify("pw").unwrap();
    let token = store.authenticate("alice", "", 5).unwrap();
    let info = store.auth_info([("token", token.as_str())]).unwrap().unwrap();
    assert_eq!(info, AuthInfo::new("alice", store.revision()));
    assert_eq!(store.is_permitted(Some(&info), b"k", b"", Access::Write), Ok(()));

    // Any change, even one unrelated to alice, makes her token stale.
    store.role_add("unrelated").unwrap();
    let info = store.auth_info([("token", token.as_str())]).unwrap().unwrap();
    assert_eq!(store.is_permitted(Some(&info), b"k", b"", Access::Write), Err(Error::AuthOldRevision));
}

#[test]
fn a_public_key_alone_verifies_but_cannot_issue() {
    for (method, keys) in [(SignMethod::RS256, clone(rsa_pair())), (SignMethod::EdDSA, ed25519_pair())] {
        let issuer = provider(method, &keys, clock());
        let verifier =
            JwtTokens::new(method, None, Some(keys.public.as_bytes()), Duration::from_secs(300), clock())
                .unwrap();
        assert!(verifier.is_verify_only());
        assert_eq!(verifier.assign("", "alice", 1, 1), Err(Error::VerifyOnly));
        let token = issuer.assign("", "alice", 4, 1).unwrap();
        assert_eq!(verifier.info(&token, 1), Some(AuthInfo::new("alice", 4)), "{method:?}");
    }
}

#[test]
fn keys_that_are_not_a_pair_are_refused() {
    let (a, b) = (p256_pair(), p256_pair());
    let mismatch = JwtTokens::new(
        SignMethod::ES256,
        Some(a.private.as_bytes()),
        Some(b.public.as_bytes()),
        Duration::ZERO,
        clock(),
    );
    assert_eq!(mismatch.unwrap_err(), Error::KeyMismatch);
    let wrong_curve =
        JwtTokens::new(SignMethod::ES384, Some(a.private.as_bytes()), None, Duration::ZERO, clock())
            .unwrap_err();
    assert!(wrong_curve.to_string().starts_with("auth: invalid key: ECDSA priv-key"), "{wrong_curve}");
    let garbage =
        JwtTokens::new(SignMethod::RS256, Some(b"not a key"), None, Duration::ZERO, clock()).unwrap_err();
    assert!(garbage.to_string().starts_with("auth: invalid key: RSA priv-key"), "{garbage}");
}

#[test]
fn pkcs1_rsa_and_sec1_ec_private_keys_are_accepted() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{DecodePrivateKey, LineEnding};
    let pkcs8 = rsa::RsaPrivateKey::from_pkcs8_pem(&rsa_pair().private).unwrap();
    let pkcs1 = pkcs8.to_pkcs1_pem(LineEnding::LF).unwrap();
    let tokens =
        JwtTokens::new(SignMethod::RS256, Some(pkcs1.as_bytes()), None, Duration::from_secs(9), clock());
    let tokens = tokens.unwrap();
    assert!(tokens.info(&tokens.assign("", "a", 1, 1).unwrap(), 1).is_some());

    let ec = p256::SecretKey::random(&mut OsRng);
    let sec1 = ec.to_sec1_pem(p256::pkcs8::LineEnding::LF).unwrap();
    let tokens =
        JwtTokens::new(SignMethod::ES256, Some(sec1.as_bytes()), None, Duration::from_secs(9), clock());
    let tokens = tokens.unwrap();
    assert!(tokens.info(&tokens.assign("", "a", 1, 1).unwrap(), 1).is_some());
}

/// A self-signed certificate in PEM for the private key `private` (PKCS#8 PEM).
fn certificate_for(private: &str, algorithm: &'static rcgen::SignatureAlgorithm) -> String {
    let key = rcgen::KeyPair::from_pem_and_sign_algo(private, algorithm).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.self_signed(&key).unwrap().pem()
}

#[test]
fn a_certificate_is_accepted_as_the_public_key_as_etcd_does() {
    // etcd's own e2e fixtures: `pub-key=server.crt,priv-key=server.key.insecure`.
    for (method, keys, algorithm) in [
        (SignMethod::RS256, new_rsa_pair(), &rcgen::PKCS_RSA_SHA256),
        (SignMethod::ES256, p256_pair(), &rcgen::PKCS_ECDSA_P256_SHA256),
    ] {
        let certificate = certificate_for(&keys.private, algorithm);
        let tokens = JwtTokens::new(
            method,
            Some(keys.private.as_bytes()),
            Some(certificate.as_bytes()),
            Duration::from_secs(9),
            clock(),
        )
        .unwrap();
        let token = tokens.assign("", "alice", 1, 1).unwrap();
        assert_eq!(tokens.info(&token, 1), Some(AuthInfo::new("alice", 1)), "{method:?}");

        // A verify-only member with the certificate accepts the signer's tokens.
        let verifier =
            JwtTokens::new(method, None, Some(certificate.as_bytes()), Duration::from_secs(9), clock())
                .unwrap();
        assert_eq!(verifier.info(&token, 1), Some(AuthInfo::new("alice", 1)), "{method:?}");
    }
    // Another key's certificate does not match the private key.
    let certificate = certificate_for(&p256_pair().private, &rcgen::PKCS_ECDSA_P256_SHA256);
    let mismatch = JwtTokens::new(
        SignMethod::ES256,
        Some(p256_pair().private.as_bytes()),
        Some(certificate.as_bytes()),
        Duration::from_secs(9),
        clock(),
    );
    assert!(matches!(mismatch, Err(Error::KeyMismatch)));
}

#[test]
fn the_auth_token_flag_reads_keys_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ed25519_pair();
    let (private, public) = (dir.path().join("priv.pem"), dir.path().join("pub.pem"));
    std::fs::write(&private, &keys.private).unwrap();
    std::fs::write(&public, &keys.public).unwrap();
    let spec =
        format!("jwt,pub-key={},priv-key={},sign-method=EdDSA,ttl=1m", public.display(), private.display());
    let clock = clock();
    let tokens = provider_from_spec(&spec, Duration::from_secs(300), clock.clone()).unwrap();
    let token = tokens.assign("", "alice", 3, 1).unwrap();
    assert_eq!(tokens.info(&token, 3), Some(AuthInfo::new("alice", 3)));
    clock.advance(Duration::from_secs(60));
    assert_eq!(tokens.info(&token, 3), None, "ttl=1m");

    // HMAC takes its secret from the priv-key file.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "shared-secret").unwrap();
    let spec = format!("jwt,sign-method=HS256,priv-key={}", secret.display());
    let tokens = provider_from_spec(&spec, Duration::from_secs(300), clock.clone()).unwrap();
    let token = tokens.assign("", "bob", 1, 1).unwrap();
    let same_secret = JwtTokens::new(SignMethod::HS256, Some(b"shared-secret"), None, Duration::ZERO, clock);
    assert_eq!(same_secret.unwrap().info(&token, 1), Some(AuthInfo::new("bob", 1)));
}
