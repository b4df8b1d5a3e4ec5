//! The shapes grid (`conf/bsz_seq.csv`): which (batch size, sequence length) pairs to run.
//!
//! One grid per line in the seed pipeline's format, `{1,8,64};{128,1024}`: every batch
//! size is crossed with every sequence length. Grids keep file order, a pair listed twice
//! runs once (its first position), `#` starts a comment, blank lines are skipped. Braces
//! may be left out (`1,8,64;128,1024`, the form the seed's own scripts parse). Batch sizes,
//! lengths, tokens per shape and the number of shapes are bounded, so a typo cannot ask
//! for an allocation no machine has or a grid that never ends.

use std::collections::HashSet;
use std::path::Path;

use thiserror::Error;

const FORMAT: &str = "`{1,8,64};{128,1024}` (batch sizes ; sequence lengths, positive integers)";

pub const MAX_BATCH: usize = 1 << 16;
pub const MAX_SEQ: usize = 1 << 22;
/// New tokens of one forward (16M: far beyond any prefill served; the plan holds a
/// position per token, so this also bounds host memory).
pub const MAX_TOKENS: usize = 1 << 24;
pub const MAX_SHAPES: usize = 4096;

#[derive(Debug, Error)]
pub enum ShapesError {
    #[error("cannot read shapes file {file}: {err}; check the path (default conf/bsz_seq.csv)")]
    Read { file: String, err: std::io::Error },
    #[error("shapes file {file}, line {line}: `{text}` {reason}; expected {FORMAT}")]
    BadLine { file: String, line: usize, text: String, reason: String },
    #[error("shapes file {file} lists no shapes; add a line such as {FORMAT}")]
    Empty { file: String },
    #[error(
        "shapes file {file}, line {line}: the grid reaches more than {MAX_SHAPES} shapes; split it into several files"
    )]
    TooMany { file: String, line: usize },
}

/// Parses one `{a,b,...}` or `a,b,...` list of values in `1..=max`.
fn parse_list(part: &str, what: &str, max: usize) -> Result<Vec<usize>, String> {
    let part = part.trim();
    let inner = match (part.strip_prefix('{'), part.ends_with('}')) {
        (Some(rest), true) => &rest[..rest.len() - 1],
        (None, false) if !part.contains(['{', '}']) => part,
        _ => return Err(format!("has unbalanced braces in its {what}")),
    };
    let mut values = Vec::new();
    for item in inner.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("has an empty entry in its {what}"));
        }
        let value: usize = match item.parse() {
            Ok(v) => v,
            Err(_) if item.bytes().all(|c| c.is_ascii_digit()) => {
                return Err(format!("has {item} in its {what}, above the limit of {max}"))
            }
            Err(_) => return Err(format!("has `{item}` in its {what}, which is not a whole number")),
        };
        if value == 0 {
            return Err(format!("has 0 in its {what}; sizes start at 1"));
        }
        if value > max {
            return Err(format!("has {value} in its {what}, above the limit of {max}"));
        }
        values.push(value);
    }
    Ok(values)
}

/// Every (batch size, sequence length) of `text`, in file order without repeats.
pub fn parse_shapes(text: &str, source: &str) -> Result<Vec<(usize, usize)>, ShapesError> {
    let mut shapes: Vec<(usize, usize)> = Vec::new();
    let mut seen = HashSet::new();
    for (index, raw) in text.lines().enumerate() {
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let bad = |reason: String| ShapesError::BadLine {
            file: source.to_string(),
            line: index + 1,
            text: raw.trim().to_string(),
            reason,
        };
        let parts: Vec<&str> = content.split(';').collect();
        let [batches, seqs] = parts.as_slice() else {
            return Err(bad(format!("has {} `;`-separated parts instead of 2", parts.len())));
        };
        let batches = parse_list(batches, "batch sizes", MAX_BATCH).map_err(bad)?;
        let seqs = parse_list(seqs, "sequence lengths", MAX_SEQ).map_err(bad)?;
        if shapes.len() + batches.len().saturating_mul(seqs.len()) > MAX_SHAPES.saturating_mul(4) {
            return Err(ShapesError::TooMany { file: source.to_string(), line: index + 1 });
        }
        for &batch in &batches {
            for &seq in &seqs {
                if batch * seq > MAX_TOKENS {
                    return Err(bad(format!(
                        "crosses batch {batch} with length {seq}: {} tokens in one forward, above the limit of {MAX_TOKENS}",
                        batch * seq
                    )));
                }
                if seen.insert((batch, seq)) {
                    shapes.push((batch, seq));
                }
            }
        }
        if shapes.len() > MAX_SHAPES {
            return Err(ShapesError::TooMany { file: source.to_string(), line: index + 1 });
        }
    }
    if shapes.is_empty() {
        return Err(ShapesError::Empty { file: source.to_string() });
    }
    Ok(shapes)
}

