//! fwdbench: how fast is one forward of this model, at this shape, on this many GPUs?
//!
//! The crate is organised around a static forward plan (see `plan`): model configs
//! (`config`) and deployments (`dist`) turn into the ordered ops of one forward on one rank
//! (`model`), which the cost model, the memory planner and the executors (`exec::cpu`,
//! `exec::cuda`) all consume.

pub mod bench;
pub mod check;
pub mod cli;
pub mod config;
pub mod dist;
// Kernel parameter structs are built with `..Default::default()` even where every field is
// set, so a field added to a struct (in src/exec/cuda/kernels/, hence the kernels' header)
// defaults to 0 instead of breaking each launch site.
#[allow(clippy::needless_update)]
pub mod exec;
pub mod model;
pub mod plan;
pub mod weights;
