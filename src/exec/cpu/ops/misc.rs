//! Row gathers (`Op::GatherRows`): the last position of each prefill sequence before the
//! LM head.

use super::super::CpuRun;
use crate::plan::Op;

/// `out[i] = x[rows[i]]`.
pub fn run(r: &mut CpuRun, op: &Op) {
    let Op::GatherRows { x, rows, out } = op else { unreachable!("misc::run got {op:?}") };
    let xs = r.read(*x);
    let y: Vec<f32> = rows.iter().flat_map(|&i| xs[i * x.cols..(i + 1) * x.cols].iter().copied()).collect();
    r.write(*out, &y);
}
