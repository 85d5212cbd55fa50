//! Generates the wire types and tonic services from `proto/` without a system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/mvccpb/kv.proto",
        "proto/authpb/auth.proto",
        "proto/etcdserverpb/rpc.proto",
        "proto/etcdserverpb/raft_internal.proto",
        "proto/cairnpb/peer.proto",
        "proto/v3lockpb/v3lock.proto",
        "proto/v3electionpb/v3election.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    // The descriptors themselves, for what works from them at run time (the JSON
    // gateway's mapping).
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR unset")?);
    std::fs::write(out.join("descriptors.bin"), prost::Message::encode_to_vec(&descriptors))?;
    // Both variants, picked by `cfg(feature = "grpc")` in lib.rs: with the services,
    // and the messages alone for crates that use etcd's types but no transport.
    for (dir, grpc) in [("grpc", true), ("messages", false)] {
        let out_dir = out.join(dir);
        std::fs::create_dir_all(&out_dir)?;
        tonic_prost_build::configure()
            .build_client(grpc)
            .build_server(grpc)
            .generate_default_stubs(true)
            .codec_path("crate::codec::EtcdCodec")
            .include_file("mod.rs")
            .out_dir(out_dir)
            .compile_fds(descriptors.clone())?;
    }
    Ok(())
}
