//! Integration tests that run the real `cairn` binary on loopback and drive it with
//! real etcd clients: the `etcd-client` crate and Debian's `etcdctl`.

mod linearizability;
mod support;
mod t10_binary;
mod t20_kv;
mod t30_limits;
mod t40_etcdctl;
mod t50_crash;
mod t60_observability;
mod t65_maintenance;
mod t66_backup;
mod t67_gateway;
mod t70_auth;
mod t80_leases_and_watches;
mod t90_watch_scale;
mod t95_cluster;
mod t96_membership;
mod t97_faults;
mod t98_tls;
mod t99_hostile;
