//! What every family's `prepare` works with: the bound plan's addresses ([`Prep`]) and the
//! prepared device calls it returns ([`Call`]). A plan of one op binds and launches through
//! the same code as a whole model, so nothing here assumes more than the plan it is given.

use std::collections::HashMap;

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::super::engine::DeviceCaches;
use super::super::gemm::GemmShape;
use super::super::gpu::{Gpu, KernelName};
use super::super::memory::DeviceBuffer;
use crate::plan::memory::MemoryPlan;
use crate::plan::{CacheId, Plan, View, WeightId};

/// A kernel launch with its parameters captured (each kernel has its own Params type).
type Launcher = Box<dyn Fn(&Gpu, KernelName, LaunchConfig) -> anyhow::Result<()>>;
/// Any other work enqueued on the GPU's stream.
type Enqueue = Box<dyn Fn(&Gpu) -> anyhow::Result<()>>;

/// One prepared device call of an op.
pub enum Call {
    Kernel(KernelName, LaunchConfig, Launcher),
    Gemm {
        shape: GemmShape,
        x: u64,
        w: u64,
        out: u64,
        bias: Option<u64>,
        alpha: f32,
    },
    /// Anything else enqueued on the stream (NCCL calls, device copies).
    Custom(Enqueue),
}

impl Call {
    /// What the call launches, for per-call timings: the kernel's name, `cublaslt_gemm`,
    /// or `stream_call` (an NCCL call, a device copy).
    pub fn label(&self) -> &'static str {
        match self {
            Call::Kernel(k, ..) => k.1,
            Call::Gemm { .. } => "cublaslt_gemm",
            Call::Custom(_) => "stream_call",
        }
    }

    /// Bytes of SASS of the kernel the call launches (`None` for a cuBLASLt GEMM or any
    /// other stream call, whose code is not ours).
    pub fn code_bytes(&self) -> Option<u64> {
        match self {
            Call::Kernel(k, ..) => super::super::cubins::code_bytes(k.0, k.1),
            _ => None,
        }
    }

    /// Enqueues the call on the GPU's stream.
    pub fn enqueue(&self, gpu: &Gpu) -> anyhow::Result<()> {
        match self {
            Call::Kernel(k, cfg, f) => f(gpu, *k, *cfg),
            Call::Gemm { shape, x, w, out, bias, alpha } => {
                gpu.gemm.borrow_mut().run(&gpu.stream, shape, *x, *w, *out, *bias, *alpha)
            }
            Call::Custom(f) => f(gpu),
        }
    }
}

/// A kernel call with parameters `p`.
pub fn kernel<P: DeviceRepr + Copy + 'static>(k: KernelName, cfg: LaunchConfig, p: P) -> Call {
    Call::Kernel(k, cfg, Box::new(move |gpu, k, cfg| gpu.launch(k, cfg, p)))
}

/// Device address of a view: the arena base, the tensor's planned offset, the column.
pub fn view_ptr(plan: &Plan, mem: &MemoryPlan, arena: u64, v: View) -> u64 {
    arena + (mem.offsets[v.id.0] + v.col * plan.tensor(v.id).dtype.bytes()) as u64
}

/// Everything a family's `prepare` reads: the plan and its memory plan, the device
/// addresses of arena, weights, caches, scratch and inputs, and a place for the small
/// buffers some ops own (rope tables, gather indices), which live as long as the bound plan.
pub struct Prep<'a> {
    pub gpu: &'a Gpu,
    pub plan: &'a Plan,
    pub mem: &'a MemoryPlan,
    pub arena: u64,
    pub weights: &'a [u64],
    pub caches: &'a DeviceCaches,
    /// The plan's one scratch region (`mem.scratch_bytes`), reused by every op.
    pub scratch: u64,
    /// i32 token ids `[tokens]`, set before each forward.
    pub ids: u64,
    /// i32 position of every token (`plan.positions`).
    pub positions: u64,
    aux: Vec<DeviceBuffer>,
    tables: HashMap<String, u64>,
}

impl<'a> Prep<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &'a Gpu,
        plan: &'a Plan,
        mem: &'a MemoryPlan,
        arena: u64,
        weights: &'a [u64],
        caches: &'a DeviceCaches,
        scratch: u64,
        ids: u64,
    ) -> anyhow::Result<Self> {
        let positions: Vec<i32> = plan.positions.iter().map(|&p| p as i32).collect();
        let buf = DeviceBuffer::upload(&positions)?;
        let positions = buf.ptr;
        Ok(Prep {
            gpu,
            plan,
            mem,
            arena,
            weights,
            caches,
            scratch,
            ids,
            positions,
            aux: vec![buf],
            tables: HashMap::new(),
        })
    }

    /// The buffers the ops uploaded; the bound plan keeps them alive.
    pub fn into_aux(self) -> Vec<DeviceBuffer> {
        self.aux
    }

    pub fn ptr(&self, v: View) -> u64 {
        view_ptr(self.plan, self.mem, self.arena, v)
    }
    /// Start of the whole tensor a view belongs to (kernels that take a column offset).
    pub fn base(&self, v: View) -> u64 {
        self.ptr(self.plan.full(v.id))
    }
    /// Row stride of the view's tensor, in elements.
    pub fn ld(&self, v: View) -> i32 {
        self.plan.tensor(v.id).cols as i32
    }
    pub fn rows(&self, v: View) -> i32 {
        self.plan.tensor(v.id).rows as i32
    }
    pub fn w(&self, id: WeightId) -> u64 {
        self.weights[id.0]
    }
    /// An optional weight's address, 0 (the kernels' "none") when absent.
    pub fn w_or_null(&self, id: Option<WeightId>) -> u64 {
        id.map(|w| self.w(w)).unwrap_or(0)
    }
    /// K (or MLA latent) cache and V cache (0 when the cache has no V part).
    pub fn cache(&self, c: CacheId) -> (u64, u64) {
        (self.caches.k[c.0].ptr, self.caches.v[c.0].as_ref().map(|b| b.ptr).unwrap_or(0))
    }
    /// SM count the scratch was sized for; split heuristics must use the same.
    pub fn sm_count(&self) -> i32 {
        self.mem.target.sm_count
    }

    /// Uploads `data` into a buffer owned by the bound plan.
    pub fn upload<T>(&mut self, data: &[T]) -> anyhow::Result<u64> {
        let buf = DeviceBuffer::upload(data)?;
        let ptr = buf.ptr;
        self.aux.push(buf);
        Ok(ptr)
    }

    /// One uploaded table per distinct `key`, built by `make` the first time.
    pub fn shared_table(&mut self, key: String, make: impl FnOnce() -> Vec<f32>) -> anyhow::Result<u64> {
        if let Some(&ptr) = self.tables.get(&key) {
            return Ok(ptr);
        }
        let ptr = self.upload(&make())?;
        self.tables.insert(key, ptr);
        Ok(ptr)
    }
}
