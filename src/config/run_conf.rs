//! Layered YAML run confs whose keys are SGLang server-argument names.
//!
//! `<conf>/<base>.yaml`, `<conf>/deploy/<deploy>.yaml`, then optionally
//! `<conf>/backend/<backend>.yaml` and `<conf>/optional/<optional>.yaml` are merged in that
//! order, then `key=value` pairs from the command line; a later layer replaces a key
//! wholesale. Every key remembers the file that set it, so an invalid deployment names the
//! file to fix. fwdbench reads the keys in [`IMPLEMENTED_KEYS`]; the rest are kept (the same
//! merged conf can drive SGLang's own benchmark) and reported by [`RunConf::ignored_keys`];
//! [`conf_notes`] says, per subcommand, which keys cannot act there.

mod notes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

pub use notes::{conf_notes, key_use, KeyUse, Subcommand};

use crate::plan::RoutingMode;

#[derive(Debug, Error)]
pub enum ConfError {
    #[error("cannot read run conf {file}: {err}; check --conf-dir and the layer names")]
    Read { file: String, err: std::io::Error },
    #[error("run conf {file} is not valid YAML: {message}; fix the file there")]
    Yaml { file: String, message: String },
    #[error("run conf {file} must be a mapping of `key: value` lines, found {found}")]
    NotAMapping { file: String, found: String },
    #[error("unknown {layer} {name:?}: {file} does not exist; available: {available}")]
    UnknownLayer { layer: &'static str, name: String, file: String, available: String },
    #[error("run conf {file}: `{key}` = {value} is not valid: {expected}")]
    BadValue { file: String, key: String, value: String, expected: String },
    #[error("command-line setting `{pair}` is not `key=value`; write e.g. `tp_size=8`")]
    BadCliPair { pair: String },
}

/// Which conf files to merge (names without `.yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfLayers {
    pub base: String,
    pub deploy: String,
    pub backend: Option<String>,
    pub optional: Option<String>,
}

impl ConfLayers {
    /// The default base layer `base` with the given deploy.
    pub fn new(deploy: &str) -> Self {
        ConfLayers { base: "base".to_string(), deploy: deploy.to_string(), backend: None, optional: None }
    }
}

/// The layer a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Base,
    Deploy,
    Backend,
    Optional,
    CommandLine,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub value: Value,
    pub layer: Layer,
    /// The file that set the value, or "the command line".
    pub origin: String,
}

/// The merged conf: every key with its final value and where that value came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunConf {
    settings: BTreeMap<String, Setting>,
}

/// The parallel layout and runtime switches fwdbench implements, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub tp_size: usize,
    pub ep_size: usize,
    pub dp_size: usize,
    pub enable_dp_attention: bool,
    pub nnodes: usize,
    pub node_rank: usize,
    pub dist_init_addr: Option<String>,
    pub attention_backend: AttentionBackend,
    pub disable_cuda_graph: bool,
    pub cuda_graph_max_bs: usize,
    pub moe_dense_tp_size: Option<usize>,
    /// Under DP attention, SGLang's LM head over the attention-TP group (fwdbench's plans
    /// always do this; `inert_settings` reports a `false` here).
    pub enable_dp_lm_head: bool,
    /// SGLang's `quantization`: the weight format forced for any model (`fp8` or `bf16`);
    /// None keeps the model config's `quantization_config`.
    pub quantization: Option<crate::quant::Quant>,
    /// fwdbench's own key `routing` (model, balanced, uniform; `--routing` overrides it).
    pub routing: RoutingMode,
}

impl Deployment {
    /// The model config with this deployment's weight format applied.
    pub fn quantize(&self, mut cfg: crate::config::model::ModelConfig) -> crate::config::model::ModelConfig {
        if let Some(q) = self.quantization {
            cfg.quant = q;
        }
        cfg
    }

    /// Keys fwdbench reads whose value cannot act as written, one sentence each: printed
    /// with the ignored keys, so no setting is dropped silently.
    pub fn inert_settings(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.enable_dp_attention && !self.enable_dp_lm_head {
            notes.push("enable_dp_lm_head is false, but under DP attention fwdbench always splits the LM head over the attention-TP group, as SGLang does with enable_dp_lm_head (no all-gather across DP groups); the key is ignored".to_string());
        }
        if !self.enable_dp_attention && self.enable_dp_lm_head {
            notes.push("enable_dp_lm_head acts only with enable_dp_attention (as in SGLang); without DP attention the LM head is split over all ranks and the key is ignored".to_string());
        }
        notes
    }
}

