//! Launch parameter structs for the kernels in `kernels/*.cu`, one module per file there.
//! Each struct is `#[repr(C)]` and mirrors the `Params` struct the kernel takes by value.

pub mod attn_decode;
pub mod attn_prefill;
pub mod mla;
pub mod moe;
