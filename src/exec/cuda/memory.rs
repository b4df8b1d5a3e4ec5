//! Raw device allocations. The engine manages lifetimes itself (everything is allocated
//! before a forward and freed after the shape), which keeps cudarc's per-slice event
//! tracking out of the hot path and out of graph captures.

use anyhow::Context;
use cudarc::driver::result;

#[derive(Debug)]
pub struct DeviceBuffer {
    pub ptr: u64,
    pub bytes: usize,
}

impl DeviceBuffer {
    pub fn new(bytes: usize) -> anyhow::Result<Self> {
        let bytes = bytes.max(256);
        // SAFETY: a plain allocation on the current context.
        let ptr = unsafe { result::malloc_sync(bytes) }
            .with_context(|| format!("cudaMalloc of {:.2} GB failed", bytes as f64 / 1e9))?;
        Ok(DeviceBuffer { ptr, bytes })
    }
    pub fn zeroed(bytes: usize) -> anyhow::Result<Self> {
        let b = Self::new(bytes)?;
        // SAFETY: the range lies inside the allocation.
        unsafe { result::memset_d8_sync(b.ptr, 0, b.bytes) }?;
        Ok(b)
    }
    pub fn upload<T>(data: &[T]) -> anyhow::Result<Self> {
        let b = Self::new(std::mem::size_of_val(data))?;
        // SAFETY: the allocation holds at least size_of_val(data) bytes.
        unsafe { result::memcpy_htod_sync(b.ptr, data) }?;
        Ok(b)
    }
    pub fn download<T: Default + Clone>(&self, count: usize) -> anyhow::Result<Vec<T>> {
        self.download_at(0, count)
    }
    pub fn download_at<T: Default + Clone>(&self, offset: usize, count: usize) -> anyhow::Result<Vec<T>> {
        let mut out = vec![T::default(); count];
        assert!(offset + count * std::mem::size_of::<T>() <= self.bytes);
        // SAFETY: bounds checked above.
        unsafe { result::memcpy_dtoh_sync(&mut out, self.ptr + offset as u64) }?;
        Ok(out)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_sync, freed once.
        unsafe {
            let _ = result::free_sync(self.ptr);
        }
    }
}
