//! Launch parameter structs for the kernels in `kernels/*.cu`, one module per file there.
//! Each struct is `#[repr(C)]` and mirrors the `Params` struct the kernel takes by value.

pub mod act;
pub mod attention_decode;
pub mod attention_prefill;
pub mod embed;
pub mod init;
pub mod misc;
pub mod mla;
pub mod moe;
pub mod norm;
pub mod rope;
pub mod route;
