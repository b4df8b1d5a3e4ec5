//! Device pointer types of the kernel parameter structs. On the Rust side every pointer is a
//! plain `u64` device address (what cudarc's buffers hand out); the aliases only carry the
//! element type into the generated C header, where kernels/common.cuh defines each name as
//! the matching typed pointer (`typedef const bf16* ConstBf16Ptr;`), so kernel code indexes
//! `p.x[i]` with the right type. build.rs keeps these names out of the header itself.

/// `bf16*`
pub type Bf16Ptr = u64;
/// `const bf16*`
pub type ConstBf16Ptr = u64;
/// `float*`
pub type F32Ptr = u64;
/// `const float*`
pub type ConstF32Ptr = u64;
/// `int*`
pub type I32Ptr = u64;
/// `const int*`
pub type ConstI32Ptr = u64;
/// `void*`: the kernel picks the element type (one struct serves a bf16 and an f32 entry).
pub type VoidPtr = u64;
/// `TensorMap` in kernels/common.cuh: a TMA descriptor (the driver's `CUtensorMap`, 128
/// bytes, 128-byte aligned) encoded by [`crate::exec::cuda::tma`] and passed by value inside
/// a kernel's `__grid_constant__` params. build.rs keeps it out of the header too.
pub type TensorMap = cudarc::driver::sys::CUtensorMap;
