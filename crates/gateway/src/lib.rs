//! etcd's gRPC-gateway: the JSON API that etcd serves over HTTP/1.1 next to gRPC on
//! its client URLs (`POST /v3/kv/range`, `/v3/watch`, `/v3/lease/grant`, ...), in front
//! of any etcd v3 gRPC endpoint: Cairn's own services through an in-process channel,
//! or a remote etcd.
//!
//! Nothing is written per message: every route names a gRPC method, and the request
//! and response are translated with protobuf's JSON mapping from the descriptors that
//! `cairn-api` ships (`prost-reflect`), as etcd's `grpc-gateway` does with
//! `OrigName`: etcd's field names (`create_revision`, `ID`), 64-bit integers as
//! strings, bytes as base64, enums by name, default values left out. Streams (`watch`,
//! `lease/keepalive`, `maintenance/snapshot`) answer one `{"result": ...}` object per
//! line. Errors answer etcd's body, `{"error": ..., "code": ..., "message": ...}`, with
//! the gateway's HTTP status for the gRPC code. `Authorization` goes on as the call's
//! `authorization` metadata, and `Grpc-Metadata-<name>` headers as `<name>`.
//!
//! [`health`] serves etcd's `/health`, `/livez`, `/readyz` and `/version` beside it,
//! from a probe of the member, and [`metrics`] `/metrics` in Prometheus text.
//!
//! **Invariant:** a request reaches the gRPC method only as the message the JSON
//! describes, and every answer the method gives reaches the client, translated, or
//! as an error; nothing is dropped or invented on the way.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:2379").connect().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, cairn_gateway::router(channel)).await?;
//! # Ok(())
//! # }
//! ```

pub mod health;
pub mod metrics;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use bytes::{Buf, BufMut, Bytes};
use futures::StreamExt;
use http::uri::PathAndQuery;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions};
use tonic::Code;
use tonic::transport::Channel;

/// etcd's gateway routes (its `google.api.http` bindings): the path under a version
/// prefix, the service and the method.
const ROUTES: &[(&str, &str, &str)] = &[
    ("kv/range", "etcdserverpb.KV", "Range"),
    ("kv/put", "etcdserverpb.KV", "Put"),
    ("kv/deleterange", "etcdserverpb.KV", "DeleteRange"),
    ("kv/txn", "etcdserverpb.KV", "Txn"),
    ("kv/compaction", "etcdserverpb.KV", "Compact"),
    ("watch", "etcdserverpb.Watch", "Watch"),
    ("lease/grant", "etcdserverpb.Lease", "LeaseGrant"),
    ("lease/revoke", "etcdserverpb.Lease", "LeaseRevoke"),
    ("kv/lease/revoke", "etcdserverpb.Lease", "LeaseRevoke"),
    ("lease/keepalive", "etcdserverpb.Lease", "LeaseKeepAlive"),
    ("lease/timetolive", "etcdserverpb.Lease", "LeaseTimeToLive"),
    ("kv/lease/timetolive", "etcdserverpb.Lease", "LeaseTimeToLive"),
    ("lease/leases", "etcdserverpb.Lease", "LeaseLeases"),
    ("kv/lease/leases", "etcdserverpb.Lease", "LeaseLeases"),
    ("cluster/member/add", "etcdserverpb.Cluster", "MemberAdd"),
    ("cluster/member/remove", "etcdserverpb.Cluster", "MemberRemove"),
    ("cluster/member/update", "etcdserverpb.Cluster", "MemberUpdate"),
    ("cluster/member/list", "etcdserverpb.Cluster", "MemberList"),
    ("cluster/member/promote", "etcdserverpb.Cluster", "MemberPromote"),
    ("maintenance/alarm", "etcdserverpb.Maintenance", "Alarm"),
    ("maintenance/status", "etcdserverpb.Maintenance", "Status"),
    ("maintenance/defragment", "etcdserverpb.Maintenance", "Defragment"),
    // etcd binds Hash and HashKV to the same path; Hash answers it (as etcd 3.4 does).
    ("maintenance/hash", "etcdserverpb.Maintenance", "Hash"),
    ("maintenance/snapshot", "etcdserverpb.Maintenance", "Snapshot"),
    ("maintenance/transfer-leadership", "etcdserverpb.Maintenance", "MoveLeader"),
    ("maintenance/downgrade", "etcdserverpb.Maintenance", "Downgrade"),
    ("auth/enable", "etcdserverpb.Auth", "AuthEnable"),
    ("auth/disable", "etcdserverpb.Auth", "AuthDisable"),
    ("auth/status", "etcdserverpb.Auth", "AuthStatus"),
    ("auth/authenticate", "etcdserverpb.Auth", "Authenticate"),
    ("auth/user/add", "etcdserverpb.Auth", "UserAdd"),
    ("auth/user/get", "etcdserverpb.Auth", "UserGet"),
    ("auth/user/list", "etcdserverpb.Auth", "UserList"),
    ("auth/user/delete", "etcdserverpb.Auth", "UserDelete"),
    ("auth/user/changepw", "etcdserverpb.Auth", "UserChangePassword"),
    ("auth/user/grant", "etcdserverpb.Auth", "UserGrantRole"),
    ("auth/user/revoke", "etcdserverpb.Auth", "UserRevokeRole"),
    ("auth/role/add", "etcdserverpb.Auth", "RoleAdd"),
    ("auth/role/get", "etcdserverpb.Auth", "RoleGet"),
    ("auth/role/list", "etcdserverpb.Auth", "RoleList"),
    ("auth/role/delete", "etcdserverpb.Auth", "RoleDelete"),
    ("auth/role/grant", "etcdserverpb.Auth", "RoleGrantPermission"),
    ("auth/role/revoke", "etcdserverpb.Auth", "RoleRevokePermission"),
    ("lock/lock", "v3lockpb.Lock", "Lock"),
    ("lock/unlock", "v3lockpb.Lock", "Unlock"),
    ("election/campaign", "v3electionpb.Election", "Campaign"),
    ("election/proclaim", "v3electionpb.Election", "Proclaim"),
    ("election/leader", "v3electionpb.Election", "Leader"),
    ("election/observe", "v3electionpb.Election", "Observe"),
    ("election/resign", "v3electionpb.Election", "Resign"),
];

