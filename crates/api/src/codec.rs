//! The gRPC codec of every service here: tonic-prost's, with one check before a
//! `TxnRequest` is decoded.
//!
//! A txn may hold txns, to any depth etcd's Go decoder allows (it stops at 10,000
//! levels). prost's decoder is built here without its fixed limit of 100 levels, which
//! refused a txn nested 50 deep once Cairn wrapped it in a raft entry, so what bounds
//! the depth is this check: a txn nested more than [`MAX_TXN_DEPTH`] deep is refused
//! before anything decodes it, so that neither decoding nor applying it can run out of
//! stack.

use std::any::TypeId;
use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The deepest txn nesting accepted (a txn holding a txn is depth 2).
pub const MAX_TXN_DEPTH: usize = 256;

/// tonic-prost's codec, checking a `TxnRequest`'s depth before decoding it.
#[derive(Debug, Clone)]
pub struct EtcdCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for EtcdCodec<T, U> {
    fn default() -> Self {
        Self { inner: ProstCodec::default() }
    }
}

impl<T, U> Codec for EtcdCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = DepthChecked<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        DepthChecked { inner: self.inner.decoder(), _message: PhantomData }
    }
}

/// tonic-prost's decoder behind the depth check.
#[derive(Debug)]
pub struct DepthChecked<U> {
    inner: ProstDecoder<U>,
    _message: PhantomData<U>,
}

impl<U: Message + Default + 'static> Decoder for DepthChecked<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if TypeId::of::<U>() == TypeId::of::<crate::etcdserverpb::TxnRequest>()
            && txn_depth(buf.chunk()) > MAX_TXN_DEPTH
        {
            return Err(Status::invalid_argument(format!(
                "etcdserver: txn nested more than {MAX_TXN_DEPTH} deep"
            )));
        }
        self.inner.decode(buf)
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.inner.buffer_settings()
    }
}

/// How deep the txns in an encoded `TxnRequest` nest (1 for a flat txn), read from
/// the wire without decoding: `success` (2) and `failure` (3) hold `RequestOp`s, whose
/// `request_txn` (4) is a `TxnRequest`. Bytes that do not parse end the count there;
/// the decoder reports them.
pub fn txn_depth(encoded: &[u8]) -> usize {
    // (bytes, is a TxnRequest, its txn depth)
    let mut pending = vec![(encoded, true, 1)];
    let mut deepest = 0;
    while let Some((mut bytes, is_txn, depth)) = pending.pop() {
        if is_txn {
            deepest = deepest.max(depth);
            if deepest > MAX_TXN_DEPTH {
                return deepest;
            }
        }
        while !bytes.is_empty() {
            let Ok(key) = prost::encoding::decode_varint(&mut bytes) else { break };
            let (field, wire_type) = (key >> 3, key & 7);
            let length = match wire_type {
                0 => {
                    if prost::encoding::decode_varint(&mut bytes).is_err() {
                        break;
                    }
                    continue;
                }
                1 => 8,
                5 => 4,
                2 => match prost::encoding::decode_varint(&mut bytes) {
                    Ok(length) => length as usize,
                    Err(_) => break,
                },
                _ => break,
            };
            if length > bytes.len() {
                break;
            }
            let (value, rest) = bytes.split_at(length);
            bytes = rest;
            match (is_txn, field, wire_type) {
                (true, 2 | 3, 2) => pending.push((value, false, depth)),
                (false, 4, 2) => pending.push((value, true, depth + 1)),
                _ => {}
            }
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcdserverpb::request_op::Request as Op;
    use crate::etcdserverpb::{PutRequest, RequestOp, TxnRequest};

    fn nested(depth: usize) -> TxnRequest {
        let put = RequestOp {
            request: Some(Op::RequestPut(PutRequest { key: b"k".to_vec(), ..PutRequest::default() })),
        };
        let mut txn = TxnRequest { success: vec![put], ..TxnRequest::default() };
        for _ in 1..depth {
            let inner = RequestOp { request: Some(Op::RequestTxn(txn)) };
            txn = TxnRequest { failure: vec![inner], ..TxnRequest::default() };
        }
        txn
    }

    #[test]
    fn the_depth_is_read_from_the_wire() {
        for depth in [1, 2, 50, 120, MAX_TXN_DEPTH] {
            let encoded = nested(depth).encode_to_vec();
            assert_eq!(txn_depth(&encoded), depth);
            // And prost, built without its recursion limit, decodes it.
            assert_eq!(TxnRequest::decode(encoded.as_slice()).unwrap(), nested(depth));
        }
        assert!(txn_depth(&nested(MAX_TXN_DEPTH + 1).encode_to_vec()) > MAX_TXN_DEPTH);
        assert_eq!(txn_depth(b"\xff\xff"), 1, "garbage is left to the decoder");
    }
}