/// The attention kernels fwdbench implements (`attention_backend`). SGLang's other
/// backends (flashinfer, triton, ...) are refused rather than run with ours under their
/// name, so a CSV's backend column always says which kernels produced the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AttentionBackend {
    /// FlashAttention-3 style Hopper kernels (TMA + wgmma), SGLang's default on H100/H200.
    #[default]
    Fa3,
    /// FlashAttention-2 style kernels (no Hopper-only instructions).
    Fa2,
}

impl AttentionBackend {
    pub const ALL: [AttentionBackend; 2] = [AttentionBackend::Fa3, AttentionBackend::Fa2];

    /// The conf value (and CSV `backend` column) naming this backend.
    pub fn name(self) -> &'static str {
        match self {
            AttentionBackend::Fa3 => "fa3",
            AttentionBackend::Fa2 => "fa2",
        }
    }

    /// Parses a conf value (case-insensitive); `None` for anything fwdbench does not implement.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name().eq_ignore_ascii_case(value.trim()))
    }
}

impl std::fmt::Display for AttentionBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// SGLang `--attention-backend` values fwdbench knows but does not implement.
const SGLANG_ONLY_BACKENDS: &[&str] = &[
    "flashinfer",
    "triton",
    "torch_native",
    "flex_attention",
    "flashmla",
    "cutlass_mla",
    "trtllm_mla",
    "trtllm_mha",
    "aiter",
    "wave",
    "ascend",
    "intel_amx",
    "dual_chunk_flash_attn",
    "nsa",
];

/// Keys fwdbench reads; everything else is passed over (and listed as ignored).
pub const IMPLEMENTED_KEYS: &[&str] = &[
    "tp_size",
    "ep_size",
    "dp_size",
    "enable_dp_attention",
    "nnodes",
    "node_rank",
    "dist_init_addr",
    "attention_backend",
    "disable_cuda_graph",
    "cuda_graph_max_bs",
    "moe_dense_tp_size",
    "enable_dp_lm_head",
    "dtype",
    "timing",
    "quantization",
    "routing",
];

/// SGLang's long spellings of the parallel sizes (both are server arguments).
const ALIASES: &[(&str, &str)] =
    &[("tensor_parallel_size", "tp_size"), ("expert_parallel_size", "ep_size"), ("data_parallel_size", "dp_size")];

/// SGLang accepts `--tp-size` and `tp_size`; store one spelling.
fn canonical_key(key: &str) -> String {
    let key = key.trim().replace('-', "_");
    ALIASES.iter().find(|(alias, _)| *alias == key).map_or(key.clone(), |(_, name)| name.to_string())
}

/// Layer file names in `dir` (without `.yaml`), sorted, for "available: ..." messages.
fn available(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".yaml").map(str::to_string))
        .collect();
    names.sort();
    if names.is_empty() {
        format!("none (no .yaml files in {})", dir.display())
    } else {
        names.join(", ")
    }
}

fn read_layer(path: &Path, layer_name: &'static str, name: &str) -> Result<BTreeMap<String, Value>, ConfError> {
    let file = path.display().to_string();
    if !path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        return Err(ConfError::UnknownLayer {
            layer: layer_name,
            name: name.to_string(),
            file,
            available: available(dir),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|err| ConfError::Read { file: file.clone(), err })?;
    parse_layer(&text, &file)
}

/// One YAML layer: a flat mapping (values may themselves be mappings); empty is allowed.
pub fn parse_layer(text: &str, file: &str) -> Result<BTreeMap<String, Value>, ConfError> {
    let value: Option<Value> = serde_saphyr::from_str(text).map_err(|e| {
        // saphyr renders a multi-line snippet; its first line already has line and column.
        let rendered = e.to_string();
        let first = rendered.lines().next().unwrap_or_default();
        ConfError::Yaml { file: file.to_string(), message: first.trim_start_matches("error: ").to_string() }
    })?;
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => Ok(map.into_iter().map(|(k, v)| (canonical_key(&k), v)).collect()),
        Some(other) => {
            // A short rendering: a large list file must not become a huge message.
            let mut found = other.to_string();
            if found.len() > 60 {
                found = format!("{}...", found.chars().take(57).collect::<String>());
            }
            Err(ConfError::NotAMapping { file: file.to_string(), found })
        }
    }
}

