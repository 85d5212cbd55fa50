//! JSON Web Tokens: signed, self-contained, carrying user, auth revision and expiry.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{TokenProvider, parse_go_duration};
use crate::clock::Clock;
use crate::info::AuthInfo;
use crate::{Error, Result};

/// How long a JWT is valid unless `ttl=` says otherwise (etcd's default).
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(5 * 60);

/// A JWT signing method, named as in etcd's `sign-method=` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignMethod {
    /// HMAC with SHA-256; the key is a shared secret.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RS256,
    /// RSA PKCS#1 v1.5 with SHA-384.
    RS384,
    /// RSA PKCS#1 v1.5 with SHA-512.
    RS512,
    /// RSA-PSS with SHA-256.
    PS256,
    /// RSA-PSS with SHA-384.
    PS384,
    /// RSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl SignMethod {
    fn algorithm(self) -> Algorithm {
        match self {
            Self::HS256 => Algorithm::HS256,
            Self::HS384 => Algorithm::HS384,
            Self::HS512 => Algorithm::HS512,
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::PS256 => Algorithm::PS256,
            Self::PS384 => Algorithm::PS384,
            Self::PS512 => Algorithm::PS512,
            Self::ES256 => Algorithm::ES256,
            Self::ES384 => Algorithm::ES384,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }
}

impl FromStr for SignMethod {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Ok(match name {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            other => return Err(Error::InvalidAuthOptions(format!("unsupported sign-method {other:?}"))),
        })
    }
}

#[derive(Serialize)]
struct IssuedClaims<'a> {
    username: &'a str,
    revision: u64,
    exp: u64,
}

/// Claims as read back. etcd's Go code reads numbers as floats; so does this.
#[derive(Deserialize)]
struct ReadClaims {
    username: String,
    revision: f64,
    exp: Option<f64>,
}

/// etcd's JWT tokens: claims `username`, `revision` and `exp`, signed with one key.
///
/// The revision is baked into the token, so any later change to the auth store makes
/// it stale (`etcdserver: revision of auth store is old`) and the client
/// re-authenticates. Expiry is checked against the injected clock.
pub struct JwtTokens {
    method: SignMethod,
    /// `None` when configured with a public key only: verify, never issue.
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl JwtTokens {
    /// Tokens signed with `method`. `private_key` is a PEM private key (PKCS#8, or
    /// PKCS#1 for RSA, or SEC1 for ECDSA), or the shared secret itself for HS*;
    /// `public_key` a PEM public key, derived from the private key when absent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidKey`] for a missing or unparsable key, [`Error::KeyMismatch`]
    /// when the two keys are not a pair.
    pub fn new(
        method: SignMethod,
        private_key: Option<&[u8]>,
        public_key: Option<&[u8]>,
        ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let (signing, verifying) = keys(method, private_key, public_key)?;
        Ok(Self { method, signing, verifying, ttl, clock })
    }

    /// Tokens from etcd's `jwt,` options: `sign-method`, `priv-key` and `pub-key`
    /// (file paths), `ttl`.
    ///
    /// # Errors
    ///
    /// As [`JwtTokens::new`], plus [`Error::InvalidAuthOptions`] for an unknown
    /// option, a missing `sign-method` or a bad `ttl`, and [`Error::InvalidKey`] for a
    /// key file that cannot be read.
    pub fn from_options(options: &BTreeMap<&str, &str>, clock: Arc<dyn Clock>) -> Result<Self> {
        if let Some(unknown) =
            options.keys().find(|key| !matches!(**key, "sign-method" | "pub-key" | "priv-key" | "ttl"))
        {
            return Err(Error::InvalidAuthOptions(format!("unknown jwt option {unknown:?}")));
        }
        let method = options
            .get("sign-method")
            .ok_or_else(|| Error::InvalidAuthOptions("jwt needs sign-method=".into()))?
            .parse()?;
        let ttl = match options.get("ttl") {
            Some(ttl) => parse_go_duration(ttl).ok_or_else(|| {
                Error::InvalidAuthOptions(format!("ttl {ttl:?} is not a duration such as 5m"))
            })?,
            None => DEFAULT_JWT_TTL,
        };
        let read = |option: &str| -> Result<Option<Vec<u8>>> {
            match options.get(option) {
                Some(path) => std::fs::read(path)
                    .map(Some)
                    .map_err(|error| Error::InvalidKey(format!("{option} file {path}: {error}"))),
                None => Ok(None),
            }
        };
        let (private_key, public_key) = (read("priv-key")?, read("pub-key")?);
        Self::new(method, private_key.as_deref(), public_key.as_deref(), ttl, clock)
    }

    /// The signing method.
    pub fn method(&self) -> SignMethod {
        self.method
    }

    /// Whether this provider only verifies tokens (no private key).
    pub fn is_verify_only(&self) -> bool {
        self.signing.is_none()
    }
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("method", &self.method)
            .field("verify_only", &self.is_verify_only())
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

impl TokenProvider for JwtTokens {
    fn token_prefix(&self) -> String {
        String::new()
    }

    fn assign(&self, _prefix: &str, username: &str, revision: u64, _index: u64) -> Result<String> {
        let signing = self.signing.as_ref().ok_or(Error::VerifyOnly)?;
        let exp = unix_seconds(self.clock.now() + self.ttl);
        let claims = IssuedClaims { username, revision, exp };
        jsonwebtoken::encode(&Header::new(self.method.algorithm()), &claims, signing)
            .map_err(|error| Error::Crypto(format!("cannot sign a token: {error}")))
    }

    fn info(&self, token: &str, _current_revision: u64) -> Option<AuthInfo> {
        let mut validation = Validation::new(self.method.algorithm());
        // Expiry is checked below against the injected clock; etcd sets no audience.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<ReadClaims>(token, &self.verifying, &validation).ok()?.claims;
        let now = unix_seconds(self.clock.now()) as f64;
        if claims.exp.is_some_and(|exp| exp.is_nan() || now >= exp)
            || claims.revision.is_nan()
            || claims.revision < 0.0
        {
            return None;
        }
        Some(AuthInfo::new(claims.username, claims.revision as u64))
    }

    fn invalidate_user(&self, _username: &str) {}

    fn disable(&self) {}
}

fn invalid_key(what: &str) -> impl Fn(String) -> Error + '_ {
    move |why| Error::InvalidKey(format!("{what}: {why}"))
}

fn pem_text<'a>(what: &str, key: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(key).map_err(|_| Error::InvalidKey(format!("{what} is not PEM text")))
}

