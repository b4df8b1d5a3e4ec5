//! HF safetensors checkpoints (single file, a folder of shards, or an index json),
//! memory-mapped; each rank reads only the blocks its plan weights name.
//!
//! The format is an 8-byte little-endian header length, a JSON header mapping tensor
//! names to `{dtype, shape, data_offsets}`, then the raw little-endian data.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::Deserialize;

use super::{WeightError, WeightSource};
use crate::plan::WeightPiece;

#[derive(Debug, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

struct Tensor {
    file: usize,
    dtype: String,
    shape: Vec<usize>,
    start: usize,
}

pub struct SafetensorsWeights {
    files: Vec<(PathBuf, Mmap, usize)>,
    tensors: HashMap<String, Tensor>,
}

fn unreadable(path: &Path, reason: impl ToString) -> WeightError {
    WeightError::Unreadable { file: path.display().to_string(), reason: reason.to_string() }
}

impl SafetensorsWeights {
    /// Opens a `.safetensors` file, a `model.safetensors.index.json`, or a folder holding either.
    pub fn open(path: &Path) -> Result<Self, WeightError> {
        let files = Self::shard_files(path)?;
        let mut out = SafetensorsWeights { files: Vec::new(), tensors: HashMap::new() };
        for file in files {
            let handle = File::open(&file).map_err(|e| unreadable(&file, e))?;
            // SAFETY: the checkpoint is opened read-only and not modified while mapped.
            let map = unsafe { Mmap::map(&handle) }.map_err(|e| unreadable(&file, e))?;
            if map.len() < 8 {
                return Err(unreadable(&file, "file is shorter than the 8-byte header length"));
            }
            let header_len = u64::from_le_bytes(map[..8].try_into().expect("8 bytes")) as usize;
            let header =
                map.get(8..8 + header_len).ok_or_else(|| unreadable(&file, "header length exceeds the file"))?;
            let entries: HashMap<String, serde_json::Value> =
                serde_json::from_slice(header).map_err(|e| unreadable(&file, format!("bad header: {e}")))?;
            let index = out.files.len();
            for (name, value) in entries {
                if name == "__metadata__" {
                    continue;
                }
                let e: Entry =
                    serde_json::from_value(value).map_err(|err| unreadable(&file, format!("tensor {name}: {err}")))?;
                let elem = dtype_size(&e.dtype).unwrap_or(1);
                let numel: usize = e.shape.iter().product();
                if e.data_offsets[1] - e.data_offsets[0] != numel * elem
                    || 8 + header_len + e.data_offsets[1] > map.len()
                {
                    return Err(unreadable(&file, format!("tensor {name}: data offsets do not match its shape")));
                }
                out.tensors.insert(
                    name,
                    Tensor { file: index, dtype: e.dtype, shape: e.shape, start: 8 + header_len + e.data_offsets[0] },
                );
            }
            out.files.push((file, map, header_len));
        }
        Ok(out)
    }

    fn shard_files(path: &Path) -> Result<Vec<PathBuf>, WeightError> {
        if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            if index.exists() {
                return Self::shard_files(&index);
            }
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| unreadable(path, e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(unreadable(path, "folder holds no .safetensors file"));
            }
            return Ok(files);
        }
        if path.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(path).map_err(|e| unreadable(path, e))?;
            let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| unreadable(path, e))?;
            let map = index
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| unreadable(path, "no 'weight_map' object"))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            let mut files: Vec<PathBuf> = map.values().filter_map(|v| v.as_str()).map(|f| dir.join(f)).collect();
            files.sort();
            files.dedup();
            return Ok(files);
        }
        Ok(vec![path.to_path_buf()])
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn describe_file(&self, t: Option<&Tensor>) -> String {
        match t {
            Some(t) => self.files[t.file].0.display().to_string(),
            None => self.files.first().map(|f| f.0.display().to_string()).unwrap_or_default(),
        }
    }
}

fn dtype_size(dtype: &str) -> Option<usize> {
    match dtype {
        "F32" => Some(4),
        "BF16" | "F16" => Some(2),
        _ => None,
    }
}

fn read_value(bytes: &[u8], dtype: &str, index: usize) -> f32 {
    match dtype {
        "F32" => f32::from_le_bytes(bytes[index * 4..index * 4 + 4].try_into().expect("4 bytes")),
        "BF16" => half::bf16::from_bits(u16::from_le_bytes([bytes[index * 2], bytes[index * 2 + 1]])).to_f32(),
        _ => half::f16::from_bits(u16::from_le_bytes([bytes[index * 2], bytes[index * 2 + 1]])).to_f32(),
    }
}

