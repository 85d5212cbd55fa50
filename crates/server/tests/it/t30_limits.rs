use etcd_client::{GetOptions, PutOptions, Txn, TxnOp};
use tonic::Code;

use crate::support::{Cairn, status};

#[tokio::test]
async fn an_empty_key_is_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    let empty = (Code::InvalidArgument, "etcdserver: key is not provided".to_owned());
    assert_eq!(status(client.put("", "v", None).await.unwrap_err()), empty);
    assert_eq!(status(client.get("", None).await.unwrap_err()), empty);
    assert_eq!(status(client.delete("", None).await.unwrap_err()), empty);
    let txn = Txn::new().and_then([TxnOp::put("", "v", None)]);
    assert_eq!(status(client.txn(txn).await.unwrap_err()), empty);
}

#[tokio::test]
async fn put_options_that_contradict_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    let missing = client.put("k", "", Some(PutOptions::new().with_ignore_value())).await.unwrap_err();
    assert_eq!(status(missing), (Code::InvalidArgument, "etcdserver: key not found".into()));
    let provided = client.put("k", "v", Some(PutOptions::new().with_ignore_value())).await.unwrap_err();
    assert_eq!(status(provided), (Code::InvalidArgument, "etcdserver: value is provided".into()));
    let lease = client.put("k", "v", Some(PutOptions::new().with_lease(7))).await.unwrap_err();
    assert_eq!(status(lease), (Code::NotFound, "etcdserver: requested lease not found".into()));

    client.put("k", "v", None).await.unwrap();
    client.put("k", "", Some(PutOptions::new().with_ignore_value())).await.unwrap();
    let got = client.get("k", None).await.unwrap();
    assert_eq!(
        (got.kvs()[0].value(), got.kvs()[0].version()),
        (&b"v"[..], 2),
        "ignore_value keeps the value"
    );
}

#[tokio::test]
async fn txn_ops_at_the_limit_pass_and_past_it_fail() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    let puts = |n: usize| (0..n).map(|i| TxnOp::put(format!("t{i:03}"), "v", None)).collect::<Vec<_>>();
    let at_limit = client.txn(Txn::new().and_then(puts(128))).await.unwrap();
    assert!(at_limit.succeeded());
    let count = client.get("t", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(count.count(), 128);

    let past = client.txn(Txn::new().and_then(puts(129))).await.unwrap_err();
    assert_eq!(
        status(past),
        (Code::InvalidArgument, "etcdserver: too many operations in txn request".into())
    );
    let nested_past = Txn::new().and_then([TxnOp::txn(Txn::new().or_else(puts(129)))]);
    assert_eq!(status(client.txn(nested_past).await.unwrap_err()).0, Code::InvalidArgument);
}

#[tokio::test]
async fn the_txn_op_limit_follows_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &["--max-txn-ops=2"]);
    let mut client = cairn.client().await;
    let ops = |n: usize| (0..n).map(|i| TxnOp::get(format!("g{i}"), None)).collect::<Vec<_>>();
    client.txn(Txn::new().and_then(ops(2))).await.unwrap();
    let past = client.txn(Txn::new().and_then(ops(3))).await.unwrap_err();
    assert_eq!(status(past).1, "etcdserver: too many operations in txn request");
}

#[tokio::test]
async fn a_key_put_twice_in_one_txn_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let mut client = cairn.client().await;
    let duplicate = (Code::InvalidArgument, "etcdserver: duplicate key given in txn request".to_owned());
    let twice = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
    assert_eq!(status(client.txn(twice).await.unwrap_err()), duplicate);
    let put_and_delete = Txn::new().and_then([
        TxnOp::put("d/1", "1", None),
        TxnOp::delete("d/", Some(etcd_client::DeleteOptions::new().with_prefix())),
    ]);
    assert_eq!(status(client.txn(put_and_delete).await.unwrap_err()), duplicate);
    // The two branches of a nested txn may put the same key: only one runs.
    let branches = Txn::new().and_then([TxnOp::txn(
        Txn::new().and_then([TxnOp::put("d", "1", None)]).or_else([TxnOp::put("d", "2", None)]),
    )]);
    client.txn(branches).await.unwrap();
    // And the success and failure branches of one txn are checked apart.
    let apart = Txn::new().and_then([TxnOp::put("d", "1", None)]).or_else([TxnOp::put("d", "2", None)]);
    client.txn(apart).await.unwrap();
}

