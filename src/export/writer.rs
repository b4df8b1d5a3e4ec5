//! Safetensors shards and their index, through the `safetensors` crate's serializer.
//!
//! Each Hub tensor is encoded on its own ([`encode`]: one value array in, one or more
//! stored tensors out), so a format that stores a companion tensor (FP8 weights with their
//! `weight_scale_inv`) is one more [`StoredDType`] arm. Shards are filled in name order up
//! to a byte budget; only one shard's tensors are in memory at a time.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, View};

use super::ExportError;

/// How one Hub tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDType {
    BF16,
    F32,
}

impl StoredDType {
    /// The name HF configs give it (`torch_dtype`).
    pub fn torch_name(self) -> &'static str {
        match self {
            StoredDType::BF16 => "bfloat16",
            StoredDType::F32 => "float32",
        }
    }

    pub fn bytes_per_value(self) -> usize {
        match self {
            StoredDType::BF16 => 2,
            StoredDType::F32 => 4,
        }
    }
}

/// A tensor ready for the serializer: little-endian bytes of `dtype` x `shape`.
#[derive(Debug, Clone)]
pub struct StoredTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl View for &StoredTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// `values` (file element order) of tensor `name` with file shape `shape`, as `dtype`.
pub fn encode(name: &str, shape: Vec<usize>, values: &[f32], dtype: StoredDType) -> Vec<StoredTensor> {
    let (dtype, data) = match dtype {
        StoredDType::BF16 => {
            (Dtype::BF16, values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect())
        }
        StoredDType::F32 => (Dtype::F32, values.iter().flat_map(|v| v.to_le_bytes()).collect()),
    };
    vec![StoredTensor { name: name.to_string(), dtype, shape, data }]
}

/// Shard file names in HF's spelling, `model-00001-of-00003.safetensors`.
pub fn shard_name(index: usize, count: usize) -> String {
    format!("model-{:05}-of-{:05}.safetensors", index + 1, count)
}

/// Splits tensors of `sizes` bytes (in order) into consecutive shards of at most
/// `max_bytes` each (a tensor larger than that gets a shard of its own).
pub fn plan_shards(sizes: &[usize], max_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut shards = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && bytes + size > max_bytes {
            shards.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        shards.push(start..sizes.len());
    }
    shards
}

/// Writes one shard; `format: pt` is the metadata HF's loader asks of a safetensors file.
pub fn write_shard(path: &Path, tensors: &[StoredTensor]) -> Result<(), ExportError> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize_to_file(tensors.iter().map(|t| (t.name.as_str(), t)), Some(metadata), path)
        .map_err(|e| ExportError::Write { path: path.display().to_string(), reason: e.to_string() })
}

/// `model.safetensors.index.json`: every stored tensor's shard, and the bytes of data.
pub fn write_index(dir: &Path, weight_map: &BTreeMap<String, String>, total_bytes: usize) -> Result<(), ExportError> {
    let index = serde_json::json!({
        "metadata": {"total_size": total_bytes},
        "weight_map": weight_map,
    });
    let path = dir.join("model.safetensors.index.json");
    let text = serde_json::to_string_pretty(&index).expect("an index is plain JSON");
    std::fs::write(&path, text + "\n")
        .map_err(|e| ExportError::Write { path: path.display().to_string(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_respect_the_budget_and_keep_order() {
        assert_eq!(plan_shards(&[4, 4, 4, 4], 8), vec![0..2, 2..4]);
        assert_eq!(plan_shards(&[4, 20, 4], 8), vec![0..1, 1..2, 2..3], "an oversized tensor stands alone");
        assert_eq!(plan_shards(&[1, 2, 3], 100), vec![0..3]);
        assert!(plan_shards(&[], 8).is_empty());
        assert_eq!(shard_name(0, 3), "model-00001-of-00003.safetensors");
    }

    #[test]
    fn encoded_tensors_deserialize_with_their_values() {
        let values = [1.0f32, -2.5, 3.0e-3, 7.0];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.safetensors");
        let mut all = encode("a", vec![2, 2], &values, StoredDType::BF16);
        all.extend(encode("b", vec![4], &values, StoredDType::F32));
        write_shard(&path, &all).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let a = st.tensor("a").unwrap();
        assert_eq!((a.dtype(), a.shape()), (Dtype::BF16, &[2usize, 2][..]));
        let back: Vec<f32> = a.data().chunks(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
        assert_eq!(back, values.map(|v| half::bf16::from_f32(v).to_f32()));
        let b = st.tensor("b").unwrap();
        assert_eq!(b.data(), values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
    }
}
