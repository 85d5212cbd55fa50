//! Every request and response type of every service survives encode and decode with
//! every field set, so no field is lost between the `.proto` files and the Rust types.

use std::collections::BTreeSet;

use cairn_api::{authpb, etcdserverpb, mvccpb};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, Value};

fn pool() -> DescriptorPool {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let files = [
        "mvccpb/kv.proto",
        "authpb/auth.proto",
        "etcdserverpb/rpc.proto",
        "etcdserverpb/raft_internal.proto",
    ];
    let descriptors = protox::compile(files, [root]).expect("the .proto files compile");
    DescriptorPool::from_file_descriptor_set(descriptors).expect("a valid descriptor set")
}

/// A message of `descriptor` with every field set to a non-default value: the first
/// field of each oneof, one element in each repeated field, nested messages filled to
/// `depth` levels.
fn filled(descriptor: &MessageDescriptor, depth: usize) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    let mut oneofs_done = BTreeSet::new();
    for field in descriptor.fields() {
        if let Some(oneof) = field.containing_oneof()
            && !oneofs_done.insert(oneof.full_name().to_owned())
        {
            continue;
        }
        let number = field.number();
        let value = match field.kind() {
            Kind::Double => Value::F64(f64::from(number) + 0.5),
            Kind::Float => Value::F32(number as f32 + 0.5),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(-(number as i32)),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(i64::from(number) * 1_000_003),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(number + 7),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(u64::from(number) << 40 | 9),
            Kind::Bool => Value::Bool(true),
            Kind::String => Value::String(format!("{}-{number}", field.name())),
            Kind::Bytes => Value::Bytes(format!("b{number}\0\u{ff}").into_bytes().into()),
            Kind::Enum(kind) => Value::EnumNumber(kind.values().last().map_or(0, |value| value.number())),
            Kind::Message(kind) if depth == 0 => Value::Message(DynamicMessage::new(kind)),
            Kind::Message(kind) => Value::Message(filled(&kind, depth - 1)),
        };
        let value = if field.is_list() { Value::List(vec![value]) } else { value };
        message.set_field(&field, value);
    }
    message
}

/// Encodes a filled message, decodes it as the generated type `T`, encodes that and
/// checks that nothing was lost on the way.
fn roundtrip<T: prost::Message + Default + PartialEq>(pool: &DescriptorPool, name: &str) {
    let descriptor = pool.get_message_by_name(name).unwrap_or_else(|| panic!("{name} is not in the protos"));
    let original = filled(&descriptor, 3);
    let bytes = original.encode_to_vec();
    let typed = T::decode(bytes.as_slice()).unwrap_or_else(|error| panic!("{name}: {error}"));
    if descriptor.fields().len() > 0 {
        assert!(typed != T::default(), "{name} decoded to its default");
    }
    let again = DynamicMessage::decode(descriptor, typed.encode_to_vec().as_slice()).unwrap();
    assert_eq!(again, original, "{name} changed in a round trip through the Rust type");
    assert!(again.unknown_fields().next().is_none(), "{name} gained unknown fields");
}

/// The protobuf name of a generated type: prost turns `HashKVRequest` into
/// `HashKvRequest`, so names are matched ignoring case.
fn proto_name(pool: &DescriptorPool, package: &str, rust_name: &str) -> String {
    let wanted = format!("{package}.{rust_name}");
    let mut matches = pool
        .all_messages()
        .map(|message| message.full_name().to_owned())
        .filter(|name| name.eq_ignore_ascii_case(&wanted));
    let name = matches.next().unwrap_or_else(|| panic!("{wanted} is not in the protos"));
    assert!(matches.next().is_none(), "{wanted} matches two messages");
    name
}

macro_rules! roundtrip_all {
    ($pool:expr, $($package:ident :: $message:ident),* $(,)?) => {{
        let mut checked = BTreeSet::new();
        $(
            let name = proto_name(&$pool, stringify!($package), stringify!($message));
            roundtrip::<$package::$message>(&$pool, &name);
            checked.insert(name);
        )*
        checked
    }};
}

