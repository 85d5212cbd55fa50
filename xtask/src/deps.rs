//! The dependency boundary: the crates users pick one by one stay free of the server's
//! stack.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, bail};

/// What the crates users pick on their own, without the server, may not depend on,
/// directly or through another crate.
pub(crate) const RULES: &[(&str, &[&str])] = &[
    ("cairn-wait", FORBIDDEN),
    ("cairn-idgen", FORBIDDEN),
    // etcd's message types (cairn-api without `grpc`) only under its `etcd` feature,
    // which the check turns on.
    ("cairn-auth", &["cairn-server", "tonic", "tonic-prost", "raft"]),
    // etcd's message types (cairn-api without `grpc`) behind its `etcd` feature.
    ("cairn-proposal", &["cairn-server", "tonic", "tonic-prost", "raft"]),
    // A log for any raft-rs program: raft, but none of the server's stack.
    ("cairn-wal", &["cairn-server", "cairn-api", "tonic", "redb", "tokio"]),
    // A state machine with an injected clock: no consensus, no wire, no runtime.
    ("cairn-lease", &["cairn-server", "cairn-api", "tonic", "raft", "redb", "tokio"]),
    // etcd's message types (cairn-api without its `grpc` feature) on redb; no
    // consensus, no transport.
    ("cairn-mvcc", &["cairn-server", "tonic", "tonic-prost", "raft"]),
    // A member's state around cairn-mvcc: backups, defrag, snapshots; no consensus,
    // no transport.
    ("cairn-backend", &["cairn-server", "tonic", "tonic-prost", "raft", "cairn-wal"]),
    // The network edge: TLS, connections, channels; no store, no consensus.
    ("cairn-net", &["cairn-server", "cairn-api", "raft", "redb", "cairn-mvcc", "cairn-auth"]),
    // Services built as a client of any etcd v3 endpoint: no store, no consensus.
    ("cairn-concurrency", &["cairn-server", "raft", "redb", "cairn-mvcc", "cairn-auth"]),
    // The state machine: the backend and etcd's semantics, no consensus, no wire.
    ("cairn-apply", &["cairn-server", "tonic", "tonic-prost", "raft", "cairn-wal", "cairn-proposal"]),
    // Raft messages over gRPC: raft and the wire, no store, no server.
    ("cairn-transport", &["cairn-server", "redb", "cairn-mvcc", "cairn-backend", "cairn-auth", "cairn-wal"]),
    // A data dir's tools: the backend, the log and a gRPC client, but neither the
    // server nor its services (auth, the lessor, the proposal path).
    ("cairn-utl", &["cairn-server", "cairn-lease", "cairn-proposal", "cairn-concurrency", "cairn-gateway"]),
    // A translation layer in front of any etcd v3 endpoint: a gRPC client, no store.
    ("cairn-gateway", &["cairn-server", "raft", "redb", "cairn-mvcc", "cairn-auth"]),
];

/// What the crates with no business with consensus or the wire may not depend on.
pub(crate) const FORBIDDEN: &[&str] = &["cairn-server", "cairn-api", "tonic", "raft"];

/// Checks every standalone crate's normal and build dependencies, the ones a user of
/// the crate pulls in, with every feature on. Dev-dependencies are not checked: users
/// never build them.
pub(crate) fn check(root: &Path) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for (krate, forbidden) in RULES {
        let output = crate::cargo()
            .current_dir(root)
            .args(["tree", "--quiet", "--package", krate, "--all-features", "--edges", "normal,build"])
            .args(["--prefix", "none", "--format", "{p}"])
            .output()
            .with_context(|| format!("cannot run cargo tree for {krate}"))?;
        if !output.status.success() {
            bail!("cargo tree -p {krate} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let tree = String::from_utf8(output.stdout).context("cargo tree printed non-UTF-8")?;
        let found = forbidden_in(&tree, forbidden);
        if !found.is_empty() {
            failures.push(format!("{krate} depends on {}", found.into_iter().collect::<Vec<_>>().join(", ")));
        }
    }
    if !failures.is_empty() {
        bail!("dependency boundary broken:\n  {}", failures.join("\n  "));
    }
    for (krate, forbidden) in RULES {
        eprintln!("{krate} stays free of {}", forbidden.join(", "));
    }
    Ok(())
}

/// The forbidden package names in a `cargo tree --prefix none --format {p}` listing.
fn forbidden_in<'a>(tree: &'a str, forbidden: &[&str]) -> BTreeSet<&'a str> {
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| forbidden.contains(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_forbidden_packages_by_exact_name() {
        let tree = "cairn-wait v0.1.0 (/src/crates/wait)\nhashbrown v0.17.2\ntonic v0.14.2\n\
                    raft-proto v0.7.0\nraft v0.7.0\ntonic-prost v0.14.2\n";
        assert_eq!(forbidden_in(tree, FORBIDDEN), BTreeSet::from(["raft", "tonic"]));
    }

    #[test]
    fn a_clean_tree_passes() {
        let tree = "cairn-idgen v0.1.0 (/src/crates/idgen)\n";
        assert!(forbidden_in(tree, FORBIDDEN).is_empty());
    }

    #[test]
    fn the_workspace_keeps_its_boundary() {
        check(&crate::project_root()).unwrap();
    }
}
