//! NVTX ranges around forwards and ops, so nsys and ncu show fwdbench's op names. Ranges
//! are pushed only while profiling (`--profile`) or with FWDBENCH_NVTX=1, so the default
//! timing loop makes no extra host calls.
//!
//! The library is loaded here rather than through cudarc's `nvtx` feature: cudarc 0.19.10
//! dlopens only `libnvToolsExt` and panics on the first range when it is missing, and CUDA
//! 13 no longer ships that library; it ships NVTX3 headers plus `libnvtx3interop.so.1`,
//! which exports the same C entry points. Either is tried; with neither, ranges are no-ops.

use std::ffi::{c_char, c_int, CString};
use std::sync::OnceLock;

use cudarc::driver::CudaGraph;

use crate::exec::cuda::engine::BoundPlan;
use crate::exec::cuda::gpu::Gpu;

/// Library names tried in order (FWDBENCH_NVTX_LIB, a path, first when set).
const LIBRARIES: [&str; 4] = ["libnvToolsExt.so.1", "libnvToolsExt.so", "libnvtx3interop.so.1", "libnvtx3interop.so"];

type PushFn = unsafe extern "C" fn(*const c_char) -> c_int;
type PopFn = unsafe extern "C" fn() -> c_int;

struct Api {
    push: PushFn,
    pop: PopFn,
    /// Kept loaded for as long as `push` and `pop` may be called.
    _lib: libloading::Library,
}

/// The NVTX entry points, if a library could be loaded.
pub struct Nvtx {
    api: Option<Api>,
    /// Which library answered, for `fwdbench run`'s note.
    pub loaded_from: Option<String>,
}

fn load(name: &str) -> Option<Api> {
    // SAFETY: loading runs the library's initialisers; NVTX libraries have none that
    // touch our state. The symbols are NVTX's v2 C API, with these exact signatures.
    unsafe {
        let lib = libloading::Library::new(name).ok()?;
        let push = *lib.get::<PushFn>(b"nvtxRangePushA\0").ok()?;
        let pop = *lib.get::<PopFn>(b"nvtxRangePop\0").ok()?;
        Some(Api { push, pop, _lib: lib })
    }
}

impl Nvtx {
    /// The process's NVTX, loaded on first use.
    pub fn get() -> &'static Nvtx {
        static NVTX: OnceLock<Nvtx> = OnceLock::new();
        NVTX.get_or_init(|| {
            let explicit = std::env::var("FWDBENCH_NVTX_LIB").ok().filter(|p| !p.is_empty());
            let names = explicit.iter().map(String::as_str).chain(LIBRARIES);
            for name in names {
                if let Some(api) = load(name) {
                    return Nvtx { api: Some(api), loaded_from: Some(name.to_string()) };
                }
            }
            Nvtx::off()
        })
    }

    /// Ranges that do nothing.
    pub const fn off() -> Nvtx {
        Nvtx { api: None, loaded_from: None }
    }

    /// A range named `label`, closed when the guard drops.
    pub fn range(&self, label: &CString) -> Range<'_> {
        if let Some(api) = &self.api {
            // SAFETY: `label` is NUL-terminated and outlives the call (NVTX copies it).
            unsafe { (api.push)(label.as_ptr()) };
        }
        Range { nvtx: self, _same_thread: std::marker::PhantomData }
    }
}

/// An open range; dropping it pops it.
pub struct Range<'a> {
    nvtx: &'a Nvtx,
    /// NVTX ranges are per thread: the guard must drop where it was made (not `Send`).
    _same_thread: std::marker::PhantomData<*const ()>,
}

impl Drop for Range<'_> {
    fn drop(&mut self) {
        if let Some(api) = &self.nvtx.api {
            // SAFETY: pops the range this guard pushed, on the thread that pushed it.
            unsafe { (api.pop)() };
        }
    }
}

/// FWDBENCH_NVTX=1 (or `true`): ranges around every forward, timed ones included.
pub fn requested_by_env() -> bool {
    std::env::var("FWDBENCH_NVTX").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// A label NVTX can take: op names come from configs, and a stray NUL must not fail a run.
pub fn label(text: &str) -> CString {
    CString::new(text.replace('\0', " ")).expect("NULs were replaced")
}

/// A bound plan's range labels, made once per shape so a forward allocates nothing.
pub struct Annotated<'a> {
    nvtx: &'a Nvtx,
    forward: CString,
    replay: CString,
    ops: Vec<CString>,
}

impl<'a> Annotated<'a> {
    /// Labels `<phase> bsz <b> seq <s>` for forwards and `<index> <op name> (<kind>)` for ops.
    pub fn new(nvtx: &'a Nvtx, bound: &BoundPlan) -> Self {
        let s = bound.plan.shape;
        let shape = format!("{} bsz {} seq {}", s.phase.name(), s.batch, s.seq);
        let ops = bound
            .plan
            .ops
            .iter()
            .enumerate()
            .map(|(i, p)| label(&format!("{i} {} ({})", p.site.name, p.op.kind_name())))
            .collect();
        Annotated {
            nvtx,
            forward: label(&format!("forward {shape}")),
            replay: label(&format!("graph replay {shape}")),
            ops,
        }
    }

    /// Enqueues the whole forward, a range around it and around each op.
    pub fn forward(&self, gpu: &Gpu, bound: &BoundPlan) -> anyhow::Result<()> {
        let _forward = self.nvtx.range(&self.forward);
        (0..self.ops.len()).try_for_each(|i| self.op(gpu, bound, i))
    }

    /// Enqueues op `i` inside its range.
    pub fn op(&self, gpu: &Gpu, bound: &BoundPlan, i: usize) -> anyhow::Result<()> {
        let _op = self.nvtx.range(&self.ops[i]);
        bound.run_op(gpu, i)
    }

    /// Launches a captured forward inside a range.
    pub fn replay(&self, graph: &CudaGraph) -> anyhow::Result<()> {
        let _replay = self.nvtx.range(&self.replay);
        Ok(graph.launch()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_without_a_library_are_no_ops() {
        let off = Nvtx::off();
        let outer = off.range(&label("prefill forward"));
        drop(off.range(&label("op\0with nul")));
        drop(outer);
        assert_eq!(label("a\0b").as_bytes(), b"a b");
        // Loading never fails the run: either a library answered or ranges are off.
        let got = Nvtx::get();
        assert_eq!(got.loaded_from.is_some(), got.api.is_some());
        drop(got.range(&label("probe")));
    }
}
