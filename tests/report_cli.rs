//! `fwdbench plot`, `compare` and `analyze` through the binary, on the sample files of
//! tests/data/reports/ (written from the formats in seed-pipeline.md and SGLang's
//! bench_one_batch): the figures decode, the joins get hand-computed ratios, and analyze
//! reproduces the seed's published Sigma V2 MFUs.

mod support;
use support::text;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

const DATA: &str = "tests/data/reports";

fn fwdbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fwdbench"))
        .args(args)
        .env_remove("FWDBENCH_RANK")
        .env_remove("FWDBENCH_WORLD")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = fwdbench(args);
    assert!(out.status.success(), "fwdbench {}: {}", args.join(" "), text(&out));
    text(&out)
}

fn data(name: &str) -> String {
    format!("{DATA}/{name}")
}

/// CSV rows as maps from column name to value.
fn csv_rows(path: &Path) -> Vec<HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records().map(|rec| header.iter().cloned().zip(rec.unwrap().iter().map(String::from)).collect()).collect()
}

fn num(row: &HashMap<String, String>, col: &str) -> f64 {
    row[col].parse().unwrap_or_else(|_| panic!("{col} = {:?}", row[col]))
}

/// A PNG's size, after checking it decodes and is not blank.
fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let pixels = &buf[..info.buffer_size()];
    let dark = pixels.chunks(info.color_type.samples()).filter(|p| p.iter().take(3).all(|c| *c < 100)).count();
    assert!(dark > 1000, "{}: hardly any dark pixels (text, axes), {dark}", path.display());
    (info.width, info.height)
}

/// Well-formed XML: every element closed in order, one root `<svg>`. Returns the text of
/// every `<text>` element.
fn svg_texts(path: &Path) -> Vec<String> {
    let svg = std::fs::read_to_string(path).unwrap();
    let body = svg.trim_start().strip_prefix("<?xml").map_or(svg.as_str(), |_| &svg[svg.find("?>").unwrap() + 2..]);
    let (mut stack, mut texts, mut rest) = (Vec::<String>::new(), Vec::new(), body);
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("unterminated tag") + open;
        let tag = &rest[open + 1..close];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.trim()), "{}: mismatched </{name}>", path.display());
        } else if !tag.ends_with('/') && !tag.starts_with('!') {
            let name = tag.split_whitespace().next().unwrap().to_string();
            if stack.is_empty() {
                roots += 1;
                assert_eq!(name, "svg");
            }
            if name == "text" {
                let end = rest[close..].find('<').unwrap() + close;
                texts.push(rest[close + 1..end].trim().to_string());
            }
            stack.push(name);
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty() && roots == 1, "{}: unclosed {stack:?}", path.display());
    texts
}

#[test]
fn plot_renders_png_and_svg_with_titled_axes() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("plots/sigma");
    let out = ok(&["plot", &data("fwdbench.csv"), "--out", stem.to_str().unwrap()]);
    for suffix in ["batch", "seq"] {
        let png = dir.path().join(format!("plots/sigma_{suffix}.png"));
        assert!(out.contains(&png.display().to_string()), "{out}");
        assert_eq!(png_size(&png), (1400, 1310), "two panels wide, three high");
        let texts = svg_texts(&dir.path().join(format!("plots/sigma_{suffix}.svg")));
        for want in [
            "prefill latency",
            "decode MFU",
            "decode MBU",
            "latency (ms)",
            "MFU (% of 989 TFLOP/s)",
            "MBU (% of 4277 GB/s)",
        ] {
            assert!(texts.iter().any(|t| t == want), "{suffix}: no `{want}` in {texts:?}");
        }
        let x = if suffix == "batch" {
            "batch size (sequences, log scale)"
        } else {
            "sequence length (cached tokens, log scale)"
        };
        assert!(texts.iter().any(|t| t == x), "{suffix}: no x title in {texts:?}");
    }
    let texts = svg_texts(&dir.path().join("plots/sigma_batch.svg"));
    for line in ["tp8ep8, seq 500", "tp8ep8dp8, seq 500"] {
        assert!(texts.iter().any(|t| t == line), "one line per deploy: no `{line}` in {texts:?}");
    }
}