#[tokio::test]
async fn request_size_at_the_limit_passes_and_past_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    // A small limit keeps the test fast; the rule is the same at 1.5 MiB.
    let limit = 4096;
    let cairn = Cairn::start(dir.path(), &[&format!("--max-request-bytes={limit}")]);
    let mut client = cairn.client().await;
    // The limit is on the whole encoded InternalRaftRequest: 13 bytes of header (field
    // 100, holding the ID as a 9-byte varint: its top 16 bits are the default member's
    // low 16 bits, 0x694d) and the put (field 4, 3 bytes of tag and length) of key
    // "big" (5 bytes) and the value (3 bytes of tag and length, then the value).
    let fits = limit - 24;
    client.put("big", vec![b'v'; fits], None).await.unwrap();
    let past = client.put("big", vec![b'v'; fits + 1], None).await.unwrap_err();
    assert_eq!(status(past), (Code::InvalidArgument, "etcdserver: request is too large".into()));

    // Past the gRPC receive limit (the request limit plus 512 KiB), gRPC refuses it.
    // As grpc-go answers etcd's clients: the encoded PutRequest's size (5 bytes of key,
    // 4 of value tag and length, the value) against the limit.
    let huge = client.put("big", vec![b'v'; limit + 512 * 1024 + 1], None).await.unwrap_err();
    let max = limit + 512 * 1024;
    let found = 5 + 4 + max + 1;
    assert_eq!(
        status(huge),
        (Code::ResourceExhausted, format!("grpc: received message larger than max ({found} vs. {max})"))
    );
    client.put("small", "still fine", None).await.unwrap();
}

/// A txn holding a txn holding a txn..., `depth` deep, whose innermost txn puts `key`.
fn nested_txn(depth: usize, key: &str) -> Txn {
    let mut txn = Txn::new().and_then([TxnOp::put(key, "deep", None)]);
    for _ in 1..depth {
        txn = Txn::new().and_then([TxnOp::txn(txn)]);
    }
    txn
}

/// etcd applies a txn nested 50 or 120 deep (its limit is the op count per level, and
/// Go's decoder allows 10,000 levels); so does Cairn, on every member, and it never
/// proposes one that its apply loop could not decode. Deeper than 256 is refused
/// before anything is proposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_txns_are_applied_as_etcd_applies_them() {
    let cluster = crate::support::Cluster::start(3);
    let mut client = cluster.client(0).await;
    for depth in [50, 120, 256] {
        let key = format!("deep-{depth}");
        let response = client.txn(nested_txn(depth, &key)).await.unwrap();
        assert!(response.succeeded(), "depth {depth}");
        let revision = response.header().unwrap().revision();
        for n in 0..3 {
            let member = cluster.client(n).await;
            let got = crate::support::until_ok("the put on every member", || {
                let mut member = member.clone();
                let key = key.clone();
                async move {
                    let got = member.get(key, None).await.map_err(|e| e.to_string())?;
                    if got.kvs().is_empty() { Err("not yet".to_owned()) } else { Ok(got) }
                }
            })
            .await;
            assert_eq!(got.kvs()[0].mod_revision(), revision, "member {n}, depth {depth}");
        }
    }
    let refused = client.txn(nested_txn(257, "too-deep")).await.unwrap_err();
    assert_eq!(
        status(refused),
        (Code::InvalidArgument, "etcdserver: txn nested more than 256 deep".to_owned())
    );
    assert!(client.get("too-deep", None).await.unwrap().kvs().is_empty());
}
