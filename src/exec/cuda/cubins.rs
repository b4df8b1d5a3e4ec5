//! The sm_90a cubins build.rs compiled from `kernels/*.cu` (empty when nvcc was missing).

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The cubin of `kernels/<stem>.cu`.
pub fn cubin(stem: &str) -> Option<&'static [u8]> {
    CUBINS.iter().find(|(name, _)| *name == stem).map(|(_, bytes)| *bytes)
}
