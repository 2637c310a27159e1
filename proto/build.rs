// Generates the gRPC code from proto/ at build time (never committed, never edited by hand),
// with the protoc that ships inside the protoc-bin-vendored crate, so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Wire bytes stay `bytes::Bytes`, so gradients are not copied on decode.
    config.bytes(["."]);
    tonic_prost_build::configure().compile_with_config(config, &["proto/anyk/v1/anyk.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