pub fn load_run_conf(conf_dir: &Path, layers: &ConfLayers, cli: &[(String, String)]) -> Result<RunConf, ConfError> {
    let mut files: Vec<(Layer, &'static str, PathBuf, &str)> = vec![
        (Layer::Base, "base conf", conf_dir.join(format!("{}.yaml", layers.base)), layers.base.as_str()),
        (
            Layer::Deploy,
            "deploy",
            conf_dir.join("deploy").join(format!("{}.yaml", layers.deploy)),
            layers.deploy.as_str(),
        ),
    ];
    if let Some(backend) = &layers.backend {
        files.push((Layer::Backend, "backend", conf_dir.join("backend").join(format!("{backend}.yaml")), backend));
    }
    if let Some(optional) = &layers.optional {
        files.push((
            Layer::Optional,
            "optional conf",
            conf_dir.join("optional").join(format!("{optional}.yaml")),
            optional,
        ));
    }
    let mut conf = RunConf::default();
    for (layer, layer_name, path, name) in files {
        let origin = path.display().to_string();
        for (key, value) in read_layer(&path, layer_name, name)? {
            conf.settings.insert(key, Setting { value, layer, origin: origin.clone() });
        }
    }
    for (key, raw) in cli {
        if key.trim().is_empty() {
            return Err(ConfError::BadCliPair { pair: format!("{key}={raw}") });
        }
        let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.clone()));
        let setting = Setting { value, layer: Layer::CommandLine, origin: "the command line".to_string() };
        conf.settings.insert(canonical_key(key), setting);
    }
    Ok(conf)
}

/// Splits `key=value` command-line settings (for `--set`-style flags).
pub fn parse_cli_pairs(pairs: &[String]) -> Result<Vec<(String, String)>, ConfError> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(ConfError::BadCliPair { pair: pair.clone() }),
        })
        .collect()
}

