//! RoPE keys in both spellings HF has used, resolved the way transformers 5.17 resolves them.
//!
//! Legacy files carry `rope_theta` at the top level and an optional `rope_scaling` object
//! (`{"type"|"rope_type": "yarn", "factor": ...}`); transformers v5 folds both into one
//! `rope_parameters` object (`{"rope_theta": ..., "rope_type": "default"|"yarn", ...}`).
//! A file may mix them; a value given twice must agree, so an edited copy cannot silently
//! keep a stale theta. YaRN is resolved as `modeling_rope_utils._compute_yarn_parameters`:
//! `factor` null means `max_position_embeddings / original_max_position_embeddings`,
//! `attention_factor` is inferred from `factor`, `mscale`, `mscale_all_dim`, a zero or null
//! `beta_fast`/`beta_slow` falls back to 32/1, `truncate` defaults to true. Llama 3's
//! `llama3` type (`_compute_llama3_parameters`) needs `factor`, `low_freq_factor`,
//! `high_freq_factor` and `original_max_position_embeddings`, all four stated.

use serde_json::{Map, Value};

use super::keys::{show, Keys, Result};
use crate::config::model::{yarn_mscale, Llama3Config, RopeConfig, RopeScaling, RopeStyle, YarnConfig};

/// Base used when no file key gives one (HF `default_theta`, Grok-1's JAX base).
pub(crate) const DEFAULT_THETA: f64 = 10_000.0;

const SUPPORTED_TYPES: &str = "\"default\", \"yarn\" or \"llama3\"";

pub(crate) struct RopeSpec {
    pub rope: RopeConfig,
    /// YaRN's `mscale_all_dim` when set and non-zero: DeepSeek's MLA multiplies its softmax
    /// scale by `mscale(factor, mscale_all_dim)^2` (HF `yarn_apply_mscale`).
    pub mscale_all_dim: Option<f64>,
}

impl RopeSpec {
    /// The softmax-scale multiplier DeepSeek's MLA applies on top of `d_qk^-0.5`.
    pub fn mla_softmax_mscale(&self) -> f64 {
        match (self.rope.scaling, self.mscale_all_dim) {
            (RopeScaling::Yarn(y), Some(m)) => yarn_mscale(y.factor, m).powi(2),
            _ => 1.0,
        }
    }
}

/// One key of the merged rope object, remembering which object it came from.
struct Merged<'a> {
    entries: Map<String, Value>,
    origin: Map<String, Value>,
    keys: Keys<'a>,
}

impl Merged<'_> {
    fn f64(&self, key: &str) -> Result<Option<f64>> {
        match self.entries.get(key).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.keys.bad_value(&self.name(key), show(v), "a number")),
        }
    }

    fn name(&self, key: &str) -> String {
        let object = self.origin.get(key).and_then(Value::as_str).unwrap_or("rope_parameters");
        format!("{object}.{key}")
    }
}

/// Merges `rope_scaling` and `rope_parameters`, rejecting keys the two give differently.
fn merge<'a>(keys: &Keys<'a>) -> Result<Merged<'a>> {
    let mut entries = Map::new();
    let mut origin = Map::new();
    for object_key in ["rope_scaling", "rope_parameters"] {
        let Some(object) = keys.object(object_key)? else {
            continue;
        };
        for (key, value) in object {
            if value.is_object() {
                return Err(keys.unsupported(
                    &format!("{object_key}.{key}"),
                    show(value),
                    "per-layer-type RoPE parameters are not used by any family fwdbench implements; give one flat object",
                ));
            }
            // HF's legacy `type` is the same setting as v5's `rope_type`.
            let canonical = if key == "type" { "rope_type" } else { key.as_str() };
            if let Some(previous) = entries.get(canonical) {
                if !same_value(previous, value) {
                    return Err(keys.contradiction(format!(
                        "`{}.{canonical}` = {} but `{object_key}.{key}` = {}; keep one value",
                        origin[canonical].as_str().unwrap_or(""),
                        show(previous),
                        show(value)
                    )));
                }
                continue;
            }
            entries.insert(canonical.to_string(), value.clone());
            origin.insert(canonical.to_string(), Value::String(object_key.to_string()));
        }
    }
    Ok(Merged { entries, origin, keys: *keys })
}

