//! cuBLASLt GEMMs with descriptors, layouts and the chosen algorithm cached per shape
//! (cudarc's safe wrapper rebuilds them and re-runs the heuristic on every call).
//!
//! Everything is row-major in fwdbench and column-major in cuBLAS, so `out = x . W^T`
//! (`x [m, k]`, `W [n, k]`, `out [m, n]`) is issued as the column-major
//! `out^T [n, m] = op(W) [n, k] . x^T [k, m]` with `op = T`: no copies, any row strides.
//! bf16 inputs, fp32 accumulation and scale, bf16 or fp32 output, optional bias epilogue,
//! strided batches (per-head matmuls of MLA's absorbed form).
//!
//! FP8 (`GemmShape::fp8`): e4m3 codes of W (128x128 block scales, `BLK128x128_32F`) and of
//! x (1x128 group scales from `quant_act_fp8`, `VEC128_32F`), bf16 out: DeepSeek-V3's
//! block-scaled GEMM through cuBLASLt 12.9+ on Hopper. Each operand's scales follow its
//! codes in the same buffer (`quant::Fp8Layout`). The default for FP8 linears (`--gemm tma`
//! picks kernels/gemm_fp8.cu instead). A cuBLASLt that rejects the scale modes fails the
//! plan with that said.

use std::collections::HashMap;
use std::ffi::c_void;

use anyhow::{anyhow, Context};
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;
use cudarc::driver::CudaStream;

use super::memory::DeviceBuffer;
use crate::plan::memory::CUBLASLT_WORKSPACE_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GemmShape {
    /// Rows of the row-major output (tokens).
    pub m: usize,
    /// Columns of the output.
    pub n: usize,
    pub k: usize,
    /// Row strides (elements) of x, W and out.
    pub ldx: usize,
    pub ldw: usize,
    pub ldo: usize,
    /// `W` is `[n, k]` (used transposed, a Linear) when true, `[k, n]` when false.
    pub w_is_n_by_k: bool,
    pub out_f32: bool,
    pub bias: bool,
    /// Strided batch: (count, x stride, W stride, out stride) in elements.
    pub batch: Option<(usize, usize, usize, usize)>,
    /// Block-scaled FP8: x and W are e4m3 codes with their scales behind them.
    pub fp8: bool,
}

impl GemmShape {
    /// Byte offsets of W's and x's scales behind their codes (FP8 only).
    fn fp8_scale_offsets(&self) -> (u64, u64) {
        let w = crate::quant::Fp8Layout::new(1, self.n, self.k).scale_offset();
        let x = crate::quant::Fp8Layout::new(1, self.m, self.k).scale_offset();
        (w as u64, x as u64)
    }
}

