//! Weights on the GPU, by plan weight name (shared by every shape of a run): generated in
//! place by `fill_normal_*` from the same counter RNG as the CPU, or uploaded from a
//! checkpoint.

use std::collections::HashMap;

use super::gpu::Gpu;
use super::kernels::init::{fill_normal_launch, FillNormalParams, FILL_NORMAL_BF16, FILL_NORMAL_F32};
use super::kernels::quant::{quant_weight_launch, QuantWeightParams, QUANT_WEIGHT_FP8};
use super::memory::DeviceBuffer;
use crate::plan::{DType, Plan, WeightInfo};
use crate::weights::{materialize, rng, WeightSource};

/// Where the values come from.
pub enum Values<'a> {
    Random { seed: u64 },
    Source(&'a dyn WeightSource),
}

#[derive(Default)]
pub struct DeviceWeights {
    pub map: HashMap<String, DeviceBuffer>,
}

impl DeviceWeights {
    pub fn bytes(&self) -> usize {
        self.map.values().map(|b| b.bytes).sum()
    }

    /// Makes sure every weight of `plan` is resident; returns their device addresses.
    pub fn bind(&mut self, gpu: &Gpu, plan: &Plan, values: &Values) -> anyhow::Result<Vec<u64>> {
        for w in &plan.weights {
            if !self.map.contains_key(&w.name) {
                let buf = match values {
                    Values::Random { seed } => fill_random(gpu, w, *seed)?,
                    Values::Source(src) => upload(w, *src)?,
                };
                self.map.insert(w.name.clone(), buf);
            }
        }
        gpu.sync()?;
        Ok(plan.weights.iter().map(|w| self.map[&w.name].ptr).collect())
    }
}

fn fill_random(gpu: &Gpu, w: &WeightInfo, seed: u64) -> anyhow::Result<DeviceBuffer> {
    if w.dtype == DType::F8E4M3 {
        return fill_random_fp8(gpu, w, seed);
    }
    let buf = DeviceBuffer::zeroed(w.bytes())?;
    let elem = w.dtype.bytes() as u64;
    for p in &w.pieces {
        let offset = ((p.dst_index * w.rows + p.dst_row) * w.cols + p.dst_col) as u64;
        let params = FillNormalParams {
            dst: buf.ptr + offset * elem,
            dst_ld: w.cols as i64,
            rows: p.rows as i64,
            cols: p.cols as i64,
            seed: rng::tensor_seed(seed, &p.hf_name),
            mean: p.init.mean,
            std: p.init.std,
            src_row0: p.src_row as i64,
            src_col0: p.src_col as i64,
            src_ld: if p.transposed_in_file { p.hf_rows as i64 } else { p.hf_cols as i64 },
            transposed: p.transposed_in_file as i32,
        };
        let kernel = if w.dtype == DType::F32 { FILL_NORMAL_F32 } else { FILL_NORMAL_BF16 };
        gpu.launch(kernel, fill_normal_launch(p.rows, p.cols), params)?;
    }
    Ok(buf)
}

/// An FP8 weight: its values generated in f32 (as the CPU does), then quantized per
/// 128x128 block by `quant_weight_fp8` into codes and scales.
fn fill_random_fp8(gpu: &Gpu, w: &WeightInfo, seed: u64) -> anyhow::Result<DeviceBuffer> {
    let values = fill_random(gpu, &WeightInfo { dtype: DType::F32, ..w.clone() }, seed)?;
    let layout = w.fp8_layout();
    let buf = DeviceBuffer::zeroed(w.bytes())?;
    let params = QuantWeightParams {
        src: values.ptr,
        rows: w.rows as i64,
        cols: w.cols as i64,
        codes: buf.ptr,
        scales: buf.ptr + layout.scale_offset() as u64,
        scale_ld: layout.weight_scale_ld() as i32,
    };
    gpu.launch(QUANT_WEIGHT_FP8, quant_weight_launch(&layout), params)?;
    // The f32 values are freed on return: the kernel must be done with them.
    gpu.sync()?;
    Ok(buf)
}

fn upload(w: &WeightInfo, src: &dyn WeightSource) -> anyhow::Result<DeviceBuffer> {
    if w.dtype == DType::F8E4M3 {
        let (codes, scales) = crate::weights::fp8::materialize_fp8(w, src)?;
        return DeviceBuffer::upload(&w.fp8_layout().weight_buffer(&codes, &scales));
    }
    let values = materialize(w, src, false)?;
    match w.dtype {
        DType::F32 => DeviceBuffer::upload(&values),
        _ => DeviceBuffer::upload(&values.iter().map(|v| half::bf16::from_f32(*v)).collect::<Vec<_>>()),
    }
}
