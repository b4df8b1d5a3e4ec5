//! The timing core every GPU measurement shares (`run`'s forwards, `kernel bench`'s ops):
//! CUDA events on the stream around the timed work only, and before each iteration an L2
//! flush outside the events, so that a small working set (a 2-layer model, one op's
//! weights) is timed from HBM as it is inside a real forward, not from the 50 MB L2.

use cudarc::driver::sys::CUevent_flags;

use crate::exec::cuda::gpu::Gpu;
use crate::exec::cuda::memory::DeviceBuffer;

/// Bytes written to flush the L2: five times the H200's 50 MB.
pub const FLUSH_BYTES: usize = 256 << 20;

/// The buffer a flush writes.
pub fn flush_buffer() -> anyhow::Result<DeviceBuffer> {
    DeviceBuffer::zeroed(FLUSH_BYTES)
}

/// Milliseconds of each of `iters` (at least one) runs of `enqueue`, each timed alone
/// between two events; with `flush`, the L2 is flushed before each run, outside them, and
/// then `before_each` runs, also outside them (the ranks' barrier of a multi-GPU run).
pub fn time_iterations(
    gpu: &Gpu,
    flush: Option<&DeviceBuffer>,
    iters: usize,
    mut before_each: impl FnMut() -> anyhow::Result<()>,
    mut enqueue: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    let start = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let end = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        if let Some(buf) = flush {
            // SAFETY: writes the buffer's own FLUSH_BYTES (or fewer, if it is smaller).
            unsafe {
                cudarc::driver::result::memset_d8_async(buf.ptr, 1, buf.bytes.min(FLUSH_BYTES), gpu.stream.cu_stream())?
            };
        }
        before_each()?;
        start.record(&gpu.stream)?;
        enqueue()?;
        end.record(&gpu.stream)?;
        times.push(start.elapsed_ms(&end)? as f64);
    }
    Ok(times)
}
