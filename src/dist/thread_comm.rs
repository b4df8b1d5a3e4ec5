//! Collectives between threads that each simulate one rank. Every rank runs the same op
//! sequence, so each collective is: deposit, world barrier, read the group's deposits,
//! world barrier (so slots can be reused).

use std::sync::{Arc, Barrier, Mutex};

pub struct ThreadComm {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    slots: Mutex<Vec<Vec<f32>>>,
    barrier: Barrier,
}

impl ThreadComm {
    /// One communicator per rank of a `world`-rank group of threads.
    pub fn group(world: usize) -> Vec<ThreadComm> {
        let shared = Arc::new(Shared { slots: Mutex::new(vec![Vec::new(); world]), barrier: Barrier::new(world) });
        (0..world).map(|rank| ThreadComm { rank, shared: shared.clone() }).collect()
    }

    /// Every member's buffer of `group`, in group order.
    pub fn exchange(&self, group: &[usize], data: &[f32]) -> Vec<Vec<f32>> {
        self.shared.slots.lock().expect("comm lock")[self.rank] = data.to_vec();
        self.shared.barrier.wait();
        let out = {
            let slots = self.shared.slots.lock().expect("comm lock");
            group.iter().map(|&r| slots[r].clone()).collect()
        };
        self.shared.barrier.wait();
        out
    }

    pub fn all_reduce(&self, group: &[usize], data: &mut [f32]) {
        let parts = self.exchange(group, data);
        data.iter_mut().enumerate().for_each(|(i, v)| *v = parts.iter().map(|p| p[i]).sum());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subgroup_all_reduce_sums_only_the_group() {
        let comms = ThreadComm::group(4);
        let results: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .iter()
                .enumerate()
                .map(|(r, c)| {
                    s.spawn(move || {
                        let group = if r < 2 { vec![0, 1] } else { vec![2, 3] };
                        let mut v = vec![r as f32 + 1.0; 3];
                        c.all_reduce(&group, &mut v);
                        v
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results[0], vec![3.0; 3]);
        assert_eq!(results[3], vec![7.0; 3]);
    }
}