struct Prepared {
    desc: sys::cublasLtMatmulDesc_t,
    layouts: [sys::cublasLtMatrixLayout_t; 3],
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: created in `prepare`, destroyed once here.
        unsafe {
            for l in self.layouts {
                let _ = lt::destroy_matrix_layout(l);
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

pub struct Gemm {
    handle: sys::cublasLtHandle_t,
    workspace: DeviceBuffer,
    cache: HashMap<GemmShape, Prepared>,
    /// Shapes cuBLASLt had no algorithm for, with the reason: asked once, not once per
    /// layer that binds the same shape.
    refused: HashMap<GemmShape, String>,
}

fn lt_err(e: cudarc::cublaslt::result::CublasError) -> anyhow::Error {
    anyhow!("cuBLASLt: {e:?}")
}

impl Gemm {
    pub fn new() -> anyhow::Result<Self> {
        let handle = lt::create_handle().map_err(lt_err).context("creating the cuBLASLt handle")?;
        Ok(Gemm {
            handle,
            workspace: DeviceBuffer::new(CUBLASLT_WORKSPACE_BYTES)?,
            cache: HashMap::new(),
            refused: HashMap::new(),
        })
    }

    /// Whether cuBLASLt already said it has no algorithm for `s`.
    pub fn refuses(&self, s: &GemmShape) -> bool {
        self.refused.contains_key(s)
    }

    fn prepare(&mut self, s: &GemmShape) -> anyhow::Result<&Prepared> {
        if let Some(why) = self.refused.get(s) {
            return Err(anyhow!("{why}"));
        }
        if !self.cache.contains_key(s) {
            let built = if s.fp8 {
                self.build_fp8(s).with_context(|| {
                    // SAFETY: a plain version query.
                    let version = unsafe { sys::cublasLtGetVersion() };
                    format!(
                        "the block-scaled FP8 GEMM (m {} n {} k {}) is not available: cuBLASLt {version} on this GPU rejects 1x128 x 128x128 fp32 block scales (it needs cuBLASLt 12.9 or newer on Hopper, K a multiple of 16); pass --gemm tma to use fwdbench's own FP8 GEMM, or run with --quant bf16",
                        s.m, s.n, s.k
                    )
                })
            } else {
                self.build(s).with_context(|| format!("no cuBLASLt algorithm for {s:?}"))
            };
            match built {
                Ok(p) => {
                    self.cache.insert(*s, p);
                }
                Err(e) => {
                    self.refused.insert(*s, format!("{e:#}"));
                    return Err(e);
                }
            }
        }
        Ok(&self.cache[s])
    }

    fn build(&self, s: &GemmShape) -> anyhow::Result<Prepared> {
        use sys::cudaDataType_t::{CUDA_R_16BF, CUDA_R_32F};
        let out_type = if s.out_f32 { CUDA_R_32F } else { CUDA_R_16BF };
        // SAFETY: plain descriptor calls with valid pointers to locals.
        unsafe {
            let desc =
                lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, CUDA_R_32F).map_err(lt_err)?;
            let trans_a: i32 = s.w_is_n_by_k as i32; // 1 = T, 0 = N
            let set = |attr, v: *const c_void, size| lt::set_matmul_desc_attribute(desc, attr, v, size).map_err(lt_err);
            set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, &trans_a as *const _ as _, 4)?;
            if s.bias {
                let epi = sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS;
                set(sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE, &epi as *const _ as _, 4)?;
                let bias_type = out_type;
                set(
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                    &bias_type as *const _ as _,
                    4,
                )?;
            }
            // Column-major: A = W (op T: stored k x n; op N: stored n x k), B = x^T (k x m), D = out^T (n x m).
            let (a_rows, a_cols) = if s.w_is_n_by_k { (s.k, s.n) } else { (s.n, s.k) };
            let a =
                lt::create_matrix_layout(CUDA_R_16BF, a_rows as u64, a_cols as u64, s.ldw as i64).map_err(lt_err)?;
            let b = lt::create_matrix_layout(CUDA_R_16BF, s.k as u64, s.m as u64, s.ldx as i64).map_err(lt_err)?;
            let d = lt::create_matrix_layout(out_type, s.n as u64, s.m as u64, s.ldo as i64).map_err(lt_err)?;
            if let Some((count, sx, sw, so)) = s.batch {
                for (layout, stride) in [(a, sw), (b, sx), (d, so)] {
                    let count = count as i32;
                    let stride = stride as i64;
                    lt::set_matrix_layout_attribute(
                        layout,
                        sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                        &count as *const _ as _,
                        4,
                    )
                    .map_err(lt_err)?;
                    lt::set_matrix_layout_attribute(
                        layout,
                        sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                        &stride as *const _ as _,
                        8,
                    )
                    .map_err(lt_err)?;
                }
            }
            let algo = self.heuristic(desc, a, b, d)?;
            Ok(Prepared { desc, layouts: [a, b, d], algo })
        }
    }

    /// The FP8 descriptor: `out^T [n, m] = W [k, n]^T . xq^T [k, m]` with the weight's
    /// 128x128 block scales on A and the activation's 1x128 group scales on B.
    fn build_fp8(&self, s: &GemmShape) -> anyhow::Result<Prepared> {
        use sys::cublasLtMatmulDescAttributes_t as A;
        use sys::cudaDataType_t::{CUDA_R_16BF, CUDA_R_32F, CUDA_R_8F_E4M3};
        anyhow::ensure!(
            s.w_is_n_by_k && !s.out_f32 && s.batch.is_none(),
            "FP8 GEMMs are Linear-shaped with bf16 output"
        );
        // SAFETY: plain descriptor calls with valid pointers to locals.
        unsafe {
            let desc =
                lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, CUDA_R_32F).map_err(lt_err)?;
            let set = |attr, v: *const c_void, size| lt::set_matmul_desc_attribute(desc, attr, v, size).map_err(lt_err);
            let (trans_a, trans_b) = (1i32, 0i32); // FP8 on Hopper is TN only: both K-major.
            set(A::CUBLASLT_MATMUL_DESC_TRANSA, &trans_a as *const _ as _, 4)?;
            set(A::CUBLASLT_MATMUL_DESC_TRANSB, &trans_b as *const _ as _, 4)?;
            let w_mode = sys::cublasLtMatmulMatrixScale_t::CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
            let x_mode = sys::cublasLtMatmulMatrixScale_t::CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
            set(A::CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &w_mode as *const _ as _, 4)?;
            set(A::CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &x_mode as *const _ as _, 4)?;
            // The heuristic returns INVALID_VALUE for block scale modes while the scale
            // pointers are unset (measured on cuBLASLt 13.1, H200), so point both at the
            // 256-byte-aligned workspace until `run` sets the real ones (also 256-aligned).
            let placeholder = self.workspace.ptr;
            set(A::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &placeholder as *const u64 as _, 8)?;
            set(A::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &placeholder as *const u64 as _, 8)?;
            if s.bias {
                let epi = sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS;
                set(A::CUBLASLT_MATMUL_DESC_EPILOGUE, &epi as *const _ as _, 4)?;
                set(A::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &CUDA_R_16BF as *const _ as _, 4)?;
            }
            let a = lt::create_matrix_layout(CUDA_R_8F_E4M3, s.k as u64, s.n as u64, s.ldw as i64).map_err(lt_err)?;
            let b = lt::create_matrix_layout(CUDA_R_8F_E4M3, s.k as u64, s.m as u64, s.ldx as i64).map_err(lt_err)?;
            let d = lt::create_matrix_layout(CUDA_R_16BF, s.n as u64, s.m as u64, s.ldo as i64).map_err(lt_err)?;
            // From here on `Prepared`'s drop frees the descriptors on every exit.
            let mut p = Prepared { desc, layouts: [a, b, d], algo: std::mem::zeroed() };
            p.algo = self.heuristic(desc, a, b, d)?;
            Ok(p)
        }
    }

