//! `fwdbench kernel check/bench` as a user meets it without a GPU: every mistake in naming
//! an op, a shape or a suite is one sentence before any device work, and the seed suite's
//! points can be listed (op, dims, FLOPs, bytes, CPU-check plan).

use std::process::Command;

fn fwdbench(args: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fwdbench"))
        .args(args.split_whitespace())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the fwdbench binary runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The command fails with exactly one `error:` line that starts with `want`.
fn fails_with(args: &str, want: &str) -> String {
    let (ok, _, err) = fwdbench(args);
    assert!(!ok, "{args}: should fail");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args}: one sentence, got {err}");
    assert!(lines[0].starts_with(&format!("error: {want}")), "{args}: {err}");
    lines[0].to_string()
}

#[test]
fn the_seed_suite_lists_every_point_without_a_gpu() {
    let (ok, out, err) = fwdbench("kernel bench --suite seed --list");
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last(), Some(&"82 points"));
    for line in &lines[..lines.len() - 1] {
        assert!(line.contains(" GFLOP ") && line.contains(" MB; "), "{line}");
    }
    let moe = lines.iter().find(|l| l.starts_with("moe deepseek ep8 t4096: moe.experts@3 [t=4096")).expect("EP8 MoE");
    assert!(moe.contains("e=32") && moe.contains("skipped(CPU reference would cost"), "{moe}");
    assert!(lines.iter().any(|l| l.starts_with("attention sigma tp16 decode b1 ctx4096") && l.ends_with("cpu check")));
    assert!(lines.iter().any(|l| l.starts_with("linear 7168x4096 row mp16 m4096: gemm [m=4096 n=4096 k=448]")));
}

#[test]
fn naming_mistakes_are_one_sentence() {
    let unknown =
        fails_with("kernel check --model deepseek --op flash", "--op flash: DeepseekV3ForCausalLM has no such op");
    assert!(unknown.contains("moe") && unknown.contains("attn.kv_b"), "lists the valid names: {unknown}");
    fails_with("kernel bench --model deepseek --op moe --layer 0", "--op moe --layer 0: layer 0 of");
    fails_with("kernel check --model qwen --op all_reduce --deploy tp2", "--op all_reduce: a collective");
    fails_with("kernel check --model qwen --op moe --deploy tp2ep2 --rank 2", "--rank 2: --deploy tp2ep2 has 2 ranks");
    fails_with("kernel bench --suite nightly", "--suite nightly: the only suite is `seed`");
    fails_with("kernel bench --model qwen --op linear --m 4 --n 8 --k 16", "--m/--n/--k build a bare GEMM");
    fails_with("kernel bench --model qwen --op moe --tokens 64 --phase decode", "--tokens T is a prefill");
    fails_with("kernel check --model qwen --deploy tp2", "--deploy, --tokens and --m/--n/--k choose one op's plan");
    fails_with("kernel bench --op moe", "give --model (or --config)");
    fails_with("kernel check --model nosuch --op moe", "--model nosuch: no folder");
}

#[test]
fn a_named_op_reaches_the_gpu_step_only_when_it_exists() {
    // Valid requests get as far as opening the GPU, which this machine may not have.
    for args in [
        "kernel check --model deepseek --mconf 2l --op mla_decode_attention --phase decode --bsz 3 --seq 29",
        "kernel bench --model deepseek --mconf full --op moe --tokens 4096 --deploy tp8ep8",
        "kernel bench --op linear --m 3 --n 40 --k 24",
        "kernel check --model qwen --op attn.qkv --layer 1 --bsz 1 --seq 16",
    ] {
        let (ok, _, err) = fwdbench(args);
        let no_gpu = err.contains("no CUDA driver") || err.contains("cannot open GPU");
        assert!(ok || no_gpu, "{args}: rejected before the GPU step: {err}");
    }
}
