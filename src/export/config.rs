//! The exported folder's `config.json` and tokenizer files.
//!
//! The config is the model's own file with `--set` applied and `--layers` written into
//! the layer-count key the file uses, so HF, SGLang and fwdbench all read the model that
//! was exported; `torch_dtype` says how the weights are stored.

use std::path::Path;

use serde_json::Value;

use super::writer::StoredDType;
use super::ExportError;
use crate::config::hf::{apply_overrides, ConfigError};

/// Tokenizer files of a Hub model folder, copied when present.
pub const TOKENIZER_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
];

/// `base` with `overrides` applied, then `layers` decoder layers (indices at or beyond it
/// dropped from Qwen-MoE's `mlp_only_layers`, which must name existing layers), then the
/// stored dtype.
pub fn export_config(
    base: &Value,
    overrides: &[(String, String)],
    layers: Option<usize>,
    dtype: StoredDType,
    source: &str,
) -> Result<Value, ConfigError> {
    let mut json = base.clone();
    apply_overrides(&mut json, overrides, source)?;
    let Some(map) = json.as_object_mut() else {
        // The parser names the problem in its own words.
        return Ok(json);
    };
    if let Some(n) = layers {
        let key = if map.contains_key("n_layer") { "n_layer" } else { "num_hidden_layers" };
        map.insert(key.to_string(), Value::from(n));
        if let Some(Value::Array(dense)) = map.get_mut("mlp_only_layers") {
            dense.retain(|l| l.as_u64().is_none_or(|l| l < n as u64));
        }
    }
    map.insert("torch_dtype".to_string(), Value::from(dtype.torch_name()));
    if map.contains_key("dtype") {
        map.insert("dtype".to_string(), Value::from(dtype.torch_name()));
    }
    Ok(json)
}

pub fn write_config(dir: &Path, json: &Value) -> Result<(), ExportError> {
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(json).expect("a config is plain JSON");
    std::fs::write(&path, text + "\n")
        .map_err(|e| ExportError::Write { path: path.display().to_string(), reason: e.to_string() })
}

/// Copies the tokenizer files `model_dir` has into `out`; returns their names.
pub fn copy_tokenizer(model_dir: &Path, out: &Path) -> Result<Vec<String>, ExportError> {
    let mut copied = Vec::new();
    for name in TOKENIZER_FILES {
        let from = model_dir.join(name);
        if from.is_file() {
            std::fs::copy(&from, out.join(name)).map_err(|e| ExportError::Write {
                path: out.join(name).display().to_string(),
                reason: format!("copying {}: {e}", from.display()),
            })?;
            copied.push(name.to_string());
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layers_go_to_the_key_the_file_uses() {
        let set = vec![("hidden_size".to_string(), "32".to_string())];
        let qwen = json!({"num_hidden_layers": 48, "mlp_only_layers": [0, 3, 7], "dtype": "float32"});
        let out = export_config(&qwen, &set, Some(4), StoredDType::BF16, "c.json").unwrap();
        assert_eq!(
            out,
            json!({"num_hidden_layers": 4, "mlp_only_layers": [0, 3], "hidden_size": 32,
                   "torch_dtype": "bfloat16", "dtype": "bfloat16"})
        );
        let gpt = json!({"n_layer": 96});
        let out = export_config(&gpt, &[], Some(2), StoredDType::F32, "c.json").unwrap();
        assert_eq!(out, json!({"n_layer": 2, "torch_dtype": "float32"}));
        let out = export_config(&gpt, &[], None, StoredDType::F32, "c.json").unwrap();
        assert_eq!(out["n_layer"], 96);
    }

    #[test]
    fn only_present_tokenizer_files_are_copied() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(from.path().join("tokenizer.json"), "{}").unwrap();
        std::fs::write(from.path().join("config_2l.json"), "{}").unwrap();
        assert_eq!(copy_tokenizer(from.path(), to.path()).unwrap(), vec!["tokenizer.json"]);
        assert!(to.path().join("tokenizer.json").is_file() && !to.path().join("config_2l.json").exists());
    }
}
