//! Flags and loading shared by several subcommands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use fwdbench::config::hf::load_model_config_with_warnings;
use fwdbench::config::model::ModelConfig;
use fwdbench::config::run_conf::{conf_notes, load_run_conf, ConfLayers, Deployment, RunConf, Subcommand};
use fwdbench::plan::RankLayout;

/// Which model: `<model-dir>/<model>/config_<mconf>.json` with `--set` overrides.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value = "2l")]
    pub mconf: String,
    #[arg(long, default_value = "model_conf")]
    pub model_dir: PathBuf,
    /// Override a model config key, e.g. --set num_hidden_layers=4. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ModelArgs {
    /// The model's folder and its config with the overrides applied.
    pub fn load(&self) -> anyhow::Result<(PathBuf, ModelConfig)> {
        load_model(&self.model_dir, &self.model, &self.mconf, &self.sets)
    }
}

/// Which deployment: layered YAML under `--conf-dir`.
#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// Deployment, a file of conf/deploy/ (tp1, tp2, tp2ep2, tp2ep2dp2, tp8, tp8ep8, tp8ep8dp8, tp16ep16).
    #[arg(long, default_value = "tp1")]
    pub deploy: String,
    #[command(flatten)]
    pub layers: ConfLayerArgs,
}

/// The layers around the deploy file and the `--conf` overrides (`count` pairs them with
/// several deploys).
#[derive(Debug, Clone, Args)]
pub struct ConfLayerArgs {
    /// Base layer, conf/<base>.yaml.
    #[arg(long, default_value = "base")]
    pub base: String,
    /// Attention backend layer, conf/backend/<backend>.yaml.
    #[arg(long)]
    pub backend: Option<String>,
    /// Optional layer, conf/optional/<optional>.yaml.
    #[arg(long)]
    pub optional: Option<String>,
    /// Folder holding base.yaml, deploy/, backend/, optional/.
    #[arg(long, default_value = "conf")]
    pub conf_dir: PathBuf,
    /// Override a conf key (SGLang server-argument name), e.g. --conf tp_size=2. Repeatable.
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    pub conf_sets: Vec<String>,
    /// Weight format for any model: fp8 (e4m3, 128x128 block scales) or bf16; sets the conf
    /// key `quantization` (default: the model config's quantization_config).
    #[arg(long, value_name = "fp8|bf16")]
    pub quant: Option<fwdbench::quant::Quant>,
}

/// Where this node sits in a deployment over several processes or nodes (`run`, and any
/// command that starts one worker per GPU). The seed's flags: `--ip <master> --rank <node>`.
#[derive(Debug, Clone, Default, Args)]
pub struct NodeArgs {
    /// Rank 0's rendezvous address, `host` or `host:port` (default: the conf's dist_init_addr, else 127.0.0.1; port 30000).
    #[arg(long)]
    pub ip: Option<String>,
    /// This node's rank when the deployment spans several nodes (node 0 holds global rank 0); sets node_rank.
    #[arg(long = "rank", value_name = "NODE_RANK")]
    pub node_rank: Option<usize>,
    /// Nodes the deployment spans (default: the deploy file's nnodes); sets nnodes.
    #[arg(long)]
    pub nnodes: Option<usize>,
}

impl NodeArgs {
    /// The conf keys these flags set, applied after every layer (and `--conf`), so the
    /// deployment's checks name the command line when they fail.
    fn conf_sets(&self) -> Vec<(String, String)> {
        let mut sets = Vec::new();
        if let Some(n) = self.nnodes {
            sets.push(("nnodes".to_string(), n.to_string()));
        }
        if let Some(r) = self.node_rank {
            sets.push(("node_rank".to_string(), r.to_string()));
        }
        sets
    }
}

impl DeployArgs {
    pub fn load(&self) -> anyhow::Result<(RunConf, Deployment)> {
        self.load_on(&NodeArgs::default())
    }

    /// The conf with `nodes`' flags applied.
    pub fn load_on(&self, nodes: &NodeArgs) -> anyhow::Result<(RunConf, Deployment)> {
        let l = &self.layers;
        let layers = ConfLayers {
            base: l.base.clone(),
            deploy: self.deploy.clone(),
            backend: l.backend.clone(),
            optional: l.optional.clone(),
        };
        let mut sets =
            fwdbench::config::run_conf::parse_cli_pairs(&l.conf_sets).map_err(|e| anyhow::anyhow!("--conf: {e}"))?;
        sets.extend(nodes.conf_sets());
        if let Some(q) = l.quant {
            sets.push(("quantization".to_string(), q.name().to_string()));
        }
        let conf = load_run_conf(&l.conf_dir, &layers, &sets)?;
        // Workers re-run the command line: only the launcher or rank 0 warns.
        if fwdbench::dist::launch::Worker::from_env().ok().flatten().is_none_or(|w| w.is_leader()) {
            for w in conf.typo_warnings() {
                eprintln!("warning: {w}");
            }
        }
        let dep = conf.deployment()?;
        Ok((conf, dep))
    }
}

/// Prints `cmd`'s conf notes (keys it does not use, unimplemented keys, inert settings),
/// once: workers re-run the command line, so only the launcher or rank 0 speaks.
pub fn print_conf_notes(conf: Option<(&RunConf, &Deployment)>, cmd: Subcommand) {
    if fwdbench::dist::launch::Worker::from_env().ok().flatten().is_none_or(|w| w.is_leader()) {
        for note in conf_notes(conf, cmd) {
            eprintln!("note: {note}");
        }
    }
}

/// Every rank of a deployment (all nodes).
pub fn layouts(dep: &Deployment) -> anyhow::Result<Vec<RankLayout>> {
    Ok(fwdbench::dist::rank_layouts(dep.tp_size, dep.ep_size, dep.dp_size)?)
}

/// `model_conf/<model>/config_<mconf>.json` with `--set` overrides applied.
pub fn load_model(
    model_dir: &Path,
    model: &str,
    mconf: &str,
    sets: &[String],
) -> anyhow::Result<(PathBuf, ModelConfig)> {
    let dir = model_dir.join(model);
    let path = dir.join(format!("config_{mconf}.json"));
    if !dir.is_dir() {
        let known: Vec<String> = std::fs::read_dir(model_dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        anyhow::bail!("--model {model}: no folder {} (known models: {})", dir.display(), known.join(", "));
    }
    let cfg = load_config_file(&path, sets).with_context(|| format!("--model {model} --mconf {mconf}"))?;
    Ok((dir, cfg))
}

/// A model config file with `--set` overrides; what its parse noticed (unknown keys,
/// likely typos) is printed as warnings, in every subcommand that reads a config.
pub fn load_config_file(path: &Path, sets: &[String]) -> anyhow::Result<ModelConfig> {
    let overrides = super::parse_sets(sets)?;
    let loaded = load_model_config_with_warnings(path, &overrides)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(loaded.config)
}

/// Counts a user gives for timing loops, bounded so a typo cannot run for ever.
fn bounded(text: &str, lo: usize, hi: usize, what: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a number of {what} from {lo} to {hi}")),
    }
}

pub fn warmup_count(text: &str) -> Result<usize, String> {
    bounded(text, 0, 10_000, "warm-up forwards")
}

pub fn iteration_count(text: &str) -> Result<usize, String> {
    bounded(text, 1, 100_000, "timed forwards")
}
