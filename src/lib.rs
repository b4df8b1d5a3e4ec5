//! fwdbench: how fast is one forward of this model, at this shape, on this many GPUs?
//!
//! The crate is organised around a static forward plan (see `plan`): model configs
//! (`config`) and deployments (`dist`) turn into the ordered ops of one forward on one rank
//! (`model`), which the cost model, the memory planner and the executors (`exec::cpu`,
//! `exec::cuda`) all consume. `bench` times plans on the GPU and hands its measurements to
//! `report`; `check` compares executors with expected logits and with each other. The
//! command line lives in the binary (src/cli/) and is built on these modules alone.

pub mod bench;
pub mod check;
pub mod config;
pub mod dist;
pub mod exec;
pub mod export;
pub mod inputs;
pub mod model;
pub mod plan;
pub mod report;
pub mod weights;
