//! The f32 CPU reference executor: runs any plan op by op with the math in `ops`, from
//! bf16-rounded (random) or exact (checkpoint) weights. It is the oracle every GPU
//! kernel and every sharded plan is checked against. Ranks of a sharded plan run as
//! threads joined by `dist::thread_comm`.

pub mod ops;
pub mod run;

use crate::dist::thread_comm::ThreadComm;
use crate::plan::{CacheInfo, Op, Plan, View};
use crate::weights::{materialize, WeightError, WeightSource};

/// KV caches that outlive one forward (a prefill fills them, a decode reads them).
#[derive(Debug, Default, Clone)]
pub struct KvCaches {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl KvCaches {
    pub fn ensure(&mut self, caches: &[CacheInfo]) {
        if self.k.len() == caches.len() {
            return;
        }
        self.k = caches.iter().map(|c| vec![0.0; c.batch * c.max_seq * c.k_elems_per_token()]).collect();
        self.v = caches.iter().map(|c| vec![0.0; c.batch * c.max_seq * c.v_elems_per_token()]).collect();
    }
}

/// One weight's result, filled by whichever thread materialises it.
type Slot = std::sync::Mutex<Option<Result<Vec<f32>, WeightError>>>;

/// All weights of a plan, materialised in f32.
pub fn load_weights(plan: &Plan, src: &dyn WeightSource, round_bf16: bool) -> Result<Vec<Vec<f32>>, WeightError> {
    // Large 2-layer configs hold billions of values: spread the weights over the cores.
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(plan.weights.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<Slot> = plan.weights.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(w) = plan.weights.get(i) else { break };
                *slots[i].lock().expect("weight slot") = Some(materialize(w, src, round_bf16));
            });
        }
    });
    slots.into_iter().map(|m| m.into_inner().expect("weight slot").expect("every weight materialised")).collect()
}

pub struct CpuRun<'a> {
    pub plan: &'a Plan,
    pub weights: &'a [Vec<f32>],
    pub acts: Vec<Vec<f32>>,
    comm: Option<&'a ThreadComm>,
}

impl<'a> CpuRun<'a> {
    pub fn new(plan: &'a Plan, weights: &'a [Vec<f32>], comm: Option<&'a ThreadComm>) -> Self {
        let acts = plan.tensors.iter().map(|t| vec![0.0; t.rows * t.cols]).collect();
        CpuRun { plan, weights, acts, comm }
    }

    /// Copies a column window into a contiguous `[rows, cols]` array.
    pub fn read(&self, v: View) -> Vec<f32> {
        let t = self.plan.tensor(v.id);
        let data = &self.acts[v.id.0];
        (0..t.rows).flat_map(|r| data[r * t.cols + v.col..r * t.cols + v.col + v.cols].iter().copied()).collect()
    }

    pub fn write(&mut self, v: View, values: &[f32]) {
        let cols = self.plan.tensor(v.id).cols;
        let data = &mut self.acts[v.id.0];
        for (r, row) in values.chunks(v.cols).enumerate() {
            data[r * cols + v.col..r * cols + v.col + v.cols].copy_from_slice(row);
        }
    }

    fn w(&self, id: crate::plan::WeightId) -> &[f32] {
        &self.weights[id.0]
    }

    /// Runs the whole plan; returns the logits `[rows, vocab]`.
    pub fn forward(&mut self, ids: &[i32], caches: &mut KvCaches) -> Vec<f32> {
        caches.ensure(&self.plan.caches);
        let input = self.plan.full(self.plan.input_ids);
        let ids_f: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
        self.write(input, &ids_f);
        for i in 0..self.plan.ops.len() {
            self.run_op(i, caches);
        }
        self.read(self.plan.logits)
    }

    /// Runs plan op `index` through its family's `ops::<stem>::run`.
    pub fn run_op(&mut self, index: usize, caches: &mut KvCaches) {
        let op = &self.plan.ops[index].op;
        match op {
            Op::Embed { .. } => ops::embed::run(self, op),
            Op::Norm { .. } | Op::HeadNorm { .. } => ops::norm::run(self, op),
            Op::Linear { .. } | Op::HeadMatmul { .. } => ops::linear::run(self, op),
            Op::BiasAct { .. } | Op::ActMul { .. } | Op::Add { .. } => ops::act::run(self, op),
            Op::Rope { .. } => ops::rope::run(self, op),
            Op::KvCacheWrite { .. } => ops::attention::write_cache(self, op, caches),
            Op::Attention { .. } => ops::attention::run(self, op, caches),
            Op::MlaCacheWrite { .. } | Op::MlaPrefillAttention { .. } | Op::MlaDecodeAttention { .. } => {
                ops::mla::run(self, op, caches)
            }
            Op::Route { .. } => ops::route::run(self, op),
            Op::Moe { .. } => ops::moe::run(self, op),
            Op::GatherRows { .. } => ops::misc::run(self, op),
            Op::Collective { .. } => ops::collective::run(self, op),
        }
    }
}