#[test]
fn run_save_plot_draws_the_csv_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("grid.csv");
    std::fs::write(&grid, "{1,4};{128,512}\n").unwrap();
    let results = dir.path().join("results");
    let (g, r) = (grid.to_str().unwrap(), results.to_str().unwrap());
    let base =
        ["run", "--model", "qwen", "--mconf", "full", "--deploy", "tp8", "--project", "--analytic", "--shapes", g];
    let mut args = base.to_vec();
    args.extend(["--results-dir", r, "--save", "--plot"]);
    ok(&args);
    assert_eq!(png_size(&results.join("plots/qwen_full_batch.png")), (1400, 1310));
    assert!(!svg_texts(&results.join("plots/qwen_full_seq.svg")).is_empty());
    let mut no_save = base.to_vec();
    no_save.extend(["--results-dir", r, "--plot"]);
    let e = text(&fwdbench(&no_save));
    assert!(e.contains("--plot") && e.contains("add --save"), "{e}");
}

/// `compare OURS THEIRS --csv`: the ratio of each joined shape, keyed `phase bsz seq deploy`.
fn ratios(ours: &str, theirs: &str, extra: &[&str]) -> HashMap<String, f64> {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cmp.csv");
    let mut args = vec!["compare", ours, theirs, "--csv", csv.to_str().unwrap()];
    args.extend(extra);
    ok(&args);
    csv_rows(&csv)
        .iter()
        .map(|r| (format!("{} {} {} {}", r["phase"], r["bsz"], r["seq_len"], r["deploy"]), num(r, "ratio_b_over_a")))
        .collect()
}

fn assert_ratios(got: &HashMap<String, f64>, want: &[(&str, f64)]) {
    assert_eq!(got.len(), want.len(), "joined rows: {got:?}");
    for (key, ratio) in want {
        let r = got.get(*key).unwrap_or_else(|| panic!("no {key} in {got:?}"));
        assert!((r - ratio).abs() < 1e-4, "{key}: {r} != {ratio}");
    }
}

#[test]
fn compare_with_sglang_converts_seconds() {
    let got = ratios(&data("fwdbench.csv"), &data("sglang.jsonl"), &[]);
    // 60 ms / 50 ms (the newer of the two prefill rows), 87.5 / 70, 9.6 / 8, 11 / 10.
    assert_ratios(
        &got,
        &[
            ("prefill 1 500 tp8ep8", 1.2),
            ("prefill 2 500 tp8ep8", 1.25),
            ("decode 1 500 tp8ep8", 1.2),
            ("decode 2 500 tp8ep8", 1.1),
        ],
    );
}

#[test]
fn compare_with_the_seed_converts_seq_and_dp_batch() {
    // Seed decode rows log seq 501 and, under tp8ep8dp8, the per-rank batch 2 (= 16 global).
    let csv = ratios(&data("fwdbench.csv"), &data("seed_benchmark.csv"), &[]);
    assert_ratios(
        &csv,
        &[("prefill 1 500 tp8ep8", 0.9), ("decode 2 500 tp8ep8", 1.2), ("decode 16 500 tp8ep8dp8", 1.2)],
    );
    // The log: Device 0's lines only (Device 1's 30 ms is not used).
    let log = ratios(&data("fwdbench.csv"), &data("seed_raw.log"), &[]);
    assert_ratios(&log, &[("decode 16 500 tp8ep8dp8", 2.0), ("prefill 8 500 tp8ep8dp8", 1.5)]);
}

#[test]
fn compare_before_after_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("cmp");
    let got = ratios(&data("fwdbench.csv"), &data("fwdbench_after.csv"), &["--plot", stem.to_str().unwrap()]);
    assert_ratios(&got, &[("prefill 1 500 tp8ep8", 0.8), ("decode 1 500 tp8ep8", 1.25)]);
    assert_eq!(png_size(&dir.path().join("cmp_compare.png")), (1400, 890));
    let texts = svg_texts(&dir.path().join("cmp_compare.svg"));
    assert!(texts.iter().any(|t| t == "latency ratio (after / before)"), "{texts:?}");
    let by_shape = ratios(&data("fwdbench.csv"), &data("fwdbench_after.csv"), &["--by", "shape"]);
    assert_eq!(by_shape.len(), 2, "tp8's decode row pairs with the first tp8ep8 row only once: {by_shape:?}");
}

