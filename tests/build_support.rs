//! The build-support code build.rs includes: the ptxas classifier and the header item
//! scan run their own unit tests here (build scripts have no test harness), and the header
//! build.rs generated is checked against the Rust sources it came from.

#[path = "../build/params_header.rs"]
mod params_header;
#[path = "../build/ptxas.rs"]
mod ptxas;

use std::fs;

#[test]
fn generated_header_defines_every_kernel_struct_and_code() {
    let header = include_str!(concat!(env!("OUT_DIR"), "/gen/fwdbench_params.h"));
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/exec/cuda/kernels");
    let mut types = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        types.extend(params_header::exported_types(&fs::read_to_string(entry.unwrap().path()).unwrap()));
    }
    let params = types.iter().filter(|t| t.ends_with("Params")).count();
    assert!(params >= 22, "found only {params} parameter structs in {dir}: {types:?}");
    for code in ["Act", "RopeStyleCode", "ScoringCode", "GroupScoreCode"] {
        assert!(types.iter().any(|t| t == code), "{code} missing from {types:?}");
    }
    assert_eq!(params_header::missing_from_header(header, &types), Vec::<String>::new());
    // The pointer aliases stay names for common.cuh's typedefs, never header definitions.
    assert!(header.contains("ConstBf16Ptr q;") && !header.contains("using Bf16Ptr"));
}
