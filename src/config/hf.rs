//! HF-style `config.json` -> [`ModelConfig`].
//!
//! The family is chosen by `architectures[0]`, then by `model_type`; each family's keys,
//! dialects and defaults live in its own submodule and follow models.md §1-§5 and the
//! transformers 5.17 config classes. Sizes that define the model's shape are required (a
//! benchmark of an unstated shape would time HF's example model by accident); behavioural
//! switches (`norm_topk_prob`, `attention_bias`, `rope_interleave`, ...) default as HF does.

mod common;
mod deepseek;
mod gpt;
mod grok;
mod keys;
mod llama;
mod mixtral;
mod quant;
mod qwen;
mod rope;
mod sigma;

use std::path::Path;

use serde_json::Value;
use thiserror::Error;

use crate::config::model::{Family, ModelConfig};
use keys::{show, KeyLog, Keys};

/// A model config that cannot be used, in one sentence naming the file and the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read model config {file}: {err}; check the path and --model/--mconf")]
    Read { file: String, err: std::io::Error },
    #[error("model config {file} is not valid JSON ({message}); fix the syntax there")]
    Json { file: String, message: String },
    #[error("model config {file} must be a JSON object of config keys, found {found}")]
    NotAnObject { file: String, found: String },
    #[error(
        "model config {file}: architecture {architecture:?} / model_type {model_type:?} is not supported; \
         use one of: {supported}"
    )]
    UnknownModel { file: String, architecture: String, model_type: String, supported: String },
    #[error("model config {file}: required key `{key}` is missing; add it ({hint})")]
    Missing { file: String, key: String, hint: String },
    #[error("model config {file}: `{key}` must be {expected}, found {found}; fix its value")]
    WrongType { file: String, key: String, expected: &'static str, found: &'static str },
    #[error("model config {file}: `{key}` = {value} is not valid; expected {expected}")]
    BadValue { file: String, key: String, value: String, expected: String },
    #[error("model config {file}: contradictory keys: {detail}")]
    Contradiction { file: String, detail: String },
    #[error("model config {file}: `{key}` = {value} is not supported: {detail}")]
    Unsupported { file: String, key: String, value: String, detail: String },
    #[error("model config {file}: cannot apply --set `{key}`: {detail}")]
    BadOverride { file: String, key: String, detail: String },
}

/// A resolved model config and what its parse noticed (keys it does not read, typos).
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: ModelConfig,
    /// One sentence each, naming the key and where it came from; for every subcommand to print.
    pub warnings: Vec<String>,
}

/// Reads `path`, applies `key=value` overrides (`--set`), and resolves the model.
pub fn load_model_config(path: &Path, overrides: &[(String, String)]) -> Result<ModelConfig, ConfigError> {
    load_model_config_with_warnings(path, overrides).map(|l| l.config)
}

/// [`load_model_config`] plus the warnings about unknown or misspelled keys.
pub fn load_model_config_with_warnings(
    path: &Path,
    overrides: &[(String, String)],
) -> Result<LoadedConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read { file: file.clone(), err })?;
    let mut json: Value = serde_json::from_str(&text).map_err(|e| ConfigError::Json {
        file: file.clone(),
        message: format!("line {}, column {}: {e}", e.line(), e.column()),
    })?;
    apply_overrides(&mut json, overrides, &file)?;
    let log = KeyLog::with_overrides(overrides.iter().map(|(k, _)| k.clone()));
    let config = parse_logged(&json, &file, &log)?;
    Ok(LoadedConfig { config, warnings: log.warnings.into_inner() })
}

/// Sets each `key=value` in `json`. The value is parsed as JSON (`8`, `true`, `null`,
/// `{"type":"yarn"}`) and otherwise taken as a string; a dotted key reaches into nested
/// objects (`rope_scaling.factor=4`), creating them where absent or null.
pub fn apply_overrides(json: &mut Value, overrides: &[(String, String)], source: &str) -> Result<(), ConfigError> {
    for (key, raw) in overrides {
        let bad = |detail: &str| ConfigError::BadOverride {
            file: source.to_string(),
            key: key.clone(),
            detail: detail.to_string(),
        };
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.trim().is_empty()) {
            return Err(bad("the key has an empty part; write it as `name` or `outer.inner`"));
        }
        let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.clone()));
        let (last, parents) = parts.split_last().ok_or_else(|| bad("the key is empty"))?;
        let mut node = &mut *json;
        for (depth, part) in parents.iter().enumerate() {
            let object = node.as_object_mut().ok_or_else(|| {
                bad(&format!("`{}` is not an object, so it has no field `{part}`", parts[..depth].join(".")))
            })?;
            let child = object.entry(part.to_string()).or_insert(Value::Null);
            if child.is_null() {
                *child = Value::Object(Default::default());
            }
            node = child;
        }
        let object = node.as_object_mut().ok_or_else(|| {
            let parent = parents.join(".");
            bad(&format!("`{parent}` is not an object, so it has no field `{last}`"))
        })?;
        object.insert(last.to_string(), value);
    }
    Ok(())
}

