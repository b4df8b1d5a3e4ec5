//! Fuzz and property suite for every parser a user's files reach (issue 10, item 5): model
//! configs, run-conf YAML layers, shapes grids, safetensors checkpoints and ids json.
//!
//! Every property feeds arbitrary or mutated input and asks for the same two things: no
//! panic or hang (proptest turns a panic into a failing, shrunk case; each case is timed),
//! and an error that names the source it was given. Round trips check the parsers agree
//! with their writers. tests/malformed/ pins one clear message per malformed file.
//! Case counts follow proptest's default (256) and PROPTEST_CASES.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fwdbench::config::hf::{apply_overrides, load_model_config_with_warnings, parse_model_config};
use fwdbench::config::run_conf::{load_run_conf, parse_cli_pairs, parse_layer, ConfLayers};
use fwdbench::config::shapes::{parse_shapes, MAX_BATCH, MAX_SEQ, MAX_SHAPES, MAX_TOKENS};
use fwdbench::inputs::read_ids_json;
use fwdbench::weights::SafetensorsWeights;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Longest any one parse may take: far above a correct parse, far below a hang.
const SLOW: Duration = Duration::from_secs(2);

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(start.elapsed() < SLOW, "{what} took {:?}", start.elapsed());
    out
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, ext, out);
        } else if path.extension().is_some_and(|x| x == ext) {
            out.push(path);
        }
    }
    out.sort();
}

// ---------------------------------------------------------------- model configs

/// The shipped configs and the fixtures' configs, with their files: the starting points
/// for mutations.
fn base_configs() -> &'static [(PathBuf, Value)] {
    static BASES: OnceLock<Vec<(PathBuf, Value)>> = OnceLock::new();
    BASES.get_or_init(|| {
        let mut files = Vec::new();
        files_under(&repo("model_conf"), "json", &mut files);
        files_under(&repo("tests/fixtures"), "json", &mut files);
        files.retain(|f| f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("config")));
        assert!(files.len() >= 10, "expected the shipped model configs, found {}", files.len());
        files
            .into_iter()
            .map(|f| {
                let json = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
                (f, json)
            })
            .collect()
    })
}

/// Every key the shipped configs use, nested ones (`rope_scaling.factor`) included.
fn config_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = std::collections::BTreeSet::new();
        for (_, config) in base_configs() {
            for (key, value) in config.as_object().unwrap() {
                keys.insert(key.clone());
                if let Some(inner) = value.as_object() {
                    keys.extend(inner.keys().map(|k| format!("{key}.{k}")));
                }
            }
        }
        keys.into_iter().collect()
    })
}

/// Values a careless or hostile user writes: huge, negative, fractional, boundary sizes,
/// strings, nulls, non-finite-looking numbers.
fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..70).prop_map(Value::from),
        prop::sample::select(vec![0u64, 1, 2, 3, 7, 1 << 24, (1 << 24) + 1, 1 << 32, (1 << 32) + 234, u64::MAX])
            .prop_map(Value::from),
        any::<f64>().prop_map(|x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![0.5, -1.0, 1e-300, 1e300, 2.5, -0.0, 1.8446744073709552e+19]).prop_map(Value::from),
        "[a-z_0-9]{0,10}".prop_map(Value::from),
        prop::sample::select(vec!["yarn", "linear", "silu", "gelu", "sigmoid", "noaux_tc", "", "NaN"])
            .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key_name(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A real config key (possibly nested) most of the time, else a random one.
fn key_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(config_keys().to_vec()),
        1 => "[a-z_.]{1,12}",
    ]
}

/// Sets (or, with `None`, removes) the dotted `key` in `json`, creating objects where a
/// parent is absent or null as `--set` documents; false when a parent is not an object.
fn edit(json: &mut Value, key: &str, value: Option<Value>) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    let Some((last, parents)) = parts.split_last().filter(|_| parts.iter().all(|p| !p.trim().is_empty())) else {
        return false;
    };
    let mut node = json;
    for part in parents {
        let Some(map) = node.as_object_mut() else { return false };
        let child = map.entry(part.to_string()).or_insert(Value::Null);
        if child.is_null() {
            *child = Value::Object(Default::default());
        }
        node = child;
    }
    let Some(map) = node.as_object_mut() else { return false };
    match value {
        Some(v) => map.insert(last.to_string(), v),
        None => map.remove(*last),
    };
    true
}

/// A shipped config with a few keys replaced by arbitrary values, removed, or added.
fn mutated_config() -> impl Strategy<Value = Value> {
    let edits = prop::collection::vec((key_name(), prop::option::weighted(0.8, json_value())), 1..5);
    (0..base_configs().len(), edits).prop_map(|(base, edits)| {
        let mut json = base_configs()[base].1.clone();
        for (key, value) in edits {
            edit(&mut json, &key, value);
        }
        json
    })
}

