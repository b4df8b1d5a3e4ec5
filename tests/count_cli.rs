//! `fwdbench count` over several models, mconfs and deploys: one table, `--csv` rows, the
//! communication and memory columns, and totals against published parameter counts; and
//! the conf notes `count`, `check` and `kernel` print (conf_keys.rs tests what they say).

use std::process::Command;

use serde_json::Value;

fn fwdbench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fwdbench"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the fwdbench binary runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = fwdbench(&all);
    assert!(ok, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn totals_match_published_parameter_counts() {
    // Meta's model cards: Llama 3.1 8B has 8.03B parameters and 70B 70.6B; Mistral's
    // Mixtral-8x7B paper gives 46.7B in total, 12.9B active per token (2 of 8 experts).
    let rows = json(&["count", "--model", "llama3_8b,llama3_70b", "--model", "mixtral", "--seq", "128"]);
    let rows = rows.as_array().expect("several combinations give an array");
    let billions: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r["params_total"].as_f64().unwrap() / 1e9, r["params_active"].as_f64().unwrap() / 1e9))
        .collect();
    // Compared at the precision each figure is published with (70.55 B rounds to 70.6).
    let rounded = |b: f64, digits: i32| (b * 10f64.powi(digits)).round() / 10f64.powi(digits);
    let published = [(8.03, 8.03, 2), (70.6, 70.6, 1), (46.7, 12.9, 1)];
    for (&(total, active), (want_total, want_active, digits)) in billions.iter().zip(published) {
        assert_eq!(rounded(total, digits), want_total, "{total} B total");
        assert_eq!(rounded(active, digits), want_active, "{active} B active");
    }
    // The seed's own Sigma stand-in: 208.68 B in its counter and in ours (seed-pipeline.md).
    let sigma = json(&["count", "--model", "qwen_sigma", "--seq", "500"]);
    assert!((sigma["params_total"].as_f64().unwrap() / 1e9 - 208.68).abs() < 0.005, "{sigma}");
    // Its 1x500 prefill: the seed's 23.98 TFLOP less the LM head on 499 earlier positions.
    assert!((sigma["prefill_flops"].as_f64().unwrap() / 1e12 - 22.96).abs() < 0.005, "{sigma}");
}

#[test]
fn several_models_and_deploys_share_one_table_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let csv_path = dir.path().join("out/count.csv");
    let csv_arg = csv_path.display().to_string();
    let (ok, out, err) = fwdbench(&[
        "count",
        "--model",
        "qwen,llama3_8b",
        "--mconf",
        "2l",
        "--deploy",
        "tp1",
        "--deploy",
        "tp2ep2",
        "--seq",
        "256",
        "--csv",
        &csv_arg,
    ]);
    assert!(ok, "{err}");
    assert_eq!(err.matches("conf keys fwdbench does not implement").count(), 1, "each note once: {err}");
    // One table: a header naming every combination, then one line per quantity.
    assert_eq!(out.matches("qwen (2l)").count(), 2, "{out}");
    assert_eq!(out.matches("llama3_8b (2l)").count(), 2, "{out}");
    for row in
        ["prefill comm per rank", "decode comm per rank", "scratch per rank", "workspace per rank", "total per rank"]
    {
        assert_eq!(out.matches(row).count(), 1, "{row}: {out}");
    }
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 4, "models outer, deploys inner");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    let (deploy, comm, weights) = (col("deploy"), col("decode_comm_bytes_per_rank"), col("weight_bytes_per_rank"));
    let order: Vec<(&str, &str)> = rows.iter().map(|r| (&r[col("model")], &r[deploy])).collect();
    assert_eq!(order, [("qwen", "tp1"), ("qwen", "tp2ep2"), ("llama3_8b", "tp1"), ("llama3_8b", "tp2ep2")]);
    let num = |r: &csv::StringRecord, c: usize| r[c].parse::<f64>().unwrap();
    // One rank sends nothing; two ranks all-reduce every layer's output.
    assert_eq!(num(&rows[0], comm), 0.0);
    assert!(num(&rows[1], comm) > 0.0 && num(&rows[3], comm) > 0.0);
    // tp2 holds about half the weights per rank (norms and the router stay whole).
    let ratio = num(&rows[3], weights) / num(&rows[2], weights);
    assert!((0.45..0.56).contains(&ratio), "{ratio}");
    for r in &rows {
        let parts: f64 = ["weight", "kv", "activation", "scratch", "workspace"]
            .iter()
            .map(|k| num(r, col(&format!("{k}_bytes_per_rank"))))
            .sum();
        assert_eq!(parts, num(r, col("total_bytes_per_rank")), "the breakdown adds up to the total");
        assert_eq!(&r[col("attention_backend")], "fa3");
    }
}

