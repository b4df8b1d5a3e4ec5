//! Typed access to the keys of one JSON object, with errors that name the file and key.
//!
//! HF writes `null` for "not set" (`n_inner`, `q_lora_rank`, `rope_scaling`), so a null
//! value reads the same as an absent key everywhere.

use serde_json::{Map, Value};

use super::ConfigError;

pub(crate) type Result<T> = std::result::Result<T, ConfigError>;

#[derive(Clone, Copy)]
pub(crate) struct Keys<'a> {
    map: &'a Map<String, Value>,
    pub file: &'a str,
}

/// A short rendering of a JSON value for messages.
pub(crate) fn show(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 60 {
        text.truncate(57);
        text.push_str("...");
    }
    text
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl<'a> Keys<'a> {
    pub fn new(map: &'a Map<String, Value>, file: &'a str) -> Self {
        Keys { map, file }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Present in the file, even as null (where null itself carries meaning).
    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn wrong_type(&self, key: &str, expected: &'static str) -> ConfigError {
        let found = self.get(key).map_or("null", kind);
        ConfigError::WrongType { file: self.file.to_string(), key: key.to_string(), expected, found }
    }

    pub fn bad_value(&self, key: &str, value: impl ToString, expected: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            file: self.file.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    pub fn missing(&self, key: &str, hint: impl Into<String>) -> ConfigError {
        ConfigError::Missing { file: self.file.to_string(), key: key.to_string(), hint: hint.into() }
    }

    pub fn contradiction(&self, detail: impl Into<String>) -> ConfigError {
        ConfigError::Contradiction { file: self.file.to_string(), detail: detail.into() }
    }

    pub fn unsupported(&self, key: &str, value: impl ToString, detail: impl Into<String>) -> ConfigError {
        ConfigError::Unsupported {
            file: self.file.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            detail: detail.into(),
        }
    }

    pub fn usize(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        if let Some(n) = v.as_u64() {
            return usize::try_from(n).map(Some).map_err(|_| self.bad_value(key, n, "a size that fits in memory"));
        }
        // Some exporters write integral sizes as floats (4096.0); accept those.
        match v.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1e15 => Ok(Some(f as usize)),
            _ => Err(self.wrong_type(key, "a non-negative integer")),
        }
    }

    pub fn req_usize(&self, key: &str, hint: &str) -> Result<usize> {
        self.usize(key)?.ok_or_else(|| self.missing(key, hint))
    }

    /// A required count that must be at least one (layers, heads, sizes).
    pub fn positive(&self, key: &str, hint: &str) -> Result<usize> {
        let n = self.req_usize(key, hint)?;
        self.check_positive(key, n)
    }

    pub fn check_positive(&self, key: &str, n: usize) -> Result<usize> {
        if n == 0 {
            return Err(self.bad_value(key, 0, "a positive integer"));
        }
        Ok(n)
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.usize(key)?.unwrap_or(default))
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_f64().map(Some).ok_or_else(|| self.wrong_type(key, "a number"))
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.f64(key)?.unwrap_or(default))
    }

    pub fn req_f64(&self, key: &str, hint: &str) -> Result<f64> {
        self.f64(key)?.ok_or_else(|| self.missing(key, hint))
    }

    /// A strictly positive finite number (epsilons, scales, theta).
    pub fn positive_f64(&self, key: &str, value: f64) -> Result<f64> {
        if value.is_finite() && value > 0.0 {
            Ok(value)
        } else {
            Err(self.bad_value(key, value, "a positive number"))
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        v.as_bool().ok_or_else(|| self.wrong_type(key, "true or false"))
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_str().map(Some).ok_or_else(|| self.wrong_type(key, "a string"))
    }

    pub fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_object().map(Some).ok_or_else(|| self.wrong_type(key, "an object"))
    }

    pub fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let items = v.as_array().ok_or_else(|| self.wrong_type(key, "a list of integers"))?;
        items
            .iter()
            .map(|item| {
                item.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| self.bad_value(key, show(item), "a list of non-negative integers"))
            })
            .collect()
    }

    /// A size spelled two ways (HF `attribute_map`): either may be given; both must agree.
    pub fn aliased_usize(&self, key: &str, alias: &str) -> Result<Option<usize>> {
        match (self.usize(key)?, self.usize(alias)?) {
            (Some(a), Some(b)) if a != b => Err(self
                .contradiction(format!("`{}` = {a} and its alias `{}` = {b} disagree; keep one of them", key, alias))),
            (a, b) => Ok(a.or(b)),
        }
    }

    /// Like [`aliased_usize`](Self::aliased_usize) but required; names the preferred key.
    pub fn req_aliased_usize(&self, key: &str, alias: &str, hint: &str) -> Result<usize> {
        self.aliased_usize(key, alias)?.ok_or_else(|| self.missing(key, format!("{hint}; `{alias}` is accepted too")))
    }
}
