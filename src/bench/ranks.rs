//! How the ranks of one run agree and report, over the rendezvous (CPU, with deadlines):
//! before a shape's first collective every rank says whether it could prepare it (plan,
//! memory check, bind), and all go on only if all could, so no rank waits forever inside
//! NCCL for a peer that stayed out; after timing, every rank's result reaches rank 0, which
//! reports the slowest rank's median and the spread, or every failing rank's reason.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Timing;
use crate::dist::rendezvous::{Rendezvous, RendezvousError};
use crate::report::Stats;

/// One rank's result for a shape, as rank 0 receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Timed { stats: Stats, graph: bool },
    Failed(String),
}

impl From<&Timing> for Outcome {
    fn from(t: &Timing) -> Self {
        Outcome::Timed { stats: t.stats, graph: t.graph }
    }
}

/// What rank 0 makes of every rank's timing: the slowest rank's stats (the row), and the
/// fastest and slowest rank medians.
#[derive(Debug, Clone, PartialEq)]
pub struct Combined {
    pub stats: Stats,
    pub graph: bool,
    pub spread: (f64, f64),
}

/// Ranks that failed, grouped by reason (eight ranks out of memory read as one line).
fn reasons(failed: impl Iterator<Item = (usize, String)>) -> String {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (rank, why) in failed {
        match groups.iter_mut().find(|(w, _)| *w == why) {
            Some((_, ranks)) => ranks.push(rank),
            None => groups.push((why, vec![rank])),
        }
    }
    let line = |(why, ranks): (String, Vec<usize>)| {
        let names: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
        let label = if ranks.len() == 1 { "rank" } else { "ranks" };
        format!("{label} {}: {why}", names.join(", "))
    };
    groups.into_iter().map(line).collect::<Vec<_>>().join("; ")
}

/// Every rank's readiness for a shape (`None`: ready, `Some(reason)`: could not prepare),
/// shared with every rank: the shape runs only if the answer is `Ok`, everywhere alike.
pub fn agree(
    rdzv: &mut Rendezvous,
    failure: Option<&str>,
    timeout: Duration,
) -> Result<Result<(), String>, RendezvousError> {
    let payload = failure.unwrap_or_default().as_bytes();
    let all = rdzv.all_gather(payload, timeout)?;
    let failed = all.into_iter().enumerate().filter(|(_, p)| !p.is_empty());
    let text = reasons(failed.map(|(rank, p)| (rank, String::from_utf8_lossy(&p).into_owned())));
    Ok(if text.is_empty() { Ok(()) } else { Err(text) })
}

/// Sends this rank's `outcome` to rank 0; rank 0 gets everyone's, in rank order.
pub fn gather(rdzv: &mut Rendezvous, outcome: &Outcome, timeout: Duration) -> anyhow::Result<Option<Vec<Outcome>>> {
    let payload = serde_json::to_vec(outcome)?;
    let Some(all) = rdzv.gather(&payload, timeout)? else { return Ok(None) };
    let decode = |(rank, p): (usize, Vec<u8>)| {
        serde_json::from_slice(&p)
            .unwrap_or_else(|e| Outcome::Failed(format!("sent an unreadable result ({e}) from rank {rank}")))
    };
    Ok(Some(all.into_iter().enumerate().map(decode).collect()))
}

