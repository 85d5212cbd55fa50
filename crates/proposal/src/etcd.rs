//! etcd's `InternalRaftRequest` as the gate sees it: its legacy ID, Authenticate,
//! lease revocation as a priority request (etcd 3.7), a kind for metrics, and the
//! header the gate stamps.

use cairn_api::etcdserverpb::{InternalRaftRequest, RequestHeader};
use prost::Message as _;

use crate::{Header, Request};

/// An `InternalRaftRequest` for the gate, borrowed so that a request refused as stale
/// can be proposed again with a fresh header.
#[derive(Debug)]
pub struct Proposal<'a>(pub &'a mut InternalRaftRequest);

impl Request for Proposal<'_> {
    fn legacy_id(&self) -> u64 {
        self.0.id
    }

    fn is_authenticate(&self) -> bool {
        self.0.authenticate.is_some()
    }

    fn is_priority(&self) -> bool {
        // As etcd 3.7: revoking a lease may use twice the gap, so that expiry keeps up
        // under load.
        self.0.lease_revoke.is_some()
    }

    fn kind(&self) -> &'static str {
        let request = &self.0;
        if request.put.is_some() {
            "put"
        } else if request.delete_range.is_some() {
            "delete_range"
        } else if request.txn.is_some() {
            "txn"
        } else if request.compaction.is_some() {
            "compaction"
        } else if cairn_auth::etcd::is_auth_request(request) {
            "auth"
        } else if request.lease_grant.is_some() {
            "lease_grant"
        } else if request.lease_revoke.is_some() {
            "lease_revoke"
        } else if request.lease_checkpoint.is_some() {
            "lease_checkpoint"
        } else {
            "other"
        }
    }

    fn set_header(&mut self, header: Header) {
        self.0.header = Some(RequestHeader {
            id: header.id,
            username: header.username,
            auth_revision: header.auth_revision,
        });
    }

    fn encode(&self) -> Vec<u8> {
        self.0.encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use cairn_api::etcdserverpb::{AuthEnableRequest, LeaseRevokeRequest, PutRequest};

    use super::*;

    #[test]
    fn the_gate_sees_etcds_request_kinds_and_stamps_its_header() {
        let mut put = InternalRaftRequest { put: Some(PutRequest::default()), id: 9, ..Default::default() };
        let mut proposal = Proposal(&mut put);
        assert_eq!((proposal.kind(), proposal.legacy_id(), proposal.is_priority()), ("put", 9, false));
        proposal.set_header(Header { id: 7, username: "alice".into(), auth_revision: 3 });
        let decoded = InternalRaftRequest::decode(proposal.encode().as_slice()).unwrap();
        assert_eq!(decoded.header, Some(RequestHeader { id: 7, username: "alice".into(), auth_revision: 3 }));
        let mut revoke =
            InternalRaftRequest { lease_revoke: Some(LeaseRevokeRequest { id: 1 }), ..Default::default() };
        assert!(Proposal(&mut revoke).is_priority());
        let mut enable =
            InternalRaftRequest { auth_enable: Some(AuthEnableRequest {}), ..Default::default() };
        assert_eq!(Proposal(&mut enable).kind(), "auth");
    }
}
