//! Reads `ptxas -v` output for the signs of slow Hopper code. Shared by build.rs (which fails
//! the build on them) and tests/build_support.rs (which runs it on sample lines).
//!
//! Two ptxas diagnostics mean a kernel compiled but will run far below what it was written
//! for, and ptxas reports both only as "info":
//! - wgmma serialisation, the C7510-C7515 family: "Potential Performance Loss:
//!   wgmma.mma_async instructions are serialized due to <reason> in the function '<name>'";
//!   every wgmma then waits for the previous one, which costs most of the tensor-core rate.
//! - an ignored register reallocation, C7508: "Potential Performance Loss: 'setmaxnreg'
//!   ignored; unable to determine register count at entry." (the warp-specialised budgets
//!   never take effect; `__launch_bounds__(threads, 1)` gives ptxas the count it needs).
//!
//! Register spills are reported too, as a warning, not a failure.

/// A ptxas line worth reporting, with the kernel it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtxasFinding {
    /// Fails the build.
    SlowHopperCode { kernel: String, line: String },
    /// Printed as a cargo warning.
    Spill { kernel: String, line: String },
}

impl PtxasFinding {
    pub fn is_fatal(&self) -> bool {
        matches!(self, PtxasFinding::SlowHopperCode { .. })
    }
}

impl std::fmt::Display for PtxasFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PtxasFinding::SlowHopperCode { kernel, line } => write!(f, "kernel {kernel}: {line}"),
            PtxasFinding::Spill { kernel, line } => write!(f, "kernel {kernel} spills registers: {line}"),
        }
    }
}

/// The findings in one file's ptxas output, in order. The kernel is the function the line
/// names (`in the function 'x'`), else the one ptxas last announced (`Compiling entry
/// function 'x'`, `Function properties for x`).
pub fn classify(ptxas_output: &str) -> Vec<PtxasFinding> {
    let mut current = String::from("?");
    let mut findings = Vec::new();
    for raw in ptxas_output.lines() {
        let line = raw.trim();
        if let Some(name) = after_quote(line, "Compiling entry function '") {
            current = name;
        } else if let Some(i) = line.find("Function properties for ") {
            current = line[i + "Function properties for ".len()..].trim().to_string();
        }
        let lower = line.to_ascii_lowercase();
        let named = after_quote(line, "in the function '");
        let kernel = || named.clone().unwrap_or_else(|| current.clone());
        let wgmma_serialised = lower.contains("wgmma") && lower.contains("serialized");
        let setmaxnreg_ignored = lower.contains("setmaxnreg") && lower.contains("ignored");
        if wgmma_serialised || setmaxnreg_ignored {
            findings.push(PtxasFinding::SlowHopperCode { kernel: kernel(), line: line.to_string() });
        } else if lower.contains("spill") && !spills_nothing(&lower) {
            findings.push(PtxasFinding::Spill { kernel: kernel(), line: line.to_string() });
        }
    }
    findings
}

/// "N bytes spill stores, M bytes spill loads" with both zero.
fn spills_nothing(lower: &str) -> bool {
    lower.contains(" 0 bytes spill stores") && lower.contains(" 0 bytes spill loads")
}

/// The text between `prefix` and the next `'`.
fn after_quote(line: &str, prefix: &str) -> Option<String> {
    let start = line.find(prefix)? + prefix.len();
    let len = line[start..].find('\'')?;
    Some(line[start..start + len].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str = "ptxas info    : Compiling entry function 'flash_prefill_d128' for 'sm_90a'";

    #[test]
    fn wgmma_serialisation_fails_with_its_kernel() {
        let out = format!(
            "{ENTRY}\nptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are \
             serialized due to non wgmma instructions defining accumulator registers of a wgmma between start \
             and end of the pipeline stage in the function 'flash_prefill_d128'"
        );
        let f = classify(&out);
        assert_eq!(f.len(), 1);
        assert!(f[0].is_fatal());
        assert!(matches!(&f[0], PtxasFinding::SlowHopperCode { kernel, .. } if kernel == "flash_prefill_d128"));
        let c7511 = "ptxas info    : (C7511) Potential Performance Loss: wgmma.mma_async instructions are \
                     serialized due to insufficient register resources for the wgmma pipeline in the function 'g'";
        assert!(matches!(&classify(c7511)[..], [PtxasFinding::SlowHopperCode { kernel, .. }] if kernel == "g"));
    }

    #[test]
    fn ignored_setmaxnreg_fails_under_the_announced_entry() {
        let out = format!(
            "{ENTRY}\nptxas info    : (C7508) Potential Performance Loss: 'setmaxnreg' ignored; unable to \
             determine register count at entry."
        );
        let f = classify(&out);
        assert!(matches!(&f[..], [PtxasFinding::SlowHopperCode { kernel, .. }] if kernel == "flash_prefill_d128"));
    }

    #[test]
    fn spills_warn_and_ordinary_lines_pass() {
        let out = format!(
            "{ENTRY}\n\
             ptxas info    : Function properties for flash_prefill_d128\n\
             \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
             ptxas info    : Used 128 registers, used 1 barriers, 104448 bytes smem, 528 bytes cmem[0]\n\
             ptxas info    : Compiling entry function 'decode_attention_d256' for 'sm_90a'\n\
             \x20   64 bytes stack frame, 60 bytes spill stores, 60 bytes spill loads"
        );
        let f = classify(&out);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(!f[0].is_fatal());
        assert!(matches!(&f[0], PtxasFinding::Spill { kernel, .. } if kernel == "decode_attention_d256"));
        assert!(classify("ptxas info    : 0 bytes gmem\nptxas info    : Used 32 registers").is_empty());
    }
}
