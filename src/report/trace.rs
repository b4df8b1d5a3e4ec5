//! A profile as a Chrome trace (the trace-event JSON format that Perfetto and
//! chrome://tracing open): one process per profiled shape, one track per stream with the
//! ops of one eager forward as complete events (args: flops, bytes, layer, kind, ...), and
//! one track with the timed forwards (a graphed decode: one slice per graph replay), so the
//! per-op breakdown sits beside the forwards it explains.
//!
//! Each op was timed alone between two events, so op slices are laid end to end: the gaps
//! between ops inside a real forward are not measured, and the ops' sum can exceed a graph
//! replay (which also has no launch gaps). The file says so in `otherData`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

use super::profile::OpRow;

/// The timed forwards of a profiled shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwards {
    /// What one slice is: "graph replay", "eager forward", "50 back-to-back forwards".
    pub label: String,
    /// Milliseconds of each slice, in run order.
    pub ms: Vec<f64>,
    /// The timing method that produced them (`fwdbench`, `seed`).
    pub method: &'static str,
}

/// Track ids: timed forwards first, then one per stream.
const PID: u64 = 1;
const FORWARDS_TID: u64 = 1;
const FIRST_STREAM_TID: u64 = 10;

fn meta_event(name: &str, tid: Option<u64>, args: Value) -> Value {
    let mut e = json!({ "name": name, "ph": "M", "pid": PID, "args": args });
    if let Some(tid) = tid {
        e["tid"] = json!(tid);
    }
    e
}

fn track(tid: u64, name: &str, sort: u64) -> [Value; 2] {
    [
        meta_event("thread_name", Some(tid), json!({ "name": name })),
        meta_event("thread_sort_index", Some(tid), json!({ "sort_index": sort })),
    ]
}

/// Milliseconds to the format's microseconds.
fn us(ms: f64) -> f64 {
    ms * 1e3
}

/// The trace of `ops` (one eager forward) and `forwards`, titled `title`.
pub fn trace_json(title: &str, ops: &[OpRow], forwards: &Forwards) -> Value {
    let mut events = vec![meta_event("process_name", None, json!({ "name": title }))];
    let forwards_track = format!("timed forwards, timing {}: one slice per {}", forwards.method, forwards.label);
    events.extend(track(FORWARDS_TID, &forwards_track, 0));
    let mut ts = 0.0;
    for (i, &ms) in forwards.ms.iter().enumerate() {
        events.push(json!({
            "name": format!("{} {i}", forwards.label),
            "cat": "forward",
            "ph": "X",
            "ts": us(ts),
            "dur": us(ms),
            "pid": PID,
            "tid": FORWARDS_TID,
            "args": { "iteration": i, "ms": ms, "timing": forwards.method },
        }));
        ts += ms;
    }
    let streams: BTreeSet<usize> = ops.iter().map(|o| o.stream).collect();
    for &s in &streams {
        let tid = FIRST_STREAM_TID + s as u64;
        events.extend(track(tid, &format!("stream {s}: ops of one eager forward, each timed alone"), 1 + s as u64));
        let mut ts = 0.0;
        for op in ops.iter().filter(|o| o.stream == s) {
            events.push(json!({
                "name": op.name,
                "cat": op.kind,
                "ph": "X",
                "ts": us(ts),
                "dur": us(op.ms),
                "pid": PID,
                "tid": tid,
                "args": {
                    "index": op.index,
                    "layer": op.layer,
                    "kind": op.kind,
                    "flops": op.flops,
                    "bytes": op.bytes,
                    "ms": op.ms,
                    "tflops": op.tflops,
                    "gbs": op.gbs,
                    "bound": op.bound,
                    "roof_pct": op.roof_pct,
                },
            }));
            ts += op.ms;
        }
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "title": title,
            "note": "op slices are laid end to end: each op was timed alone between two CUDA events, so gaps between ops are not measured; forward slices are the timed iterations, end to end",
        },
    })
}

pub fn write_trace(path: &Path, title: &str, ops: &[OpRow], forwards: &Forwards) -> anyhow::Result<()> {
    let text = serde_json::to_string(&trace_json(title, ops, forwards))?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
