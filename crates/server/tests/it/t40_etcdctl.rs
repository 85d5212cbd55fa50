use crate::support::{Cairn, error_line, etcdctl, etcdctl_with_input, stdout};

#[test]
fn etcdctl_put_get_delete_and_range_forms() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    assert_eq!(stdout(&etcdctl(&cairn, &["put", "foo", "bar"])), "OK\n");
    assert_eq!(stdout(&etcdctl(&cairn, &["put", "foo1", "bar1"])), "OK\n");
    assert_eq!(stdout(&etcdctl(&cairn, &["put", "zoo", "z"])), "OK\n");
    assert_eq!(stdout(&etcdctl(&cairn, &["get", "foo"])), "foo\nbar\n");
    assert_eq!(stdout(&etcdctl(&cairn, &["get", "--prefix", "foo"])), "foo\nbar\nfoo1\nbar1\n");
    assert_eq!(stdout(&etcdctl(&cairn, &["get", "foo", "foo1"])), "foo\nbar\n", "[foo, foo1)");
    assert_eq!(stdout(&etcdctl(&cairn, &["get", "--from-key", "foo1", "--keys-only"])), "foo1\n\nzoo\n\n");
    assert_eq!(stdout(&etcdctl(&cairn, &["get", "--prefix", "", "--limit=1"])), "foo\nbar\n");
    assert_eq!(stdout(&etcdctl(&cairn, &["get", "foo", "--rev=2"])), "foo\nbar\n");
    assert_eq!(
        stdout(&etcdctl(&cairn, &["get", "--prefix", "f", "--order=DESCEND", "--print-value-only"])),
        "bar1\nbar\n"
    );
    assert_eq!(stdout(&etcdctl(&cairn, &["get", "--consistency=s", "zoo"])), "zoo\nz\n");
    assert_eq!(stdout(&etcdctl(&cairn, &["del", "--prefix", "foo"])), "2\n");
    assert_eq!(stdout(&etcdctl(&cairn, &["get", "foo"])), "");
    assert_eq!(stdout(&etcdctl(&cairn, &["del", "--prev-kv", "zoo"])), "1\nzoo\nz\n");
}

#[test]
fn etcdctl_get_json_carries_etcds_header_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    stdout(&etcdctl(&cairn, &["put", "a", "1"]));
    stdout(&etcdctl(&cairn, &["put", "a", "2"]));
    let json = stdout(&etcdctl(&cairn, &["get", "a", "-w", "json"]));
    // "a" is YQ== and "2" is Mg== in base64; cluster and member IDs are etcd's defaults.
    assert!(json.starts_with(r#"{"header":{"cluster_id":14841639068965178418,"member_id":10276657743932975437,"revision":3,"raft_term":"#), "{json}");
    assert!(json.contains(r#""kvs":[{"key":"YQ==","create_revision":2,"mod_revision":3,"version":2,"value":"Mg=="}],"count":1}"#), "{json}");
}

#[test]
fn etcdctl_txn_success_and_failure() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    stdout(&etcdctl(&cairn, &["put", "user1", "bad"]));
    let script = "value(\"user1\") = \"bad\"\n\ndel user1\n\nput user1 good\n\n";
    assert_eq!(stdout(&etcdctl_with_input(&cairn, &["txn"], Some(script))), "SUCCESS\n\n1\n");
    assert_eq!(stdout(&etcdctl_with_input(&cairn, &["txn"], Some(script))), "FAILURE\n\nOK\n");
    assert_eq!(stdout(&etcdctl(&cairn, &["get", "user1", "--print-value-only"])), "good\n");
    // As etcd 3.4 answers: each op's response carries the txn's revision.
    let json = stdout(&etcdctl_with_input(&cairn, &["txn", "-w", "json"], Some("\nput user2 x\n\n\n")));
    assert!(
        json.contains(r#""responses":[{"Response":{"ResponsePut":{"header":{"revision":5}}}}]"#),
        "{json}"
    );
}

#[test]
fn etcdctl_compaction_and_errors_read_as_etcds() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    for value in ["1", "2", "3"] {
        stdout(&etcdctl(&cairn, &["put", "c", value]));
    }
    assert_eq!(stdout(&etcdctl(&cairn, &["compaction", "3"])), "compacted revision 3\n");
    assert_eq!(
        error_line(&etcdctl(&cairn, &["get", "c", "--rev=2"])),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        error_line(&etcdctl(&cairn, &["get", "c", "--rev=99"])),
        "Error: etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(error_line(&etcdctl(&cairn, &["put", "", "v"])), "Error: etcdserver: key is not provided");
}

#[test]
fn etcdctl_endpoint_status_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let status = stdout(&etcdctl(&cairn, &["endpoint", "status"]));
    // endpoint, ID, version, db size, is leader, is learner, term, index, applied, errors
    let fields: Vec<&str> = status.trim_end().split(", ").collect();
    assert_eq!(fields[0], cairn.addr.to_string());
    assert_eq!(fields[1], "8e9e05c52164694d");
    assert_eq!(fields[4], "true", "a single member leads: {status}");
    assert_eq!(fields[5], "false");
    let health = etcdctl(&cairn, &["endpoint", "health"]);
    let text = String::from_utf8_lossy(&health.stderr).to_string() + &String::from_utf8_lossy(&health.stdout);
    assert!(text.contains("is healthy"), "{text}");
}
