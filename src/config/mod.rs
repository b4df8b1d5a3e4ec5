//! Inputs: model configs (HF-style config.json), layered run confs (YAML), shapes grids.

pub mod hf;
pub mod knobs;
pub mod model;
pub mod run_conf;
pub mod shapes;

/// The closest of `candidates` to a key that was not recognised, when it is close enough to
/// be a typo (Damerau-Levenshtein distance at most 2, and less than a third of its length).
pub fn did_you_mean<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = 2.min(key.len().div_ceil(3));
    candidates
        .into_iter()
        .filter(|c| *c != key)
        .map(|c| (strsim::damerau_levenshtein(key, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// `(key, value)` string pairs from literals, as `--set` flags and the environment give them.
#[cfg(test)]
pub(crate) fn string_pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_only_near_misses() {
        let keys = ["num_hidden_layers", "tp_size", "factor"];
        assert_eq!(did_you_mean("num_hiden_layers", keys), Some("num_hidden_layers"));
        assert_eq!(did_you_mean("tp_sise", keys), Some("tp_size"));
        assert_eq!(did_you_mean("factr", keys), Some("factor"));
        assert_eq!(did_you_mean("torch_dtype", keys), None);
        assert_eq!(did_you_mean("ab", ["cd"]), None);
    }
}