pub fn load_shapes(path: &Path) -> Result<Vec<(usize, usize)>, ShapesError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| ShapesError::Read { file: file.clone(), err })?;
    parse_shapes(&text, &file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crosses_batches_with_lengths_in_file_order() {
        let text = "# batch ; seq\n{1,8};{128, 1024}\n\n{8} ; {128,4096}  # long\n16;64\n";
        let shapes = parse_shapes(text, "grid.csv").unwrap();
        assert_eq!(shapes, vec![(1, 128), (1, 1024), (8, 128), (8, 1024), (8, 4096), (16, 64)]);
    }

    #[test]
    fn bad_lines_name_file_line_and_text() {
        for (text, needle) in [
            ("{1,8};{128}\n{1,x};{128}", "`x`"),
            ("{1,8}", "1 `;`"),
            ("{1,8};{0}", "has 0"),
            ("{1,8;{128}", "unbalanced"),
            ("1,8};128", "unbalanced"),
            ("{70000};{128}", "above the limit"),
            ("{65536};{4096}", "tokens in one forward"),
            ("{1};{99999999999999999999}", "above the limit"),
            ("{1,,8};{128}", "empty entry"),
            ("{1};{2};{3}", "3 `;`"),
        ] {
            let e = parse_shapes(text, "grid.csv").unwrap_err().to_string();
            assert!(e.contains("grid.csv") && e.contains(needle) && e.contains("{1,8,64};{128,1024}"), "{e}");
        }
        let e = parse_shapes("{1,8};{128}\n{1,x};{128}", "grid.csv").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("`{1,x};{128}`"), "{e}");
        assert!(matches!(parse_shapes("# nothing\n", "g"), Err(ShapesError::Empty { .. })));
    }

    #[test]
    fn braceless_lists_parse_like_the_seed_writes_them() {
        assert_eq!(parse_shapes("1,2;128,256\n", "g").unwrap(), vec![(1, 128), (1, 256), (2, 128), (2, 256)]);
        assert_eq!(parse_shapes("{1,2};128,256", "g").unwrap(), parse_shapes("{1,2};{128,256}", "g").unwrap());
    }

    #[test]
    fn huge_grids_are_refused_quickly() {
        let line: Vec<String> = (1..=5000).map(|i| i.to_string()).collect();
        let text = format!("{};{}", line.join(","), line.join(","));
        let t = std::time::Instant::now();
        assert!(matches!(parse_shapes(&text, "g"), Err(ShapesError::TooMany { .. })));
        // A million one-shape lines: linear de-duplication, refused at the shape limit.
        let many: String = (1..=1_000_000).map(|i| format!("1;{}\n", i % 4_000_000 + 1)).collect();
        assert!(matches!(parse_shapes(&many, "g"), Err(ShapesError::TooMany { .. })));
        assert!(t.elapsed().as_secs_f64() < 5.0, "took {:?}", t.elapsed());
    }

    fn format_grid(list: &[usize]) -> String {
        let items: Vec<String> = list.iter().map(ToString::to_string).collect();
        format!("{{{}}}", items.join(","))
    }

    proptest! {
        #[test]
        fn formatted_grids_parse_back(grids in prop::collection::vec(
            (prop::collection::vec(1usize..512, 1..5), prop::collection::vec(1usize..32768, 1..5)), 1..5)) {
            let text: String = grids.iter().map(|(b, s)| format!("{};{}\n", format_grid(b), format_grid(s))).collect();
            let mut expected: Vec<(usize, usize)> = Vec::new();
            for (batches, seqs) in &grids {
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
}
