//! The run table's lines, printed on the terminal and written to the raw log alike.

use super::Row;
use crate::plan::Shape;

pub const HEADER: &str =
    "phase    bsz    seq   tokens   median_ms    p10_ms    p90_ms  TFLOP/s    MFU     GB/s    MBU  bound";

pub fn row_line(r: &Row) -> String {
    format!(
        "{:7} {:4} {:6} {:8} {:11.3} {:9.3} {:9.3} {:8.1} {:5.1}% {:8.0} {:5.1}%  {}{}",
        r.phase.name(),
        r.bsz,
        r.seq,
        r.tokens,
        r.stats.median_ms,
        r.stats.p10_ms,
        r.stats.p90_ms,
        r.tflops,
        100.0 * r.mfu,
        r.gbs,
        100.0 * r.mbu,
        r.bound,
        if r.graph { " (graph)" } else { "" }
    )
}

pub fn skipped_line(shape: Shape, reason: &str) -> String {
    format!("{:7} {:4} {:6}   skipped: {reason}", shape.phase.name(), shape.batch, shape.seq)
}