#[test]
fn every_rpc_message_round_trips_with_every_field() {
    let pool = pool();
    let checked = roundtrip_all!(
        pool,
        etcdserverpb::RangeRequest,
        etcdserverpb::RangeResponse,
        etcdserverpb::PutRequest,
        etcdserverpb::PutResponse,
        etcdserverpb::DeleteRangeRequest,
        etcdserverpb::DeleteRangeResponse,
        etcdserverpb::TxnRequest,
        etcdserverpb::TxnResponse,
        etcdserverpb::CompactionRequest,
        etcdserverpb::CompactionResponse,
        etcdserverpb::WatchRequest,
        etcdserverpb::WatchResponse,
        etcdserverpb::LeaseGrantRequest,
        etcdserverpb::LeaseGrantResponse,
        etcdserverpb::LeaseRevokeRequest,
        etcdserverpb::LeaseRevokeResponse,
        etcdserverpb::LeaseKeepAliveRequest,
        etcdserverpb::LeaseKeepAliveResponse,
        etcdserverpb::LeaseTimeToLiveRequest,
        etcdserverpb::LeaseTimeToLiveResponse,
        etcdserverpb::LeaseLeasesRequest,
        etcdserverpb::LeaseLeasesResponse,
        etcdserverpb::MemberAddRequest,
        etcdserverpb::MemberAddResponse,
        etcdserverpb::MemberRemoveRequest,
        etcdserverpb::MemberRemoveResponse,
        etcdserverpb::MemberUpdateRequest,
        etcdserverpb::MemberUpdateResponse,
        etcdserverpb::MemberListRequest,
        etcdserverpb::MemberListResponse,
        etcdserverpb::MemberPromoteRequest,
        etcdserverpb::MemberPromoteResponse,
        etcdserverpb::AlarmRequest,
        etcdserverpb::AlarmResponse,
        etcdserverpb::StatusRequest,
        etcdserverpb::StatusResponse,
        etcdserverpb::DefragmentRequest,
        etcdserverpb::DefragmentResponse,
        etcdserverpb::HashRequest,
        etcdserverpb::HashResponse,
        etcdserverpb::HashKvRequest,
        etcdserverpb::HashKvResponse,
        etcdserverpb::SnapshotRequest,
        etcdserverpb::SnapshotResponse,
        etcdserverpb::MoveLeaderRequest,
        etcdserverpb::MoveLeaderResponse,
        etcdserverpb::DowngradeRequest,
        etcdserverpb::DowngradeResponse,
        etcdserverpb::AuthEnableRequest,
        etcdserverpb::AuthEnableResponse,
        etcdserverpb::AuthDisableRequest,
        etcdserverpb::AuthDisableResponse,
        etcdserverpb::AuthStatusRequest,
        etcdserverpb::AuthStatusResponse,
        etcdserverpb::AuthenticateRequest,
        etcdserverpb::AuthenticateResponse,
        etcdserverpb::AuthUserAddRequest,
        etcdserverpb::AuthUserAddResponse,
        etcdserverpb::AuthUserGetRequest,
        etcdserverpb::AuthUserGetResponse,
        etcdserverpb::AuthUserListRequest,
        etcdserverpb::AuthUserListResponse,
        etcdserverpb::AuthUserDeleteRequest,
        etcdserverpb::AuthUserDeleteResponse,
        etcdserverpb::AuthUserChangePasswordRequest,
        etcdserverpb::AuthUserChangePasswordResponse,
        etcdserverpb::AuthUserGrantRoleRequest,
        etcdserverpb::AuthUserGrantRoleResponse,
        etcdserverpb::AuthUserRevokeRoleRequest,
        etcdserverpb::AuthUserRevokeRoleResponse,
        etcdserverpb::AuthRoleAddRequest,
        etcdserverpb::AuthRoleAddResponse,
        etcdserverpb::AuthRoleGetRequest,
        etcdserverpb::AuthRoleGetResponse,
        etcdserverpb::AuthRoleListRequest,
        etcdserverpb::AuthRoleListResponse,
        etcdserverpb::AuthRoleDeleteRequest,
        etcdserverpb::AuthRoleDeleteResponse,
        etcdserverpb::AuthRoleGrantPermissionRequest,
        etcdserverpb::AuthRoleGrantPermissionResponse,
        etcdserverpb::AuthRoleRevokePermissionRequest,
        etcdserverpb::AuthRoleRevokePermissionResponse,
    );

    // The list above is every input and output type of every RPC, no more, no fewer.
    let mut rpc_types = BTreeSet::new();
    let mut services = BTreeSet::new();
    for service in pool.services() {
        services.insert(service.full_name().to_owned());
        for method in service.methods() {
            rpc_types.insert(method.input().full_name().to_owned());
            rpc_types.insert(method.output().full_name().to_owned());
        }
    }
    assert_eq!(checked, rpc_types);
    let expected_services = ["Auth", "Cluster", "KV", "Lease", "Maintenance", "Watch"]
        .map(|service| format!("etcdserverpb.{service}"));
    assert_eq!(services, BTreeSet::from(expected_services));
}

#[test]
fn stored_and_internal_messages_round_trip_with_every_field() {
    let pool = pool();
    roundtrip_all!(
        pool,
        mvccpb::KeyValue,
        mvccpb::Event,
        authpb::User,
        authpb::Role,
        authpb::Permission,
        authpb::UserAddOptions,
        etcdserverpb::InternalRaftRequest,
        etcdserverpb::RequestHeader,
        etcdserverpb::InternalAuthenticateRequest,
        etcdserverpb::MemberAttributesRequest,
        etcdserverpb::LeaseCheckpointRequest,
        etcdserverpb::LeaseCheckpointResponse,
    );
}
