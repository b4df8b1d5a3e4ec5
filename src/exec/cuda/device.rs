//! GPU discovery, with clear errors instead of cudarc panics when libraries are missing.

use anyhow::bail;
use cudarc::driver::CudaContext;

/// Fails with one sentence when the driver or cuBLASLt cannot be loaded.
pub fn require_cuda() -> anyhow::Result<()> {
    // SAFETY: probing only dlopens the libraries.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        bail!("no CUDA driver (libcuda.so) on this machine: fwdbench run needs an NVIDIA GPU; `fwdbench check --device cpu` and `fwdbench count` work without one");
    }
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        bail!("libcublasLt.so.13 not found: install the CUDA 13 runtime libraries or add them to LD_LIBRARY_PATH");
    }
    if !super::cubins::KERNELS_BUILT {
        bail!("this fwdbench was built without CUDA kernels (no nvcc at build time): rebuild with NVCC or CUDA_HOME set, or after .ci/run installed the pinned nvcc wheels");
    }
    Ok(())
}

/// One line per visible GPU.
pub fn describe_gpus() -> anyhow::Result<Vec<String>> {
    let n = CudaContext::device_count()?;
    let mut out = Vec::new();
    for i in 0..n as usize {
        let ctx = CudaContext::new(i)?;
        let (major, minor) = ctx.compute_capability()?;
        out.push(format!(
            "{i}: {} (sm_{major}{minor}, {:.1} GiB)",
            ctx.name()?,
            ctx.total_mem()? as f64 / (1u64 << 30) as f64
        ));
    }
    Ok(out)
}