/// An accepted config must be one the rest of fwdbench can size without overflow.
fn assert_bounded(cfg: &fwdbench::config::model::ModelConfig) {
    assert!(cfg.num_layers >= 1 && cfg.num_layers <= 1024, "num_layers {}", cfg.num_layers);
    assert_eq!(cfg.layer_ffn.len(), cfg.num_layers);
    assert!(cfg.hidden_size >= 1 && cfg.hidden_size <= 1 << 24, "hidden_size {}", cfg.hidden_size);
    assert!(cfg.vocab_size >= 1 && cfg.vocab_size <= 1 << 24, "vocab_size {}", cfg.vocab_size);
    let params = fwdbench::config::model::approx_params(cfg);
    assert!(params.is_finite() && params > 0.0 && params <= 1e13, "params {params}");
}

proptest! {
    #[test]
    fn any_json_value_as_a_config_is_an_error_naming_the_file(json in json_value()) {
        if let Err(e) = timed("config parse", || parse_model_config(&json, "fuzz_config.json")) {
            prop_assert!(e.to_string().contains("fuzz_config.json"), "{e}");
        }
    }

    #[test]
    fn mutated_configs_parse_or_name_the_file(json in mutated_config()) {
        match timed("config parse", || parse_model_config(&json, "fuzz_config.json")) {
            Ok(cfg) => assert_bounded(&cfg),
            Err(e) => prop_assert!(e.to_string().contains("fuzz_config.json"), "{e}"),
        }
    }

    #[test]
    fn arbitrary_overrides_apply_or_name_the_source(
        base in 0..base_configs().len(),
        pairs in prop::collection::vec((prop_oneof![key_name(), "[a-z._ ]{0,8}"], "[ -~]{0,12}"), 1..4),
    ) {
        let mut json = base_configs()[base].1.clone();
        let pairs: Vec<(String, String)> = pairs;
        if let Err(e) = apply_overrides(&mut json, &pairs, "--set") {
            prop_assert!(e.to_string().contains("--set"), "{e}");
        }
        if let Err(e) = timed("config parse", || parse_model_config(&json, "fuzz_config.json")) {
            prop_assert!(e.to_string().contains("fuzz_config.json"), "{e}");
        }
    }

    /// `--set key=value` on a shipped file gives the model that editing the file gives.
    #[test]
    fn an_override_equals_editing_the_file(base in 0..base_configs().len(), key in key_name(), value in json_leaf()) {
        let (path, json) = &base_configs()[base];
        let raw = value.to_string();
        let via_set = load_model_config_with_warnings(path, &[(key.clone(), raw.clone())]);
        let mut edited = json.clone();
        // Parsed from the same text as --set parses it, so floats agree to the bit.
        let reachable = edit(&mut edited, &key, Some(serde_json::from_str(&raw).unwrap()));
        match (via_set, reachable.then(|| parse_model_config(&edited, "edited.json"))) {
            (Ok(a), Some(Ok(b))) => prop_assert_eq!(a.config, b),
            (Err(a), None) => prop_assert!(a.to_string().contains("--set"), "{a}"),
            (Err(a), Some(Err(b))) => {
                prop_assert!(a.to_string().contains(&path.display().to_string()), "{a}");
                prop_assert!(b.to_string().contains("edited.json"), "{b}");
            }
            (a, b) => prop_assert!(false, "--set {key}={raw} gives {:?}, the edited file {:?}", a.map(|_| ()), b.map(|r| r.map(|_| ()))),
        }
    }

    #[test]
    fn config_files_of_arbitrary_bytes_are_errors_naming_the_file(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz_config.json");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = timed("config load", || load_model_config_with_warnings(&path, &[])) {
            prop_assert!(e.to_string().contains("fuzz_config.json"), "{e}");
        }
    }
}

// ---------------------------------------------------------------- run-conf YAML layers

fn shipped_yaml() -> &'static [(PathBuf, String)] {
    static FILES: OnceLock<Vec<(PathBuf, String)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let mut files = Vec::new();
        files_under(&repo("conf"), "yaml", &mut files);
        assert!(files.len() >= 8, "expected the shipped conf files, found {}", files.len());
        files.into_iter().map(|f| (f.clone(), std::fs::read_to_string(&f).unwrap())).collect()
    })
}

