//! Collectives of a sharded plan, over the in-process communicator that joins the
//! simulated ranks' threads.

use super::super::CpuRun;
use crate::plan::{Collective, CollectiveDim, Op};

/// `Op::Collective` over the op's group.
pub fn run(r: &mut CpuRun, op: &Op) {
    let Op::Collective { kind, group, x, out } = op else { unreachable!("collective::run got {op:?}") };
    let plan = r.plan;
    let comm = r.comm.expect("a sharded plan needs a communicator");
    let members = plan.layout.group_ranks(*group);
    let mine = r.read(*x);
    match kind {
        Collective::AllReduce => {
            let mut data = mine;
            comm.all_reduce(&members, &mut data);
            r.write(*out, &data);
        }
        Collective::AllGather(CollectiveDim::Rows) => {
            let parts = comm.exchange(&members, &mine);
            r.write(*out, &parts.concat());
        }
        Collective::AllGather(CollectiveDim::Cols) => {
            let parts = comm.exchange(&members, &mine);
            let y: Vec<f32> = (0..plan.rows(*x))
                .flat_map(|i| parts.iter().flat_map(move |p| p[i * x.cols..(i + 1) * x.cols].iter().copied()))
                .collect();
            r.write(*out, &y);
        }
        Collective::ReduceScatterRows => {
            let mut data = mine;
            comm.all_reduce(&members, &mut data);
            let pos = members.iter().position(|&m| m == plan.layout.rank).expect("rank in its group");
            let chunk = plan.rows(*out) * x.cols;
            r.write(*out, &data[pos * chunk..(pos + 1) * chunk]);
        }
    }
}
