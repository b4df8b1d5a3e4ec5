//! The malformed-file corpus beside this file: each file goes through its parser once and
//! must give one error naming the file and its cause, fast. A file added here without a
//! row in the table fails the test, so the corpus and the table stay one list. Also a few
//! `--set` mistakes through the binary, whose pair parser only the binary reaches.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fwdbench::config::hf::load_model_config_with_warnings;
use fwdbench::config::run_conf::{load_run_conf, ConfLayers};
use fwdbench::inputs::read_ids_json;
use fwdbench::weights::SafetensorsWeights;

fn corpus(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed").join(file)
}

/// Every data file of the corpus (this test's own sources and the valid base layer aside).
fn corpus_files() -> Vec<PathBuf> {
    let mut pending = vec![corpus("")];
    let mut found = Vec::new();
    while let Some(dir) = pending.pop() {
        for path in std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()) {
            match path.extension().and_then(|x| x.to_str()) {
                _ if path.is_dir() => pending.push(path),
                Some("rs" | "md") => {}
                _ if path.ends_with("conf/base.yaml") => {}
                _ => found.push(path),
            }
        }
    }
    found.sort();
    found
}

// ---------------------------------------------------------------- malformed corpus

/// Which parser a corpus file goes through.
#[derive(Debug, Clone, Copy)]
enum Parser {
    Config,
    Deploy,
    Shapes,
    Safetensors,
    Ids,
}

fn corpus_error(parser: Parser, path: &Path) -> String {
    match parser {
        Parser::Config => load_model_config_with_warnings(path, &[]).err().map(|e| e.to_string()),
        Parser::Deploy => {
            let name = path.file_stem().unwrap().to_string_lossy();
            let conf_dir = corpus("conf");
            load_run_conf(&conf_dir, &ConfLayers::new(&name), &[])
                .and_then(|conf| conf.deployment())
                .err()
                .map(|e| e.to_string())
        }
        Parser::Shapes => fwdbench::config::shapes::load_shapes(path).err().map(|e| e.to_string()),
        Parser::Safetensors => SafetensorsWeights::open(path).err().map(|e| e.to_string()),
        Parser::Ids => read_ids_json(path).err().map(|e| format!("{e:#}")),
    }
    .unwrap_or_else(|| panic!("{} was accepted", path.display()))
}

#[test]
fn every_malformed_file_gives_its_cause_and_its_name() {
    use Parser::*;
    let table: &[(&str, Parser, &[&str])] = &[
        ("truncated_data.safetensors", Safetensors, &["does not end where the file ends", "truncated"]),
        ("truncated_length.safetensors", Safetensors, &["shorter than the 8-byte header length"]),
        ("header_past_end.safetensors", Safetensors, &["header length runs past the end of the file"]),
        ("wrapping_offsets.safetensors", Safetensors, &["tensor a", "offsets"]),
        ("overlapping_offsets.safetensors", Safetensors, &["tensor b", "overlap"]),
        ("size_not_shape.safetensors", Safetensors, &["differs from its dtype x shape"]),
        ("unknown_dtype.safetensors", Safetensors, &["Q9"]),
        (
            "index_outside/model.safetensors.index.json",
            Safetensors,
            &["../outside.safetensors", "not a file beside the index"],
        ),
        ("index_empty/model.safetensors.index.json", Safetensors, &["weight_map is empty"]),
        ("config_layers_2pow64.json", Config, &["`num_hidden_layers` = 1.8446744073709552e+19", "from 0 to 1024"]),
        ("config_truncated.json", Config, &["not valid JSON", "line 4"]),
        ("config_list.json", Config, &["must be a JSON object"]),
        ("conf/deploy/typo_tp.yaml", Deploy, &["`tp_size` = 2.5", "a positive integer"]),
        ("conf/deploy/list.yaml", Deploy, &["must be a mapping"]),
        ("conf/deploy/bad_syntax.yaml", Deploy, &["not valid YAML", "line 2"]),
        ("shapes_zero.csv", Shapes, &["line 2", "has 0 in its batch sizes"]),
        ("shapes_unbalanced.csv", Shapes, &["line 2", "unbalanced braces"]),
        ("shapes_tokens.csv", Shapes, &["tokens in one forward"]),
        ("ids_wrap.json", Ids, &["4294967530", "not a token id"]),
        ("ids_ragged.json", Ids, &["equally long"]),
        ("ids_negative.json", Ids, &["-7", "not a token id"]),
    ];
    let mut listed: Vec<PathBuf> = table.iter().map(|(file, ..)| corpus(file)).collect();
    for (file, parser, needles) in table {
        let path = corpus(file);
        let start = Instant::now();
        let error = corpus_error(*parser, &path);
        assert!(start.elapsed() < Duration::from_secs(1), "{file} took {:?}", start.elapsed());
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(error.contains(name.as_ref()), "{file}: the error does not name the file: {error}");
        for needle in needles.iter() {
            assert!(error.contains(needle), "{file}: `{needle}` not in: {error}");
        }
    }
    listed.sort();
    assert_eq!(corpus_files(), listed, "tests/malformed holds files the table does not run");
}

/// The typo'd key of the corpus deploy is reported as ignored, not dropped silently.
#[test]
fn typo_keys_in_a_deploy_are_listed_as_ignored() {
    let conf = load_run_conf(&corpus("conf"), &ConfLayers::new("typo_tp"), &[("tp_size".into(), "2".into())]).unwrap();
    assert_eq!(conf.deployment().unwrap().tp_size, 2);
    assert!(conf.ignored_keys().contains(&"tp_sise".to_string()), "{:?}", conf.ignored_keys());
}

// ---------------------------------------------------------------- --set through the binary

#[test]
fn set_pairs_are_checked_by_the_binary_naming_the_flag() {
    for (set, needles) in [
        ("num_hidden_layers", &["--set num_hidden_layers", "key=value"][..]),
        ("num_hidden_layers=", &["--set", "num_hidden_layers"][..]),
        ("=4", &["--set =4", "key=value"][..]),
        ("hidden_size.inner=4", &["--set", "hidden_size.inner"][..]),
        ("num_hidden_layers=99999999999999999999999", &["--set", "num_hidden_layers"][..]),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fwdbench"))
            .args(["count", "--model", "qwen", "--mconf", "2l", "--set", set])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "--set {set} was accepted: {text}");
        assert!(!text.contains("panicked"), "--set {set} panicked: {text}");
        for needle in needles {
            assert!(text.contains(needle), "--set {set}: `{needle}` not in: {text}");
        }
    }
}
