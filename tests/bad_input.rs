//! Hostile or careless command lines: each gives one clear error, fast, without a panic
//! or a huge allocation, and without a GPU.

use std::process::Command;
use std::time::{Duration, Instant};

fn fwdbench(args: &[&str]) -> (bool, String, Duration) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_fwdbench")).args(args).output().expect("run fwdbench");
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text, t.elapsed())
}

#[test]
fn oversized_requests_are_refused_quickly_and_named() {
    for (args, needle) in [
        (vec!["count", "--model", "qwen", "--mconf", "2l", "--bsz", "18446744073709551615"], "batch size"),
        (vec!["count", "--model", "qwen", "--mconf", "2l", "--bsz", "1000000", "--seq", "1000000"], "batch size"),
        (vec!["count", "--model", "qwen", "--mconf", "2l", "--bsz", "4096", "--seq", "1000000"], "tokens"),
        (
            vec!["count", "--model", "qwen", "--mconf", "2l", "--set", "num_hidden_layers=18446744073709551615"],
            "num_hidden_layers",
        ),
        (vec!["count", "--model", "qwen", "--mconf", "2l", "--set", "num_hidden_layers=1000000000"], "--set"),
        (
            vec![
                "count",
                "--model",
                "qwen",
                "--mconf",
                "2l",
                "--set",
                "moe_intermediate_size=999999999999999",
                "--json",
            ],
            "moe_intermediate_size",
        ),
        (vec!["count", "--model", "qwen", "--mconf", "2l", "--conf", "tp_size=1099511627776"], "tp_size"),
    ] {
        let (ok, text, took) = fwdbench(&args);
        assert!(!ok, "{args:?} succeeded: {text}");
        assert!(!text.contains("panicked"), "{args:?} panicked: {text}");
        assert!(text.contains(needle), "{args:?}: `{needle}` not in: {text}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
}

#[test]
fn misspelled_set_keys_are_warned_about() {
    let (ok, text, _) = fwdbench(&["count", "--model", "qwen", "--mconf", "2l", "--set", "num_hiden_layers=4"]);
    assert!(ok, "{text}");
    assert!(text.contains("warning") && text.contains("did you mean `num_hidden_layers`"), "{text}");
}

#[test]
fn run_validates_its_flags_and_grid_before_any_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let grid = dir.path().join("grid.csv");
    std::fs::write(&grid, "1;128\n").unwrap();
    let base = ["run", "--model", "qwen", "--mconf", "2l"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--iters", "0"], "timed forwards"),
        (vec!["--warmup", "18446744073709551615"], "warm-up"),
        (vec!["--profile", "sometimes"], "sometimes"),
        (vec!["--results-dir", file.to_str().unwrap()], "--results-dir"),
        (vec!["--conf", "tp_size=3"], "not divisible"),
        (vec!["--deploy", "tp8ep8dp8", "--shapes", grid.to_str().unwrap()], "multiples of dp_size"),
        (vec!["--conf", "tp_size"], "--conf"),
    ];
    for (extra, needle) in cases {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let (ok, text, took) = fwdbench(&args);
        assert!(!ok, "{extra:?} succeeded: {text}");
        assert!(!text.contains("panicked") && text.contains(needle), "{extra:?}: `{needle}` not in: {text}");
        assert!(!text.contains("CUDA driver") && !text.contains("GPU 0"), "{extra:?} reached the GPU: {text}");
        assert!(took < Duration::from_secs(10), "{extra:?} took {took:?}");
    }
}

#[test]
fn misspelled_conf_keys_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (_, text, _) = fwdbench(&[
        "run",
        "--model",
        "qwen",
        "--mconf",
        "2l",
        "--conf",
        "tp_sise=8",
        "--results-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(text.contains("`tp_sise`") && text.contains("did you mean `tp_size`"), "{text}");
}
