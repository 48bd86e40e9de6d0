//! Generates the gRPC code for `proto/modbot/v1/*.proto` with a vendored `protoc`,
//! so building modbot needs nothing installed by hand.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/modbot/v1/common.proto",
    "proto/modbot/v1/moderation.proto",
    "proto/modbot/v1/actions.proto",
    "proto/modbot/v1/appeals.proto",
    "proto/modbot/v1/admin.proto",
    "proto/modbot/v1/review.proto",
    "proto/modbot/v1/transparency.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("modbot_descriptor.bin"))
        .compile_protos(
            &PROTOS.iter().map(PathBuf::from).collect::<Vec<_>>(),
            &[PathBuf::from("proto"), well_known],
        )?;
    Ok(())
}
