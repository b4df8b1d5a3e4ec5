//! Token embedding on a vocab-parallel shard: `out[t] = scale * table[id - vocab_start]`
//! for ids in this rank's rows (0 otherwise), plus the learned position row when the model
//! has one (GPT).

use super::super::CpuRun;
use crate::plan::Op;

/// `Op::Embed` over the plan's input ids.
pub fn run(r: &mut CpuRun, op: &Op) {
    let Op::Embed { out, table, vocab_start, pos_table, scale } = op else { unreachable!("embed::run got {op:?}") };
    let plan = r.plan;
    let hidden = out.cols;
    let table_rows = plan.weight(*table).rows;
    let ids = r.read(plan.full(plan.input_ids));
    let mut values = vec![0f32; ids.len() * hidden];
    for (t, id) in ids.iter().enumerate() {
        let id = *id as usize;
        let row = &mut values[t * hidden..(t + 1) * hidden];
        if id >= *vocab_start && id < vocab_start + table_rows {
            let src = &r.w(*table)[(id - vocab_start) * hidden..(id - vocab_start + 1) * hidden];
            row.iter_mut().zip(src).for_each(|(o, s)| *o = scale * s);
        }
        if let Some(pos) = pos_table {
            let p = plan.positions[t];
            let src = &r.w(*pos)[p * hidden..(p + 1) * hidden];
            row.iter_mut().zip(src).for_each(|(o, s)| *o += s);
        }
    }
    r.write(*out, &values);
}
