//! The timing core every GPU measurement shares (`run`'s forwards, `kernel bench`'s ops):
//! CUDA events on the stream around the timed work only, and before each iteration an L2
//! flush outside the events, so that a small working set (a 2-layer model, one op's
//! weights) is timed from HBM as it is inside a real forward, not from the 50 MB L2.
//! The flush reads (`l2_flush_read`): a flush that wrote (a memset, as until session 13)
//! left ~50 MB of dirty lines whose write-back then ran inside the timed region, up to a
//! sixth more DRAM traffic for a 300 MB decode step.
//! `run --timing seed` selects the seed pipeline's method instead (`TimingMethod`).

use cudarc::driver::sys::CUevent_flags;
use serde::{Deserialize, Serialize};

use crate::exec::cuda::gpu::Gpu;
use crate::exec::cuda::kernels::misc::{grid_stride_launch, L2FlushParams, L2_FLUSH_READ};
use crate::exec::cuda::memory::DeviceBuffer;

/// Bytes read to flush the L2: five times the H200's 50 MB.
pub const FLUSH_BYTES: usize = 256 << 20;

/// The buffer a flush reads (zeroed, so its XOR is 0 and the flush kernel never writes).
pub fn flush_buffer() -> anyhow::Result<DeviceBuffer> {
    DeviceBuffer::zeroed(FLUSH_BYTES)
}

/// Most resident threads per SM on Hopper: the flush runs one full wave of them.
const THREADS_PER_SM: u64 = 2048;

/// Enqueues the flush: every line of `buf` read into L2 (the buffer's last 4 bytes serve as
/// the kernel's never-written sink), by one resident wave of grid-stride threads.
fn flush_l2(gpu: &Gpu, buf: &DeviceBuffer) -> anyhow::Result<()> {
    let vecs = (buf.bytes.min(FLUSH_BYTES) / 16) as u64;
    let params =
        L2FlushParams { buf: buf.ptr, n_vec16: vecs as i64, sink: buf.ptr + buf.bytes as u64 - 4, never: 0x5eed_f105 };
    let wave = gpu.sm_count.max(1) as u64 * THREADS_PER_SM;
    gpu.launch(L2_FLUSH_READ, grid_stride_launch(vecs.min(wave)), params)
}

/// Milliseconds of each of `iters` (at least one) runs of `enqueue`, each timed alone
/// between two events; with `flush`, the L2 is flushed before each run, outside them, and
/// then `before_each` runs, also outside them (the ranks' barrier of a multi-GPU run).
pub fn time_iterations(
    gpu: &Gpu,
    flush: Option<&DeviceBuffer>,
    iters: usize,
    before_each: impl FnMut() -> anyhow::Result<()>,
    mut enqueue: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    let mut parts = time_parts(gpu, flush, iters, 1, before_each, |_| enqueue())?;
    Ok(parts.remove(0))
}

/// Per part, milliseconds of each of `iters` (at least one) runs of `parts` enqueued in order
/// with an event after each: part j's time is the gap between the events around it (the
/// L2 flushed, then `before_each` run, once before each run, outside them). An event between
/// two launches ends any programmatic overlap (PDL) of the second with the first, so the
/// parts can sum to more than one event pair around all of them measures.
pub fn time_parts(
    gpu: &Gpu,
    flush: Option<&DeviceBuffer>,
    iters: usize,
    parts: usize,
    mut before_each: impl FnMut() -> anyhow::Result<()>,
    mut enqueue: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let events =
        (0..=parts).map(|_| gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))).collect::<Result<Vec<_>, _>>()?;
    let mut times = vec![Vec::with_capacity(iters.max(1)); parts];
    for _ in 0..iters.max(1) {
        if let Some(buf) = flush {
            flush_l2(gpu, buf)?;
        }
        before_each()?;
        events[0].record(&gpu.stream)?;
        for (j, event) in events[1..].iter().enumerate() {
            enqueue(j)?;
            event.record(&gpu.stream)?;
        }
        for (j, t) in times.iter_mut().enumerate() {
            t.push(events[j].elapsed_ms(&events[j + 1])? as f64);
        }
    }
    Ok(times)
}

/// Mean milliseconds of `iters` (at least one) runs of `enqueue` enqueued back to back
/// between one pair of events, after `before` (outside them): the seed pipeline's method,
/// which hides no launch gap between forwards and flushes nothing.
pub fn time_back_to_back(
    gpu: &Gpu,
    iters: usize,
    before: impl FnOnce() -> anyhow::Result<()>,
    mut enqueue: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let start = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let end = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    before()?;
    start.record(&gpu.stream)?;
    for _ in 0..iters.max(1) {
        enqueue()?;
    }
    end.record(&gpu.stream)?;
    Ok(start.elapsed_ms(&end)? as f64 / iters.max(1) as f64)
}

