//! `fwdbench info`: what this build and machine can do.

use clap::Args;

use fwdbench::config::knobs;
use fwdbench::exec::cuda::cubins;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  fwdbench info")]
pub struct InfoArgs {}

pub fn info(_: InfoArgs) -> anyhow::Result<()> {
    println!("fwdbench {} ({})", env!("CARGO_PKG_VERSION"), env!("FWDBENCH_GIT_REV"));
    if cubins::KERNELS_BUILT {
        let names: Vec<&str> = cubins::CUBINS.iter().map(|(n, _)| *n).collect();
        println!("kernels: built for sm_90a by {} ({})", cubins::NVCC_VERSION, names.join(", "));
    } else {
        println!("kernels: not built (no nvcc at build time); `fwdbench run` needs a build with kernels, the CPU reference works");
    }
    // SAFETY: probing only dlopens the library; nothing is called when it is absent.
    let driver = unsafe { cudarc::driver::sys::is_culib_present() };
    let cublas = unsafe { cudarc::cublaslt::sys::is_culib_present() };
    let nccl = unsafe { cudarc::nccl::sys::is_culib_present() };
    println!("libcuda: {}", if driver { "found" } else { "not found" });
    println!("libcublasLt: {}", if cublas { "found" } else { "not found" });
    println!("libnccl: {}", if nccl { "found" } else { "not found" });
    println!("kernel knobs (environment; unset = the measured default, docs/perf.md):");
    let set = knobs::set_in(std::env::vars());
    for k in knobs::KNOBS {
        let now = set.iter().find(|(n, _)| n == k.name).map(|(_, v)| format!("  [set: {v}]")).unwrap_or_default();
        println!("  {:<30} {:<24} {}{now}", k.name, k.values.describe(), k.what);
    }
    if driver {
        match fwdbench::exec::cuda::device::describe_gpus() {
            Ok(gpus) => gpus.iter().for_each(|g| println!("gpu: {g}")),
            Err(e) => println!("gpu: none usable ({e})"),
        }
    }
    Ok(())
}
