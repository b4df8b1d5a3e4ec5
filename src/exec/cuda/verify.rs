//! Every GPU op against the CPU reference, one op at a time, on random data.
//!
//! Both executors hold identical bf16-rounded random weights. Before op `i` the CPU's
//! current activations (rounded to bf16) and KV caches are uploaded into the GPU's
//! buffers, the op's outputs are poisoned with NaN, the GPU runs op `i` alone and the CPU
//! runs it from the same inputs; the outputs are compared. So each kernel is checked on
//! its own, on realistic inputs, and unwritten elements (NaN) always fail.

use serde::Serialize;

use super::engine::{BoundPlan, DeviceCaches};
use super::gpu::Gpu;
use super::weights::{DeviceWeights, Values};
use crate::check::compare;
use crate::exec::cpu::{load_weights, CpuRun, KvCaches};
use crate::plan::{DType, Op, Plan, TensorId};
use crate::weights::RandomWeights;

/// Largest accepted rel-L2 of a bf16 output against the f32 reference on the same inputs
/// (one bf16 rounding of inputs and outputs; GEMMs accumulate in fp32).
pub const BF16_TOL: f64 = 1e-2;

#[derive(Debug, Clone, Serialize)]
pub struct OpCheck {
    pub index: usize,
    pub name: String,
    pub kind: &'static str,
    pub rel_l2: f64,
    pub max_abs: f64,
    pub nan: bool,
    pub pass: bool,
}

fn bf16_round(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = half::bf16::from_f32(*x).to_f32());
}

fn upload_tensor(bound: &BoundPlan, plan: &Plan, id: TensorId, values: &[f32]) -> anyhow::Result<()> {
    let ptr = bound.tensor_ptr(plan.full(id));
    // SAFETY: the arena holds the whole tensor at this address.
    unsafe {
        match plan.tensor(id).dtype {
            DType::F32 => cudarc::driver::result::memcpy_htod_sync(ptr, values)?,
            DType::I32 => {
                cudarc::driver::result::memcpy_htod_sync(ptr, &values.iter().map(|v| *v as i32).collect::<Vec<_>>())?
            }
            DType::BF16 => cudarc::driver::result::memcpy_htod_sync(
                ptr,
                &values.iter().map(|v| half::bf16::from_f32(*v)).collect::<Vec<_>>(),
            )?,
        }
    }
    Ok(())
}

fn poison(bound: &BoundPlan, plan: &Plan, id: TensorId) -> anyhow::Result<()> {
    let t = plan.tensor(id);
    // 0xFF bytes are NaN in bf16 and f32 (and -1 in i32).
    // SAFETY: inside the arena.
    unsafe { cudarc::driver::result::memset_d8_sync(bound.tensor_ptr(plan.full(id)), 0xFF, t.bytes())? };
    Ok(())
}

fn upload_caches(dev: &DeviceCaches, cpu: &KvCaches) -> anyhow::Result<()> {
    for (i, k) in cpu.k.iter().enumerate() {
        let bf: Vec<half::bf16> = k.iter().map(|v| half::bf16::from_f32(*v)).collect();
        // SAFETY: same element count as allocated from the same CacheInfo.
        unsafe { cudarc::driver::result::memcpy_htod_sync(dev.k[i].ptr, &bf)? };
        if let Some(v) = &dev.v[i] {
            let bf: Vec<half::bf16> = cpu.v[i].iter().map(|x| half::bf16::from_f32(*x)).collect();
            unsafe { cudarc::driver::result::memcpy_htod_sync(v.ptr, &bf)? };
        }
    }
    Ok(())
}

