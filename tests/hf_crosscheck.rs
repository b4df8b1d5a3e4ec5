//! The model fwdbench times, checked by HF transformers: for every fixture config,
//! `fwdbench export` (random weights, bf16) -> python/reference/reference_logits.py
//! --engine hf (CPU, fp32; HF's own `from_pretrained` must load the folder with no missing,
//! unexpected or mismatched key; Grok-1 and Sigma, which transformers lacks, go through our
//! PyTorch references, loaded strictly) -> `fwdbench check --expect`, prefill and decode.
//!
//! It needs a Python with torch + transformers: `FWDBENCH_PYREF` (an interpreter), else
//! ./.pyref/bin/python (scripts/install-pyref.sh). Without one the tests print a note and
//! pass, except under `CI=true`, where a missing interpreter fails them, so CI cannot skip
//! the cross-check silently (.ci/run installs it and sets CI).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::{text, FIXTURES};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The reference interpreter, or None (with a note) when there is none and CI is not set.
fn pyref() -> Option<PathBuf> {
    let python = match std::env::var_os("FWDBENCH_PYREF") {
        Some(p) => PathBuf::from(p),
        None => root().join(".pyref/bin/python"),
    };
    if python.is_file() {
        return Some(python);
    }
    let why =
        format!("no reference Python at {} (set FWDBENCH_PYREF or run scripts/install-pyref.sh)", python.display());
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and {why}: the HF cross-check must run in CI");
    // Straight to stderr, past the test harness's capture, so the skip is seen.
    let note = format!("note: skipping the export -> HF transformers cross-check: {why}\n");
    std::io::stderr().write_all(note.as_bytes()).unwrap();
    None
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

fn fwdbench(args: &[&str], paths: &[&Path]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_fwdbench")).args(args).args(paths))
}

/// `fwdbench export` of fixture `name`'s config with random weights of `seed`, into `dir/out`.
fn export(name: &str, seed: u64, dir: &Path) -> PathBuf {
    let models = dir.join("models");
    std::fs::create_dir_all(models.join(name)).unwrap();
    let config = root().join("tests/fixtures").join(name).join("config.json");
    std::fs::copy(config, models.join(name).join("config_fx.json")).unwrap();
    let out = dir.join("out");
    let seed = seed.to_string();
    let done = fwdbench(
        &["export", "--model", name, "--mconf", "fx", "--seed", &seed, "--model-dir"],
        &[&models, Path::new("--out"), &out],
    );
    assert!(done.status.success(), "{name}: export failed: {}", text(&done));
    out
}

fn ids(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name).join("input.json")
}

/// One model for reference_logits.py: exported folder, token ids, expected-logits file.
#[derive(Clone)]
struct Job {
    model: PathBuf,
    ids: PathBuf,
    expect: PathBuf,
}

/// reference_logits.py --engine hf over `jobs` in one process (torch and transformers take
/// ~10 s to import on the CI machine, the tiny models' forwards milliseconds).
fn reference_logits(python: &Path, jobs: &[Job], dir: &Path) -> Output {
    let list: Vec<_> =
        jobs.iter().map(|j| serde_json::json!({"model": j.model, "ids": j.ids, "out": j.expect})).collect();
    let file = dir.join("jobs.json");
    std::fs::write(&file, serde_json::Value::from(list).to_string()).unwrap();
    let script = root().join("python/reference/reference_logits.py");
    run(Command::new(python).arg(script).args(["--engine", "hf", "--jobs"]).arg(file))
}

/// `fwdbench check` of `job`'s exported folder against its expected logits (CPU, default
/// tolerances): whether it passed, and what it printed.
fn check(job: &Job, decode: bool) -> (bool, String) {
    let config = job.model.join("config.json");
    let flags: &[&str] = if decode { &["check", "--decode"] } else { &["check"] };
    let paths = [Path::new("--config"), &config, Path::new("--weights"), &job.model];
    let paths = [&paths[..], &[Path::new("--input"), &job.ids, Path::new("--expect"), &job.expect]].concat();
    let done = fwdbench(flags, &paths);
    let passed = done.status.success() && String::from_utf8_lossy(&done.stdout).contains(": PASS");
    (passed, text(&done))
}

fn job(name: &str, seed: u64, dir: &Path) -> Job {
    let dir = dir.join(format!("{name}_{seed}"));
    Job { model: export(name, seed, &dir), ids: ids(name), expect: dir.join("expect.safetensors") }
}

/// Every family's export -> HF or reference logits -> `check`, prefill and decode; and the
/// check can fail: qwen3's weights against the logits of other weights (seed 4) must FAIL.
#[test]
fn every_family_export_passes_check_against_transformers_or_the_references() {
    let Some(python) = pyref() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut jobs: Vec<Job> = FIXTURES.iter().map(|name| job(name, 3, dir.path())).collect();
    jobs.push(job("qwen3", 4, dir.path()));
    let made = reference_logits(&python, &jobs, dir.path());
    assert!(made.status.success(), "reference_logits.py failed: {}", text(&made));
    let other = jobs.pop().unwrap();
    let mut failures = vec![];
    for (name, job) in FIXTURES.iter().zip(&jobs) {
        for decode in [false, true] {
            let (passed, said) = check(job, decode);
            println!("{name}: {}", said.lines().find(|l| l.starts_with("check ")).unwrap_or(&said));
            if !passed {
                failures.push(format!("{name} (decode {decode}): {said}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let qwen3 = &jobs[FIXTURES.iter().position(|n| *n == "qwen3").unwrap()];
    let (passed, said) = check(&Job { expect: other.expect, ..qwen3.clone() }, false);
    assert!(!passed && said.contains(": FAIL"), "other weights' logits must fail: {said}");
}

/// HF's own loader refuses a folder whose config does not match its shards (one more layer
/// in config.json than the shards hold), so a naming slip in export cannot pass unseen.
#[test]
fn hf_loader_refuses_a_folder_that_does_not_match_its_config() {
    let Some(python) = pyref() else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = job("qwen3", 3, dir.path());
    let config = job.model.join("config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["num_hidden_layers"] = 3.into();
    json["layer_types"] = serde_json::json!(["full_attention", "full_attention", "full_attention"]);
    std::fs::write(&config, json.to_string()).unwrap();
    let refused = reference_logits(&python, &[job], dir.path());
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains("HF's loader reported") && said.contains("model.layers.2."), "{said}");
}

/// The Python side's own unit tests: reference_logits.py's ids and jobs, hf_latency.py's arguments,
/// statistics and CSV rows, the peer table, and the compiled static-cache decode on the CPU.
#[test]
fn python_reference_unit_tests_pass() {
    let Some(python) = pyref() else { return };
    let done = run(Command::new(python)
        .args(["-m", "unittest", "discover", "-s"])
        .arg(root().join("python/reference"))
        .args(["-p", "test_*.py"]));
    assert!(done.status.success(), "{}", text(&done));
}
