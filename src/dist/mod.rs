//! Parallel layout (which rank does what) and communicators: in-process threads for the
//! CPU reference (so sharded plans are tested in CI), NCCL for the CUDA engine.

pub mod comm_model;
pub mod launch;
pub mod nccl;
pub mod projection;
pub mod rendezvous;
pub mod thread_comm;
pub mod worker;

use thiserror::Error;

use crate::plan::RankLayout;

#[derive(Debug, Error, PartialEq)]
pub enum LayoutError {
    #[error("tp_size {tp} must be a multiple of {what} {value}")]
    NotMultiple { tp: usize, what: &'static str, value: usize },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("{what} {value} is above the {MAX_RANKS} ranks fwdbench plans; check the deploy file or --conf")]
    TooMany { what: &'static str, value: usize },
}

/// The largest world a deployment may name (every rank gets a layout and, under
/// projection, a plan): far beyond any served deployment.
pub const MAX_RANKS: usize = 4096;

/// The rank layouts of a deployment with `tp` ranks (SGLang's world = tp_size), `ep`
/// expert-parallel groups and `dp` data-parallel attention groups.
pub fn rank_layouts(tp: usize, ep: usize, dp: usize) -> Result<Vec<RankLayout>, LayoutError> {
    for (v, name) in [(tp, "tp_size"), (ep, "ep_size"), (dp, "dp_size")] {
        if v == 0 {
            return Err(LayoutError::Zero(name));
        }
        if v > MAX_RANKS {
            return Err(LayoutError::TooMany { what: name, value: v });
        }
    }
    if !tp.is_multiple_of(ep) {
        return Err(LayoutError::NotMultiple { tp, what: "ep_size", value: ep });
    }
    if !tp.is_multiple_of(dp) {
        return Err(LayoutError::NotMultiple { tp, what: "dp_size", value: dp });
    }
    Ok((0..tp).map(|rank| RankLayout { world: tp, rank, attn_tp: tp / dp, dp, ep, moe_tp: tp / ep }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Group;

    #[test]
    fn groups_follow_sglang_rank_order() {
        let l = rank_layouts(8, 8, 2).unwrap();
        assert_eq!(l[5].attn_tp, 4);
        assert_eq!(l[5].group_ranks(Group::AttnTp), vec![4, 5, 6, 7]);
        assert_eq!(l[5].group_ranks(Group::DpPeers), vec![1, 5]);
        assert_eq!(l[5].ep_rank(), 5);
        assert_eq!(rank_layouts(8, 3, 1).unwrap_err(), LayoutError::NotMultiple { tp: 8, what: "ep_size", value: 3 });
        assert_eq!(rank_layouts(1 << 40, 1, 1).unwrap_err(), LayoutError::TooMany { what: "tp_size", value: 1 << 40 });
    }
}