/// How a shape's forwards are timed: fwdbench's own method or the seed pipeline's
/// (seed-pipeline.md §1, "Timing"), so old numbers can be reproduced beside new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimingMethod {
    /// `--warmup` forwards, then `--iters` forwards each between its own events, the L2
    /// flushed before each (unless `--no-flush`); the row is their median.
    Fwdbench,
    /// 50 warm-ups, then one event pair around 50 back-to-back forwards; the row is their
    /// mean; no flush. `--warmup`, `--iters` and `--no-flush` do not apply.
    Seed,
}

/// The seed's `WARMUP_STEPS` and `RUN_STEPS` (its tpworker patch).
pub const SEED_WARMUP: usize = 50;
pub const SEED_ITERS: usize = 50;

/// The values `--timing` and the run conf key `timing` take.
pub const TIMING_CHOICES: [&str; 3] = ["fwdbench", "seed", "both"];

impl TimingMethod {
    pub fn name(self) -> &'static str {
        match self {
            TimingMethod::Fwdbench => "fwdbench",
            TimingMethod::Seed => "seed",
        }
    }

    /// The methods a `--timing` value asks for, in run order (`both`: ours, then the seed's).
    pub fn parse_choice(value: &str) -> Option<Vec<TimingMethod>> {
        match value.trim() {
            "fwdbench" => Some(vec![TimingMethod::Fwdbench]),
            "seed" => Some(vec![TimingMethod::Seed]),
            "both" => Some(vec![TimingMethod::Fwdbench, TimingMethod::Seed]),
            _ => None,
        }
    }
}

/// One method with its counts resolved against the run's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimingPlan {
    pub method: TimingMethod,
    pub warmup: usize,
    pub iters: usize,
    pub flush: bool,
    /// One event pair around all `iters` forwards (their mean), not one per forward.
    pub back_to_back: bool,
}

impl TimingPlan {
    /// `warmup`, `iters` and `flush` are the run's flags; the seed's method has its own.
    pub fn resolve(method: TimingMethod, warmup: usize, iters: usize, flush: bool) -> Self {
        match method {
            TimingMethod::Fwdbench => {
                TimingPlan { method, warmup: warmup.max(1), iters: iters.max(1), flush, back_to_back: false }
            }
            TimingMethod::Seed => {
                TimingPlan { method, warmup: SEED_WARMUP, iters: SEED_ITERS, flush: false, back_to_back: true }
            }
        }
    }

    /// One line for the run's header and raw log.
    pub fn describe(&self) -> String {
        let flush = if self.flush { "L2 flushed before each" } else { "no L2 flush" };
        let how = if self.back_to_back {
            format!("mean of {} back-to-back forwards between one event pair", self.iters)
        } else {
            format!("median of {} forwards, each between its own events", self.iters)
        };
        format!("timing {}: {} warm-ups, then the {how}; {flush}", self.method.name(), self.warmup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_method_ignores_the_runs_counts_and_flush() {
        let ours = TimingPlan::resolve(TimingMethod::Fwdbench, 3, 10, true);
        assert_eq!((ours.warmup, ours.iters, ours.flush, ours.back_to_back), (3, 10, true, false));
        // At least one warm-up: the first forward pays for lazy module loads.
        assert_eq!(TimingPlan::resolve(TimingMethod::Fwdbench, 0, 5, false).warmup, 1);
        let seed = TimingPlan::resolve(TimingMethod::Seed, 3, 10, true);
        assert_eq!((seed.warmup, seed.iters, seed.flush, seed.back_to_back), (50, 50, false, true));
        assert!(seed.describe().contains("mean of 50 back-to-back"), "{}", seed.describe());
        assert!(ours.describe().contains("median of 10") && ours.describe().contains("L2 flushed"));
    }

    #[test]
    fn timing_choices_parse_in_run_order() {
        assert_eq!(TimingMethod::parse_choice("seed"), Some(vec![TimingMethod::Seed]));
        assert_eq!(TimingMethod::parse_choice("both"), Some(vec![TimingMethod::Fwdbench, TimingMethod::Seed]));
        assert_eq!(TimingMethod::parse_choice(" fwdbench "), Some(vec![TimingMethod::Fwdbench]));
        assert_eq!(TimingMethod::parse_choice("mean"), None);
        for c in TIMING_CHOICES {
            assert!(TimingMethod::parse_choice(c).is_some(), "{c}");
        }
    }
}
