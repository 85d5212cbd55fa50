use std::process::Command;

use crate::support::{Cairn, etcdctl, stdout};

#[test]
fn cairn_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("member.cairn");
    let cairn = Cairn::start(&data_dir, &[]);
    assert!(data_dir.join("member").is_dir(), "the data dir is created at start");
    assert_eq!(stdout(&etcdctl(&cairn, &["put", "a", "1"])), "OK\n");
    assert!(cairn.terminate().success(), "SIGTERM is a clean stop");
}

#[test]
fn the_default_identity_is_etcds() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let members = stdout(&etcdctl(&cairn, &["member", "list"]));
    let expected =
        format!("8e9e05c52164694d, started, default, http://localhost:2380, {}, false\n", cairn.endpoint());
    assert_eq!(members, expected);
}

#[test]
fn an_unknown_flag_is_refused_with_its_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn")).arg("--no-such-flag").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn an_https_url_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg(format!("--data-dir={}", dir.path().display()))
        .arg("--listen-client-urls=https://127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("an https:// client URL needs --cert-file and --key-file, or --auto-tls"),
        "{stderr}"
    );
}

#[test]
fn a_configuration_error_is_one_plain_line_even_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, says) in [
        ("--experimental-enable-lease-checkpoint=false", "--experimental-enable-lease-checkpoint=false"),
        ("--listen-client-urls=https://127.0.0.1:0", "--cert-file"),
    ] {
        let (status, stderr) = crate::support::start_refused(dir.path(), &[flag.to_owned()]);
        assert!(!status.success(), "{flag}");
        let errors: Vec<&str> = stderr.lines().filter(|line| !line.contains(" INFO ")).collect();
        assert_eq!(errors.len(), 1, "{flag}: {stderr}");
        assert!(errors[0].starts_with("Error: ") && errors[0].contains(says), "{flag}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{flag}: {stderr}");
    }
}

/// The client listener asks for etcd's backlog of 4,096 (the kernel caps it at its
/// `somaxconn`), so that a burst of connections waits instead of being dropped.
#[test]
fn the_client_listener_has_etcds_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let somaxconn: u32 =
        std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    let filter = format!("sport = :{}", cairn.addr.port());
    let output = Command::new("ss").args(["-ltnH", &filter]).output().expect("ss is installed (iproute2)");
    let listing = String::from_utf8(output.stdout).unwrap();
    let backlog: u32 = listing.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(backlog, 4096.min(somaxconn), "{listing}");
}

/// etcd 3.5's flags that cairn does not implement are refused at start, named with
/// the reason, on the command line or in the environment; never accepted and ignored.
#[test]
fn etcd_flags_cairn_does_not_implement_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (exit, stderr) = crate::support::start_refused(dir.path(), &["--max-wals=5".to_owned()]);
    assert!(!exit.success());
    assert_eq!(
        stderr.trim(),
        "Error: --max-wals is not supported by cairn: write-ahead log segments are removed once compacted, not counted"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env("ETCD_UNSAFE_NO_FSYNC", "true")
        .arg(format!("--data-dir={}", dir.path().display()))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ETCD_UNSAFE_NO_FSYNC (--unsafe-no-fsync) is not supported by cairn"),
        "{stderr}"
    );
    // Implemented ones start: the log level, and etcd 3.5's one logger.
    let cairn = Cairn::start(&dir.path().join("ok"), &["--log-level=warn", "--logger=zap", "--pre-vote"]);
    drop(cairn);
}
