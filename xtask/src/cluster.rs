//! `cargo xtask cluster`: a three-member cluster on loopback for a person to try.

use std::process::{Child, Command};

use anyhow::Context;

/// Client and peer ports of each member.
const MEMBERS: [(&str, u16, u16); 3] = [("m1", 2379, 2380), ("m2", 22379, 22380), ("m3", 32379, 32380)];

pub(crate) fn run() -> anyhow::Result<()> {
    crate::run(crate::cargo().args(["build", "--release", "--quiet", "-p", "cairn-server"]))?;
    let binary = crate::project_root().join("target").join("release").join("cairn");
    let data = crate::project_root().join("target").join("cluster");
    std::fs::create_dir_all(&data)?;
    let initial: Vec<String> =
        MEMBERS.iter().map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}")).collect();
    let mut children: Vec<Child> = Vec::new();
    for (name, client, peer) in MEMBERS {
        let child = Command::new(&binary)
            .arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", data.join(name).display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        children.push(child);
    }
    let endpoints: Vec<String> = MEMBERS.iter().map(|(_, client, _)| format!("127.0.0.1:{client}")).collect();
    eprintln!("\nA three-member cluster is running, its data in {}.", data.display());
    eprintln!("Try: ETCDCTL_API=3 etcdctl --endpoints={} endpoint status -w table", endpoints.join(","));
    eprintln!("Ctrl-C stops every member.\n");
    // Ctrl-C reaches the members too (same process group); wait for them to stop.
    for mut child in children {
        child.wait()?;
    }
    Ok(())
}
