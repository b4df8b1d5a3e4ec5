//! Profiles, the seed's outputs and `run`'s behaviour without a GPU, on the CPU: the per-op
//! CSV and Chrome trace from synthetic op times (the trace checked against the trace-event
//! schema Perfetto reads), the seed's benchmark.csv and raw-log lines, timing method
//! selection, plain progress lines, and the no-GPU message through the binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use fwdbench::config::hf::load_model_config;
use fwdbench::config::model::ModelConfig;
use fwdbench::model::{build_plan, PlanOptions};
use fwdbench::plan::cost::PhaseCost;
use fwdbench::plan::{Plan, RankLayout, Shape};
use fwdbench::report::{
    seed_csv_line, seed_log_line, write_profile, Forwards, Meta, ProfileTarget, Reporter, Row, Stats, PROFILE_COLUMNS,
};
use serde_json::Value;

fn qwen(layout: RankLayout, shape: Shape) -> (ModelConfig, Plan) {
    let cfg = load_model_config(Path::new("tests/fixtures/qwen3/config.json"), &[]).unwrap();
    let plan = build_plan(&cfg, layout, shape, PlanOptions::default()).unwrap();
    (cfg, plan)
}

fn meta(deploy: &str) -> Meta {
    let s = |v: &str| v.to_string();
    Meta {
        model: s("qwen"),
        mconf: s("2l"),
        base: s("base"),
        deploy: s(deploy),
        backend: s("fa3"),
        gpu: s("H200"),
        rev: s("abc"),
    }
}

// ---- The trace-event schema, as Perfetto and chrome://tracing read it ----

fn field<'a>(e: &'a Value, key: &str) -> &'a Value {
    e.get(key).unwrap_or_else(|| panic!("event lacks `{key}`: {e}"))
}

fn number(e: &Value, key: &str) -> f64 {
    field(e, key).as_f64().unwrap_or_else(|| panic!("`{key}` is not a number: {e}"))
}

fn integer(e: &Value, key: &str) -> u64 {
    field(e, key).as_u64().unwrap_or_else(|| panic!("`{key}` is not an unsigned integer: {e}"))
}

fn text<'a>(e: &'a Value, key: &str) -> &'a str {
    field(e, key).as_str().unwrap_or_else(|| panic!("`{key}` is not a string: {e}"))
}

/// Checks `trace` against the format's rules and ours; returns the complete events per
/// track name, in time order.
fn check_trace(trace: &Value) -> BTreeMap<String, Vec<Value>> {
    let events = trace["traceEvents"].as_array().expect("`traceEvents` is an array");
    assert!(matches!(trace["displayTimeUnit"].as_str(), Some("ms" | "ns")), "displayTimeUnit is ms or ns");
    let mut names = BTreeMap::new();
    let mut slices: BTreeMap<(u64, u64), Vec<Value>> = BTreeMap::new();
    for e in events {
        match text(e, "ph") {
            "M" => {
                let args = field(e, "args");
                match text(e, "name") {
                    "process_name" => assert!(args["name"].is_string(), "{e}"),
                    "thread_name" => {
                        names.insert((integer(e, "pid"), integer(e, "tid")), text(args, "name").to_string());
                    }
                    "thread_sort_index" => assert!(args["sort_index"].is_u64(), "{e}"),
                    other => panic!("unexpected metadata event {other}: {e}"),
                }
            }
            "X" => {
                text(e, "name");
                text(e, "cat");
                assert!(number(e, "ts") >= 0.0 && number(e, "dur") >= 0.0, "{e}");
                assert!(field(e, "args").is_object(), "{e}");
                slices.entry((integer(e, "pid"), integer(e, "tid"))).or_default().push(e.clone());
            }
            other => panic!("unexpected phase {other}: {e}"),
        }
    }
    slices
        .into_iter()
        .map(|(track, mut list)| {
            let name = names.get(&track).unwrap_or_else(|| panic!("track {track:?} has no thread_name")).clone();
            list.sort_by(|a, b| number(a, "ts").total_cmp(&number(b, "ts")));
            for w in list.windows(2) {
                let end = number(&w[0], "ts") + number(&w[0], "dur");
                assert!(end <= number(&w[1], "ts") + 1e-6, "slices overlap on {name}: {} and {}", w[0], w[1]);
            }
            (name, list)
        })
        .collect()
}