/// Text edits that keep most of a file's structure: replace a span with YAML-ish noise,
/// delete a span, duplicate a line, or swap a value for another token.
fn mutate_text(text: &str, edits: &[(usize, usize, String)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, len, insert) in edits {
        let at = at % (chars.len() + 1);
        let end = (at + len).min(chars.len());
        chars.splice(at..end, insert.chars());
    }
    chars.into_iter().collect()
}

fn text_edits() -> impl Strategy<Value = Vec<(usize, usize, String)>> {
    let noise = prop_oneof![
        "[ -~\t\n]{0,6}",
        prop::sample::select(vec![
            ": ",
            "\n  - ",
            "{",
            "}",
            "[",
            "]",
            "&a",
            "*a",
            "!!int",
            "'",
            "\"",
            "|",
            ">",
            "~",
            "---\n",
            "? ",
            "1e400",
            "-1",
            "2.5",
            "18446744073709551616",
            "0x10",
            "yes",
            "\ttp_size: 8\n",
            "tp_sise: 8\n",
            "<<: *a\n",
            ".inf",
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec((any::<usize>(), 0usize..8, noise), 1..5)
}

/// Writes `deploy` as conf/deploy/fuzz.yaml beside the shipped base.yaml and merges them.
fn merge_deploy(deploy: &str, cli: &[(String, String)]) -> (PathBuf, Result<(), String>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("deploy")).unwrap();
    std::fs::copy(repo("conf/base.yaml"), dir.path().join("base.yaml")).unwrap();
    let file = dir.path().join("deploy/fuzz.yaml");
    std::fs::write(&file, deploy).unwrap();
    let merged = timed("conf merge", || load_run_conf(dir.path(), &ConfLayers::new("fuzz"), cli))
        .map_err(|e| e.to_string())
        .and_then(|conf| conf.deployment().map(drop).map_err(|e| e.to_string()));
    (file, merged)
}

/// A `--conf` pair: mostly a key fwdbench reads with a hostile value, else noise.
fn cli_pair() -> impl Strategy<Value = String> {
    let key = prop::sample::select(fwdbench::config::run_conf::IMPLEMENTED_KEYS.to_vec());
    let value = prop_oneof![json_leaf().prop_map(|v| v.to_string()), "[ -~]{0,8}"];
    prop_oneof![(key, value).prop_map(|(k, v)| format!("{k}={v}")), "[a-z_]{0,10}(=[ -~]{0,8})?"]
}

proptest! {
    #[test]
    fn arbitrary_yaml_text_is_an_error_naming_the_file(text in "[ -~\t\n]{0,80}") {
        if let Err(e) = timed("yaml parse", || parse_layer(&text, "fuzz_layer.yaml")) {
            prop_assert!(e.to_string().contains("fuzz_layer.yaml"), "{e}");
        }
    }

    #[test]
    fn mutated_conf_files_parse_or_name_the_file(which in 0..shipped_yaml().len(), edits in text_edits()) {
        let (path, text) = &shipped_yaml()[which];
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if let Err(e) = timed("yaml parse", || parse_layer(&mutate_text(text, &edits), &name)) {
            prop_assert!(e.to_string().contains(&name), "{e}");
        }
    }

    /// A mutated deploy merged over base.yaml (and command-line pairs): any bad value is
    /// blamed on the file that set it or on the command line.
    #[test]
    fn mutated_deployments_name_the_layer_that_set_the_bad_value(
        which in 0..shipped_yaml().len(),
        edits in text_edits(),
        pairs in prop::collection::vec(cli_pair(), 0..3),
    ) {
        let text = mutate_text(&shipped_yaml()[which].1, &edits);
        let cli = match parse_cli_pairs(&pairs) {
            Ok(cli) => cli,
            Err(e) => {
                let e = e.to_string();
                prop_assert!(pairs.iter().any(|p| e.contains(p.as_str())), "{e} names none of {pairs:?}");
                Vec::new()
            }
        };
        let (file, merged) = merge_deploy(&text, &cli);
        if let Err(e) = merged {
            let named = e.contains(&file.display().to_string()) || e.contains("base.yaml") || e.contains("command line");
            prop_assert!(named, "names no layer: {e}");
        }
    }
}

// ---------------------------------------------------------------- shapes grids

fn format_list(values: &[usize], braces: bool, spaced: bool) -> String {
    let items: Vec<String> = values.iter().map(ToString::to_string).collect();
    let inner = items.join(if spaced { ", " } else { "," });
    if braces {
        format!("{{{inner}}}")
    } else {
        inner
    }
}

proptest! {
    #[test]
    fn arbitrary_shapes_text_is_bounded_or_names_the_file(text in "[{}0-9,; #x\n-]{0,60}") {
        match timed("shapes parse", || parse_shapes(&text, "fuzz_shapes.csv")) {
            Ok(shapes) => {
                prop_assert!(!shapes.is_empty() && shapes.len() <= MAX_SHAPES);
                for &(b, s) in &shapes {
                    prop_assert!((1..=MAX_BATCH).contains(&b) && (1..=MAX_SEQ).contains(&s) && b * s <= MAX_TOKENS);
                }
                let unique: std::collections::HashSet<_> = shapes.iter().collect();
                prop_assert_eq!(unique.len(), shapes.len());
            }
            Err(e) => prop_assert!(e.to_string().contains("fuzz_shapes.csv"), "{e}"),
        }
    }

    /// Grids written in any accepted style (braces or not, spaces, comments, blank lines)
    /// parse back to their cross product in file order, each pair once.
    #[test]
    fn formatted_grids_parse_back(
        grids in prop::collection::vec(
            (prop::collection::vec(1usize..=256, 1..4), prop::collection::vec(1usize..=65536, 1..4),
             any::<bool>(), any::<bool>(), any::<bool>()),
            1..5),
    ) {
        let mut text = String::new();
        let mut expected: Vec<(usize, usize)> = Vec::new();
        for (batches, seqs, braces, spaced, comment) in &grids {
            let sep = if *spaced { " ; " } else { ";" };
            text += &format!("{}{sep}{}", format_list(batches, *braces, *spaced), format_list(seqs, !braces, *spaced));
            text += if *comment { "  # note\n\n" } else { "\n" };
            for &b in batches {
                for &s in seqs {
                    if !expected.contains(&(b, s)) {
                        expected.push((b, s));
                    }
                }
            }
        }
        prop_assert_eq!(parse_shapes(&text, "p.csv").unwrap(), expected);
    }
}

// ---------------------------------------------------------------- safetensors

/// One tensor for the writer: name, dtype, shape, and values exactly representable in it.
type TensorSpec = (String, &'static str, Vec<usize>, Vec<f32>);

fn encode(dtype: &str, values: &[f32]) -> Vec<u8> {
    match dtype {
        "F32" => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "BF16" => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
    }
}

/// A minimal safetensors writer: header length, JSON header, packed data.
fn write_safetensors(tensors: &[TensorSpec]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut data = Vec::new();
    for (name, dtype, shape, values) in tensors {
        let bytes = encode(dtype, values);
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend(bytes);
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(data);
    out
}

fn tensor_specs() -> impl Strategy<Value = Vec<TensorSpec>> {
    let one = (prop::sample::select(vec!["F32", "BF16", "F16"]), prop::collection::vec(1usize..5, 1..4)).prop_flat_map(
        |(dtype, shape)| {
            let n: usize = shape.iter().product();
            // Small integers and halves are exact in every dtype.
            (Just(dtype), Just(shape), prop::collection::vec((-256i32..256).prop_map(|i| i as f32 / 2.0), n))
        },
    );
    prop::collection::vec(one, 1..4).prop_map(|tensors| {
        tensors.into_iter().enumerate().map(|(i, (d, s, v))| (format!("model.t{i}.weight"), d, s, v)).collect()
    })
}

/// Opens `bytes` as a checkpoint; when it opens, reads every tensor it names (a header that
/// passed validation but points outside the data would panic here).
fn open_and_read(bytes: &[u8], names: &[String]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let weights = timed("safetensors open", || SafetensorsWeights::open(&path)).map_err(|e| e.to_string())?;
    for name in names {
        if let Err(e) = weights.read_tensor(name) {
            assert!(e.to_string().contains("fuzz.safetensors"), "{e}");
        }
    }
    Ok(())
}

/// A header of arbitrary entries, sizes and offsets over a data block of `data_len` bytes.
fn hostile_header() -> impl Strategy<Value = (String, usize)> {
    let number = prop_oneof![0u64..64, any::<u64>(), Just(u64::MAX), Just(u64::MAX - 3), Just(1 << 63)];
    let dtype = prop::sample::select(vec!["F32", "BF16", "F16", "I64", "F8_E4M3", "BOOL", "Q9", ""]);
    let entry = (dtype, prop::collection::vec(number.clone(), 0..3), number.clone(), number);
    (prop::collection::vec(entry, 1..4), 0usize..64).prop_map(|(entries, data_len)| {
        let header: serde_json::Map<String, Value> = entries
            .into_iter()
            .enumerate()
            .map(|(i, (dtype, shape, start, end))| {
                (format!("t{}", i % 3), json!({"dtype": dtype, "shape": shape, "data_offsets": [start, end]}))
            })
            .collect();
        (Value::Object(header).to_string(), data_len)
    })
}

proptest! {
    #[test]
    fn written_checkpoints_read_back_the_same_values(tensors in tensor_specs()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, write_safetensors(&tensors)).unwrap();
        let weights = SafetensorsWeights::open(&path).unwrap();
        for (name, _, shape, values) in &tensors {
            prop_assert!(weights.contains(name));
            let (got_shape, got) = weights.read_tensor(name).unwrap();
            prop_assert_eq!(&got_shape, shape);
            prop_assert_eq!(&got, values);
        }
    }

    #[test]
    fn arbitrary_bytes_are_errors_naming_the_file(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        if let Err(e) = open_and_read(&bytes, &["t0".to_string()]) {
            prop_assert!(e.contains("fuzz.safetensors"), "{e}");
        }
    }

    /// Valid files with header bytes flipped, the length field changed, or cut short.
    #[test]
    fn mutated_checkpoints_open_cleanly_or_name_the_file(
        tensors in tensor_specs(),
        flips in prop::collection::vec((any::<usize>(), 1u8..), 0..4),
        length in prop::option::weighted(0.3, (any::<bool>(), any::<u64>(), -16i64..16)),
        cut in prop::option::weighted(0.3, any::<usize>()),
    ) {
        let mut bytes = write_safetensors(&tensors);
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for (at, mask) in flips {
            bytes[8 + at % header_len] ^= mask;
        }
        if let Some((arbitrary, value, delta)) = length {
            let value = if arbitrary { value } else { (header_len as u64).wrapping_add_signed(delta) };
            bytes[..8].copy_from_slice(&value.to_le_bytes());
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % bytes.len());
        }
        let names: Vec<String> = tensors.iter().map(|t| t.0.clone()).collect();
        if let Err(e) = open_and_read(&bytes, &names) {
            prop_assert!(e.contains("fuzz.safetensors"), "{e}");
        }
    }

    #[test]
    fn hostile_offsets_and_shapes_are_refused_or_read_in_bounds((header, data_len) in hostile_header()) {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; data_len]);
        let names: Vec<String> = (0..3).map(|i| format!("t{i}")).collect();
        if let Err(e) = open_and_read(&bytes, &names) {
            prop_assert!(e.contains("fuzz.safetensors"), "{e}");
        }
    }

    /// An index json of arbitrary shard names opens only shards beside it.
    #[test]
    fn index_files_name_only_shards_beside_them(names in prop::collection::vec(
        prop_oneof!["[a-z./\\\\]{0,10}", Just("..".to_string()), Just(".".to_string()), Just(String::new())], 1..3)) {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("ckpt");
        std::fs::create_dir(&folder).unwrap();
        let map: serde_json::Map<String, Value> =
            names.iter().enumerate().map(|(i, n)| (format!("t{i}"), Value::from(n.as_str()))).collect();
        let index = folder.join("model.safetensors.index.json");
        std::fs::write(&index, json!({"weight_map": map}).to_string()).unwrap();
        match timed("index open", || SafetensorsWeights::open(&index)) {
            Ok(_) => prop_assert!(false, "index of {names:?} opened, but no shard exists"),
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.contains("model.safetensors.index.json") || e.contains(&folder.display().to_string()), "{e}");
            }
        }
    }
}

