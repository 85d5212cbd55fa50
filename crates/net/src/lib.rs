//! The network edge of an etcd-compatible server on tonic, where etcd's clients and
//! Go's TLS rules meet Rust's stack:
//! - [`tls`]: TLS from etcd's flags (a certificate and key, a trusted CA, required
//!   client certificates, a CRL in PEM or DER, `--auto-tls`), accepting a client
//!   certificate that is itself a trusted CA as Go does, and the connector for
//!   `--peer-auto-tls`;
//! - [`authority`]: connections whose `:authority` carries a scheme, which etcd 3.4's
//!   Go client sends and h2 refuses, rewritten in the HPACK stream;
//! - [`grpc`]: listeners that send small frames at once, grpc-go's text for an
//!   oversize request, and a channel to services served inside the process;
//! - [`peer`]: channels to a member's peers, over TLS for `https://` URLs;
//! - [`listen`]: listeners for etcd's listen URLs, with etcd's backlog, and tonic
//!   routes served on them as etcd serves a client URL (gRPC and HTTP/1.1 on one
//!   port, plain or TLS, a grace period at shutdown).
//!
//! **Invariant:** a connection is served only as its TLS configuration allows (a
//! client certificate is required, verified and checked against the CRL when the
//! flags say so), and every byte of a connection reaches h2 unchanged except a
//! `:authority`'s scheme.

pub mod authority;
pub mod grpc;
pub mod listen;
pub mod peer;
pub mod tls;

/// What went wrong at the network edge, in one line that names the file, flag or
/// URL, then the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TLS could not be set up: a file that could not be read or used, or flags that
    /// do not fit together.
    #[error("{0}")]
    Tls(String),
    /// A listen URL that is not one, or cannot be bound.
    #[error("{0}")]
    Listen(String),
    /// A server stopped with an error.
    #[error("{0}")]
    Serve(String),
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