/// The spellings accepted for each family (architectures[0] first, then model_type).
const ARCHITECTURES: &[(&str, Family)] = &[
    ("GPT2LMHeadModel", Family::Gpt3),
    ("Grok1ModelForCausalLM", Family::Grok1),
    ("Grok1ForCausalLM", Family::Grok1),
    ("Qwen2ForCausalLM", Family::Qwen2),
    ("Qwen3ForCausalLM", Family::Qwen3),
    ("Qwen2MoeForCausalLM", Family::Qwen2Moe),
    ("Qwen3MoeForCausalLM", Family::Qwen3Moe),
    ("DeepseekV3ForCausalLM", Family::DeepseekV3),
    ("DeepseekV2ForCausalLM", Family::DeepseekV3),
    ("SigmaV2ForCausalLM", Family::SigmaV2),
    ("SigmaForCausalLM", Family::SigmaV2),
    ("SigmaV1ForCausalLM", Family::SigmaV1),
    ("LlamaForCausalLM", Family::Llama),
    ("MixtralForCausalLM", Family::Mixtral),
];
const MODEL_TYPES: &[(&str, Family)] = &[
    ("gpt2", Family::Gpt3),
    ("grok-1", Family::Grok1),
    ("qwen2", Family::Qwen2),
    ("qwen3", Family::Qwen3),
    ("qwen2_moe", Family::Qwen2Moe),
    ("qwen3_moe", Family::Qwen3Moe),
    ("deepseek_v3", Family::DeepseekV3),
    ("deepseek_v2", Family::DeepseekV3),
    ("sigma", Family::SigmaV2),
    ("sigma_v1", Family::SigmaV1),
    ("llama", Family::Llama),
    ("mixtral", Family::Mixtral),
];

fn detect_family(keys: &Keys) -> Result<(Family, String), ConfigError> {
    let architecture = match keys.get("architectures") {
        None => None,
        Some(Value::Array(items)) => match items.first() {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => return Err(keys.bad_value("architectures", show(other), "a list of class-name strings")),
        },
        Some(_) => return Err(keys.wrong_type("architectures", "a list of strings")),
    };
    let model_type = keys.str("model_type")?;
    let by_arch = architecture.and_then(|a| ARCHITECTURES.iter().find(|(name, _)| *name == a));
    let by_type = model_type.and_then(|t| MODEL_TYPES.iter().find(|(name, _)| *name == t));
    match by_arch.or(by_type) {
        Some((_, family)) => Ok((*family, architecture.or(model_type).unwrap_or_default().to_string())),
        None => {
            let arch_list: Vec<&str> = ARCHITECTURES.iter().map(|(n, _)| *n).collect();
            let type_list: Vec<&str> = MODEL_TYPES.iter().map(|(n, _)| *n).collect();
            Err(ConfigError::UnknownModel {
                file: keys.file.to_string(),
                architecture: architecture.unwrap_or("(none)").to_string(),
                model_type: model_type.unwrap_or("(none)").to_string(),
                supported: format!("architectures {} or model_type {}", arch_list.join(", "), type_list.join(", ")),
            })
        }
    }
}

/// Resolves an already-parsed `config.json`; `source` names the file in messages.
pub fn parse_model_config(json: &Value, source: &str) -> Result<ModelConfig, ConfigError> {
    parse_logged(json, source, &KeyLog::default())
}

fn parse_logged(json: &Value, source: &str, log: &KeyLog) -> Result<ModelConfig, ConfigError> {
    let map =
        json.as_object().ok_or_else(|| ConfigError::NotAnObject { file: source.to_string(), found: show(json) })?;
    let keys = Keys::new(map, source, log);
    let (family, architecture) = detect_family(&keys)?;
    let model_type = keys.str("model_type")?.unwrap_or_default();
    let mut config = match family {
        Family::Gpt3 => gpt::parse(&keys)?,
        Family::Grok1 => grok::parse(&keys, model_type == "grok-1")?,
        Family::Qwen2 | Family::Qwen3 | Family::Qwen2Moe | Family::Qwen3Moe => qwen::parse(&keys, family)?,
        Family::DeepseekV3 => {
            // V2 and V3 share the graph but not HF's router defaults.
            let v2 = match architecture.as_str() {
                "DeepseekV2ForCausalLM" => true,
                "DeepseekV3ForCausalLM" => false,
                _ => model_type == "deepseek_v2",
            };
            deepseek::parse(&keys, v2)?
        }
        Family::SigmaV2 => sigma::parse_v2(&keys)?,
        Family::SigmaV1 => sigma::parse_v1(&keys)?,
        Family::Llama => llama::parse(&keys)?,
        Family::Mixtral => mixtral::parse(&keys)?,
    };
    config.architecture = architecture;
    config.quant = quant::parse(&keys)?;
    debug_assert_eq!(config.layer_ffn.len(), config.num_layers);
    check_total_size(&keys, &config)?;
    warn_unread_keys(map, &keys, family);
    Ok(config)
}

