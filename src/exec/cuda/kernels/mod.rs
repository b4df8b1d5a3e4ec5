//! Launch parameter structs for the kernels in `kernels/*.cu`, one module per file there.
//! These `#[repr(C)]` structs, the `#[repr(i32)]` code enums and the public integer constants
//! are the single definition: build.rs generates the C header the kernels include
//! (`fwdbench_params.h`) from these files with cbindgen, so both sides lay out every struct
//! from the same declaration.

pub mod act;
pub mod attention_decode;
pub mod attention_prefill;
pub mod embed;
pub mod init;
pub mod misc;
pub mod mla;
pub mod moe;
pub mod norm;
pub mod ptr;
pub mod rope;
pub mod route;
