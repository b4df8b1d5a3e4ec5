//! One process per GPU. `fwdbench run` (or `comm bench`) on a node with a deployment wider
//! than one GPU re-runs its own command line once per local GPU, each child with its
//! global rank in the environment; the children meet at the rendezvous of global rank 0
//! (`--ip`, default this host) and build their NCCL communicators from it. Only rank 0
//! writes tables and files; the others send their results to it.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Environment variables a worker reads (set by [`spawn_local_workers`]).
pub const ENV_RANK: &str = "FWDBENCH_RANK";
pub const ENV_WORLD: &str = "FWDBENCH_WORLD";
pub const ENV_LOCAL_RANK: &str = "FWDBENCH_LOCAL_RANK";
pub const ENV_MASTER: &str = "FWDBENCH_MASTER";

/// SGLang's default port for `dist_init_addr`; the rendezvous listens there on rank 0.
pub const DEFAULT_PORT: u16 = 30000;

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("{var}={value:?} is not valid ({why}); it is set by fwdbench for its workers, do not set it by hand")]
    BadEnv { var: &'static str, value: String, why: &'static str },
    #[error("the deployment needs {world} ranks over {nnodes} node(s), which is not a whole number of GPUs per node; fix tp_size or --nnodes")]
    Uneven { world: usize, nnodes: usize },
    #[error("--rank {node_rank} is not below --nnodes {nnodes}; node ranks count from 0")]
    NodeRank { node_rank: usize, nnodes: usize },
    #[error("this node has {have} GPU(s) but its share of the deployment needs {need}; use --project to measure one rank's shard and model the rest")]
    TooFewGpus { have: usize, need: usize },
    #[error("cannot start worker rank {rank}: {err}")]
    Spawn { rank: usize, err: std::io::Error },
    #[error("worker rank {rank} failed ({status}); its error is printed above")]
    Failed { rank: usize, status: String },
    #[error("{what} `{value}` is not `host` or `host:port` with a port from 1 to 65535; fix --ip or the conf's dist_init_addr")]
    BadAddress { what: &'static str, value: String },
    #[error("the deployment spans {nnodes} nodes but rank 0's rendezvous address is {addr}, this host's loopback; give every node --ip <address of node 0> (or set dist_init_addr)")]
    LoopbackMaster { nnodes: usize, addr: String },
}

/// Where this process sits in a multi-process job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub rank: usize,
    pub world: usize,
    /// The GPU ordinal on this node.
    pub local_rank: usize,
    /// `host:port` of global rank 0's rendezvous.
    pub master: String,
}

fn env_usize(var: &'static str) -> Result<Option<usize>, LaunchError> {
    match std::env::var(var) {
        Err(_) => Ok(None),
        Ok(v) => v.parse().map(Some).map_err(|_| LaunchError::BadEnv { var, value: v, why: "not a whole number" }),
    }
}

impl Worker {
    /// This process's role, when it was started by [`spawn_local_workers`].
    pub fn from_env() -> Result<Option<Worker>, LaunchError> {
        let (Some(rank), Some(world)) = (env_usize(ENV_RANK)?, env_usize(ENV_WORLD)?) else { return Ok(None) };
        let local_rank = env_usize(ENV_LOCAL_RANK)?.unwrap_or(rank);
        let master = std::env::var(ENV_MASTER).unwrap_or_else(|_| format!("127.0.0.1:{DEFAULT_PORT}"));
        if rank >= world {
            return Err(LaunchError::BadEnv {
                var: ENV_RANK,
                value: rank.to_string(),
                why: "not below the world size",
            });
        }
        Ok(Some(Worker { rank, world, local_rank, master }))
    }

    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }
}

/// The ranks one node runs: `nnodes` nodes of `world / nnodes` GPUs, node `node_rank`
/// holding the consecutive block of global ranks (as SGLang numbers them).
pub fn node_ranks(world: usize, nnodes: usize, node_rank: usize) -> Result<std::ops::Range<usize>, LaunchError> {
    if nnodes == 0 || !world.is_multiple_of(nnodes) {
        return Err(LaunchError::Uneven { world, nnodes });
    }
    if node_rank >= nnodes {
        return Err(LaunchError::NodeRank { node_rank, nnodes });
    }
    let per_node = world / nnodes;
    Ok(node_rank * per_node..(node_rank + 1) * per_node)
}