/// Numbers compare by value so `40` and `40.0` agree.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Reads the RoPE keys of a rotary model. `rotary_dim` is the number of dims that rotate
/// (the head dim, or DeepSeek's `qk_rope_head_dim`); `max_position_embeddings` resolves a
/// null YaRN factor and a missing `original_max_position_embeddings` as HF does.
pub(crate) fn parse_rope(
    keys: &Keys,
    rotary_dim: usize,
    style: RopeStyle,
    max_position_embeddings: usize,
) -> Result<RopeSpec> {
    let merged = merge(keys)?;

    let theta = match (keys.f64("rope_theta")?, merged.f64("rope_theta")?) {
        (Some(top), Some(inner)) if top != inner => {
            return Err(keys.contradiction(format!(
                "`rope_theta` = {top} but `{}` = {inner}; keep one value",
                merged.name("rope_theta")
            )))
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => DEFAULT_THETA,
    };
    let theta_key = if keys.has("rope_theta") { "rope_theta".to_string() } else { merged.name("rope_theta") };
    if !(theta.is_finite() && theta > 1.0) {
        return Err(keys.bad_value(&theta_key, theta, "a RoPE base greater than 1"));
    }
    if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
        return Err(keys.bad_value("head_dim", rotary_dim, "an even, positive rotary dimension"));
    }
    let partial = keys.f64("partial_rotary_factor")?.or(merged.f64("partial_rotary_factor")?);
    if let Some(f) = partial.filter(|f| *f != 1.0) {
        return Err(keys.unsupported(
            "partial_rotary_factor",
            f,
            "partial rotary embeddings are not used by any family fwdbench implements; remove the key or set 1.0",
        ));
    }

    let rope_type = match merged.entries.get("rope_type").filter(|v| !v.is_null()) {
        None => "default",
        Some(v) => v.as_str().ok_or_else(|| keys.bad_value(&merged.name("rope_type"), show(v), SUPPORTED_TYPES))?,
    };
    check_rope_keys(keys, &merged, rope_type)?;
    let mut mscale_all_dim = None;
    let scaling = match rope_type {
        "default" => RopeScaling::None,
        "yarn" => {
            let (yarn, all_dim) = resolve_yarn(keys, &merged, max_position_embeddings)?;
            mscale_all_dim = all_dim;
            RopeScaling::Yarn(yarn)
        }
        "llama3" => RopeScaling::Llama3(resolve_llama3(keys, &merged)?),
        other => {
            return Err(keys.unsupported(
                &merged.name("rope_type"),
                format!("\"{other}\""),
                format!(
                    "fwdbench implements RoPE types {SUPPORTED_TYPES} only; remove the scaling or use one of those"
                ),
            ))
        }
    };
    Ok(RopeSpec { rope: RopeConfig { theta, style, rotary_dim, scaling }, mscale_all_dim })
}