/// The row's timing (slowest rank's median) or every failing rank's reason. The graph
/// column is true only if every rank replayed its graph.
pub fn combine(outcomes: &[Outcome]) -> Result<Combined, String> {
    let failed = outcomes.iter().enumerate().filter_map(|(rank, o)| match o {
        Outcome::Failed(why) => Some((rank, why.clone())),
        Outcome::Timed { .. } => None,
    });
    let text = reasons(failed);
    if !text.is_empty() {
        return Err(text);
    }
    let timed: Vec<(Stats, bool)> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Timed { stats, graph } => Some((*stats, *graph)),
            Outcome::Failed(_) => None,
        })
        .collect();
    let slowest = timed.iter().max_by(|a, b| a.0.median_ms.total_cmp(&b.0.median_ms)).ok_or("no rank reported")?;
    let fastest = timed.iter().map(|t| t.0.median_ms).fold(f64::INFINITY, f64::min);
    Ok(Combined { stats: slowest.0, graph: timed.iter().all(|t| t.1), spread: (fastest, slowest.0.median_ms) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::rendezvous::{join, Host};

    const LONG: Duration = Duration::from_secs(20);

    fn timed(ms: f64) -> Outcome {
        Outcome::Timed { stats: Stats::of(&[ms, ms + 1.0, ms - 0.5]), graph: true }
    }

    #[test]
    fn the_row_is_the_slowest_rank_and_failures_name_their_ranks() {
        let c = combine(&[timed(2.0), timed(3.0), timed(2.5)]).unwrap();
        assert_eq!((c.stats.median_ms, c.spread, c.graph), (3.0, (2.0, 3.0), true));
        let eager = Outcome::Timed { stats: Stats::of(&[1.0]), graph: false };
        assert!(!combine(&[timed(2.0), eager]).unwrap().graph, "graph only if every rank replayed one");
        let oom = || Outcome::Failed("does not fit".into());
        let e = combine(&[timed(1.0), oom(), Outcome::Failed("kernel".into()), oom()]).unwrap_err();
        assert_eq!(e, "ranks 1, 3: does not fit; rank 2: kernel");
    }

    /// Runs `body(rank, rendezvous)` on `world` loopback ranks (threads); returns rank 0's result.
    fn on_ranks<T: Send>(world: usize, body: impl Fn(usize, &mut Rendezvous) -> T + Sync) -> T {
        let host = Host::bind("127.0.0.1:0").unwrap();
        let addr = host.local_addr().to_string();
        std::thread::scope(|s| {
            for rank in 1..world {
                let (addr, body) = (addr.clone(), &body);
                s.spawn(move || {
                    let (mut r, _) = join(&addr, world, rank, LONG).unwrap();
                    body(rank, &mut r)
                });
            }
            let mut r = host.serve(world, &[], LONG).unwrap();
            body(0, &mut r)
        })
    }

    #[test]
    fn one_rank_that_cannot_prepare_stops_the_shape_on_all_and_rank_0_hears_why() {
        let decided = std::sync::Mutex::new(Vec::new());
        let reported = on_ranks(4, |rank, r| {
            // Shape 1: rank 2 runs out of memory; shape 2: all ready, rank 3 fails while timing.
            let first = agree(r, (rank == 2).then_some("needs 150 GB"), LONG).unwrap();
            decided.lock().unwrap().push((rank, first.clone()));
            let second = agree(r, None, LONG).unwrap();
            assert_eq!(second, Ok(()));
            let outcome = if rank == 3 { Outcome::Failed("illegal address".into()) } else { timed(rank as f64 + 1.0) };
            let all = gather(r, &outcome, LONG).unwrap();
            (first, all.map(|o| combine(&o)))
        });
        let decided = decided.into_inner().unwrap();
        assert_eq!(decided.len(), 4);
        assert!(decided.iter().all(|(_, d)| d == &Err("rank 2: needs 150 GB".to_string())), "{decided:?}");
        assert_eq!(reported.0, Err("rank 2: needs 150 GB".to_string()));
        assert_eq!(reported.1, Some(Err("rank 3: illegal address".to_string())));
    }

    #[test]
    fn a_world_of_one_agrees_with_itself() {
        let (ready, all) = on_ranks(1, |_, r| (agree(r, None, LONG).unwrap(), gather(r, &timed(1.0), LONG).unwrap()));
        assert_eq!(ready, Ok(()));
        assert_eq!(combine(&all.unwrap()).unwrap().stats.median_ms, 1.0);
    }
}
