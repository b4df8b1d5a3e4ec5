//! Every key of every shipped conf file either acts or is reported, in every subcommand.
//!
//! Acting is checked by its effect: a key that `key_use` says acts must change the
//! deployment (or be refused) when its value changes. Reporting is checked by the notes:
//! a key said to be ignored in a subcommand must appear in that subcommand's notes.

use std::path::{Path, PathBuf};

use fwdbench::config::run_conf::{
    conf_notes, key_use, load_run_conf, parse_layer, AttentionBackend, ConfLayers, KeyUse, Subcommand,
};

fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")
}

/// Every YAML file of conf/ with the layers that load it.
fn shipped_layers() -> Vec<(PathBuf, ConfLayers)> {
    let mut out = Vec::new();
    for (sub, make) in [
        ("deploy", (|n: &str| ConfLayers::new(n)) as fn(&str) -> ConfLayers),
        ("backend", |n| ConfLayers { backend: Some(n.into()), ..ConfLayers::new("tp1") }),
        ("optional", |n| ConfLayers { optional: Some(n.into()), ..ConfLayers::new("tp1") }),
    ] {
        for entry in std::fs::read_dir(conf_dir().join(sub)).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().trim_end_matches(".yaml").to_string();
            out.push((entry.path(), make(&name)));
        }
    }
    out.push((conf_dir().join("base.yaml"), ConfLayers::new("tp1")));
    assert!(out.len() >= 12, "found only {} conf files", out.len());
    out
}

/// For a key that acts: a different value, which must change the deployment or be refused
/// by a check that names the key (validation is how `dtype` acts). Switches flip.
fn other_value(key: &str, current: &serde_json::Value) -> String {
    if let Some(b) = current.as_bool() {
        return (!b).to_string();
    }
    match key {
        // A multiple of every shipped tp_size, ep_size, dp_size and nnodes.
        "tp_size" => "32",
        "ep_size" | "dp_size" | "nnodes" => "3",
        "node_rank" => "5",
        "dist_init_addr" => "10.1.2.3:4000",
        "attention_backend" => "flashinfer",
        "cuda_graph_max_bs" => "8",
        "dtype" => "float16",
        other => panic!("key `{other}` is said to act, but this test does not know how to change it; add it here"),
    }
    .to_string()
}

#[test]
fn every_key_of_every_shipped_conf_acts_or_is_reported_in_every_subcommand() {
    let mut checked = 0;
    for (path, layers) in shipped_layers() {
        let keys = parse_layer(&std::fs::read_to_string(&path).unwrap(), &path.display().to_string()).unwrap();
        let conf = load_run_conf(&conf_dir(), &layers, &[]).unwrap();
        let dep = conf.deployment().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (key, value) in &keys {
            for cmd in Subcommand::ALL {
                match key_use(key, cmd) {
                    KeyUse::Acts(how) => {
                        assert!(!how.is_empty());
                        let other = other_value(key, value);
                        let set = vec![(key.clone(), other.clone())];
                        match load_run_conf(&conf_dir(), &layers, &set).unwrap().deployment() {
                            Ok(d) => assert_ne!(d, dep, "{key}={other} changes nothing ({})", path.display()),
                            Err(e) => assert!(e.to_string().contains(key.as_str()), "{key}={other}: {e}"),
                        }
                    }
                    KeyUse::Ignored(why) => {
                        let notes = conf_notes(Some((&conf, &dep)), cmd).join("\n");
                        // A value that asks for nothing (false, null, one node, node 0) needs no note.
                        let single_node = (key == "nnodes" && value == &serde_json::json!(1))
                            || (key == "node_rank" && value == &serde_json::json!(0));
                        let inert = single_node || value.is_null() || value == &serde_json::Value::Bool(false);
                        assert!(
                            inert || notes.contains(key.as_str()),
                            "{cmd:?} ignores {key} ({why}) silently: {notes}"
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} (key, subcommand) pairs");
}

#[test]
fn comm_bench_reads_no_conf_and_says_so() {
    let notes = conf_notes(None, Subcommand::Comm);
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("comm bench reads no run conf") && notes[0].contains("--rank"), "{notes:?}");
    assert!(matches!(key_use("dist_init_addr", Subcommand::Comm), KeyUse::Ignored(_)));
}

#[test]
fn count_reports_graph_and_node_keys_as_unused_once_each() {
    let layers = ConfLayers { optional: Some("default".into()), ..ConfLayers::new("tp16ep16") };
    let set = [("moe_dense_tp_size".to_string(), "1".to_string())];
    let conf = load_run_conf(&conf_dir(), &layers, &set).unwrap();
    let dep = conf.deployment().unwrap();
    let notes = conf_notes(Some((&conf, &dep)), Subcommand::Count);
    let joined = notes.join("\n");
    assert!(joined.contains("`count` does not use conf keys cuda_graph_max_bs: it times no forward"), "{joined}");
    assert!(joined.contains("nnodes") && joined.contains("moe_dense_tp_size"), "{joined}");
    // disable_cuda_graph: false and node_rank: 0 ask for nothing; two nodes do.
    assert!(!joined.contains("disable_cuda_graph") && !joined.contains("node_rank"), "{joined}");
    assert_eq!(joined.matches("cuda_graph_max_bs").count(), 1, "{joined}");
    assert!(
        joined.contains("conf keys fwdbench does not implement (ignored): ")
            && joined.contains("disable_custom_all_reduce")
    );
    // run uses them all but moe_dense_tp_size.
    let run = conf_notes(Some((&conf, &dep)), Subcommand::Run).join("\n");
    assert!(
        !run.contains("cuda_graph_max_bs") && !run.contains("nnodes") && run.contains("moe_dense_tp_size"),
        "{run}"
    );
}

#[test]
fn attention_backend_is_fa3_or_fa2_and_sglang_names_say_so() {
    let load = |v: &str| {
        load_run_conf(&conf_dir(), &ConfLayers::new("tp1"), &[("attention_backend".into(), v.into())])
            .unwrap()
            .deployment()
    };
    assert_eq!(load("fa2").unwrap().attention_backend, AttentionBackend::Fa2);
    assert_eq!(load("FA3").unwrap().attention_backend, AttentionBackend::Fa3);
    for sglang in ["flashinfer", "triton", "torch_native"] {
        let e = load(sglang).unwrap_err().to_string();
        assert!(e.contains("fa3 or fa2") && e.contains("SGLang backend") && e.contains(sglang), "{e}");
        assert!(e.contains("the command line"), "names where the value came from: {e}");
    }
    let e = load("fa4").unwrap_err().to_string();
    assert!(e.contains("`attention_backend` = \"fa4\"") && e.contains("fa3 or fa2") && !e.contains("SGLang"), "{e}");
    let absent = ConfLayers { base: "nobase".into(), ..ConfLayers::new("tp1") };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("deploy")).unwrap();
    std::fs::write(dir.path().join("nobase.yaml"), "dtype: bf16\n").unwrap();
    std::fs::write(dir.path().join("deploy/tp1.yaml"), "tp_size: 1\n").unwrap();
    let d = load_run_conf(dir.path(), &absent, &[]).unwrap().deployment().unwrap();
    assert_eq!(d.attention_backend, AttentionBackend::Fa3, "fa3 when the conf names none");
}
