//! GPU forwards for `fwdbench check --device cuda`.

use crate::check::CheckMode;
use crate::config::model::ModelConfig;
use crate::exec::cpu::run::Logits;
use crate::plan::RankLayout;
use crate::weights::WeightSource;

pub fn cuda_logits(
    _cfg: &ModelConfig,
    _layouts: &[RankLayout],
    _src: &dyn WeightSource,
    _ids: &[Vec<i32>],
    _mode: CheckMode,
) -> anyhow::Result<Logits> {
    anyhow::bail!("the CUDA engine is not wired into check yet")
}