/// The public key (its DER `SubjectPublicKeyInfo`) of an X.509 certificate in PEM,
/// when `pem` is one: etcd accepts a certificate as `pub-key` and uses its key, so
/// deployments point `pub-key` at their server certificate. `None` for anything else.
fn certificate_key(what: &str, pem: &[u8]) -> Result<Option<Vec<u8>>> {
    if !pem_text(what, pem)?.contains("-----BEGIN CERTIFICATE-----") {
        return Ok(None);
    }
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|error| Error::InvalidKey(format!("{what}: certificate PEM: {error}")))?;
    let certificate =
        block.parse_x509().map_err(|error| Error::InvalidKey(format!("{what}: certificate: {error}")))?;
    Ok(Some(certificate.tbs_certificate.subject_pki.raw.to_vec()))
}

/// The signing key (when a private key is given) and the verifying key of `method`.
fn keys(
    method: SignMethod,
    private_key: Option<&[u8]>,
    public_key: Option<&[u8]>,
) -> Result<(Option<EncodingKey>, DecodingKey)> {
    use SignMethod::*;
    match method {
        HS256 | HS384 | HS512 => {
            let secret = private_key
                .filter(|secret| !secret.is_empty())
                .ok_or_else(|| Error::InvalidKey("HMAC needs the shared secret as priv-key".into()))?;
            Ok((Some(EncodingKey::from_secret(secret)), DecodingKey::from_secret(secret)))
        }
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => rsa_keys(private_key, public_key),
        ES256 => ec_keys!(p256, private_key, public_key),
        ES384 => ec_keys!(p384, private_key, public_key),
        EdDSA => ed_keys(private_key, public_key),
    }
}

/// Picks the verifying key: the given public key, which must match the private key,
/// or else the private key's own.
fn pair<Private, Public: PartialEq>(
    private: Option<Private>,
    public: Option<Public>,
    public_of: impl Fn(&Private) -> Public,
) -> Result<(Option<Private>, Public)> {
    match (private, public) {
        (Some(private), Some(public)) if public_of(&private) != public => Err(Error::KeyMismatch),
        (private, Some(public)) => Ok((private, public)),
        (Some(private), None) => {
            let public = public_of(&private);
            Ok((Some(private), public))
        }
        (None, None) => Err(Error::InvalidKey("neither priv-key nor pub-key given".into())),
    }
}

