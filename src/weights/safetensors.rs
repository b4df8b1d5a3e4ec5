//! HF safetensors checkpoints (single file, a folder of shards, or an index json),
//! memory-mapped; each rank reads only the blocks its plan weights name.
//!
//! The format is an 8-byte little-endian header length, a JSON header mapping tensor
//! names to `{dtype, shape, data_offsets}`, then the raw little-endian data.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::fp8::{scale_name, Fp8Piece};
use super::{WeightError, WeightSource};
use crate::plan::WeightPiece;

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

/// What is wrong with a safetensors header, in words a user can act on.
fn header_problem(e: safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => "the file is shorter than the 8-byte header length (truncated?)".into(),
        E::InvalidHeaderLength => "the header length runs past the end of the file (truncated?)".into(),
        E::HeaderTooLarge => "the header length is implausibly large (not a safetensors file?)".into(),
        E::MetadataIncompleteBuffer => {
            "the tensors' data does not end where the file ends (truncated, or trailing bytes)".into()
        }
        E::InvalidOffset(name) => {
            format!("tensor {name}: its data offsets overlap another tensor, leave a gap or are reversed")
        }
        E::TensorInvalidInfo => "a tensor's data size differs from its dtype x shape".into(),
        E::ValidationOverflow => "a tensor's shape is too large to address".into(),
        other => format!("bad header: {other}"),
    }
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
            // The safetensors crate validates the header with checked arithmetic: offsets in
            // order, contiguous and inside the file, sizes equal to dtype x shape.
            let (header_len, metadata) =
                safetensors::SafeTensors::read_metadata(&map).map_err(|e| unreadable(&file, header_problem(e)))?;
            let index = out.files.len();
            for (name, info) in metadata.tensors() {
                let dtype = format!("{:?}", info.dtype);
                let start = 8 + header_len + info.data_offsets.0;
                out.tensors.insert(name, Tensor { file: index, dtype, shape: info.shape.clone(), start });
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
            let mut files = Vec::new();
            for value in map.values() {
                let name = value.as_str().ok_or_else(|| unreadable(path, "weight_map values must be file names"))?;
                // Shards sit beside the index; a path elsewhere (or the folder itself, as
                // `.` or an empty name) is a corrupt or hostile index.
                if name.contains(['/', '\\']) || matches!(name.trim(), "" | "." | "..") {
                    return Err(unreadable(
                        path,
                        format!("weight_map names `{name}`, which is not a file beside the index"),
                    ));
                }
                files.push(dir.join(name));
            }
            if files.is_empty() {
                // Otherwise every tensor would be "missing" from no file at all.
                return Err(unreadable(path, "its weight_map is empty; it must name the shard of each tensor"));
            }
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

impl SafetensorsWeights {
    /// The tensor piece `p` reads, its shape checked against what the config implies.
    fn piece_tensor(&self, p: &WeightPiece) -> Result<&Tensor, WeightError> {
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
        if dtype_size(&t.dtype).is_none() && t.dtype != FP8 {
            return Err(WeightError::DType {
                file: self.describe_file(Some(t)),
                name: p.hf_name.clone(),
                dtype: t.dtype.clone(),
            });
        }
        Ok(t)
    }

    /// The fp32 block scales `[ceil(rows/128), ceil(cols/128)]` of FP8 tensor `name`
    /// (HF's `<name>_scale_inv`: the factor that turns codes back into values).
    fn block_scales(&self, name: &str, rows: usize, cols: usize) -> Result<(Vec<f32>, usize), WeightError> {
        let scale = scale_name(name);
        let grid = [rows.div_ceil(crate::quant::BLOCK), cols.div_ceil(crate::quant::BLOCK)];
        let (shape, values) = self.read_tensor(&scale)?;
        if shape != grid {
            let file = self.describe_file(self.tensors.get(&scale));
            return Err(WeightError::Shape { file, name: scale, found: shape, expected: grid.to_vec() });
        }
        Ok((values, grid[1]))
    }
}

/// safetensors' name of e4m3 data.
const FP8: &str = "F8_E4M3";

impl WeightSource for SafetensorsWeights {
    fn fill(&self, p: &WeightPiece, dst: &mut [f32], dst_ld: usize) -> Result<(), WeightError> {
        let t = self.piece_tensor(p)?;
        let bytes = &self.files[t.file].1[t.start..];
        if t.dtype == FP8 {
            // Dequantized: bf16 runs of an FP8 checkpoint, and MLA's absorbed kv_b.
            let (scales, ld) = self.block_scales(&p.hf_name, p.hf_rows, p.hf_cols)?;
            let b = crate::quant::BLOCK;
            for r in 0..p.rows {
                for c in 0..p.cols {
                    let (hr, hc) = (p.src_row + r, p.src_col + c);
                    let code = bytes[p.file_index(hr, hc) as usize];
                    dst[r * dst_ld + c] = crate::quant::e4m3_to_f32(code) * scales[(hr / b) * ld + hc / b];
                }
            }
            return Ok(());
        }
        for r in 0..p.rows {
            for c in 0..p.cols {
                dst[r * dst_ld + c] = read_value(bytes, &t.dtype, p.file_index(p.src_row + r, p.src_col + c) as usize);
            }
        }
        Ok(())
    }
    fn fp8_piece(&self, p: &WeightPiece) -> Result<Option<Fp8Piece>, WeightError> {
        let t = self.piece_tensor(p)?;
        if t.dtype != FP8 {
            return Ok(None);
        }
        let bytes = &self.files[t.file].1[t.start..];
        let codes = (0..p.rows)
            .flat_map(|r| (0..p.cols).map(move |c| bytes[p.file_index(p.src_row + r, p.src_col + c) as usize]))
            .collect();
        let (scales, scale_cols) = self.block_scales(&p.hf_name, p.hf_rows, p.hf_cols)?;
        Ok(Some(Fp8Piece { codes, scales, scale_cols }))
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

    fn header_bytes(header: &str, data_len: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(vec![0u8; data_len]);
        out
    }

    #[test]
    fn malformed_headers_are_clear_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let huge = u64::MAX - 3;
        for (bytes, needle) in [
            (vec![1, 2, 3], "shorter than the 8-byte"),
            (header_bytes(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4), "truncated"),
            (header_bytes(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 12), "trailing"),
            (header_bytes(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8), "dtype x shape"),
            (
                header_bytes(&format!(r#"{{"a":{{"dtype":"F32","shape":[2],"data_offsets":[{huge},8]}}}}"#), 8),
                "offsets",
            ),
            (
                header_bytes(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    12,
                ),
                "offsets",
            ),
            (header_bytes(r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#, 8), "bad header"),
            (header_bytes("not json", 0), "bad header"),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let e = SafetensorsWeights::open(&path).err().expect("must fail").to_string();
            assert!(e.contains("bad.safetensors") && e.contains(needle), "{needle}: {e}");
        }
        let len = 1u64 << 62;
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend(b"{}");
        std::fs::write(&path, bytes).unwrap();
        assert!(SafetensorsWeights::open(&path).is_err());
    }

    #[test]
    fn unsupported_dtypes_are_named_when_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        write_file(&path, &[("a", "I64", vec![2, 3], vec![0; 48])]);
        let w = SafetensorsWeights::open(&path).unwrap();
        let e = w.read_tensor("a").unwrap_err().to_string();
        assert!(e.contains("'a' has dtype I64") && e.contains("BF16"), "{e}");
    }

    #[test]
    fn index_names_outside_the_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("model.safetensors.index.json");
        for name in ["../../etc/passwd", ".", "", ".."] {
            std::fs::write(&index, serde_json::json!({"weight_map": {"a": name}}).to_string()).unwrap();
            let e = SafetensorsWeights::open(&index).err().expect("must fail").to_string();
            assert!(e.contains("not a file beside the index") && e.contains("index.json"), "{name}: {e}");
        }
        std::fs::write(&index, r#"{"weight_map":{}}"#).unwrap();
        let e = SafetensorsWeights::open(&index).err().expect("must fail").to_string();
        assert!(e.contains("weight_map is empty") && e.contains("index.json"), "{e}");
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