// ---------------------------------------------------------------- ids json

fn ids_document() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        4 => (0i64..1000).prop_map(Value::from),
        1 => json_leaf(),
        1 => prop::sample::select(vec![(1u64 << 32) + 234, (1 << 31), (1 << 31) - 1, u64::MAX]).prop_map(Value::from),
    ];
    let rows =
        prop::collection::vec(prop::collection::vec(id, 0..4).prop_map(Value::Array), 0..3).prop_map(Value::Array);
    prop_oneof![
        4 => rows.prop_map(|r| json!({"input_ids": r}).to_string()),
        1 => json_value().prop_map(|v| json!({"input_ids": v}).to_string()),
        1 => json_value().prop_map(|v| v.to_string()),
        1 => "[ -~]{0,30}",
    ]
}

proptest! {
    #[test]
    fn ids_json_gives_valid_rows_or_names_the_file(text in ids_document()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz_ids.json");
        std::fs::write(&path, &text).unwrap();
        match timed("ids parse", || read_ids_json(&path)) {
            Ok(rows) => {
                prop_assert!(!rows.is_empty() && !rows[0].is_empty());
                prop_assert!(rows.iter().all(|r| r.len() == rows[0].len() && r.iter().all(|&id| id >= 0)));
            }
            Err(e) => prop_assert!(format!("{e:#}").contains("fuzz_ids.json"), "{e:#}"),
        }
    }
}
