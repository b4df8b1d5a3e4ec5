//! The run table's lines, printed on the terminal and written to the raw log alike. Every
//! line names the method behind its number; projected and analytic lines add the modelled
//! communication and its share of the latency.

use super::Row;
use crate::plan::Shape;

pub const HEADER: &str = "phase    bsz    seq   tokens   median_ms    p10_ms    p90_ms  TFLOP/s    MFU     GB/s    MBU  bound    method     comm_ms  comm%";

fn ms_or_dash(ms: f64, known: bool) -> String {
    if known {
        format!("{ms:.3}")
    } else {
        "-".into()
    }
}

pub fn row_line(r: &Row) -> String {
    // An analytic row has no spread: one estimate, not repeated timings.
    let timed = r.stats.iters > 0;
    let (comm, share) = match &r.split {
        Some(s) => (format!("{:.3}", s.comm_ms), format!("{:.1}%", 100.0 * s.comm_share())),
        None => ("-".into(), "-".into()),
    };
    let mut line = format!(
        "{:7} {:4} {:6} {:8} {:11.3} {:>9} {:>9} {:8.1} {:5.1}% {:8.0} {:5.1}%  {:8} {:9} {:>8} {:>6}",
        r.phase.name(),
        r.bsz,
        r.seq,
        r.tokens,
        r.stats.median_ms,
        ms_or_dash(r.stats.p10_ms, timed),
        ms_or_dash(r.stats.p90_ms, timed),
        r.tflops,
        100.0 * r.mfu,
        r.gbs,
        100.0 * r.mbu,
        r.bound,
        r.method.name(),
        comm,
        share,
    );
    if let Some((lo, hi)) = r.rank_spread.filter(|_| r.world > 1) {
        line += &format!("  ranks {lo:.3}..{hi:.3}");
    }
    if r.bsz_per_rank != r.bsz {
        line += &format!("  ({} per rank)", r.bsz_per_rank);
    }
    if !r.note.is_empty() {
        line += &format!("  [{}]", r.note);
    }
    if r.graph {
        line += " (graph)";
    }
    line
}

pub fn skipped_line(shape: Shape, reason: &str) -> String {
    format!("{:7} {:4} {:6}   skipped: {reason}", shape.phase.name(), shape.batch, shape.seq)
}
