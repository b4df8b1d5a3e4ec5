//! HF `quantization_config`: which weight format the checkpoint ships. fwdbench runs the
//! FP8 format of DeepSeek-V3 and Qwen3-FP8 (`quant_method: fp8`, `fmt: e4m3`,
//! `weight_block_size: [128, 128]`, `activation_scheme: dynamic`); anything else is refused
//! by name, since its weights could not be loaded or its numerics reproduced.

use serde_json::Value;

use super::keys::{Keys, Result};
use crate::quant::{Quant, BLOCK};

const KEY: &str = "quantization_config";
const HINT: &str =
    "fwdbench runs 128x128 block-scaled fp8 e4m3 with dynamic activation scales; use --set quantization_config=null (bf16)";

/// The weight format `quantization_config` describes (bf16 without one).
pub(crate) fn parse(keys: &Keys) -> Result<Quant> {
    let Some(q) = keys.object(KEY)? else {
        return Ok(Quant::Bf16);
    };
    let text = |k: &str| q.get(k).filter(|v| !v.is_null()).map(|v| v.as_str().map(str::to_string).ok_or(v));
    let path = |k: &str| format!("{KEY}.{k}");
    let show = |v: &Value| v.to_string();
    match text("quant_method") {
        Some(Ok(m)) if m == "fp8" => {}
        Some(Ok(m)) => return Err(keys.unsupported(&path("quant_method"), m, HINT)),
        Some(Err(v)) => return Err(keys.bad_value(&path("quant_method"), show(v), "a string such as \"fp8\"")),
        None => return Err(keys.missing(&path("quant_method"), "\"fp8\" for DeepSeek-V3's block-scaled format")),
    }
    match text("fmt") {
        None => {}
        Some(Ok(f)) if f == "e4m3" => {}
        Some(Ok(f)) => return Err(keys.unsupported(&path("fmt"), f, HINT)),
        Some(Err(v)) => return Err(keys.bad_value(&path("fmt"), show(v), "\"e4m3\"")),
    }
    match text("activation_scheme") {
        None => {}
        Some(Ok(a)) if a == "dynamic" => {}
        Some(Ok(a)) => return Err(keys.unsupported(&path("activation_scheme"), a, HINT)),
        Some(Err(v)) => return Err(keys.bad_value(&path("activation_scheme"), show(v), "\"dynamic\"")),
    }
    let block = q.get("weight_block_size").filter(|v| !v.is_null());
    let is_128 =
        |v: &Value| v.as_array().is_some_and(|a| a.len() == 2 && a.iter().all(|x| x.as_u64() == Some(BLOCK as u64)));
    match block {
        Some(v) if is_128(v) => Ok(Quant::Fp8),
        Some(v) => Err(keys.unsupported(&path("weight_block_size"), show(v), HINT)),
        None => Err(keys.unsupported(&path("weight_block_size"), "null (per-tensor scales)", HINT)),
    }
}
