//! Executors of forward plans: a CPU reference (the test oracle) and the CUDA engine.

pub mod cpu;
pub mod cuda;
