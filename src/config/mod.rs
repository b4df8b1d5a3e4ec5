//! Inputs: model configs (HF-style config.json), layered run confs (YAML), shapes grids.

pub mod hf;
pub mod model;
pub mod run_conf;
pub mod shapes;