impl WeightSource for SafetensorsWeights {
    fn fill(&self, p: &WeightPiece, dst: &mut [f32], dst_ld: usize) -> Result<(), WeightError> {
        let t = self
            .tensors
            .get(&p.hf_name)
            .ok_or_else(|| WeightError::Missing { file: self.describe_file(None), name: p.hf_name.clone() })?;
        let expected: Vec<usize> = if p.hf_rows == 1 && t.shape.len() == 1 {
            vec![p.hf_cols]
        } else if p.transposed_in_file {
            vec![p.hf_cols, p.hf_rows]
        } else {
            vec![p.hf_rows, p.hf_cols]
        };
        if t.shape != expected {
            return Err(WeightError::Shape {
                file: self.describe_file(Some(t)),
                name: p.hf_name.clone(),
                found: t.shape.clone(),
                expected,
            });
        }
        if dtype_size(&t.dtype).is_none() {
            return Err(WeightError::DType {
                file: self.describe_file(Some(t)),
                name: p.hf_name.clone(),
                dtype: t.dtype.clone(),
            });
        }
        let bytes = &self.files[t.file].1[t.start..];
        for r in 0..p.rows {
            for c in 0..p.cols {
                dst[r * dst_ld + c] = read_value(bytes, &t.dtype, p.file_index(p.src_row + r, p.src_col + c) as usize);
            }
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("safetensors ({} file(s), {} tensors)", self.files.len(), self.tensors.len())
    }
}

impl SafetensorsWeights {
    /// A whole tensor as f32 with its shape (expected logits, small inputs).
    pub fn read_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), WeightError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| WeightError::Missing { file: self.describe_file(None), name: name.into() })?;
        if dtype_size(&t.dtype).is_none() {
            return Err(WeightError::DType {
                file: self.describe_file(Some(t)),
                name: name.into(),
                dtype: t.dtype.clone(),
            });
        }
        let bytes = &self.files[t.file].1[t.start..];
        let n: usize = t.shape.iter().product();
        Ok((t.shape.clone(), (0..n).map(|i| read_value(bytes, &t.dtype, i)).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Init;

    fn write_file(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            header.insert(name.to_string(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}));
            data.extend_from_slice(bytes);
        }
        let h = serde_json::to_vec(&header).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(data);
        std::fs::write(path, out).unwrap();
    }

    fn piece(name: &str, rows: usize, cols: usize, transposed: bool) -> WeightPiece {
        WeightPiece {
            hf_name: name.into(),
            hf_rows: rows,
            hf_cols: cols,
            transposed_in_file: transposed,
            src_row: 0,
            src_col: 1,
            rows,
            cols: cols - 1,
            dst_index: 0,
            dst_row: 0,
            dst_col: 0,
            init: Init::normal(1.0),
        }
    }

    #[test]
    fn reads_blocks_in_every_dtype_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let bf16s: Vec<u8> = (0..6).flat_map(|i| half::bf16::from_f32(i as f32).to_le_bytes()).collect();
        write_file(
            &path,
            &[("a", "F32", vec![2, 3], f32s.clone()), ("b", "BF16", vec![2, 3], bf16s), ("c", "F32", vec![3, 2], f32s)],
        );
        let w = SafetensorsWeights::open(&path).unwrap();
        let mut dst = vec![0f32; 4];
        w.fill(&piece("a", 2, 3, false), &mut dst, 2).unwrap();
        assert_eq!(dst, vec![1.0, 2.0, 4.0, 5.0]);
        w.fill(&piece("b", 2, 3, false), &mut dst, 2).unwrap();
        assert_eq!(dst, vec![1.0, 2.0, 4.0, 5.0]);
        // Conv1D: file [3, 2] holds the logical [2, 3] transposed.
        w.fill(&piece("c", 2, 3, true), &mut dst, 2).unwrap();
        assert_eq!(dst, vec![2.0, 4.0, 3.0, 5.0]);
    }

    #[test]
    fn missing_and_misshaped_tensors_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        write_file(&path, &[("a", "F32", vec![2, 3], vec![0; 24])]);
        let w = SafetensorsWeights::open(&path).unwrap();
        let mut dst = vec![0f32; 8];
        let e = w.fill(&piece("zzz", 2, 3, false), &mut dst, 2).unwrap_err().to_string();
        assert!(e.contains("'zzz' is missing"), "{e}");
        let e = w.fill(&piece("a", 3, 2, false), &mut dst, 2).unwrap_err().to_string();
        assert!(e.contains("'a' has shape [2, 3]"), "{e}");
    }
}
