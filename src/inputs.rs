//! Token ids for a forward: random (seeded), from an ids json, or real text tokenised
//! with the model folder's tokenizer.json. Errors name the flags that give these files
//! (`--input`, `--prompt-file`), the only way a user reaches them.

use std::path::Path;

use anyhow::{bail, Context};

/// `{"input_ids": [[...], ...]}`, one row per sequence, all rows the same length.
pub fn read_ids_json(path: &Path) -> anyhow::Result<Vec<Vec<i32>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --input {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    let rows = value
        .get("input_ids")
        .and_then(|v| v.as_array())
        .with_context(|| format!("{}: expected {{\"input_ids\": [[...], ...]}}", path.display()))?;
    let mut ids = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let row = row.as_array().with_context(|| format!("{}: input_ids[{i}] is not a list", path.display()))?;
        let mut parsed = Vec::with_capacity(row.len());
        for v in row {
            // Checked before any narrowing: 234 + 2^32 must not wrap to a valid id.
            let id = v.as_i64().and_then(|x| i32::try_from(x).ok()).filter(|x| *x >= 0).with_context(|| {
                format!("{}: input_ids[{i}] holds {v}, which is not a token id (0 <= id < 2^31)", path.display())
            })?;
            parsed.push(id);
        }
        ids.push(parsed);
    }
    if ids.is_empty() || ids.iter().any(|r| r.len() != ids[0].len() || r.is_empty()) {
        bail!("{}: input_ids must be a non-empty list of equally long, non-empty rows", path.display());
    }
    Ok(ids)
}

/// Fails naming `source` when an id is outside the model's vocabulary `[0, vocab)`.
pub fn check_vocab(ids: &[Vec<i32>], vocab: usize, source: &str) -> anyhow::Result<()> {
    if let Some(bad) = ids.iter().flatten().find(|&&i| i < 0 || i as usize >= vocab) {
        bail!("{source}: token id {bad} is outside the model's vocabulary [0, {vocab}); use a tokenizer that matches the model");
    }
    Ok(())
}

/// Seeded random ids in `[0, vocab)`.
pub fn random_ids(batch: usize, len: usize, vocab: usize, seed: u64) -> Vec<Vec<i32>> {
    let key = crate::weights::rng::mix64(seed ^ 0x1d5);
    (0..batch)
        .map(|b| {
            (0..len).map(|i| (crate::weights::rng::mix64(key ^ ((b * len + i) as u64)) % vocab as u64) as i32).collect()
        })
        .collect()
}

/// Text from `prompt` tokenised with `tokenizer.json` in `model_dir`, repeated or cut to
/// `len` tokens, the same for every sequence. Every token of the text must lie in the
/// model's vocabulary `[0, vocab)` (a tokenizer of another model would give ids the
/// embedding cannot look up).
pub fn prompt_ids(
    prompt: &Path,
    model_dir: &Path,
    batch: usize,
    len: usize,
    vocab: usize,
) -> anyhow::Result<Vec<Vec<i32>>> {
    let tok_path = model_dir.join("tokenizer.json");
    if !tok_path.exists() {
        bail!(
            "--prompt-file needs a tokenizer: {} does not exist (copy the model's tokenizer.json there, or drop --prompt-file to use random ids)",
            tok_path.display()
        );
    }
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", tok_path.display()))?;
    let text =
        std::fs::read_to_string(prompt).with_context(|| format!("cannot read --prompt-file {}", prompt.display()))?;
    let enc =
        tokenizer.encode(text, false).map_err(|e| anyhow::anyhow!("cannot tokenise {}: {e}", prompt.display()))?;
    if let Some(bad) = enc.get_ids().iter().find(|&&i| i as usize >= vocab) {
        bail!(
            "--prompt-file {}: token id {bad} is outside the model's vocabulary [0, {vocab}); use the model's own tokenizer.json",
            prompt.display()
        );
    }
    // In range of the vocabulary, so no id narrows past i32.
    let ids: Vec<i32> = enc.get_ids().iter().map(|&i| i as i32).collect();
    if ids.is_empty() {
        bail!("--prompt-file {} tokenises to no tokens", prompt.display());
    }
    let row: Vec<i32> = ids.iter().cycle().take(len).copied().collect();
    Ok(vec![row; batch])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_matches_python_tokenizer() {
        let dir = Path::new("tests/fixtures/tokenizer");
        let expected: Vec<i32> =
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(dir.join("expected_ids.json")).unwrap())
                .unwrap()["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap() as i32)
                .collect();
        let got = prompt_ids(&dir.join("prompt.txt"), dir, 2, expected.len() + 3, 1 << 20).unwrap();
        assert_eq!(&got[0][..expected.len()], &expected[..]);
        assert_eq!(got[0][expected.len()..], expected[..3], "ids repeat to fill the length");
        assert_eq!(got[0], got[1]);
    }

    #[test]
    fn ids_that_would_wrap_or_leave_the_vocabulary_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input.json");
        for (ids, needle) in [("[[1, 4294967530]]", "4294967530"), ("[[1, -3]]", "-3"), ("[[1, 2.5]]", "2.5")] {
            std::fs::write(&path, format!("{{\"input_ids\": {ids}}}")).unwrap();
            let e = read_ids_json(&path).unwrap_err().to_string();
            assert!(e.contains("input.json") && e.contains(needle), "{e}");
        }
        let e = check_vocab(&[vec![1, 300]], 264, "--input x.json").unwrap_err().to_string();
        assert!(e.contains("300") && e.contains("264") && e.contains("--input x.json"), "{e}");
        assert!(check_vocab(&[vec![0, 263]], 264, "x").is_ok());
    }

    #[test]
    fn prompt_tokens_outside_the_vocabulary_are_refused() {
        let dir = Path::new("tests/fixtures/tokenizer");
        let e = prompt_ids(&dir.join("prompt.txt"), dir, 1, 4, 2).unwrap_err().to_string();
        assert!(e.contains("--prompt-file") && e.contains("vocabulary [0, 2)"), "{e}");
    }

    #[test]
    fn missing_tokenizer_is_a_clear_error() {
        let e = prompt_ids(Path::new("x.txt"), Path::new("/nonexistent"), 1, 4, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json does not exist"), "{e}");
    }

    #[test]
    fn random_ids_are_seeded_and_in_range() {
        let a = random_ids(2, 50, 7, 1);
        assert_eq!(a, random_ids(2, 50, 7, 1));
        assert_ne!(a, random_ids(2, 50, 7, 2));
        assert!(a.iter().flatten().all(|&i| (0..7).contains(&i)));
    }
}