/// `host` or `host:port` (IPv6 in brackets) as (host, port); `None` when malformed.
fn split_host_port(addr: &str) -> Option<(&str, Option<u16>)> {
    let addr = addr.trim();
    let (host, port) = match addr.rsplit_once(':') {
        // A bare IPv6 address has colons but no port.
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => (host, Some(port)),
        _ => (addr, None),
    };
    if host.is_empty() {
        return None;
    }
    match port {
        None => Some((host, None)),
        Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).map(|p| (host, Some(p))),
    }
}

/// Rank 0's rendezvous address, `host:port`: `--ip` (a host, or host:port), else the conf's
/// `dist_init_addr`, else this host; the port is the one given with either, else
/// [`DEFAULT_PORT`] (SGLang's `--dist-init-addr` port, as the seed's run.sh sets it).
pub fn master_address(ip: Option<&str>, dist_init_addr: Option<&str>) -> Result<String, LaunchError> {
    fn parse<'a>(what: &'static str, value: &'a str) -> Result<(&'a str, Option<u16>), LaunchError> {
        split_host_port(value).ok_or_else(|| LaunchError::BadAddress { what, value: value.to_string() })
    }
    let conf = dist_init_addr.map(|a| parse("dist_init_addr", a)).transpose()?;
    let (host, port) = match ip {
        Some(ip) => {
            let (host, port) = parse("--ip", ip)?;
            (host, port.or(conf.and_then(|(_, p)| p)))
        }
        None => conf.unwrap_or(("127.0.0.1", None)),
    };
    Ok(format!("{host}:{}", port.unwrap_or(DEFAULT_PORT)))
}

/// Where rank 0 listens: the master address itself on one node, every interface on
/// several (the other nodes connect to the address they were given). A multi-node run
/// whose master is a loopback address could never be reached: refused.
pub fn bind_address(master: &str, nnodes: usize) -> Result<String, LaunchError> {
    if nnodes <= 1 {
        return Ok(master.to_string());
    }
    let (host, port) = split_host_port(master)
        .ok_or_else(|| LaunchError::BadAddress { what: "rendezvous address", value: master.to_string() })?;
    if host == "localhost" || host.starts_with("127.") || host == "[::1]" {
        return Err(LaunchError::LoopbackMaster { nnodes, addr: master.to_string() });
    }
    Ok(format!("0.0.0.0:{}", port.unwrap_or(DEFAULT_PORT)))
}

/// Starts one worker per local rank, each running `args` (this binary's own arguments)
/// with its rank in the environment and `NCCL_NVLS_ENABLE=0` (never NVLink multicast);
/// waits for all. When one fails the others are killed, so a dead rank cannot leave its
/// peers waiting in a collective.
pub fn spawn_local_workers(
    args: &[String],
    ranks: std::ops::Range<usize>,
    world: usize,
    master: &str,
) -> Result<(), LaunchError> {
    let exe = std::env::current_exe().map_err(|err| LaunchError::Spawn { rank: ranks.start, err })?;
    spawn_workers(&exe, args, ranks, world, master)
}

/// [`spawn_local_workers`] with another executable (tests use a shell as a fake worker).
pub fn spawn_workers(
    exe: &Path,
    args: &[String],
    ranks: std::ops::Range<usize>,
    world: usize,
    master: &str,
) -> Result<(), LaunchError> {
    let mut children: Vec<(usize, Child)> = Vec::new();
    for (local, rank) in ranks.enumerate() {
        let child = Command::new(exe)
            .args(args)
            .env(ENV_RANK, rank.to_string())
            .env(ENV_WORLD, world.to_string())
            .env(ENV_LOCAL_RANK, local.to_string())
            .env(ENV_MASTER, master)
            .env("NCCL_NVLS_ENABLE", "0")
            .spawn();
        match child {
            Ok(c) => children.push((rank, c)),
            Err(err) => {
                kill_all(&mut children);
                return Err(LaunchError::Spawn { rank, err });
            }
        }
    }
    wait_all(children)
}

