//! Launch parameter structs for the kernels in `kernels/*.cu`, one module per file there.
//! Each struct is `#[repr(C)]` and mirrors the `Params` struct the kernel takes by value.
pub mod moe;
