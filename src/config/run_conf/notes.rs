//! What each conf key does in each subcommand, and the notes every subcommand prints.
//!
//! One merged conf describes one deployment for every subcommand, but each uses a different
//! part of it: `count` times nothing, so the CUDA-graph keys cannot act there; `check` runs
//! every rank in one process, so the multi-node keys cannot either. Rather than letting
//! such a key pass silently, every subcommand prints the same notes (built here) once: the
//! keys it does not use and why, the keys fwdbench does not implement at all, and the
//! settings whose value cannot act as written ([`Deployment::inert_settings`]).

use std::collections::BTreeMap;

use super::{Deployment, RunConf, IMPLEMENTED_KEYS};

/// The subcommands that read (or could read) a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subcommand {
    Run,
    Count,
    Check,
    Kernel,
    Comm,
}

impl Subcommand {
    pub const ALL: [Subcommand; 5] =
        [Subcommand::Run, Subcommand::Count, Subcommand::Check, Subcommand::Kernel, Subcommand::Comm];

    pub fn name(self) -> &'static str {
        match self {
            Subcommand::Run => "run",
            Subcommand::Count => "count",
            Subcommand::Check => "check",
            Subcommand::Kernel => "kernel",
            Subcommand::Comm => "comm bench",
        }
    }
}

/// What a key does in one subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// The key changes what the subcommand does or reports (the text says how).
    Acts(&'static str),
    /// The key has no effect there (the text says why); it appears in the notes.
    Ignored(&'static str),
}

const NOT_IMPLEMENTED: &str = "fwdbench does not implement it";
const NO_TIMING: &str = "it times no forward";
const ONE_PROCESS: &str = "it plans every rank of every node in one process";
const NO_CONF: &str = "comm bench reads no run conf; --gpus, --nnodes, --ip and --rank give its layout";

/// What `key` (canonical spelling) does in `cmd`.
pub fn key_use(key: &str, cmd: Subcommand) -> KeyUse {
    use KeyUse::{Acts, Ignored};
    use Subcommand::*;
    if !IMPLEMENTED_KEYS.contains(&key) {
        return Ignored(NOT_IMPLEMENTED);
    }
    if cmd == Comm {
        return Ignored(NO_CONF);
    }
    match (key, cmd) {
        ("tp_size" | "ep_size" | "dp_size" | "enable_dp_attention", _) => Acts("the rank layout of every plan"),
        ("dtype", _) => Acts("validated: fwdbench runs bf16 and refuses any other dtype"),
        ("enable_dp_lm_head", _) => {
            Acts("under DP attention the plans split the LM head over the attention-TP group, as SGLang does with it")
        }
        ("attention_backend", Run | Kernel) => Acts("chooses the attention kernels and fills the CSV backend column"),
        ("attention_backend", Count | Check) => {
            Acts("shown in the output (FLOPs, bytes and logits do not depend on it)")
        }
        ("disable_cuda_graph" | "cuda_graph_max_bs", Run) => Acts("decide which decode forwards replay a CUDA graph"),
        ("disable_cuda_graph" | "cuda_graph_max_bs", Count) => Ignored(NO_TIMING),
        ("disable_cuda_graph" | "cuda_graph_max_bs", Check | Kernel) => {
            Ignored("it runs its forwards eagerly, to compare them op by op")
        }
        ("nnodes" | "node_rank" | "dist_init_addr", Run) => {
            Acts("which ranks this node starts and where rank 0's rendezvous listens")
        }
        ("nnodes" | "node_rank" | "dist_init_addr", Count | Check | Kernel) => Ignored(ONE_PROCESS),
        ("moe_dense_tp_size", _) => Ignored("fwdbench splits dense FFN layers over all ranks"),
        _ => Ignored(NOT_IMPLEMENTED),
    }
}

/// A value that asks for nothing (`null`, `false`, an empty string, one node, node 0) is
/// not worth a note where its key is ignored: only settings that ask for something are.
fn asks_for_something(key: &str, value: &serde_json::Value) -> bool {
    let single_node = match key {
        "nnodes" => value.as_u64() == Some(1),
        "node_rank" => value.as_u64() == Some(0),
        _ => false,
    };
    !single_node
        && !matches!(value, serde_json::Value::Null | serde_json::Value::Bool(false))
        && value.as_str().is_none_or(|s| !s.trim().is_empty())
}

/// The notes `cmd` prints once for `conf` (with its validated deployment): one line per
/// reason some implemented keys do not act here, one line of unimplemented keys, then the
/// inert settings. `None` (comm bench) gives the one line that says no conf is read.
pub fn conf_notes(conf: Option<(&RunConf, &Deployment)>, cmd: Subcommand) -> Vec<String> {
    let Some((conf, dep)) = conf else {
        return vec![format!("{NO_CONF}, so conf keys such as dist_init_addr and node_rank do not apply")];
    };
    let mut by_reason: BTreeMap<&'static str, Vec<&str>> = BTreeMap::new();
    let mut unimplemented = Vec::new();
    for (key, setting) in conf.settings() {
        match key_use(key, cmd) {
            KeyUse::Acts(_) => {}
            KeyUse::Ignored(NOT_IMPLEMENTED) => unimplemented.push(key),
            KeyUse::Ignored(why) if asks_for_something(key, &setting.value) => {
                by_reason.entry(why).or_default().push(key)
            }
            KeyUse::Ignored(_) => {}
        }
    }
    let mut notes: Vec<String> = by_reason
        .into_iter()
        .map(|(why, keys)| format!("`{}` does not use conf keys {}: {why}", cmd.name(), keys.join(", ")))
        .collect();
    if !unimplemented.is_empty() {
        notes.push(format!("conf keys fwdbench does not implement (ignored): {}", unimplemented.join(", ")));
    }
    if cmd != Subcommand::Comm {
        notes.extend(dep.inert_settings());
    }
    notes
}
