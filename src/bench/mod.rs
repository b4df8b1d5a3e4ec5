//! The timing loop over a shapes grid.

use std::path::Path;

use crate::cli::RunArgs;
use crate::config::model::ModelConfig;
use crate::config::run_conf::Deployment;
use crate::plan::RankLayout;

pub fn run_grid(
    _args: &RunArgs,
    _cfg: &ModelConfig,
    _dir: &Path,
    _dep: &Deployment,
    _ranks: &[RankLayout],
    _shapes: &[(usize, usize)],
) -> anyhow::Result<()> {
    anyhow::bail!("the CUDA timing loop is not built yet")
}
