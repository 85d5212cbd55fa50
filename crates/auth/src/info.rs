//! The caller's identity, and finding its token in request metadata.

/// Who is calling: a user name and the auth revision their token was checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthInfo {
    /// The user's name.
    pub username: String,
    /// The auth store revision the caller's token stands for. A request whose
    /// revision is below the store's is refused as stale.
    pub revision: u64,
}

impl AuthInfo {
    /// An `AuthInfo` for `username` at auth revision `revision`.
    pub fn new(username: impl Into<String>, revision: u64) -> Self {
        Self { username: username.into(), revision }
    }
}

/// The auth token of a request, from its metadata as `(key, value)` pairs.
///
/// As etcd: the value of key `token`, or else of key `authorization`, in either case
/// without a leading `Bearer `. Keys compare exactly (gRPC metadata keys are lower
/// case). `None` when neither key is present.
pub fn token_from_metadata<'a, I>(metadata: I) -> Option<&'a str>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut authorization = None;
    for (key, value) in metadata {
        match key {
            "token" => return Some(strip_bearer(value)),
            "authorization" if authorization.is_none() => authorization = Some(strip_bearer(value)),
            _ => {}
        }
    }
    authorization
}

fn strip_bearer(value: &str) -> &str {
    value.strip_prefix("Bearer ").unwrap_or(value)
}
