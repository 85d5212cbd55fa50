use std::time::Duration;

use etcd_client::MemberAddOptions;

use crate::support::{Cairn, Cluster, etcdctl, free_port, stdout, until_ok};

/// Flags for a member `name` joining the cluster `initial` on `peer`.
fn joining(name: &str, peer: std::net::SocketAddr, initial: &str) -> Vec<String> {
    vec![
        format!("--name={name}"),
        format!("--listen-peer-urls=http://{peer}"),
        format!("--initial-advertise-peer-urls=http://{peer}"),
        format!("--initial-cluster={initial}"),
        "--initial-cluster-state=existing".to_owned(),
        "--initial-cluster-token=cluster-test".to_owned(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_promoted_and_removed_while_the_cluster_serves() {
    let cluster = Cluster::start(1);
    let mut client = cluster.client(0).await;
    until_ok("a first write", || {
        let mut client = client.clone();
        async move { client.put("k0", "v", None).await }
    })
    .await;
    let m0_peer = client.member_list().await.unwrap().members()[0].peer_urls()[0].clone();

    // A voter joins.
    let m1_peer = free_port();
    let added = client.member_add([format!("http://{m1_peer}")], None).await.unwrap();
    let m1_id = added.member().unwrap().id();
    let initial = format!("m0={m0_peer},m1=http://{m1_peer}");
    let m1 = Cairn::start_on(free_port(), &cluster.dir.path().join("m1"), joining("m1", m1_peer, &initial));
    let mut m1_client = m1.client().await;
    let got = until_ok("the new member to catch up", || {
        let mut m1_client = m1_client.clone();
        async move { m1_client.get("k0", None).await }
    })
    .await;
    assert_eq!(got.kvs()[0].value(), b"v");
    m1_client.put("k1", "from m1", None).await.unwrap();

    // A learner joins, then is promoted.
    let m2_peer = free_port();
    // Refused as "unhealthy cluster" until this member has been connected to a quorum
    // for 5 s, as etcd refuses it.
    let learner = until_ok("the learner's addition", || {
        let mut client = client.clone();
        let options = Some(MemberAddOptions::new().with_is_learner());
        async move { client.member_add([format!("http://{m2_peer}")], options).await }
    })
    .await;
    let m2_id = learner.member().unwrap().id();
    assert!(learner.member().unwrap().is_learner());
    let initial = format!("{initial},m2=http://{m2_peer}");
    let m2 = Cairn::start_on(free_port(), &cluster.dir.path().join("m2"), joining("m2", m2_peer, &initial));
    let mut m2_client = m2.client().await;
    until_ok("the learner to catch up", || {
        let mut m2_client = m2_client.clone();
        async move {
            let got = m2_client.get("k1", Some(etcd_client::GetOptions::new().with_serializable())).await?;
            if got.kvs().len() == 1 { Ok(()) } else { Err(etcd_client::Error::InvalidArgs("not yet".into())) }
        }
    })
    .await;
    // A learner serves serializable reads only.
    let refused = m2_client.put("k2", "v", None).await.unwrap_err();
    assert!(refused.to_string().contains("etcdserver: rpc not supported for learner"), "{refused}");
    assert!(m2_client.status().await.unwrap().is_learner(), "Status says the member is a learner");
    client.member_promote(m2_id).await.unwrap();
    until_ok("the promotion to reach the member", || {
        let mut m2_client = m2_client.clone();
        async move {
            let learner = m2_client.status().await.map_err(|e| e.to_string())?.is_learner();
            if learner { Err("still a learner".to_owned()) } else { Ok(()) }
        }
    })
    .await;

    // Every member knows every other, with the names and client URLs each published.
    let members = until_ok("the members to publish themselves", || {
        let mut client = client.clone();
        async move {
            let list = client.member_list().await?;
            let named = list.members().iter().all(|m| !m.name().is_empty() && !m.client_urls().is_empty());
            if named && list.members().len() == 3 {
                Ok(list)
            } else {
                Err(etcd_client::Error::InvalidArgs("not yet".into()))
            }
        }
    })
    .await;
    let mut names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["m0", "m1", "m2"]);
    assert!(members.members().iter().all(|m| !m.is_learner()));

    // Removing the leader hands leadership over; the removed member stops.
    let leader = client.status().await.unwrap().leader();
    let remover = if leader == m1_id { m2_client.clone() } else { m1_client.clone() };
    // Refused as "unhealthy cluster" until the member asked has been connected to the
    // others for 5 s, as etcd refuses it.
    until_ok("the leader's removal", || {
        let mut remover = remover.clone();
        async move { remover.member_remove(leader).await }
    })
    .await;
    let survivor = if leader == m1_id { m2_client.clone() } else { m1_client.clone() };
    until_ok("a write after the leader's removal", || {
        let mut survivor = survivor.clone();
        async move { survivor.put("after-removal", "v", None).await }
    })
    .await;
    let mut survivor = survivor;
    let remaining = survivor.member_list().await.unwrap();
    assert_eq!(remaining.members().len(), 2);
    assert!(remaining.members().iter().all(|m| m.id() != leader));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = (m1, m2);
}

#[test]
fn etcdctl_member_add_prints_the_environment_for_the_new_member() {
    let cluster = Cluster::start(1);
    let cairn = cluster.members[0].as_ref().unwrap();
    let peer = free_port();
    let output = stdout(&etcdctl(cairn, &["member", "add", "new", &format!("--peer-urls=http://{peer}")]));
    assert!(output.starts_with("Member ") && output.contains(" added to cluster "), "{output}");
    assert!(output.contains("ETCD_NAME=\"new\""), "{output}");
    assert!(output.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "{output}");
    let list = stdout(&etcdctl(cairn, &["member", "list"]));
    assert!(list.contains(&format!(", unstarted, , http://{peer}, , false")), "{list}");
}
