//! The f32 CPU reference executor.

pub mod ops;
