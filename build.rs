// Generates the gRPC server and client stubs from proto/csi.proto (CSI) and
// proto/pluginregistration.proto (kubelet's plugin registration).
//
// protoc comes from the protoc-bin-vendored crate unless PROTOC is set, so a
// plain `cargo build` works on a machine without protobuf-compiler.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    println!("cargo:rerun-if-changed=proto/pluginregistration.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut includes = vec![String::from("proto")];
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
        includes.push(protoc_bin_vendored::include_path()?.display().to_string());
    }
    let includes: Vec<&str> = includes.iter().map(String::as_str).collect();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(
            &["proto/csi.proto", "proto/pluginregistration.proto"],
            &includes,
        )?;
    Ok(())
}
