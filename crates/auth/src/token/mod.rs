//! Auth tokens: the [`TokenProvider`] seam, its two implementations, and etcd's
//! `--auth-token` syntax for choosing one.

mod jwt;
mod simple;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

pub use jwt::{DEFAULT_JWT_TTL, JwtTokens, SignMethod};
pub use simple::{DEFAULT_SIMPLE_TOKEN_TTL, SimpleTokens, simple_token_index};

use crate::clock::Clock;
use crate::info::AuthInfo;
use crate::{Error, Result};

/// Issues tokens and tells who a token belongs to.
///
/// Issuing happens in two steps, as in etcd, so that every member issues the same
/// token: [`TokenProvider::token_prefix`] on the member that proposes an Authenticate
/// request, then [`TokenProvider::assign`] on every member when it is applied.
pub trait TokenProvider: Send + Sync + Debug + 'static {
    /// The random part of a token, chosen before the Authenticate request is proposed
    /// and carried in it. Empty for providers that need none.
    fn token_prefix(&self) -> String;

    /// Issues a token to `username` at auth revision `revision`, for the Authenticate
    /// request with `prefix` applied at raft index `index`.
    ///
    /// # Errors
    ///
    /// [`Error::VerifyOnly`] for a provider that only verifies, [`Error::Crypto`] when
    /// signing fails, [`Error::InvalidAuthToken`] for a missing prefix.
    fn assign(&self, prefix: &str, username: &str, revision: u64, index: u64) -> Result<String>;

    /// Who `token` belongs to, or `None` if it is unknown, expired, altered or signed by
    /// someone else. `current_revision` is the store's revision, which tokens that carry
    /// none (simple tokens) report.
    fn info(&self, token: &str, current_revision: u64) -> Option<AuthInfo>;

    /// Forgets every token of `username` (deleted, or their password changed).
    fn invalidate_user(&self, username: &str);

    /// Auth was enabled.
    fn enable(&self) {}

    /// Auth was disabled: forget every token.
    fn disable(&self);

    /// Forgets expired tokens. The server calls it about once a second.
    fn sweep_expired(&self) {}
}

/// Builds the provider that etcd's `--auth-token` value `spec` names: `simple`, or
/// `jwt,sign-method=…,pub-key=…,priv-key=…,ttl=…`.
///
/// Simple tokens live for `simple_ttl` after their last use (etcd's
/// `--auth-token-ttl`, 300 s by default). JWT options: `sign-method` (HS256/384/512,
/// RS256/384/512, PS256/384/512, ES256/384, EdDSA), `priv-key` (a PEM file, or the
/// shared secret's file for HS*), `pub-key` (a PEM file; optional with `priv-key`, and
/// alone gives a provider that verifies but cannot issue), `ttl` (a Go duration such
/// as `5m`, default 5 minutes).
///
/// # Errors
///
/// [`Error::InvalidAuthOptions`] for an unknown type or option, a duplicate option, a
/// missing `sign-method` or a bad `ttl`; [`Error::InvalidKey`] for an unreadable or
/// unparsable key; [`Error::KeyMismatch`] for keys that are not a pair.
pub fn provider_from_spec(
    spec: &str,
    simple_ttl: Duration,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn TokenProvider>> {
    let mut parts = spec.split(',');
    let kind = parts.next().unwrap_or_default().trim();
    let mut options = BTreeMap::new();
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            return Err(Error::InvalidAuthOptions(format!("{part:?} is not key=value in {spec:?}")));
        };
        if options.insert(key.trim(), value.trim()).is_some() {
            return Err(Error::InvalidAuthOptions(format!("option {key:?} given twice in {spec:?}")));
        }
    }
    match kind {
        "simple" if options.is_empty() => Ok(Arc::new(SimpleTokens::new(clock, simple_ttl))),
        "simple" => Err(Error::InvalidAuthOptions("simple tokens take no options".into())),
        "jwt" => Ok(Arc::new(JwtTokens::from_options(&options, clock)?)),
        other => {
            Err(Error::InvalidAuthOptions(format!("unknown token type {other:?}, expected simple or jwt")))
        }
    }
}

/// Parses a Go duration (`300ms`, `5m`, `1h30m`, `1.5s`), as etcd's flags and the
/// JWT `ttl=` option take them. `None` for anything else.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let number: f64 = number.parse().ok()?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(number * seconds).ok()?;
        rest = tail;
    }
    if text.is_empty() { None } else { Some(total) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("5 minutes"), None);
        assert_eq!(parse_go_duration("m"), None);
    }
}
