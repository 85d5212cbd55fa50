//! Restores refused with etcdutl's words, and never a half-built data dir.

use std::path::Path;

use cairn_backend::{Store, backup};
use cairn_mvcc::{KeyIndex, Revisions, Writer};
use cairn_utl::snapshot::{NewCluster, restore};

fn backup_of_ten_keys(dir: &Path) -> std::path::PathBuf {
    let store = Store::open(&dir.join("source")).unwrap();
    let mut index = KeyIndex::default();
    let txn = store.begin_write().unwrap();
    {
        let mut tables = cairn_mvcc::open_tables(&txn).unwrap();
        for revision in 2..12 {
            Writer::new(&mut tables.kv, &mut index, revision).put(b"k", b"v".to_vec(), 0).unwrap();
        }
        Revisions { current: 11, compacted: 0 }.save(&mut tables.meta).unwrap();
    }
    txn.commit().unwrap();
    let file = dir.join("backup.db");
    backup::write(&store.get(), std::fs::File::create(&file).unwrap(), "3.5.0").unwrap();
    file
}

fn cluster(name: &str, peer_urls: &str) -> NewCluster {
    NewCluster {
        name: name.into(),
        initial_cluster: "a=http://a:2380,b=http://b:2380".into(),
        token: "t".into(),
        peer_urls: peer_urls.into(),
    }
}

#[test]
fn flags_that_do_not_fit_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = backup_of_ten_keys(dir.path());
    let target = dir.path().join("new");
    let error = restore(&file, &target, &cluster("c", "http://c:2380"), true).unwrap_err();
    assert_eq!(error.to_string(), "couldn't find local name \"c\" in the initial cluster configuration");
    let error = restore(&file, &target, &cluster("a", "http://elsewhere:2380"), true).unwrap_err();
    assert_eq!(
        error.to_string(),
        "--initial-cluster has a=http://a:2380 but missing from --initial-advertise-peer-urls=http://elsewhere:2380"
    );
    let error = restore(&file, &target, &cluster("a", "http://a:2380"), false).unwrap_err();
    assert_eq!(error.to_string(), "snapshot missing hash but --skip-hash-check=false");
    assert!(!target.exists());
}

#[test]
fn a_backup_that_does_not_read_leaves_no_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = backup_of_ten_keys(dir.path());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() / 2);
    let cut = dir.path().join("cut.db");
    std::fs::write(&cut, &bytes).unwrap();
    let target = dir.path().join("new");
    assert!(restore(&cut, &target, &cluster("a", "http://a:2380"), true).is_err());
    assert!(!target.exists());
    // The whole file restores, once; the data dir is then not empty.
    let done = restore(&file, &target, &cluster("a", "http://a:2380"), true).unwrap();
    assert_eq!((done.restored.revisions.current, done.members.len()), (11, 2));
    let error = restore(&file, &target, &cluster("a", "http://a:2380"), true).unwrap_err();
    assert!(error.to_string().ends_with("not empty or could not be read"), "{error}");
}
