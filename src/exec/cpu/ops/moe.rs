//! Routed experts on this rank: every token's chosen experts among the local ones, each a
//! gated MLP (`w13` = gate rows then up rows, `w2` down), summed with the routing weights.
//! The reference groups tokens by expert as the GPU pipeline does, but without padding.

use super::super::CpuRun;
use super::{act_mul, matmul_nt_as};
use crate::plan::Op;

/// `Op::Moe`: `out[t] = sum_j w[t,j] * expert_{ids[t,j]}(x[t])` over local experts.
pub fn run(r: &mut CpuRun, op: &Op) {
    let Op::Moe { x, ids, weights, w13, w2, expert_start, local_experts, top_k, inter, act, out, .. } = op else {
        unreachable!("moe::run got {op:?}")
    };
    let xs = r.read(*x);
    let (idv, wv) = (r.read(*ids), r.read(*weights));
    let hidden = x.cols;
    let t_all = r.plan.rows(*x);
    let mut y = vec![0f32; t_all * out.cols];
    for local in 0..*local_experts {
        let global = expert_start + local;
        let picks: Vec<(usize, f32)> =
            (0..t_all * top_k).filter(|&s| idv[s] as usize == global).map(|s| (s / top_k, wv[s])).collect();
        if picks.is_empty() {
            continue;
        }
        let xe: Vec<f32> = picks.iter().flat_map(|(t, _)| xs[t * hidden..(t + 1) * hidden].iter().copied()).collect();
        let w13e = &r.w(*w13)[local * 2 * inter * hidden..(local + 1) * 2 * inter * hidden];
        // FP8 experts quantize both GEMMs' inputs per token group, as the GPU would.
        let dtype = r.plan.weight(*w13).dtype;
        let gu = matmul_nt_as(dtype, &xe, picks.len(), hidden, w13e, 2 * inter);
        let h = act_mul(&gu, picks.len(), *inter, *act);
        let w2e = &r.w(*w2)[local * hidden * inter..(local + 1) * hidden * inter];
        let ye = matmul_nt_as(dtype, &h, picks.len(), *inter, w2e, hidden);
        for (i, (t, wt)) in picks.iter().enumerate() {
            y[t * hidden..(t + 1) * hidden]
                .iter_mut()
                .zip(&ye[i * hidden..(i + 1) * hidden])
                .for_each(|(o, v)| *o += wt * v);
        }
    }
    r.write(*out, &y);
}