fn kill_all(children: &mut [(usize, Child)]) {
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn wait_all(mut children: Vec<(usize, Child)>) -> Result<(), LaunchError> {
    let mut first_failure = None;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (rank, _) = children.remove(i);
                    if !status.success() && first_failure.is_none() {
                        first_failure = Some(LaunchError::Failed { rank, status: status.to_string() });
                        kill_all(&mut children);
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    let (rank, _) = children.remove(i);
                    first_failure.get_or_insert(LaunchError::Failed { rank, status: e.to_string() });
                    kill_all(&mut children);
                }
            }
        }
        if !children.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// A deadline for rendezvous steps: long enough for model loading on every rank.
pub fn rendezvous_timeout() -> Duration {
    Duration::from_secs(std::env::var("FWDBENCH_RENDEZVOUS_TIMEOUT_S").ok().and_then(|v| v.parse().ok()).unwrap_or(300))
}

/// Seconds since `start`, for progress lines.
pub fn elapsed_s(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_hold_consecutive_rank_blocks() {
        assert_eq!(node_ranks(16, 2, 1).unwrap(), 8..16);
        assert_eq!(node_ranks(8, 1, 0).unwrap(), 0..8);
        assert!(matches!(node_ranks(8, 3, 0), Err(LaunchError::Uneven { .. })));
        assert!(matches!(node_ranks(8, 2, 2), Err(LaunchError::NodeRank { .. })));
    }

    #[test]
    fn the_master_address_comes_from_ip_then_the_conf_then_this_host() {
        assert_eq!(master_address(None, None).unwrap(), "127.0.0.1:30000");
        assert_eq!(master_address(Some("10.0.0.1"), None).unwrap(), "10.0.0.1:30000");
        assert_eq!(master_address(Some("10.0.0.1"), Some("10.0.0.9:5000")).unwrap(), "10.0.0.1:5000");
        assert_eq!(master_address(Some("10.0.0.1:6000"), Some("10.0.0.9:5000")).unwrap(), "10.0.0.1:6000");
        assert_eq!(master_address(None, Some("node0")).unwrap(), "node0:30000");
        assert_eq!(master_address(Some("[fe80::1]:7000"), None).unwrap(), "[fe80::1]:7000");
        let e = master_address(Some("10.0.0.1:99999"), None).unwrap_err().to_string();
        assert!(e.starts_with("--ip `10.0.0.1:99999` is not"), "{e}");
        assert!(master_address(None, Some(":5000")).is_err());
        assert_eq!(bind_address("127.0.0.1:30000", 1).unwrap(), "127.0.0.1:30000");
        assert_eq!(bind_address("10.0.0.1:5000", 2).unwrap(), "0.0.0.0:5000");
        assert!(matches!(bind_address("127.0.0.1:30000", 2), Err(LaunchError::LoopbackMaster { .. })));
    }

    #[test]
    fn workers_get_the_arguments_and_their_ranks_across_nodes() {
        // A shell plays the worker: it writes what it was given to a file named by its rank.
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "echo \"$FWDBENCH_RANK $FWDBENCH_LOCAL_RANK $FWDBENCH_WORLD $FWDBENCH_MASTER $NCCL_NVLS_ENABLE $*\" > {}/$FWDBENCH_RANK",
            dir.path().display()
        );
        let args: Vec<String> =
            ["-c", &script, "sh", "run", "--deploy", "tp16ep16", "--rank", "1"].iter().map(|s| s.to_string()).collect();
        let ranks = node_ranks(16, 2, 1).unwrap();
        spawn_workers(Path::new("sh"), &args, ranks, 16, "10.0.0.1:30000").unwrap();
        for (local, rank) in (8..16).enumerate() {
            let got = std::fs::read_to_string(dir.path().join(rank.to_string())).unwrap();
            assert_eq!(got.trim(), format!("{rank} {local} 16 10.0.0.1:30000 0 run --deploy tp16ep16 --rank 1"));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 8, "node 1 starts ranks 8..16 only");
    }

    #[test]
    fn a_failing_worker_is_reported_by_rank_and_stops_the_others() {
        // `sh` stands in for fwdbench: rank 1 fails at once, rank 0 would sleep for a minute.
        let sh = |code: &str| Command::new("sh").args(["-c", code]).spawn().unwrap();
        let children = vec![(0, sh("sleep 60")), (1, sh("exit 3"))];
        let t = Instant::now();
        let e = wait_all(children).unwrap_err();
        assert!(matches!(e, LaunchError::Failed { rank: 1, .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(wait_all(vec![(0, sh("exit 0")), (1, sh("exit 0"))]).is_ok());
    }
}
