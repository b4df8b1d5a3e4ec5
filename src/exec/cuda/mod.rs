//! The CUDA engine: kernels from `kernels/` (sm_90a cubins), cuBLASLt GEMMs, CUDA graphs.

pub mod cubins;
pub mod device;
pub mod engine;
pub mod executor;
pub mod gemm;
pub mod gpu;
pub mod kernels;
pub mod memory;
pub mod tma;
pub mod weights;
