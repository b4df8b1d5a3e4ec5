//! `fwdbench run` through the binary, without a GPU: `--project --analytic` over the full
//! models and the seed's deployments (rows, methods, communication shares, CSV columns),
//! the graph policy on per-rank batches, and the errors that point a user at `--project`.

mod support;
use support::text;

use std::path::Path;
use std::process::{Command, Output};

use fwdbench::report::COLUMNS;

const MODELS: [&str; 7] = ["gpt3", "grok", "qwen", "deepseek", "sigma", "qwen_dense", "sigma_v1"];

fn fwdbench(args: &[&str], results: &Path, grid: &str) -> Output {
    let shapes = results.join("grid.csv");
    std::fs::write(&shapes, grid).unwrap();
    Command::new(env!("CARGO_BIN_EXE_fwdbench"))
        .args(["run", "--mconf", "full", "--save"])
        .args(args)
        .arg("--shapes")
        .arg(&shapes)
        .arg("--results-dir")
        .arg(results)
        .env_remove("FWDBENCH_RANK")
        .env_remove("FWDBENCH_WORLD")
        .output()
        .unwrap()
}

/// The CSV rows of `model` as maps from column name to value.
fn rows(results: &Path, model: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(results.join(format!("csv/{model}_full.csv"))).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, COLUMNS, "CSV columns");
    r.records().map(|rec| header.iter().cloned().zip(rec.unwrap().iter().map(String::from)).collect()).collect()
}

fn num(row: &std::collections::HashMap<String, String>, col: &str) -> f64 {
    row[col].parse().unwrap_or_else(|_| panic!("{col} = {:?} in {row:?}", row[col]))
}

#[test]
fn analytic_projection_of_every_full_model_has_communication_except_on_one_rank() {
    for model in MODELS {
        let dir = tempfile::tempdir().unwrap();
        for deploy in ["tp1", "tp8", "tp8ep8", "tp8ep8dp8"] {
            let out =
                fwdbench(&["--model", model, "--deploy", deploy, "--project", "--analytic"], dir.path(), "{8};{128}\n");
            assert!(out.status.success(), "{model} {deploy}: {}", text(&out));
            assert!(text(&out).contains("analytic: rank 0 of"), "{model} {deploy}: {}", text(&out));
        }
        let rows = rows(dir.path(), model);
        assert_eq!(rows.len(), 8, "{model}: prefill and decode on four deployments");
        for row in &rows {
            let (deploy, what) = (row["deploy"].as_str(), format!("{model} {row:?}"));
            assert_eq!(row["method"], "analytic", "{what}");
            assert!(row["p10_ms"].is_empty(), "an estimate has no spread: {what}");
            let (latency, compute, comm) = (num(row, "latency_ms"), num(row, "compute_ms"), num(row, "comm_ms"));
            assert!(compute > 0.0 && (latency - compute - comm).abs() < 1e-3, "{what}");
            let share = num(row, "comm_share");
            if deploy == "tp1" {
                assert_eq!((comm, share), (0.0, 0.0), "{what}");
            } else {
                assert!(share > 0.0 && share < 1.0 && !row["comm_source"].is_empty(), "{what}");
                assert_eq!(row["world"], "8", "{what}");
            }
            let per_rank = if deploy == "tp8ep8dp8" { "1" } else { "8" };
            assert_eq!((row["bsz"].as_str(), row["bsz_per_rank"].as_str()), ("8", per_rank), "{what}");
            assert_eq!(row["run_rank"], "0", "{what}");
        }
    }
}

#[test]
fn a_shard_too_large_for_one_gpu_still_gets_its_analytic_row_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // In bf16 (DeepSeek-V3 ships FP8, which fits): 671B parameters over 8 ranks do not.
    let args = ["--model", "deepseek", "--deploy", "tp8ep8", "--quant", "bf16", "--project", "--analytic"];
    let out = fwdbench(&args, dir.path(), "{1};{128}\n");
    assert!(out.status.success(), "{}", text(&out));
    let rows = rows(dir.path(), "deepseek");
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["note"].contains("would not fit one H200")), "{rows:?}");
}

#[test]
fn graph_caps_act_on_the_per_rank_batch() {
    let dir = tempfile::tempdir().unwrap();
    for deploy in ["tp8ep8", "tp8ep8dp8"] {
        let args = ["--model", "qwen", "--deploy", deploy, "--project", "--analytic", "--conf", "cuda_graph_max_bs=4"];
        let out = fwdbench(&args, dir.path(), "{16};{128}\n");
        assert!(out.status.success(), "{}", text(&out));
    }
    let decode: Vec<_> = rows(dir.path(), "qwen").into_iter().filter(|r| r["phase"] == "decode").collect();
    // tp8ep8 puts all 16 sequences on every rank (> 4: eager); dp8 puts 2 on each (graphed).
    assert_eq!(decode[0]["cuda_graph"], "false");
    assert!(decode[0]["note"].contains("16 sequences per rank exceed cuda_graph_max_bs 4"), "{:?}", decode[0]);
    assert_eq!((decode[1]["cuda_graph"].as_str(), decode[1]["bsz_per_rank"].as_str()), ("true", "2"));
    // Eager communication costs more than graphed in the model: the sources say which figures.
    let out = fwdbench(
        &["--model", "qwen", "--deploy", "tp8ep8dp8", "--project", "--analytic", "--conf", "disable_cuda_graph=true"],
        dir.path(),
        "{16};{128}\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let last = rows(dir.path(), "qwen").pop().unwrap();
    assert_eq!((last["cuda_graph"].as_str(), last["note"].as_str()), ("false", "decode eager: disable_cuda_graph"));
}

#[test]
fn conf_keys_that_cannot_act_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let args =
        ["--model", "qwen", "--deploy", "tp8ep8dp8", "--project", "--analytic", "--conf", "enable_dp_lm_head=false"];
    let out = fwdbench(&args, dir.path(), "{8};{128}\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("note: enable_dp_lm_head is false"), "{}", text(&out));
}

#[test]
fn flags_and_machines_that_cannot_run_the_deployment_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let fails = |args: &[&str], expect: &str| {
        let out = fwdbench(args, dir.path(), "{8};{128}\n");
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(text(&out).contains(expect), "{args:?}: {}", text(&out));
    };
    fails(
        &["--model", "qwen", "--deploy", "tp8", "--analytic"],
        "--analytic only applies to a projection: add --project",
    );
    fails(
        &["--model", "qwen", "--deploy", "tp8", "--project", "--analytic", "--project-rank", "8"],
        "--project-rank 8 is not a rank",
    );
    // No GPU here: the launcher cannot start eight workers, and points at --project.
    fails(&["--model", "qwen", "--deploy", "tp8ep8"], "use --project");
    fails(&["--model", "qwen", "--deploy", "tp16ep16", "--rank", "2"], "node_rank");
    fails(
        &["--model", "qwen", "--deploy", "tp8", "--project", "--analytic", "--comm-table", "/nonexistent.csv"],
        "--comm-table /nonexistent.csv",
    );
}

#[test]
fn the_projected_rank_can_be_chosen_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--model", "sigma", "--deploy", "tp8ep8", "--project", "--analytic", "--project-rank", "5"];
    let out = fwdbench(&args, dir.path(), "{1};{128}\n");
    assert!(out.status.success(), "{}", text(&out));
    let rows = rows(dir.path(), "sigma");
    assert!(rows.iter().all(|r| r["run_rank"] == "5" && r["rank_choice"] == "--project-rank"), "{rows:?}");
}
