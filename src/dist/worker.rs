//! The set-up every multi-process command shares (`run`, `comm bench`): open this rank's
//! GPU, meet the other ranks at global rank 0's rendezvous, build the NCCL communicators
//! of the deployment's groups from the id rank 0 created, and align every rank with a
//! warm-up barrier (NCCL initialises lazily; the first collective is slow).

use anyhow::Context;

use super::launch::{rendezvous_timeout, Worker};
use super::nccl::{unique_id, Communicators};
use super::rendezvous::{join, Host, Rendezvous};
use crate::exec::cuda::gpu::Gpu;
use crate::exec::cuda::kernels::collective::CollectiveBackend;
use crate::plan::RankLayout;

/// One rank's GPU, with its collectives set to NCCL, and the rendezvous it keeps for
/// gathering results and CPU barriers.
pub struct RankSetup {
    pub gpu: Gpu,
    pub rendezvous: Rendezvous,
}

/// Sets up rank `worker.rank` of `layout`'s deployment. Rank 0 listens on `bind` (e.g.
/// `0.0.0.0:30000` for several nodes, `127.0.0.1:0` for one process alone); the others
/// connect to `worker.master`. Collective: every rank of the world calls it.
pub fn setup_rank(worker: &Worker, layout: &RankLayout, bind: &str) -> anyhow::Result<RankSetup> {
    anyhow::ensure!(
        layout.world == worker.world && layout.rank == worker.rank,
        "worker rank {} of {} was given the plan layout of rank {} of {}",
        worker.rank,
        worker.world,
        layout.rank,
        layout.world
    );
    let gpu = Gpu::new(worker.local_rank).with_context(|| format!("rank {}: opening its GPU", worker.rank))?;
    let timeout = rendezvous_timeout();
    let (rendezvous, ids) = if worker.is_leader() {
        let id = unique_id()?;
        let host = Host::bind(bind)?;
        (host.serve(worker.world, std::slice::from_ref(&id), timeout)?, vec![id])
    } else {
        join(&worker.master, worker.world, worker.rank, timeout)?
    };
    let comms = Communicators::new(&gpu.stream, layout, &ids)?;
    comms.world().barrier()?;
    gpu.sync().with_context(|| format!("rank {}: the warm-up barrier", worker.rank))?;
    gpu.set_collectives(CollectiveBackend::Nccl(comms));
    Ok(RankSetup { gpu, rendezvous })
}

/// The communicators of a GPU set up by [`setup_rank`].
pub fn communicators(gpu: &Gpu) -> Option<std::rc::Rc<CollectiveBackend>> {
    gpu.collectives().filter(|b| matches!(**b, CollectiveBackend::Nccl(_)))
}