/// The version prefixes etcd serves the gateway under: 3.5's, and 3.4's aliases.
pub const PREFIXES: &[&str] = &["/v3", "/v3beta", "/v3alpha"];

/// The gateway's routes, calling the gRPC services on `channel`. Routes whose method
/// the descriptors lack are left out.
pub fn router(channel: Channel) -> Router {
    let pool = DescriptorPool::decode(cairn_api::FILE_DESCRIPTOR_SET)
        .expect("the descriptors cairn-api ships are valid");
    let mut router = Router::new();
    for (path, service, name) in ROUTES {
        let Some(method) = pool
            .get_service_by_name(service)
            .and_then(|service| service.methods().find(|m| m.name() == *name))
        else {
            continue;
        };
        let route = Arc::new(Route { channel: channel.clone(), method });
        for prefix in PREFIXES {
            let route = Arc::clone(&route);
            router = router.route(
                &format!("{prefix}/{path}"),
                post(move |headers: HeaderMap, body: Bytes| async move { route.call(&headers, &body).await }),
            );
        }
    }
    router
}

/// One gRPC method behind a path.
struct Route {
    channel: Channel,
    method: MethodDescriptor,
}

impl Route {
    async fn call(&self, headers: &HeaderMap, body: &Bytes) -> Response {
        let requests = match decode_requests(&self.method.input(), body) {
            Ok(requests) => requests,
            Err(why) => return error(Code::InvalidArgument, &why),
        };
        let path = format!("/{}/{}", self.method.parent_service().full_name(), self.method.name());
        let path = PathAndQuery::try_from(path).expect("service and method names make a path");
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        if let Err(why) = grpc.ready().await {
            return error(Code::Unavailable, &why.to_string());
        }
        let output = self.method.output();
        let first = requests.first().cloned().unwrap_or_default();
        if self.method.is_client_streaming() {
            // The request stream stays open after the body's messages, as the HTTP
            // client's connection does: a watch lasts until the client goes.
            let stream = futures::stream::iter(requests).chain(futures::stream::pending());
            let request = with_metadata(tonic::Request::new(stream), headers);
            match grpc.streaming(request, path, RawCodec).await {
                Ok(response) => stream_response(output, response.into_inner()),
                Err(status) => error(status.code(), status.message()),
            }
        } else if self.method.is_server_streaming() {
            let request = with_metadata(tonic::Request::new(first), headers);
            match grpc.server_streaming(request, path, RawCodec).await {
                Ok(response) => stream_response(output, response.into_inner()),
                Err(status) => error(status.code(), status.message()),
            }
        } else {
            let request = with_metadata(tonic::Request::new(first), headers);
            match grpc.unary(request, path, RawCodec).await {
                Ok(response) => match to_json(&output, response.into_inner()) {
                    Ok(json) => json_response(StatusCode::OK, json),
                    Err(why) => error(Code::Internal, &why),
                },
                Err(status) => error(status.code(), status.message()),
            }
        }
    }
}

