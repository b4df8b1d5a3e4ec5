//! Blocks shared by the layer graphs, written once and parameterised.

pub mod attention;
pub mod mla;
pub mod mlp;
pub mod moe;