#[test]
fn a_decode_profile_writes_the_op_csv_and_a_trace_with_graph_replays_beside_the_ops() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, plan) = qwen(RankLayout::single(), Shape::decode(2, 16));
    let op_ms: Vec<f64> = (0..plan.ops.len()).map(|i| 0.01 + i as f64 * 0.002).collect();
    let replays = Forwards { label: "graph replay".into(), ms: vec![0.5, 0.25, 0.75], method: "fwdbench" };
    let target = ProfileTarget { results_dir: dir.path(), model: "qwen", mconf: "2l" };
    let files = write_profile(&target, &plan, &cfg, &op_ms, &replays).unwrap();
    assert_eq!(files.csv, dir.path().join("qwen_profile/2l_decode_b2_s16.csv"));
    assert_eq!(files.trace, dir.path().join("qwen_profile/2l_decode_b2_s16.trace.json"));

    let mut csv = csv::Reader::from_path(&files.csv).unwrap();
    assert_eq!(csv.headers().unwrap().iter().collect::<Vec<_>>(), PROFILE_COLUMNS);
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), plan.ops.len());
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[4].parse::<f64>().unwrap(), (op_ms[i] * 1e4).round() / 1e4, "op {i} keeps its time");
        assert!(matches!(&r[9], "compute" | "memory"), "op {i}: bound {}", &r[9]);
        let (tflops, gbs, gflop, mb, ms) = (num(&r[7]), num(&r[8]), num(&r[5]), num(&r[6]), num(&r[4]));
        assert!((tflops - gflop / ms / 1e3).abs() <= 0.01 + tflops * 1e-3, "op {i}: {r:?}");
        assert!((gbs - mb / ms).abs() <= 0.1 + gbs * 1e-3, "op {i}: {r:?}");
    }
    // A decode step at batch 2 is bound by weights: its projections are memory bound.
    let kinds: Vec<(&str, &str)> = rows.iter().map(|r| (&r[3], &r[9])).collect();
    assert!(kinds.iter().any(|&(k, b)| k == "linear" && b == "memory"), "{kinds:?}");

    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&files.trace).unwrap()).unwrap();
    let tracks = check_trace(&trace);
    assert_eq!(tracks.len(), 2, "one stream of ops and the timed forwards: {:?}", tracks.keys());
    let (forwards_name, forwards) = tracks.iter().find(|(n, _)| n.starts_with("timed forwards")).unwrap();
    assert!(forwards_name.contains("graph replay"), "{forwards_name}");
    let durations: Vec<f64> = forwards.iter().map(|e| number(e, "dur")).collect();
    assert_eq!(durations, [500.0, 250.0, 750.0], "one slice per replay, in microseconds");
    let (_, ops) = tracks.iter().find(|(n, _)| n.starts_with("stream 0")).unwrap();
    assert_eq!(ops.len(), plan.ops.len());
    for (i, e) in ops.iter().enumerate() {
        let args = &e["args"];
        assert_eq!(integer(args, "index"), i as u64);
        assert!(number(args, "flops") >= 0.0 && number(args, "bytes") > 0.0, "{e}");
        assert_eq!(text(args, "kind"), plan.ops[i].op.kind_name());
        assert_eq!(args["layer"].as_u64().map(|l| l as usize), plan.ops[i].site.layer, "{e}");
        assert_eq!(text(e, "name"), plan.ops[i].site.name);
        assert!((number(e, "dur") - op_ms[i] * 1e3).abs() < 1e-9);
    }
    assert!(write_profile(&target, &plan, &cfg, &op_ms[1..], &replays).is_err(), "one time per op");
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("{s:?} is not a number"))
}

#[test]
fn the_schema_check_catches_overlapping_slices_and_unnamed_tracks() {
    let overlapping = serde_json::json!({
        "displayTimeUnit": "ms",
        "traceEvents": [
            { "name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": { "name": "t" } },
            { "name": "a", "cat": "c", "ph": "X", "ts": 0.0, "dur": 10.0, "pid": 1, "tid": 1, "args": {} },
            { "name": "b", "cat": "c", "ph": "X", "ts": 5.0, "dur": 10.0, "pid": 1, "tid": 1, "args": {} },
        ],
    });
    assert!(std::panic::catch_unwind(|| check_trace(&overlapping)).is_err());
    let unnamed = serde_json::json!({
        "displayTimeUnit": "ms",
        "traceEvents": [{ "name": "a", "cat": "c", "ph": "X", "ts": 0.0, "dur": 1.0, "pid": 1, "tid": 7, "args": {} }],
    });
    assert!(std::panic::catch_unwind(|| check_trace(&unnamed)).is_err());
}