/// The body's JSON objects (none for an empty body: the default message) as encoded
/// `input` messages.
fn decode_requests(input: &MessageDescriptor, body: &[u8]) -> Result<Vec<Bytes>, String> {
    let mut requests = Vec::new();
    for value in serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>() {
        let value = value.map_err(|error| error.to_string())?;
        // As etcd's gateway: fields the message does not have are ignored.
        let options = prost_reflect::DeserializeOptions::new().deny_unknown_fields(false);
        let message = DynamicMessage::deserialize_with_options(input.clone(), value, &options)
            .map_err(|error| error.to_string())?;
        requests.push(Bytes::from(prost::Message::encode_to_vec(&message)));
    }
    if requests.is_empty() {
        requests.push(Bytes::new());
    }
    Ok(requests)
}

/// An encoded `output` message as etcd's gateway writes it.
fn to_json(output: &MessageDescriptor, bytes: Bytes) -> Result<Vec<u8>, String> {
    let message = DynamicMessage::decode(output.clone(), bytes).map_err(|error| error.to_string())?;
    let options = SerializeOptions::new().use_proto_field_name(true).stringify_64_bit_integers(true);
    let mut json = Vec::new();
    message
        .serialize_with_options(&mut serde_json::Serializer::new(&mut json), &options)
        .map_err(|error| error.to_string())?;
    Ok(json)
}

/// The call's metadata from the HTTP headers, as `grpc-gateway` forwards them.
fn with_metadata<T>(mut request: tonic::Request<T>, headers: &HeaderMap) -> tonic::Request<T> {
    let metadata = request.metadata_mut();
    for (name, value) in headers {
        let key = if name == header::AUTHORIZATION {
            "authorization".to_owned()
        } else if let Some(key) = name.as_str().strip_prefix("grpc-metadata-") {
            key.to_owned()
        } else {
            continue;
        };
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_bytes()),
        ) {
            metadata.insert(key, value);
        }
    }
    request
}

fn json_response(status: StatusCode, json: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json))
        .expect("a status, a header and a body make a response")
}

/// etcd's gateway error body and the HTTP status etcd's `grpc-gateway` gives the code.
fn error(code: Code, message: &str) -> Response {
    let body = serde_json::json!({ "error": message, "code": code as i32, "message": message });
    json_response(http_status(code), body.to_string().into_bytes())
}

fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A stream of responses as lines of `{"result": ...}`, ending with one
/// `{"error": ...}` line if the stream fails.
fn stream_response(output: MessageDescriptor, stream: tonic::Streaming<Bytes>) -> Response {
    let lines = futures::stream::unfold(Some(stream), move |state| {
        let output = output.clone();
        async move {
            let mut stream = state?;
            let line = match stream.message().await {
                Ok(Some(bytes)) => match to_json(&output, bytes) {
                    Ok(json) => {
                        let mut line = b"{\"result\":".to_vec();
                        line.extend_from_slice(&json);
                        line.extend_from_slice(b"}\n");
                        return Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), Some(stream)));
                    }
                    Err(why) => (Code::Internal, why),
                },
                Ok(None) => return None,
                Err(status) => (status.code(), status.message().to_owned()),
            };
            let (code, message) = line;
            let body = serde_json::json!({
                "error": { "grpc_code": code as i32, "http_code": http_status(code).as_u16(),
                           "message": message, "http_status": http_status(code).canonical_reason() }
            });
            Some((Ok(Bytes::from(format!("{body}\n"))), None))
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(lines))
        .expect("a status, a header and a body make a response")
}

/// Messages as their encoded bytes, both ways: the gateway never needs their types.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