    /// The fastest algorithm cuBLASLt's heuristic offers within the workspace.
    ///
    /// # Safety
    /// The descriptor and layouts must be live.
    unsafe fn heuristic(
        &self,
        desc: sys::cublasLtMatmulDesc_t,
        a: sys::cublasLtMatrixLayout_t,
        b: sys::cublasLtMatrixLayout_t,
        d: sys::cublasLtMatrixLayout_t,
    ) -> anyhow::Result<sys::cublasLtMatmulAlgo_t> {
        // SAFETY: the caller's descriptors; the preference is created and destroyed here.
        unsafe {
            let pref = lt::create_matmul_pref().map_err(lt_err)?;
            let ws = CUBLASLT_WORKSPACE_BYTES;
            let set = lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const _ as _,
                8,
            )
            .map_err(lt_err);
            let heuristic =
                set.and_then(|_| lt::get_matmul_algo_heuristic(self.handle, desc, a, b, d, d, pref).map_err(lt_err));
            let _ = lt::destroy_matmul_pref(pref);
            Ok(heuristic?.algo)
        }
    }

    /// Chooses (and caches) the algorithm ahead of a graph capture.
    pub fn warm(&mut self, s: &GemmShape) -> anyhow::Result<()> {
        self.prepare(s).map(|_| ())
    }

    /// `out = alpha * x . op(W) (+ bias)`; pointers are device addresses.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        stream: &CudaStream,
        s: &GemmShape,
        x: u64,
        w: u64,
        out: u64,
        bias: Option<u64>,
        alpha: f32,
    ) -> anyhow::Result<()> {
        let handle = self.handle;
        let ws = self.workspace.ptr;
        let p = self.prepare(s)?;
        let beta = 0f32;
        // SAFETY: pointers come from live device buffers sized by the plan; layouts match.
        unsafe {
            if s.fp8 {
                let (w_off, x_off) = s.fp8_scale_offsets();
                let (w_scales, x_scales) = (w + w_off, x + x_off);
                for (attr, ptr) in [
                    (sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scales),
                    (sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scales),
                ] {
                    lt::set_matmul_desc_attribute(p.desc, attr, ptr as *const u64 as _, 8).map_err(lt_err)?;
                }
            }
            if let Some(b) = bias {
                lt::set_matmul_desc_attribute(
                    p.desc,
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    &b as *const _ as _,
                    8,
                )
                .map_err(lt_err)?;
            }
            lt::matmul(
                handle,
                p.desc,
                &alpha as *const f32 as _,
                &beta as *const f32 as _,
                w as *const c_void,
                p.layouts[0],
                x as *const c_void,
                p.layouts[1],
                out as *const c_void,
                p.layouts[2],
                out as *mut c_void,
                p.layouts[2],
                &p.algo,
                ws as *mut c_void,
                CUBLASLT_WORKSPACE_BYTES,
                stream.cu_stream() as _,
            )
            .map_err(lt_err)
        }
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        self.cache.clear();
        // SAFETY: the handle is destroyed once, after every descriptor.
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}
