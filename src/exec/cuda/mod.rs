//! The CUDA engine: kernels from `kernels/` (sm_90a cubins), cuBLASLt GEMMs, CUDA graphs.

pub mod check;
pub mod cubins;
pub mod device;
pub mod engine;
pub mod gemm;
pub mod gpu;
pub mod kernels;
pub mod memory;
pub mod verify;
pub mod weights;