/// Keys HF configs carry that do not change a forward pass (training, generation, tokens,
/// bookkeeping); not worth a warning.
const INERT_KEYS: &[&str] = &[
    "architectures",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "initializer_range",
    "use_cache",
    "attention_dropout",
    "hidden_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_proj_to_labels",
    "summary_first_dropout",
    "task_specific_params",
    "auto_map",
    "output_router_logits",
    "router_aux_loss_coef",
    "aux_loss_alpha",
    "seq_aux",
    "ep_size",
    "pretraining_tp",
    "sliding_window",
    "max_window_layers",
    "layer_types",
    "use_bfloat16",
    "tokenizer_class",
    "name_or_path",
    "quantization_config",
    "num_nextn_predict_layers",
    "router_jitter_noise",
];

/// Warns about keys of the file (or `--set`) that the family's parser never looked at: a
/// misspelled key would otherwise be silently ignored and the model built with a default.
fn warn_unread_keys(map: &serde_json::Map<String, Value>, keys: &Keys, family: Family) {
    let asked = keys.log.asked();
    let candidates: Vec<&str> = asked.iter().map(String::as_str).collect();
    for key in map.keys() {
        let from_set = keys.log.overridden.contains(key);
        if asked.contains(key) || (!from_set && (INERT_KEYS.contains(&key.as_str()) || key.starts_with('_'))) {
            continue;
        }
        let hint = super::did_you_mean(key, candidates.iter().copied())
            .map(|k| format!("; did you mean `{k}`?"))
            .unwrap_or_default();
        let origin = if from_set { format!("--set {key}") } else { format!("key `{key}` in {}", keys.file) };
        keys.log.warn(format!("{origin} is not read for {family:?} models and has no effect{hint}"));
    }
}

/// Refuses a config whose parameter count is beyond any deployment, before anything is
/// sized from it (each size is bounded on its own; their products need this check).
fn check_total_size(keys: &Keys, cfg: &ModelConfig) -> Result<(), ConfigError> {
    const MAX_PARAMS: f64 = 1e13;
    let params = crate::config::model::approx_params(cfg);
    if params > MAX_PARAMS {
        return Err(keys.contradiction(format!(
            "the sizes describe a model of about {params:.2e} parameters, more than the {MAX_PARAMS:.0e} fwdbench plans; check the sizes for an extra digit"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::config::string_pairs as set;

    #[test]
    fn overrides_parse_json_else_string_and_reach_nested_objects() {
        let mut j = json!({"a": 1, "rope_scaling": null, "n": {"x": 1}});
        apply_overrides(
            &mut j,
            &set(&[("a", "8"), ("b", "silu"), ("rope_scaling.factor", "4.0"), ("n.y", "true")]),
            "f",
        )
        .unwrap();
        assert_eq!(j, json!({"a": 8, "b": "silu", "rope_scaling": {"factor": 4.0}, "n": {"x": 1, "y": true}}));
    }

    #[test]
    fn override_into_a_number_is_an_error_naming_the_key() {
        let mut j = json!({"a": 1});
        let err = apply_overrides(&mut j, &set(&[("a.b", "2")]), "cfg.json").unwrap_err().to_string();
        assert!(err.contains("cfg.json") && err.contains("a.b"), "{err}");
        let err = apply_overrides(&mut j, &set(&[("a..b", "2")]), "cfg.json").unwrap_err().to_string();
        assert!(err.contains("empty part") && err.contains("--set `a..b`"), "{err}");
    }

    #[test]
    fn sizes_that_are_not_whole_numbers_show_their_value() {
        let base = json!({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100, "n_positions": 64});
        for (value, shown) in
            [(json!(18446744073709551616.0), "1.8446744073709552e+19"), (json!(-3), "-3"), (json!(2.5), "2.5")]
        {
            let mut config = base.clone();
            config["n_layer"] = value;
            let err = parse_model_config(&config, "c.json").unwrap_err().to_string();
            assert!(err.contains("`n_layer` = ") && err.contains(shown) && err.contains("from 0 to 1024"), "{err}");
        }
    }

    #[test]
    fn unknown_model_lists_supported_names() {
        let err = parse_model_config(&json!({"architectures": ["PhiForCausalLM"], "model_type": "phi"}), "x.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("PhiForCausalLM") && err.contains("LlamaForCausalLM") && err.contains("x.json"));
    }

    #[test]
    fn unknown_architecture_falls_back_to_model_type() {
        let keys_json = json!({"architectures": ["Foo"], "model_type": "gpt2"});
        let log = KeyLog::default();
        let keys = Keys::new(keys_json.as_object().unwrap(), "f", &log);
        assert_eq!(detect_family(&keys).unwrap().0, Family::Gpt3);
    }
}
