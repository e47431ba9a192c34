//! Generates the server side of the EventStoreDB/KurrentDB gRPC protocol from the `.proto` files in
//! `proto/` with `protox` (a protobuf compiler in Rust, so no `protoc` is needed) and `tonic-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(
        ["proto/streams.proto", "proto/serverfeatures.proto"],
        ["proto"],
    )?;
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