// ---- The seed's benchmark.csv and raw-log lines ----

fn seed_row(layout: RankLayout, shape: Shape, mean_ms: f64, timing: &'static str) -> Row {
    let (cfg, plan) = qwen(layout, shape);
    let mut row = Row::new(&plan, &PhaseCost::of(&plan, &cfg), Stats::of(&[mean_ms]), true);
    row.timing = timing;
    row
}

#[test]
fn seed_csv_lines_use_the_seeds_phase_names_sequence_lengths_and_per_rank_batch() {
    let prefill = seed_row(RankLayout::single(), Shape::prefill(4, 128), 12.5, "seed");
    let line = seed_csv_line(&meta("tp1"), &prefill);
    let fields: Vec<&str> = line.split(',').collect();
    assert_eq!(&fields[..9], ["qwen", "2l", "base", "tp1", "fa3", "Prefill", "4", "128", "12.5"]);
    assert_eq!(fields.len(), 10, "{line}");
    assert_eq!(num(fields[9]), prefill.mfu, "the mfu round-trips: {line}");
    // Decode: the seed counts the new token in the sequence; under DP attention its bsz is
    // device 0's share of the batch.
    let dp = fwdbench::dist::rank_layouts(8, 8, 8).unwrap()[0];
    let decode = seed_row(dp, Shape::decode(16, 128), 1.234567, "seed");
    assert_eq!(decode.bsz_per_rank, 2);
    let line = seed_csv_line(&meta("tp8ep8dp8"), &decode);
    assert!(line.starts_with("qwen,2l,base,tp8ep8dp8,fa3,Decode,2,129,1.2346,"), "{line}");
    assert_eq!(
        seed_log_line(0, &decode),
        "Latency Benchmark Device 0 Phase: Decode, Batch Size: 2, Sequence Length: 129, Average Latency: 1.2346 ms"
    );
}

/// What the seed's analysis.py reads from a log line: phase, bsz, seq_len, latency.
fn parse_like_the_seed(line: &str) -> (String, usize, usize, f64) {
    let fields: Vec<&str> = line.split("Latency Benchmark").nth(1).unwrap().split_whitespace().collect();
    let trim = |s: &str| s.trim_end_matches(',').to_string();
    (trim(fields[3]), trim(fields[6]).parse().unwrap(), trim(fields[9]).parse().unwrap(), fields[12].parse().unwrap())
}

#[test]
fn a_run_with_both_timings_appends_only_seed_timed_measured_rows_and_logs_the_seeds_lines() {
    let dir = tempfile::tempdir().unwrap();
    let ours = seed_row(RankLayout::single(), Shape::decode(2, 16), 1.5, "fwdbench");
    let seeds = seed_row(RankLayout::single(), Shape::decode(2, 16), 1.25, "seed");
    let mut projected = seeds.clone();
    projected.method = fwdbench::dist::projection::Method::Projected;
    for _ in 0..2 {
        let r = Reporter::new(meta("tp1"), dir.path(), true).unwrap();
        let mut r = r.with_seed_csv(dir.path(), true).unwrap().with_seed_log().unwrap();
        for row in [&ours, &seeds, &projected] {
            r.row(row).unwrap();
        }
        r.finish().unwrap();
    }
    let csv = std::fs::read_to_string(dir.path().join("csv/benchmark.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "no header; one seed-timed measured row per run: {csv}");
    assert!(lines.iter().all(|l| l.starts_with("qwen,2l,base,tp1,fa3,Decode,2,17,1.25,")), "{csv}");
    // Our own CSV keeps every row and says which method timed it.
    let ours_csv = std::fs::read_to_string(dir.path().join("csv/qwen_2l.csv")).unwrap();
    let header: Vec<&str> = ours_csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "timing").expect("a timing column");
    let timing: Vec<&str> = ours_csv.lines().skip(1).map(|l| l.split(',').nth(col).unwrap()).collect();
    assert_eq!(timing, ["fwdbench", "seed", "seed", "fwdbench", "seed", "seed"]);
    let log_path = std::fs::read_dir(dir.path().join("raw_output")).unwrap().flatten().next().unwrap().path();
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains("Using model config: qwen 2l\n") && log.contains("Using configs: base, tp1, fa3\n"), "{log}");
    let seed_lines: Vec<&str> = log.lines().filter(|l| l.contains("Latency Benchmark Device 0")).collect();
    assert_eq!(seed_lines.len(), 1, "the seed-timed measured row only: {log}");
    assert_eq!(parse_like_the_seed(seed_lines[0]), ("Decode".to_string(), 2, 17, 1.25));
}

