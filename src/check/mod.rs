//! Checking executors: against expected logits (`fwdbench check`, the fixture tests) and
//! GPU ops against the CPU reference one at a time (`fwdbench kernel check`). Both run
//! over `exec::Executor`, so the protocols are written once for the CPU and the GPU; the
//! executors know nothing of their tester.

pub mod compare;
pub mod logits;
pub mod ops;

pub use compare::{compare, Agreement, TIE_MARGIN};
pub use logits::{cpu_logits, cuda_logits, expected_rows, logits, CheckMode};