fn rsa_keys(
    private_key: Option<&[u8]>,
    public_key: Option<&[u8]>,
) -> Result<(Option<EncodingKey>, DecodingKey)> {
    use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
    use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
    let private = private_key
        .map(|pem| -> Result<rsa::RsaPrivateKey> {
            let text = pem_text("RSA priv-key", pem)?;
            rsa::RsaPrivateKey::from_pkcs8_pem(text)
                .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(text))
                .map_err(|error| invalid_key("RSA priv-key")(error.to_string()))
        })
        .transpose()?;
    let public = public_key
        .map(|pem| -> Result<rsa::RsaPublicKey> {
            if let Some(spki) = certificate_key("RSA pub-key", pem)? {
                return rsa::RsaPublicKey::from_public_key_der(&spki)
                    .map_err(|error| invalid_key("RSA pub-key")(error.to_string()));
            }
            let text = pem_text("RSA pub-key", pem)?;
            rsa::RsaPublicKey::from_public_key_pem(text)
                .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(text))
                .map_err(|error| invalid_key("RSA pub-key")(error.to_string()))
        })
        .transpose()?;
    let (private, public) = pair(private, public, rsa::RsaPrivateKey::to_public_key)?;
    let signing = private
        .map(|private| {
            let der =
                private.to_pkcs1_der().map_err(|error| invalid_key("RSA priv-key")(error.to_string()))?;
            Ok::<_, Error>(EncodingKey::from_rsa_der(der.as_bytes()))
        })
        .transpose()?;
    let public_der = public.to_pkcs1_der().map_err(|error| invalid_key("RSA pub-key")(error.to_string()))?;
    Ok((signing, DecodingKey::from_rsa_der(public_der.as_bytes())))
}

/// ECDSA keys on one curve: PKCS#8 or SEC1 private keys, SPKI public keys.
macro_rules! ec_keys {
    ($curve:ident, $private_key:expr, $public_key:expr) => {{
        use $curve::elliptic_curve::sec1::ToEncodedPoint;
        use $curve::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
        let private = $private_key
            .map(|pem: &[u8]| -> Result<$curve::SecretKey> {
                let text = pem_text("ECDSA priv-key", pem)?;
                $curve::SecretKey::from_pkcs8_pem(text)
                    .or_else(|_| $curve::SecretKey::from_sec1_pem(text))
                    .map_err(|error| invalid_key("ECDSA priv-key")(error.to_string()))
            })
            .transpose()?;
        let public = $public_key
            .map(|pem: &[u8]| -> Result<$curve::PublicKey> {
                if let Some(spki) = certificate_key("ECDSA pub-key", pem)? {
                    return $curve::PublicKey::from_public_key_der(&spki)
                        .map_err(|error| invalid_key("ECDSA pub-key")(error.to_string()));
                }
                let text = pem_text("ECDSA pub-key", pem)?;
                $curve::PublicKey::from_public_key_pem(text)
                    .map_err(|error| invalid_key("ECDSA pub-key")(error.to_string()))
            })
            .transpose()?;
        let (private, public) = pair(private, public, $curve::SecretKey::public_key)?;
        let signing = private
            .map(|private| {
                let der = private
                    .to_pkcs8_der()
                    .map_err(|error| invalid_key("ECDSA priv-key")(error.to_string()))?;
                Ok::<_, Error>(EncodingKey::from_ec_der(der.as_bytes()))
            })
            .transpose()?;
        Ok((signing, DecodingKey::from_ec_der(public.to_encoded_point(false).as_bytes())))
    }};
}
use ec_keys;

fn ed_keys(
    private_key: Option<&[u8]>,
    public_key: Option<&[u8]>,
) -> Result<(Option<EncodingKey>, DecodingKey)> {
    use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
    let private = private_key
        .map(|pem| -> Result<ed25519_dalek::SigningKey> {
            let text = pem_text("Ed25519 priv-key", pem)?;
            ed25519_dalek::SigningKey::from_pkcs8_pem(text)
                .map_err(|error| invalid_key("Ed25519 priv-key")(error.to_string()))
        })
        .transpose()?;
    let public = public_key
        .map(|pem| -> Result<ed25519_dalek::VerifyingKey> {
            if let Some(spki) = certificate_key("Ed25519 pub-key", pem)? {
                return ed25519_dalek::VerifyingKey::from_public_key_der(&spki)
                    .map_err(|error| invalid_key("Ed25519 pub-key")(error.to_string()));
            }
            let text = pem_text("Ed25519 pub-key", pem)?;
            ed25519_dalek::VerifyingKey::from_public_key_pem(text)
                .map_err(|error| invalid_key("Ed25519 pub-key")(error.to_string()))
        })
        .transpose()?;
    let (private, public) = pair(private, public, ed25519_dalek::SigningKey::verifying_key)?;
    let signing = private
        .map(|private| {
            let der =
                private.to_pkcs8_der().map_err(|error| invalid_key("Ed25519 priv-key")(error.to_string()))?;
            Ok::<_, Error>(EncodingKey::from_ed_der(der.as_bytes()))
        })
        .transpose()?;
    Ok((signing, DecodingKey::from_ed_der(public.as_bytes())))
}
