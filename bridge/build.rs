//! Generates the gRPC services from the top-level `proto/` directory.
//! protox (a protobuf compiler in Rust) parses the `.proto` files, so the
//! build needs no `protoc`; tonic-prost-build writes the Rust code, and
//! the encoded descriptors are kept for the reflection service.

use prost::Message as _;

const PROTOS: [&str; 2] = ["chronos/time/v1/time.proto", "chronos/ledger/v1/ledger.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(PROTOS, [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("chronos_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(false).compile_fds(fds)?;
    Ok(())
}