// ---- Through the binary, without a GPU ----

/// `fwdbench run` of qwen's full config over one (batch, sequence), as a user starts it
/// (no worker variables), writing under `results`.
fn fwdbench(args: &[&str], results: &Path) -> Output {
    let grid = results.join("grid.csv");
    std::fs::write(&grid, "{8};{128}\n").unwrap();
    let (grid, results) = (grid.to_str().unwrap(), results.to_str().unwrap());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fwdbench"));
    cmd.args(["run", "--model", "qwen", "--mconf", "full", "--shapes", grid, "--results-dir", results]).args(args);
    for worker_var in ["FWDBENCH_RANK", "FWDBENCH_WORLD"] {
        cmd.env_remove(worker_var);
    }
    cmd.output().unwrap()
}

fn output(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A machine that can measure: a driver, a device and this build's kernels.
fn can_measure() -> bool {
    // SAFETY: probing only dlopens the library.
    let driver = unsafe { cudarc::driver::sys::is_culib_present() };
    driver
        && cudarc::driver::CudaContext::device_count().is_ok_and(|n| n > 0)
        && fwdbench::exec::cuda::cubins::KERNELS_BUILT
}

#[test]
fn run_without_a_gpu_says_so_and_points_at_count_and_the_analytic_projection() {
    if can_measure() {
        eprintln!("skipped: this machine has a GPU and kernels, so `run` measures");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for deploy in ["tp1", "tp8ep8"] {
        let out = fwdbench(&["--deploy", deploy], dir.path());
        assert!(!out.status.success(), "{deploy}: {}", output(&out));
        let text = output(&out);
        assert_eq!(text.lines().filter(|l| l.starts_with("error:")).count(), 1, "{text}");
        assert!(text.contains("no NVIDIA GPU") || text.contains("without its CUDA kernels"), "{text}");
        assert!(text.contains("--project --analytic") && text.contains("fwdbench count"), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
    // What the message points at works here.
    let out = fwdbench(&["--deploy", "tp8ep8", "--project", "--analytic"], dir.path());
    assert!(out.status.success(), "{}", output(&out));
}

#[test]
fn timing_is_chosen_by_flag_or_conf_key_and_bad_values_name_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = fwdbench(&["--deploy", "tp1", "--conf", "timing=mean", "--project", "--analytic"], dir.path());
    assert!(!out.status.success());
    assert!(output(&out).contains("`timing` = \"mean\" is not valid: fwdbench, seed or both"), "{}", output(&out));
    let out = fwdbench(&["--deploy", "tp1", "--timing", "mean", "--project", "--analytic"], dir.path());
    assert!(!out.status.success() && output(&out).contains("--timing"), "{}", output(&out));
    // The key is read, and the flag wins over it; an analytic run says it times nothing.
    let not_applied = "timing: not applied, an analytic projection times nothing";
    for (args, noted) in [
        (&["--conf", "timing=seed"][..], true),
        (&["--conf", "timing=seed", "--timing", "fwdbench"][..], false),
        (&["--timing", "both"][..], true),
    ] {
        let out = fwdbench(&[&["--deploy", "tp1", "--project", "--analytic"][..], args].concat(), dir.path());
        let text = output(&out);
        assert!(out.status.success(), "{args:?}: {text}");
        assert_eq!(text.contains(not_applied), noted, "{args:?}: {text}");
        assert!(!text.contains("(ignored): timing"), "the key is implemented: {text}");
    }
}

#[test]
fn progress_is_one_plain_line_per_shape_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = fwdbench(&["--deploy", "tp8", "--project", "--analytic"], dir.path());
    assert!(out.status.success(), "{}", output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_eq!(lines[0], "[1/2] prefill bsz 8 seq 128");
    assert!(lines[1].starts_with("[2/2] decode bsz 8 seq 128 (ETA "), "{stderr}");
    assert!(!stderr.contains('\r'), "no bar redraws in a log: {stderr:?}");
}