impl RunConf {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.settings.get(&canonical_key(key)).map(|s| &s.value)
    }

    pub fn setting(&self, key: &str) -> Option<&Setting> {
        self.settings.get(&canonical_key(key))
    }

    /// Every key, sorted, with its value and origin.
    pub fn settings(&self) -> impl Iterator<Item = (&str, &Setting)> {
        self.settings.iter().map(|(k, s)| (k.as_str(), s))
    }

    /// Keys present that fwdbench does not implement (sorted), for "ignored: ..." lines.
    pub fn ignored_keys(&self) -> Vec<String> {
        self.settings.keys().filter(|k| !IMPLEMENTED_KEYS.contains(&k.as_str())).cloned().collect()
    }

    /// Ignored keys that look like a misspelling of one fwdbench reads (`tp_sise`): one
    /// warning each, naming the file or `--conf` that set it and the likely key.
    pub fn typo_warnings(&self) -> Vec<String> {
        self.ignored_keys()
            .into_iter()
            .filter_map(|k| {
                let close = crate::config::did_you_mean(&k, IMPLEMENTED_KEYS.iter().copied())?;
                let origin = self.settings.get(&k).map_or("the conf", |s| s.origin.as_str());
                Some(format!("conf key `{k}` (from {origin}) is not read by fwdbench; did you mean `{close}`?"))
            })
            .collect()
    }

    fn bad(&self, key: &str, expected: impl Into<String>) -> ConfError {
        let setting = self.settings.get(key);
        ConfError::BadValue {
            file: setting.map_or_else(|| "(defaults)".to_string(), |s| s.origin.clone()),
            key: key.to_string(),
            value: setting.map_or_else(|| "(default)".to_string(), |s| s.value.to_string()),
            expected: expected.into(),
        }
    }

    fn value(&self, key: &str) -> Option<&Value> {
        self.settings.get(key).map(|s| &s.value).filter(|v| !v.is_null())
    }

    fn size(&self, key: &str, default: Option<usize>) -> Result<Option<usize>, ConfError> {
        match self.value(key) {
            None => Ok(default),
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(self.bad(key, "a positive integer")),
            },
        }
    }

    fn flag(&self, key: &str) -> Result<bool, ConfError> {
        match self.value(key) {
            None => Ok(false),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, "true or false")),
        }
    }

    fn text(&self, key: &str) -> Result<Option<String>, ConfError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(self.bad(key, "a string")),
        }
    }

    /// `attention_backend`, `fa3` when absent.
    fn attention_backend(&self) -> Result<AttentionBackend, ConfError> {
        let Some(name) = self.text("attention_backend")? else {
            return Ok(AttentionBackend::default());
        };
        AttentionBackend::parse(&name).ok_or_else(|| {
            let valid = AttentionBackend::ALL.map(AttentionBackend::name).join(" or ");
            let expected = if SGLANG_ONLY_BACKENDS.contains(&name.to_ascii_lowercase().as_str()) {
                format!("{valid}: `{name}` is an SGLang backend, but fwdbench implements only its own fa3 and fa2 kernels (use conf/backend/fa3.yaml or fa2.yaml)")
            } else {
                format!("{valid} (the attention kernels fwdbench implements)")
            };
            self.bad("attention_backend", expected)
        })
    }

    /// `fwdbench run`'s timing method (`fwdbench`, `seed` or `both`; `--timing` overrides
    /// it), or `None` when the conf does not set it.
    pub fn timing(&self) -> Result<Option<String>, ConfError> {
        match self.text("timing")? {
            Some(t) if !matches!(t.as_str(), "fwdbench" | "seed" | "both") => {
                Err(self.bad("timing", "fwdbench, seed or both (how `fwdbench run` times each shape)"))
            }
            t => Ok(t),
        }
    }

    /// The deployment, checked the way SGLang checks its server arguments.
    pub fn deployment(&self) -> Result<Deployment, ConfError> {
        let tp = self.size("tp_size", Some(1))?.unwrap_or(1);
        let ep = self.size("ep_size", Some(1))?.unwrap_or(1);
        let dp = self.size("dp_size", Some(1))?.unwrap_or(1);
        let nnodes = self.size("nnodes", Some(1))?.unwrap_or(1);
        let node_rank = match self.value("node_rank") {
            None => 0,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| self.bad("node_rank", "a non-negative integer"))?,
        };
        let enable_dp_attention = self.flag("enable_dp_attention")?;
        if tp % ep != 0 {
            return Err(
                self.bad("ep_size", format!("a divisor of tp_size = {tp} (experts are split within the TP group)"))
            );
        }
        if dp > 1 && !enable_dp_attention {
            return Err(self
                .bad("dp_size", "1 unless enable_dp_attention is true (fwdbench implements DP only as DP-attention)"));
        }
        if tp % dp != 0 {
            return Err(self.bad(
                "dp_size",
                format!("a divisor of tp_size = {tp} (each DP-attention group is tp_size/dp_size ranks)"),
            ));
        }
        if tp % nnodes != 0 {
            return Err(
                self.bad("nnodes", format!("a divisor of tp_size = {tp} (every node runs the same number of ranks)"))
            );
        }
        if node_rank >= nnodes {
            return Err(self.bad("node_rank", format!("below nnodes = {nnodes}")));
        }
        if let Some(dtype) = self.text("dtype")? {
            if !matches!(dtype.as_str(), "bfloat16" | "bf16" | "auto") {
                return Err(self.bad("dtype", "bfloat16 (fwdbench runs bf16 weights and activations)"));
            }
        }
        let moe_dense_tp_size = self.size("moe_dense_tp_size", None)?;
        if moe_dense_tp_size.is_some_and(|n| n != 1) {
            return Err(self.bad("moe_dense_tp_size", "1 or null (as in SGLang)"));
        }
        Ok(Deployment {
            tp_size: tp,
            ep_size: ep,
            dp_size: dp,
            enable_dp_attention,
            nnodes,
            node_rank,
            dist_init_addr: self.text("dist_init_addr")?,
            attention_backend: self.attention_backend()?,
            disable_cuda_graph: self.flag("disable_cuda_graph")?,
            cuda_graph_max_bs: self.size("cuda_graph_max_bs", Some(256))?.unwrap_or(256),
            moe_dense_tp_size,
            enable_dp_lm_head: self.flag("enable_dp_lm_head")?,
            quantization: match self.text("quantization")? {
                None => None,
                Some(q) => Some(crate::quant::Quant::parse(&q).ok_or_else(|| {
                    self.bad("quantization", "fp8 (128x128 block-scaled e4m3) or bf16, or null for the model config's")
                })?),
            },
            routing: match self.text("routing")? {
                None => RoutingMode::Model,
                Some(name) => {
                    RoutingMode::parse(&name).ok_or_else(|| self.bad("routing", "model, balanced or uniform"))?
                }
            },
        })
    }
}
