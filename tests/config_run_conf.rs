//! Layered run confs: the shipped conf/ tree, merging order, validation messages.

use std::path::{Path, PathBuf};

use fwdbench::config::run_conf::{load_run_conf, parse_cli_pairs, ConfLayers, Layer};
use fwdbench::config::shapes::load_shapes;

fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")
}

fn cli(pairs: &[&str]) -> Vec<(String, String)> {
    parse_cli_pairs(&pairs.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn every_shipped_deploy_is_a_valid_deployment() {
    let mut names: Vec<String> = std::fs::read_dir(conf_dir().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".yaml").to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["tp1", "tp16ep16", "tp2", "tp2ep2", "tp2ep2dp2", "tp8", "tp8ep8", "tp8ep8dp8"]);
    for backend in ["fa3", "fa2"] {
        for name in &names {
            let layers = ConfLayers {
                base: "base".into(),
                deploy: name.clone(),
                backend: Some(backend.into()),
                optional: Some("default".into()),
            };
            let conf = load_run_conf(&conf_dir(), &layers, &[]).unwrap_or_else(|e| panic!("{e}"));
            let d = conf.deployment().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(d.attention_backend.name(), backend);
            assert!(!d.disable_cuda_graph && d.cuda_graph_max_bs == 256 && d.moe_dense_tp_size.is_none());
        }
    }
}

#[test]
fn layers_merge_in_order_and_remember_their_file() {
    let layers = ConfLayers { backend: Some("fa2".into()), ..ConfLayers::new("tp8ep8dp8") };
    let conf = load_run_conf(&conf_dir(), &layers, &cli(&["cuda_graph_max_bs=64", "tensor-parallel-size=8"])).unwrap();
    let d = conf.deployment().unwrap();
    assert_eq!((d.tp_size, d.ep_size, d.dp_size, d.enable_dp_attention, d.enable_dp_lm_head), (8, 8, 8, true, true));
    assert_eq!((d.attention_backend.name(), d.cuda_graph_max_bs), ("fa2", 64));
    let backend = conf.setting("attention_backend").unwrap();
    assert_eq!(backend.layer, Layer::Backend);
    assert!(backend.origin.ends_with("backend/fa2.yaml"));
    assert_eq!(conf.setting("tp_size").unwrap().layer, Layer::CommandLine);
    assert_eq!(conf.setting("dtype").unwrap().layer, Layer::Base);
    let ignored = conf.ignored_keys();
    assert!(ignored.contains(&"mem_fraction_static".to_string()) && ignored.contains(&"trust_remote_code".to_string()));
    assert!(!ignored.contains(&"tp_size".to_string()) && !ignored.contains(&"dtype".to_string()));
}

#[test]
fn two_node_deploy() {
    let conf = load_run_conf(
        &conf_dir(),
        &ConfLayers::new("tp16ep16"),
        &cli(&["node_rank=1", "dist_init_addr=10.0.0.1:5000"]),
    )
    .unwrap();
    let d = conf.deployment().unwrap();
    assert_eq!((d.tp_size, d.ep_size, d.nnodes, d.node_rank), (16, 16, 2, 1));
    assert_eq!(d.dist_init_addr.as_deref(), Some("10.0.0.1:5000"));
    let e = load_run_conf(&conf_dir(), &ConfLayers::new("tp16ep16"), &cli(&["node_rank=2"]))
        .unwrap()
        .deployment()
        .unwrap_err()
        .to_string();
    assert!(e.contains("node_rank") && e.contains("command line") && e.contains("nnodes = 2"), "{e}");
}

#[test]
fn unknown_deploy_lists_the_available_ones() {
    let e = load_run_conf(&conf_dir(), &ConfLayers::new("tp4"), &[]).unwrap_err().to_string();
    assert!(e.contains("tp4") && e.contains("tp8ep8dp8") && e.contains("tp16ep16"), "{e}");
    let layers = ConfLayers { backend: Some("triton".into()), ..ConfLayers::new("tp1") };
    let e = load_run_conf(&conf_dir(), &layers, &[]).unwrap_err().to_string();
    assert!(e.contains("triton") && e.contains("fa2") && e.contains("fa3"), "{e}");
}

#[test]
fn invalid_layouts_name_the_key_and_the_file_that_set_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("deploy")).unwrap();
    std::fs::write(dir.path().join("base.yaml"), "dtype: bfloat16\n").unwrap();
    let cases = [
        ("tp_size: 8\nep_size: 3\n", "ep_size"),
        ("tp_size: 8\ndp_size: 2\n", "enable_dp_attention"),
        ("tp_size: 8\ndp_size: 3\nenable_dp_attention: true\n", "dp_size"),
        ("tp_size: 8\nnnodes: 3\n", "nnodes"),
        ("tp_size: 0\n", "tp_size"),
        ("tp_size: eight\n", "tp_size"),
        ("enable_dp_attention: 1\n", "enable_dp_attention"),
        ("moe_dense_tp_size: 2\n", "moe_dense_tp_size"),
        ("dtype: float16\n", "dtype"),
    ];
    for (text, key) in cases {
        std::fs::write(dir.path().join("deploy/bad.yaml"), text).unwrap();
        let conf = load_run_conf(dir.path(), &ConfLayers::new("bad"), &[]).unwrap();
        let e = conf.deployment().unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("deploy/bad.yaml"), "{text:?}: {e}");
    }
}

#[test]
fn bad_yaml_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("deploy")).unwrap();
    std::fs::write(dir.path().join("base.yaml"), "").unwrap();
    std::fs::write(dir.path().join("deploy/broken.yaml"), "tp_size: 8\nep_size: [8\nnnodes: 1\n").unwrap();
    let e = load_run_conf(dir.path(), &ConfLayers::new("broken"), &[]).unwrap_err().to_string();
    assert!(e.contains("deploy/broken.yaml") && e.contains("line"), "{e}");
    std::fs::write(dir.path().join("deploy/broken.yaml"), "- tp_size\n").unwrap();
    let e = load_run_conf(dir.path(), &ConfLayers::new("broken"), &[]).unwrap_err().to_string();
    assert!(e.contains("mapping"), "{e}");
    assert!(parse_cli_pairs(&["tp_size".to_string()]).is_err());
}

#[test]
fn nested_values_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("deploy")).unwrap();
    std::fs::write(dir.path().join("base.yaml"), "json_model_override_args:\n  num_hidden_layers: 2\n").unwrap();
    std::fs::write(dir.path().join("deploy/x.yaml"), "tp_size: 2\n").unwrap();
    let conf = load_run_conf(dir.path(), &ConfLayers::new("x"), &[]).unwrap();
    assert_eq!(conf.get("json_model_override_args").unwrap()["num_hidden_layers"], 2);
    assert_eq!(conf.ignored_keys(), vec!["json_model_override_args".to_string()]);
}

#[test]
fn shipped_shapes_grid_loads() {
    let shapes = load_shapes(&conf_dir().join("bsz_seq.csv")).unwrap();
    assert_eq!(shapes, vec![(1, 128), (1, 2048), (8, 128), (8, 2048), (32, 128), (32, 2048)]);
}