/// Checks every op of each plan in turn (a prefill then a decode shares the KV caches);
/// `ids[p]` are plan p's input ids, flattened.
pub fn check_ops(gpu: &Gpu, plans: &[Plan], ids: &[Vec<i32>], seed: u64) -> anyhow::Result<Vec<OpCheck>> {
    let src = RandomWeights { seed };
    let mut dev_weights = DeviceWeights::default();
    let mut cpu_caches = KvCaches::default();
    let dev_caches = DeviceCaches::new(&plans[0].caches)?;
    let mut results = Vec::new();
    for (p, plan) in plans.iter().enumerate() {
        let cpu_w = load_weights(plan, &src, true)?;
        let ptrs = dev_weights.bind(gpu, plan, &Values::Random { seed })?;
        let bound = BoundPlan::new(gpu, plan.clone(), &ptrs, &dev_caches)?;
        let mut cpu = CpuRun::new(plan, &cpu_w, None);
        cpu_caches.ensure(&plan.caches);
        let step_ids = &ids[p];
        cpu.write(plan.full(plan.input_ids), &step_ids.iter().map(|&i| i as f32).collect::<Vec<_>>());
        bound.set_ids(step_ids)?;
        for i in 0..plan.ops.len() {
            let op = &plan.ops[i].op;
            for id in op.inputs() {
                if plan.tensor(id).dtype == DType::BF16 {
                    bf16_round(&mut cpu.acts[id.0]);
                }
                upload_tensor(&bound, plan, id, &cpu.acts[id.0])?;
            }
            // Only ops that touch a KV cache need the CPU's caches mirrored first.
            if matches!(op, Op::Attention { .. } | Op::MlaCacheWrite { .. } | Op::MlaDecodeAttention { .. }) {
                cpu_caches.k.iter_mut().chain(cpu_caches.v.iter_mut()).for_each(|c| bf16_round(c));
                upload_caches(&dev_caches, &cpu_caches)?;
            }
            let inputs = op.inputs();
            for id in op.outputs() {
                if !inputs.contains(&id) {
                    poison(&bound, plan, id)?;
                }
            }
            cpu.run_op(i, &mut cpu_caches);
            bound.run_op(gpu, i)?;
            gpu.sync().with_context_op(i, &plan.ops[i].site.name)?;
            let (mut worst, mut max_abs, mut nan) = (0f64, 0f64, false);
            for id in op.outputs() {
                let got = bound.read_tensor(id)?;
                let want = &cpu.acts[id.0];
                nan |= got.iter().any(|v| v.is_nan());
                let cols = plan.tensor(id).cols.max(1);
                let mut a = compare(&got, want, cols);
                if plan.tensor(id).dtype == DType::I32 {
                    // Expert ids are exact; a flipped near-tie is tolerated on 1% of rows.
                    let rows = plan.tensor(id).rows.max(1);
                    let same = got.chunks(cols).zip(want.chunks(cols)).filter(|(g, w)| g == w).count();
                    a.rel_l2 = if same * 100 >= rows * 99 { 0.0 } else { 1.0 - same as f64 / rows as f64 };
                    a.max_abs = 0.0;
                }
                worst = worst.max(a.rel_l2);
                max_abs = max_abs.max(a.max_abs);
            }
            // Cache writes are checked on the cache itself.
            let written = match op {
                Op::Attention { cache, .. } | Op::MlaCacheWrite { cache, .. } => Some(cache.0),
                _ => None,
            };
            if let Some(c) = written {
                let mut pairs = vec![(&dev_caches.k[c], &cpu_caches.k[c])];
                if let Some(v) = &dev_caches.v[c] {
                    pairs.push((v, &cpu_caches.v[c]));
                }
                for (dev, host) in pairs {
                    let got: Vec<f32> =
                        dev.download::<half::bf16>(host.len())?.into_iter().map(|v| v.to_f32()).collect();
                    let a = compare(&got, host, host.len().max(1));
                    nan |= got.iter().any(|v| v.is_nan());
                    worst = worst.max(a.rel_l2);
                    max_abs = max_abs.max(a.max_abs);
                }
            }
            let routed = matches!(op, Op::Route { .. });
            let tol = if routed { 2e-2 } else { BF16_TOL };
            results.push(OpCheck {
                index: i,
                name: plan.ops[i].site.name.clone()
                    + &plan.ops[i].site.layer.map(|l| format!("@{l}")).unwrap_or_default(),
                kind: op.kind_name(),
                rel_l2: worst,
                max_abs,
                nan,
                pass: !nan && worst <= tol,
            });
        }
    }
    Ok(results)
}

trait WithOp<T> {
    fn with_context_op(self, i: usize, name: &str) -> anyhow::Result<T>;
}

impl<T> WithOp<T> for anyhow::Result<T> {
    fn with_context_op(self, i: usize, name: &str) -> anyhow::Result<T> {
        anyhow::Context::with_context(self, || format!("op {i} ({name}) failed on the GPU"))
    }
}
