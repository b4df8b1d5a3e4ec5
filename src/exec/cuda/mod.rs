//! The CUDA engine: kernels from `kernels/` (sm_90a cubins), cuBLASLt GEMMs, CUDA graphs.

pub mod cubins;
pub mod kernels;
