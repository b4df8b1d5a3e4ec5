//! `fwdbench export`: the weights fwdbench uses, as a Hub-format checkpoint folder, so HF
//! transformers, SGLang or our PyTorch references can run the exact model that was timed.
//!
//! The folder holds `config.json` (parses back to the same `ModelConfig`), safetensors
//! shards with `model.safetensors.index.json` under Hub tensor names (per-expert 2-D
//! weights, GPT-2's Conv1D `[in, out]` layout, tied heads left out), and the model
//! folder's tokenizer files. Values come from any `WeightSource`: the counter RNG (what
//! `run` times) or a loaded checkpoint. Stored bf16 values are exactly what the GPU holds
//! (the CPU reference rounds the same way), so loading the folder back reproduces the
//! logits bit for bit; tensors the plan keeps in f32 stay f32.

pub mod config;
pub mod tensors;
pub mod writer;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use thiserror::Error;

use crate::config::hf::{parse_model_config, ConfigError};
use crate::config::model::ModelConfig;
use crate::model::PlanError;
use crate::weights::{WeightError, WeightSource};
pub use tensors::{hub_tensors, HubTensor};
pub use writer::StoredDType;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the model config cannot be planned: {0}")]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error("--out {path}: the folder is not empty; export into a new or empty folder (stale shards would be read with the new ones)")]
    NotEmpty { path: String },
    #[error("cannot write {path}: {reason}; check that --out is on a writable disk with room for the checkpoint")]
    Write { path: String, reason: String },
}

/// How the folder is written.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions {
    /// Storage of every tensor the plan holds in bf16 (f32 tensors stay f32).
    pub dtype: StoredDType,
    /// Largest shard; a bigger tensor gets a shard of its own.
    pub max_shard_bytes: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { dtype: StoredDType::BF16, max_shard_bytes: 2 << 30 }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub config: ModelConfig,
    pub tensors: usize,
    pub shards: usize,
    pub data_bytes: usize,
}

/// How `t` is stored under `opts`.
pub fn stored_dtype(t: &HubTensor, opts: &ExportOptions) -> StoredDType {
    if t.f32_in_plan {
        StoredDType::F32
    } else {
        opts.dtype
    }
}

/// Writes the model `config_json` describes, with values from `src`, into the new or
/// empty folder `out`.
pub fn export(
    config_json: &Value,
    src: &dyn WeightSource,
    out: &Path,
    opts: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    let cfg = parse_model_config(config_json, "the exported config.json")?;
    let tensors = hub_tensors(&cfg)?;
    prepare_folder(out)?;
    let sizes: Vec<usize> = tensors.iter().map(|t| t.numel() * stored_dtype(t, opts).bytes_per_value()).collect();
    let shards = writer::plan_shards(&sizes, opts.max_shard_bytes);
    let mut weight_map = BTreeMap::new();
    let mut data_bytes = 0;
    for (i, range) in shards.iter().enumerate() {
        let file = writer::shard_name(i, shards.len());
        let mut stored = Vec::new();
        for t in &tensors[range.clone()] {
            stored.extend(writer::encode(&t.name, t.file_shape(), &t.values(src)?, stored_dtype(t, opts)));
        }
        for s in &stored {
            weight_map.insert(s.name.clone(), file.clone());
            data_bytes += s.data.len();
        }
        writer::write_shard(&out.join(&file), &stored)?;
    }
    writer::write_index(out, &weight_map, data_bytes)?;
    config::write_config(out, config_json)?;
    Ok(ExportSummary { config: cfg, tensors: weight_map.len(), shards: shards.len(), data_bytes })
}

fn prepare_folder(out: &Path) -> Result<(), ExportError> {
    let write_err = |e: std::io::Error| ExportError::Write { path: out.display().to_string(), reason: e.to_string() };
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(write_err)?;
        if entries.next().is_some() {
            return Err(ExportError::NotEmpty { path: out.display().to_string() });
        }
    }
    std::fs::create_dir_all(out).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::RandomWeights;

    fn qwen3() -> Value {
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/qwen3/config.json").unwrap()).unwrap()
    }

    #[test]
    fn small_shards_split_the_checkpoint_and_the_index_names_each_tensor_once() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ExportOptions { max_shard_bytes: 64 << 10, ..Default::default() };
        let summary = export(&qwen3(), &RandomWeights { seed: 3 }, dir.path(), &opts).unwrap();
        assert!(summary.shards > 1, "{summary:?}");
        let index: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("model.safetensors.index.json")).unwrap())
                .unwrap();
        let map = index["weight_map"].as_object().unwrap();
        assert_eq!(map.len(), summary.tensors);
        assert_eq!(index["metadata"]["total_size"], summary.data_bytes);
        let mut seen = 0;
        for i in 0..summary.shards {
            let name = writer::shard_name(i, summary.shards);
            let bytes = std::fs::read(dir.path().join(&name)).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            assert!(st.names().iter().all(|n| map[*n] == name.as_str()));
            seen += st.len();
        }
        assert_eq!(seen, map.len());
    }

    #[test]
    fn a_folder_with_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"old").unwrap();
        let e = export(&qwen3(), &RandomWeights { seed: 0 }, dir.path(), &Default::default()).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
    }
}
