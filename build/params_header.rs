//! What goes into the kernels' generated header (`fwdbench_params.h`) from
//! src/exec/cuda/kernels/*.rs, and the check that it all arrived. Shared by build.rs (which
//! runs cbindgen and fails the build on a missing item) and tests/build_support.rs.

/// The `#[repr(C)]` structs and `#[repr(i32)]` enums declared in `src`, in order. cbindgen
/// exports only types reachable from extern functions unless told, and the kernels' structs
/// have none on the Rust side, so build.rs names each of these explicitly.
pub fn exported_types(src: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut repr = false;
    for line in src.lines().map(str::trim) {
        if line.starts_with("#[repr(C)]") || line.starts_with("#[repr(i32)]") {
            repr = true;
        } else if let Some(name) = line.strip_prefix("pub struct ").or_else(|| line.strip_prefix("pub enum ")) {
            if repr {
                names.push(name.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("").to_string());
            }
            repr = false;
        } else if !(line.starts_with("#[") || line.starts_with("//")) {
            repr = false;
        }
    }
    names
}

/// The `pub type X = u64;` pointer aliases of ptr.rs: kernels/common.cuh defines each as a
/// typed pointer, so the header must use the names without defining them.
pub fn pointer_aliases(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|l| l.trim().strip_prefix("pub type ")?.strip_suffix(" = u64;").map(str::to_string))
        .collect()
}

/// The names in `types` that `header` does not define (as `struct X {` or `enum X :`).
pub fn missing_from_header(header: &str, types: &[String]) -> Vec<String> {
    types
        .iter()
        .filter(|t| !header.contains(&format!("struct {t} {{")) && !header.contains(&format!("enum {t} :")))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "
/// Doc.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RmsNormParams {
    pub x: Bf16Ptr,
}
#[derive(Debug)]
pub struct NotExported {}
#[repr(i32)]
pub enum Act {
    Silu = 0,
}
#[repr(C)]
// a comment between
pub struct Tile { pub a: i32 }
";

    #[test]
    fn finds_repr_types_only() {
        assert_eq!(exported_types(SRC), ["RmsNormParams", "Act", "Tile"]);
    }

    #[test]
    fn aliases_and_missing_items() {
        assert_eq!(pointer_aliases("/// `bf16*`\npub type Bf16Ptr = u64;\npub type Other = i32;"), ["Bf16Ptr"]);
        let header = "struct RmsNormParams {\n  Bf16Ptr x;\n};\nenum Act : int32_t {\n};\n";
        let types: Vec<String> = ["RmsNormParams", "Act", "Tile"].map(String::from).to_vec();
        assert_eq!(missing_from_header(header, &types), ["Tile"]);
    }
}
