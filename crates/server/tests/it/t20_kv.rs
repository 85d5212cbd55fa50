use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use tonic::Code;

use crate::support::{Cairn, status};

/// Keys of a get response, as text.
fn keys(response: &etcd_client::GetResponse) -> Vec<String> {
    response.kvs().iter().map(|kv| kv.key_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn put_and_get_keep_etcds_revision_bookkeeping() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;

    // A new store is at revision 1; each write request makes one more.
    let put = client.put("a", "1", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), 2);
    assert_eq!(put.header().unwrap().member_id(), 0x8e9e_05c5_2164_694d);
    assert_eq!(put.header().unwrap().cluster_id(), 0xcdf8_1819_4e3a_8c32);
    assert!(put.header().unwrap().raft_term() >= 1);
    let put = client.put("a", "2", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(put.prev_key().unwrap().value(), b"1");

    let got = client.get("a", None).await.unwrap();
    let kv = &got.kvs()[0];
    assert_eq!((kv.value(), kv.create_revision(), kv.mod_revision(), kv.version()), (&b"2"[..], 2, 3, 2));
    assert_eq!(got.count(), 1);
    assert_eq!(got.header().unwrap().revision(), 3);

    // Reading an older revision, serializable or not.
    let old = client.get("a", Some(GetOptions::new().with_revision(2))).await.unwrap();
    assert_eq!(old.kvs()[0].value(), b"1");
    let serializable = client.get("a", Some(GetOptions::new().with_serializable())).await.unwrap();
    assert_eq!(serializable.kvs()[0].value(), b"2");

    // Deleted keys disappear, leave their history, and come back at version 1.
    let deleted = client.delete("a", Some(DeleteOptions::new().with_prev_key())).await.unwrap();
    assert_eq!((deleted.deleted(), deleted.prev_kvs()[0].value()), (1, &b"2"[..]));
    assert_eq!(deleted.header().unwrap().revision(), 4);
    assert!(client.get("a", None).await.unwrap().kvs().is_empty());
    assert_eq!(
        client.get("a", Some(GetOptions::new().with_revision(3))).await.unwrap().kvs()[0].value(),
        b"2"
    );
    let nothing = client.delete("a", None).await.unwrap();
    assert_eq!(
        (nothing.deleted(), nothing.header().unwrap().revision()),
        (0, 4),
        "deleting nothing is no revision"
    );
    client.put("a", "3", None).await.unwrap();
    let again = client.get("a", None).await.unwrap();
    assert_eq!((again.kvs()[0].create_revision(), again.kvs()[0].version()), (5, 1));
}

#[tokio::test]
async fn every_range_form_and_option() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    for (key, value) in [("k1", "c"), ("k2", "a"), ("k3", "b"), ("l1", "z"), ("k2x", "y")] {
        client.put(key, value, None).await.unwrap();
    }
    client.put("k1", "d", None).await.unwrap();

    let prefix = client.get("k", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(keys(&prefix), ["k1", "k2", "k2x", "k3"]);
    let range = client.get("k2", Some(GetOptions::new().with_range("k3"))).await.unwrap();
    assert_eq!(keys(&range), ["k2", "k2x"]);
    let from = client.get("k3", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(keys(&from), ["k3", "l1"]);
    let all = client.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    assert_eq!(all.count(), 5);

    let limited = client.get("k", Some(GetOptions::new().with_prefix().with_limit(2))).await.unwrap();
    assert_eq!(
        (keys(&limited), limited.more(), limited.count()),
        (vec!["k1".to_owned(), "k2".to_owned()], true, 4)
    );
    let exact = client.get("k", Some(GetOptions::new().with_prefix().with_limit(4))).await.unwrap();
    assert_eq!((exact.kvs().len(), exact.more(), exact.count()), (4, false, 4));
    let names =
        client.get("k", Some(GetOptions::new().with_prefix().with_limit(1).with_keys_only())).await.unwrap();
    assert_eq!(
        (keys(&names), names.kvs()[0].value().is_empty(), names.more()),
        (vec!["k1".to_owned()], true, true)
    );
    // A limit with a revision filter counts the range but pages the filtered keys.
    let late_page = GetOptions::new().with_prefix().with_min_mod_revision(6).with_limit(1);
    let page = client.get("k", Some(late_page)).await.unwrap();
    assert_eq!((keys(&page), page.more(), page.count()), (vec!["k1".to_owned()], true, 4));

    let by_value = GetOptions::new().with_prefix().with_sort(SortTarget::Value, SortOrder::Descend);
    assert_eq!(keys(&client.get("k", Some(by_value)).await.unwrap()), ["k2x", "k1", "k3", "k2"]);
    let by_mod = GetOptions::new().with_prefix().with_sort(SortTarget::Mod, SortOrder::None);
    assert_eq!(
        keys(&client.get("k", Some(by_mod)).await.unwrap()),
        ["k2", "k3", "k2x", "k1"],
        "ascending by default"
    );
    let by_key_desc = GetOptions::new().with_prefix().with_sort(SortTarget::Key, SortOrder::Descend);
    assert_eq!(keys(&client.get("k", Some(by_key_desc)).await.unwrap()), ["k3", "k2x", "k2", "k1"]);

    let keys_only = client.get("k1", Some(GetOptions::new().with_keys_only())).await.unwrap();
    assert!(keys_only.kvs()[0].value().is_empty());
    let count_only = client.get("k", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!((count_only.count(), count_only.kvs().len()), (4, 0));

    // Revision filters: k1 was modified at 7, the others created at 2..6.
    let modified_late = GetOptions::new().with_prefix().with_min_mod_revision(6);
    assert_eq!(keys(&client.get("k", Some(modified_late)).await.unwrap()), ["k1", "k2x"]);
    let created_early = GetOptions::new().with_prefix().with_max_create_revision(3);
    assert_eq!(keys(&client.get("k", Some(created_early)).await.unwrap()), ["k1", "k2"]);

    let deleted = client.delete("k2", Some(DeleteOptions::new().with_prefix())).await.unwrap();
    assert_eq!(deleted.deleted(), 2);
    let at_six = client.get("k", Some(GetOptions::new().with_prefix().with_revision(6))).await.unwrap();
    assert_eq!(keys(&at_six), ["k1", "k2", "k2x", "k3"]);
}

#[tokio::test]
async fn txn_success_and_failure_paths() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    client.put("x", "1", None).await.unwrap(); // revision 2

    let txn = Txn::new()
        .when([
            Compare::value("x", CompareOp::Equal, "1"),
            Compare::version("x", CompareOp::Greater, 0),
            Compare::create_revision("x", CompareOp::Equal, 2),
            Compare::mod_revision("x", CompareOp::Less, 3),
            Compare::lease("x", CompareOp::Equal, 0),
            Compare::version("missing", CompareOp::Equal, 0),
        ])
        .and_then([TxnOp::put("y", "2", None), TxnOp::get("y", None), TxnOp::delete("x", None)])
        .or_else([TxnOp::put("z", "no", None)]);
    let response = client.txn(txn).await.unwrap();
    assert!(response.succeeded());
    assert_eq!(response.header().unwrap().revision(), 3, "a txn is one revision");
    match &response.op_responses()[1] {
        TxnOpResponse::Get(get) => assert_eq!(get.kvs()[0].value(), b"2", "reads see the txn's own writes"),
        other => panic!("expected a get response, got {other:?}"),
    }
    match &response.op_responses()[2] {
        TxnOpResponse::Delete(delete) => assert_eq!(delete.deleted(), 1),
        other => panic!("expected a delete response, got {other:?}"),
    }
    let y = client.get("y", None).await.unwrap();
    assert_eq!(y.kvs()[0].mod_revision(), 3);

    // A value compare on a missing key fails; the failure branch runs, nested txn too.
    let nested =
        Txn::new().when([Compare::version("y", CompareOp::Equal, 1)]).and_then([TxnOp::put("n", "1", None)]);
    let txn = Txn::new()
        .when([Compare::value("x", CompareOp::Equal, "1")])
        .and_then([TxnOp::put("z", "yes", None)])
        .or_else([TxnOp::txn(nested), TxnOp::put("z", "no", None)]);
    let response = client.txn(txn).await.unwrap();
    assert!(!response.succeeded());
    assert_eq!(client.get("z", None).await.unwrap().kvs()[0].value(), b"no");
    assert_eq!(client.get("n", None).await.unwrap().kvs()[0].mod_revision(), 4);

    // A txn that writes nothing moves no revision.
    let read_only = Txn::new().and_then([TxnOp::get("z", None)]);
    assert_eq!(client.txn(read_only).await.unwrap().header().unwrap().revision(), 4);
}

#[tokio::test]
async fn compaction_then_reading_a_compacted_revision() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    for value in ["1", "2", "3", "4"] {
        client.put("c", value, None).await.unwrap(); // revisions 2..=5
    }
    client.put("gone", "x", None).await.unwrap(); // 6
    client.delete("gone", None).await.unwrap(); // 7
    client.compact(4, None).await.unwrap();

    let compacted = client.get("c", Some(GetOptions::new().with_revision(3))).await.unwrap_err();
    assert_eq!(
        status(compacted),
        (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".into())
    );
    // The compaction revision itself and later ones stay readable.
    let at_four = client.get("c", Some(GetOptions::new().with_revision(4))).await.unwrap();
    assert_eq!(at_four.kvs()[0].value(), b"3");
    assert_eq!(
        client.get("c", Some(GetOptions::new().with_revision(5))).await.unwrap().kvs()[0].value(),
        b"4"
    );
    let future = client.get("c", Some(GetOptions::new().with_revision(100))).await.unwrap_err();
    assert_eq!(
        status(future),
        (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".into())
    );

    let again = client.compact(4, None).await.unwrap_err();
    assert_eq!(
        status(again),
        (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".into())
    );
    let ahead = client.compact(99, None).await.unwrap_err();
    assert_eq!(status(ahead).1, "etcdserver: mvcc: required revision is a future revision");
    client.compact(7, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    assert!(client.get("gone", Some(GetOptions::new().with_revision(7))).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn data_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    client.put("durable", "yes", None).await.unwrap();
    client.put("durable", "still", None).await.unwrap();
    assert!(cairn.terminate().success());

    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    let got = client.get("durable", None).await.unwrap();
    assert_eq!(
        (got.kvs()[0].value(), got.kvs()[0].version(), got.header().unwrap().revision()),
        (&b"still"[..], 2, 3)
    );
    assert_eq!(client.put("next", "1", None).await.unwrap().header().unwrap().revision(), 4);
}

#[tokio::test]
async fn a_data_dir_whose_wal_is_gone_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    client.put("durable", "yes", None).await.unwrap();
    assert!(cairn.terminate().success());

    std::fs::remove_dir_all(dir.path().join("member").join("wal")).unwrap();
    let port = crate::support::free_port();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg(format!("--data-dir={}", dir.path().display()))
        .arg(format!("--listen-client-urls=http://{port}"))
        .arg(format!("--advertise-client-urls=http://{port}"))
        .arg(format!("--listen-peer-urls=http://{}", crate::support::free_port()))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("write-ahead log: it ends before the applied index"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_sort_without_an_order_sorts_only_the_keys_a_limit_keeps_as_etcd_does() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    // Modified in the order d, c, a, b; in key order a, b, c, d.
    for key in ["d", "c", "a", "b"] {
        client.put(key, "v", None).await.unwrap();
    }
    // etcd takes the first limit + 1 keys in key order (a, b, c), sorts them by
    // modification (c, a, b) and keeps two: d, modified first, is not among them.
    let unordered =
        GetOptions::new().with_all_keys().with_sort(SortTarget::Mod, SortOrder::None).with_limit(2);
    let got = client.get("", Some(unordered)).await.unwrap();
    assert_eq!((keys(&got), got.more(), got.count()), (vec!["c".to_owned(), "a".to_owned()], true, 4));
    // With an order, the whole range is sorted first.
    let ascending =
        GetOptions::new().with_all_keys().with_sort(SortTarget::Mod, SortOrder::Ascend).with_limit(2);
    let got = client.get("", Some(ascending)).await.unwrap();
    assert_eq!((keys(&got), got.more(), got.count()), (vec!["d".to_owned(), "c".to_owned()], true, 4));
}