/// `original_max_position_embeddings`, at the top level or in the rope object, checked.
fn original_context(keys: &Keys, merged: &Merged) -> Result<Option<f64>> {
    // HF gives a top-level `original_max_position_embeddings` priority (Phi-3 style); a file
    // that states it in both places with different values is ambiguous, so refuse it.
    let inner_orig = merged.f64("original_max_position_embeddings")?;
    let top_orig = keys.usize("original_max_position_embeddings")?.map(|n| n as f64);
    let original = match (top_orig, inner_orig) {
        (Some(a), Some(b)) if a != b => {
            return Err(keys.contradiction(format!(
                "`original_max_position_embeddings` = {a} but `{}` = {b}; keep one value",
                merged.name("original_max_position_embeddings")
            )))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return Ok(None),
    };
    let orig_key = merged.name("original_max_position_embeddings");
    if !(original >= 1.0 && original.fract() == 0.0) {
        return Err(keys.bad_value(&orig_key, original, "a positive integer"));
    }
    Ok(Some(original))
}

fn resolve_llama3(keys: &Keys, merged: &Merged) -> Result<Llama3Config> {
    // A missing key belongs in the object that names the type.
    let type_key = merged.name("rope_type");
    let object = type_key.split('.').next().unwrap_or("rope_scaling");
    let required = |key: &str, what: &str| -> Result<f64> {
        let value = merged.f64(key)?.ok_or_else(|| keys.missing(&format!("{object}.{key}"), what))?;
        if !(value.is_finite() && value > 0.0) {
            return Err(keys.bad_value(&merged.name(key), value, "a positive number"));
        }
        Ok(value)
    };
    let factor = required("factor", "Llama 3 RoPE scaling divides long wavelengths by it (8 for Llama 3.1)")?;
    let low_freq_factor = required("low_freq_factor", "Llama 3 RoPE scaling needs it (1 for Llama 3.1)")?;
    let high_freq_factor = required("high_freq_factor", "Llama 3 RoPE scaling needs it (4 for Llama 3.1)")?;
    if high_freq_factor <= low_freq_factor {
        return Err(keys.contradiction(format!(
            "`{}` = {high_freq_factor} must be greater than `{}` = {low_freq_factor}; the smooth band between them would be empty",
            merged.name("high_freq_factor"),
            merged.name("low_freq_factor")
        )));
    }
    let original = original_context(keys, merged)?.ok_or_else(|| {
        keys.missing(
            &format!("{object}.original_max_position_embeddings"),
            "Llama 3 RoPE scaling needs the pre-training context (8192 for Llama 3.1)",
        )
    })?;
    Ok(Llama3Config { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: original as usize })
}

fn resolve_yarn(keys: &Keys, merged: &Merged, max_position_embeddings: usize) -> Result<(YarnConfig, Option<f64>)> {
    let original = original_context(keys, merged)?.unwrap_or(max_position_embeddings as f64);
    let factor = match merged.f64("factor")? {
        Some(f) => f,
        None => max_position_embeddings as f64 / original,
    };
    if !(factor.is_finite() && factor > 0.0) {
        return Err(keys.bad_value(&merged.name("factor"), factor, "a positive YaRN factor (usually >= 1)"));
    }
    let mscale = merged.f64("mscale")?.filter(|m| *m != 0.0);
    let mscale_all_dim = merged.f64("mscale_all_dim")?.filter(|m| *m != 0.0);
    let attention_factor = match merged.f64("attention_factor")? {
        Some(a) => a,
        None => match (mscale, mscale_all_dim) {
            (Some(m), Some(m_all)) => yarn_mscale(factor, m) / yarn_mscale(factor, m_all),
            _ => yarn_mscale(factor, 1.0),
        },
    };
    if !(attention_factor.is_finite() && attention_factor > 0.0) {
        return Err(keys.bad_value(&merged.name("attention_factor"), attention_factor, "a positive number"));
    }
    // HF: `get("beta_fast") or 32`, so an explicit 0 also means the default.
    let beta_fast = merged.f64("beta_fast")?.filter(|b| *b != 0.0).unwrap_or(32.0);
    let beta_slow = merged.f64("beta_slow")?.filter(|b| *b != 0.0).unwrap_or(1.0);
    if !(beta_fast > 0.0 && beta_slow > 0.0) {
        return Err(keys.bad_value(&merged.name("beta_fast"), beta_fast, "positive beta_fast and beta_slow"));
    }
    let truncate = match merged.entries.get("truncate").filter(|v| !v.is_null()) {
        None => true,
        Some(v) => v.as_bool().ok_or_else(|| keys.bad_value(&merged.name("truncate"), show(v), "true or false"))?,
    };
    let yarn = YarnConfig {
        factor,
        original_max_position_embeddings: original as usize,
        beta_fast,
        beta_slow,
        attention_factor,
        truncate,
    };
    Ok((yarn, mscale_all_dim))
}

const PLAIN_KEYS: &[&str] = &["rope_type", "rope_theta", "partial_rotary_factor"];
const YARN_KEYS: &[&str] = &[
    "factor",
    "original_max_position_embeddings",
    "mscale",
    "mscale_all_dim",
    "attention_factor",
    "beta_fast",
    "beta_slow",
    "truncate",
];

const LLAMA3_KEYS: &[&str] = &["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"];

/// A scaling key without a type would silently mean no scaling: refuse it. Keys no RoPE
/// type reads are warned about, with the closest known key.
fn check_rope_keys(keys: &Keys, merged: &Merged, rope_type: &str) -> Result<()> {
    for key in merged.entries.keys() {
        let key = key.as_str();
        let read_by_type = match rope_type {
            "yarn" => YARN_KEYS.contains(&key),
            "llama3" => LLAMA3_KEYS.contains(&key),
            _ => false,
        };
        if PLAIN_KEYS.contains(&key) || read_by_type {
            continue;
        }
        if rope_type == "default" && (YARN_KEYS.contains(&key) || LLAMA3_KEYS.contains(&key)) {
            let object = merged.name(key);
            let object = object.split('.').next().unwrap_or("rope_scaling");
            return Err(keys.missing(
                &format!("{object}.rope_type"),
                format!(
                    "`{}` is a RoPE scaling setting, but no RoPE type is given; add \"type\": \"yarn\" (or \"llama3\") or remove the scaling keys",
                    merged.name(key)
                ),
            ));
        }
        let known = PLAIN_KEYS.iter().chain(YARN_KEYS).chain(LLAMA3_KEYS).copied();
        let hint =
            crate::config::did_you_mean(key, known).map(|k| format!("; did you mean `{k}`?")).unwrap_or_default();
        keys.log.warn(format!(
            "`{}` in {} is not a RoPE setting fwdbench reads and has no effect{hint}",
            merged.name(key),
            keys.source(&merged.name(key))
        ));
    }
    Ok(())
}