#[test]
fn decode_comm_is_the_ring_traffic_of_the_plan_collectives() {
    // Llama 2l on tp2, decode of 4 tokens: per layer two all-reduces of 4 x 4096 bf16
    // (attention and MLP outputs), plus the embedding's; each rank sends (n-1)/n x 2 of each
    // message in a ring all-reduce, i.e. one message. The LM head's all-gather of 4 x 64128
    // fp32 logits sends (n-1)/n of the gathered 4 x 128256 x 4 bytes.
    let r = json(&["count", "--model", "llama3_8b", "--mconf", "2l", "--deploy", "tp2", "--bsz", "4", "--seq", "64"]);
    let message = 4.0 * 4096.0 * 2.0;
    let gather = 0.5 * 4.0 * 128256.0 * 4.0;
    let want = 5.0 * message + gather;
    let got = r["decode_comm_bytes_per_rank"].as_f64().unwrap();
    assert!((got - want).abs() / want < 1e-9, "{got} against {want}");
    assert!(r["decode_comm_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_deploy_that_cannot_shard_one_model_skips_only_that_combination() {
    // Llama-3.1-8B shards over tp16 (kv heads replicated); Mixtral's 8 experts cannot be
    // split over ep16.
    let (ok, out, err) = fwdbench(&[
        "count",
        "--model",
        "llama3_8b,mixtral",
        "--mconf",
        "2l",
        "--deploy",
        "tp1,tp16ep16",
        "--seq",
        "64",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("warning: --model mixtral --mconf 2l --deploy tp16ep16 skipped: routed experts (8)"), "{err}");
    assert_eq!(out.matches("(2l)").count(), 3, "{out}");
    // Alone, the same combination is an error.
    let (ok, _, err) = fwdbench(&["count", "--model", "mixtral", "--mconf", "2l", "--deploy", "tp16ep16"]);
    assert!(!ok && err.contains("routed experts (8) is not divisible by ep_size (16)"), "{err}");
}

#[test]
fn count_check_and_kernel_print_the_same_notes_once() {
    let (ok, _, err) = fwdbench(&["count", "--model", "qwen", "--mconf", "2l", "--seq", "64", "--optional", "default"]);
    assert!(ok, "{err}");
    assert_eq!(err.matches("note: `count` does not use conf keys cuda_graph_max_bs").count(), 1, "{err}");
    assert_eq!(err.matches("note: conf keys fwdbench does not implement (ignored):").count(), 1, "{err}");
    // check reads its deployment before any weights: the notes come before its error.
    let (ok, _, err) = fwdbench(&[
        "check",
        "--config",
        "tests/fixtures/qwen3/config.json",
        "--weights",
        "no/such.safetensors",
        "--input",
        "x",
        "--expect",
        "y",
    ]);
    assert!(!ok);
    assert_eq!(err.matches("note: `check` does not use conf keys cuda_graph_max_bs").count(), 1, "{err}");
    let (_, _, err) = fwdbench(&["kernel", "check", "--model", "qwen", "--mconf", "2l", "--op", "attn.qkv"]);
    assert_eq!(err.matches("note: `kernel` does not use conf keys cuda_graph_max_bs").count(), 1, "{err}");
    // The whole-model check reads the conf too: a rank count it cannot run is refused.
    let (ok, _, err) = fwdbench(&["kernel", "check", "--model", "qwen", "--mconf", "2l", "--conf", "tp_size=2"]);
    assert!(!ok && err.contains("the conf asks for 2 ranks, but the whole-model check runs tp1"), "{err}");
    let (_, _, err) = fwdbench(&["kernel", "check", "--model", "qwen", "--mconf", "2l"]);
    assert_eq!(err.matches("note: `kernel` does not use conf keys cuda_graph_max_bs").count(), 1, "{err}");
}

#[test]
fn a_kernel_check_too_large_for_the_cpu_reference_fails_instead_of_passing() {
    // 517 tokens through DeepSeek's experts cost the CPU reference ~364 GFLOP: refused, on any
    // machine, before a GPU is opened; the narrower shape gets past that point.
    let ds16 =
        ["kernel", "check", "--op", "moe", "--model", "deepseek", "--mconf", "2l", "--set", "n_routed_experts=16"];
    let (ok, _, err) = fwdbench(&[&ds16[..], &["--tokens", "517"]].concat());
    assert!(!ok && err.contains("the CPU reference would not run") && err.contains("--set hidden_size=64"), "{err}");
    let (_, _, err) = fwdbench(&[&ds16[..], &["--set", "hidden_size=128", "--tokens", "301"]].concat());
    assert!(!err.contains("the CPU reference would not run"), "{err}");
}
