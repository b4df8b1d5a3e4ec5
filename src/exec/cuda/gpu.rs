//! One GPU: context, one non-default stream, the loaded cubins and the cuBLASLt handle.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use cudarc::driver::sys::{self, CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::cubins::CUBINS;
use super::gemm::Gemm;
use super::kernels::collective::CollectiveBackend;
use crate::config::run_conf::AttentionBackend;

pub type KernelName = (&'static str, &'static str);

/// Which GEMM runs plain linears: cuBLASLt (the product path), or the Hopper layer's TMA +
/// wgmma gate kernel (kernels/gemm_tma.cu), selectable in `kernel bench` to compare the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinearKernels {
    #[default]
    CublasLt,
    TmaGate,
}

/// Which GEMM runs FP8 linears (after `quant_act_fp8`): cuBLASLt's block-scaled matmul
/// (the default: 1.1-1.5x our kernel on DeepSeek-V3's prefill linears, measured on the
/// H200), or our block-scaled wgmma kernel (kernels/gemm_fp8.cu, `--gemm tma`), which the
/// grouped FP8 MoE GEMM builds on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fp8LinearKernels {
    #[default]
    CublasLt,
    Wgmma,
}

/// The kernel families a bound plan uses where there is a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelChoice {
    /// The run conf's `attention_backend` (fa3: kernels/attention_fa3.cu for prefill; fa2:
    /// kernels/attention_prefill.cu).
    pub attention: AttentionBackend,
    pub linear: LinearKernels,
    pub fp8_linear: Fp8LinearKernels,
}

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    /// Loaded functions and the dynamic shared memory limit each was raised to.
    funcs: RefCell<HashMap<KernelName, (CudaFunction, u32)>>,
    pub gemm: RefCell<Gemm>,
    pub sm_count: i32,
    pub name: String,
    /// How sharded plans' collectives run on this GPU (none: single-rank plans only).
    collectives: RefCell<Option<Rc<CollectiveBackend>>>,
    choice: Cell<KernelChoice>,
}

impl Gpu {
    pub fn new(ordinal: usize) -> anyhow::Result<Self> {
        super::device::require_cuda()?;
        let ctx = CudaContext::new(ordinal).with_context(|| format!("cannot open GPU {ordinal}"))?;
        // The engine orders its own work on one stream; per-slice events would only cost
        // host time and break graph capture.
        // SAFETY: called before any slice exists.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let mut modules = HashMap::new();
        for (name, bytes) in CUBINS {
            let m = ctx
                .load_module(Ptx::from_binary(bytes.to_vec()))
                .with_context(|| format!("loading kernels/{name}.cu (sm_90a cubin)"))?;
            modules.insert(*name, m);
        }
        let sm_count = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let name = ctx.name()?;
        Ok(Gpu {
            ctx,
            stream,
            modules,
            funcs: RefCell::new(HashMap::new()),
            gemm: RefCell::new(Gemm::new()?),
            sm_count,
            name,
            collectives: RefCell::new(None),
            choice: Cell::new(KernelChoice::default()),
        })
    }

    /// Sets how collectives run for plans bound from now on.
    pub fn set_collectives(&self, backend: CollectiveBackend) {
        *self.collectives.borrow_mut() = Some(Rc::new(backend));
    }

    pub fn collectives(&self) -> Option<Rc<CollectiveBackend>> {
        self.collectives.borrow().clone()
    }

    /// Sets the kernel families for plans bound from now on.
    pub fn set_kernel_choice(&self, choice: KernelChoice) {
        self.choice.set(choice);
    }

    pub fn kernel_choice(&self) -> KernelChoice {
        self.choice.get()
    }

    fn func(&self, k: KernelName, smem: u32) -> anyhow::Result<CudaFunction> {
        let cached = self.funcs.borrow().get(&k).cloned();
        let (f, raised) = match cached {
            Some(entry) => entry,
            None => {
                let m = self.modules.get(k.0).ok_or_else(|| anyhow!("kernel module {} was not built", k.0))?;
                let f =
                    m.load_function(k.1).with_context(|| format!("kernel {}::{} missing from its cubin", k.0, k.1))?;
                (f, 0)
            }
        };
        // Opt in to the dynamic shared memory a launch asks for (static + dynamic above
        // 48 KiB fails without it), raising the per-function limit as needed.
        let raised = if smem > raised {
            f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
                .with_context(|| format!("{}::{} needs {smem} bytes of dynamic shared memory", k.0, k.1))?;
            smem
        } else {
            raised
        };
        self.funcs.borrow_mut().insert(k, (f.clone(), raised));
        Ok(f)
    }

    pub fn launch<P: DeviceRepr>(&self, k: KernelName, cfg: LaunchConfig, params: P) -> anyhow::Result<()> {
        if cfg.grid_dim.0 == 0 || cfg.grid_dim.1 == 0 || cfg.grid_dim.2 == 0 {
            return Ok(());
        }
        let f = self.func(k, cfg.shared_mem_bytes)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&params);
        // SAFETY: params mirror the kernel's C struct (size-checked in tests); pointers
        // are live device buffers sized by the plan.
        unsafe { b.launch(cfg) }.with_context(|| format!("launching {}::{}", k.0, k.1))?;
        Ok(())
    }

    /// As [`Gpu::launch`], with programmatic dependent launch (PDL): the kernel may start
    /// while the previous one on the stream is still running, so it must execute
    /// `griddepcontrol.wait` before reading anything that kernel wrote.
    pub fn launch_pdl<P: DeviceRepr>(&self, k: KernelName, cfg: LaunchConfig, params: P) -> anyhow::Result<()> {
        if cfg.grid_dim.0 == 0 || cfg.grid_dim.1 == 0 || cfg.grid_dim.2 == 0 {
            return Ok(());
        }
        let f = self.func(k, cfg.shared_mem_bytes)?;
        // SAFETY: a zeroed attribute is a valid "ignore" entry; only the PDL value is set.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        let mut args = [&params as *const P as *mut std::ffi::c_void];
        self.ctx.bind_to_thread().context("binding the CUDA context")?;
        // SAFETY: as in `launch`: one params struct mirroring the kernel's C struct.
        let status =
            unsafe { sys::cuLaunchKernelEx(&config, f.cu_function(), args.as_mut_ptr(), std::ptr::null_mut()) };
        anyhow::ensure!(
            status == sys::CUresult::CUDA_SUCCESS,
            "launching {}::{} with PDL failed ({status:?})",
            k.0,
            k.1
        );
        Ok(())
    }

    pub fn sync(&self) -> anyhow::Result<()> {
        self.stream.synchronize().context("a kernel failed (stream synchronize)")
    }
}