#[test]
fn compare_without_common_shapes_says_what_to_try() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.jsonl");
    std::fs::write(&other, r#"{"batch_size": 3, "input_len": 7, "output_len": 2, "prefill_latency": 0.1}"#).unwrap();
    let out = fwdbench(&["compare", &data("fwdbench.csv"), other.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no shape") && text(&out).contains("--by shape"), "{}", text(&out));
    let out = fwdbench(&["compare", &data("sglang.jsonl"), other.to_str().unwrap()]);
    assert!(text(&out).contains("OURS must be a CSV as `fwdbench run --save` writes"), "{}", text(&out));
}

fn analyze(file: &str, extra: &[&str]) -> (String, Vec<HashMap<String, String>>) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    let models = data("model_conf");
    let mut args = vec!["analyze", file, "--model-dir", &models, "--csv", csv.to_str().unwrap()];
    args.extend(extra);
    let out = ok(&args);
    (out, csv_rows(&csv))
}

#[test]
fn analyze_reproduces_the_seeds_published_mfu() {
    // seed-pipeline.md §2: SGLang TP&EP BS1 prefill 5.17%, TP BS512 prefill 17.60%,
    // DP&EP BS512 decode 6.02% (logged as 64 per rank, seq 501).
    let (out, rows) = analyze(&data("seed_published.csv"), &[]);
    assert!(out.contains("LM head on every prefill position") && out.contains("one GEMM"), "{out}");
    let want =
        [(0.0517, 23.98, 22.96), (0.1760, 512.0 * 23.98, 512.0 * 22.96), (0.0602, 512.0 * 0.04796, 512.0 * 0.048)];
    for (row, (mfu, seed_tflop, ours_tflop)) in rows.iter().zip(want) {
        assert!((num(row, "seed_mfu") - mfu).abs() < 0.00005, "{row:?}");
        assert!((num(row, "seed_tflop") / seed_tflop - 1.0).abs() < 0.001, "{row:?}");
        // Every rank's plan: the router GEMM, replicated on each of the 8 ranks, adds ~1%.
        assert!((num(row, "ours_tflop") / ours_tflop - 1.0).abs() < 0.02, "{row:?}");
    }
    assert_eq!((rows[2]["bsz"].as_str(), rows[2]["seq_len"].as_str()), ("512", "500"));
    // fwdbench's anchor (`count` on the seed's config, one GPU): 22.96 TFLOP at 1x500.
    let (_, one_gpu) = analyze(&data("seed_published.csv"), &["--deploy", "tp1"]);
    assert!((num(&one_gpu[0], "ours_tflop") - 22.96).abs() < 0.005, "{:?}", one_gpu[0]);
    let eight_times = num(&one_gpu[0], "seed_mfu") / num(&rows[0], "seed_mfu");
    assert!((eight_times - 8.0).abs() < 0.001, "one GPU instead of 8: {eight_times}");
    assert_eq!(rows[0]["recorded_mfu"], "0.051700");
    assert_eq!(rows[2]["recorded_mfu"], "", "analysis.py's per-rank-batch MFU is not shown as comparable");
}

#[test]
fn analyze_reads_logs_and_our_csv() {
    let (_, log) = analyze(&data("seed_raw.log"), &[]);
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[0]["phase"].as_str(), log[0]["bsz"].as_str(), log[0]["deploy"].as_str()),
        ("decode", "16", "tp8ep8dp8")
    );
    let (_, ours) = analyze(&data("fwdbench.csv"), &[]);
    assert_eq!(ours.len(), 6, "the older duplicate prefill row is dropped");
    let prefill = &ours[0];
    assert!(num(prefill, "seed_mfu") > num(prefill, "ours_mfu"), "the seed counts the LM head at every position");
    assert!(num(prefill, "ours_mbu") > 0.0);
    let out = fwdbench(&["analyze", &data("sglang.jsonl"), "--model-dir", &data("model_conf")]);
    assert!(text(&out).contains("pass --model"), "{}", text(&out));
}
