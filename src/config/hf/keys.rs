//! Typed access to the keys of one JSON object, with errors that name the file and key.
//!
//! HF writes `null` for "not set" (`n_inner`, `q_lora_rank`, `rope_scaling`), so a null
//! value reads the same as an absent key everywhere.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::ConfigError;

/// The largest value any size key may take; layer counts have their own, smaller bound.
/// Far beyond every published model, small enough that products of a few sizes cannot
/// overflow and that a typo (an extra digit) is caught here instead of in an allocation.
pub(crate) const MAX_SIZE: usize = 1 << 24;
pub(crate) const MAX_LAYERS: usize = 1024;

fn size_limit(key: &str) -> usize {
    match key {
        "num_hidden_layers" | "n_layer" => MAX_LAYERS,
        _ => MAX_SIZE,
    }
}

/// What a parse asked for and where values came from: every key a parser looked up
/// (present or not, so "did you mean" can compare against them), the keys `--set` wrote,
/// and the warnings found on the way.
#[derive(Debug, Default)]
pub(crate) struct KeyLog {
    asked: RefCell<BTreeSet<String>>,
    pub overridden: BTreeSet<String>,
    pub warnings: RefCell<Vec<String>>,
}

impl KeyLog {
    pub fn with_overrides(overridden: impl IntoIterator<Item = String>) -> Self {
        // A dotted override (`rope_scaling.factor`) also marks its top-level object.
        let mut set = BTreeSet::new();
        for key in overridden {
            set.insert(key.split('.').next().unwrap_or(&key).to_string());
            set.insert(key);
        }
        KeyLog { overridden: set, ..Default::default() }
    }
    pub fn asked(&self) -> BTreeSet<String> {
        self.asked.borrow().clone()
    }
    pub fn warn(&self, text: String) {
        self.warnings.borrow_mut().push(text);
    }
}

pub(crate) type Result<T> = std::result::Result<T, ConfigError>;

#[derive(Clone, Copy)]
pub(crate) struct Keys<'a> {
    map: &'a Map<String, Value>,
    pub file: &'a str,
    pub log: &'a KeyLog,
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
    pub fn new(map: &'a Map<String, Value>, file: &'a str, log: &'a KeyLog) -> Self {
        Keys { map, file, log }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.log.asked.borrow_mut().insert(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Present in the file, even as null (where null itself carries meaning).
    pub fn contains_key(&self, key: &str) -> bool {
        self.log.asked.borrow_mut().insert(key.to_string());
        self.map.contains_key(key)
    }

    /// Keys this family's configs carry that it deliberately does not use (HF writes them,
    /// e.g. `intermediate_size` of an all-MoE model): not unknown, so never warned about.
    pub fn known_unused(&self, keys: &[&str]) {
        self.log.asked.borrow_mut().extend(keys.iter().map(|k| k.to_string()));
    }

    /// Where `key`'s value came from: the file, or `--set` over the file.
    pub fn source(&self, key: &str) -> String {
        let top = key.split('.').next().unwrap_or(key);
        if self.log.overridden.contains(top) {
            format!("{} with --set {key}", self.file)
        } else {
            self.file.to_string()
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn wrong_type(&self, key: &str, expected: &'static str) -> ConfigError {
        let found = self.get(key).map_or("null", kind);
        ConfigError::WrongType { file: self.source(key), key: key.to_string(), expected, found }
    }

    pub fn bad_value(&self, key: &str, value: impl ToString, expected: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            file: self.source(key),
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    pub fn missing(&self, key: &str, hint: impl Into<String>) -> ConfigError {
        ConfigError::Missing { file: self.source(key), key: key.to_string(), hint: hint.into() }
    }

    pub fn contradiction(&self, detail: impl Into<String>) -> ConfigError {
        ConfigError::Contradiction { file: self.file.to_string(), detail: detail.into() }
    }

    pub fn unsupported(&self, key: &str, value: impl ToString, detail: impl Into<String>) -> ConfigError {
        ConfigError::Unsupported {
            file: self.source(key),
            key: key.to_string(),
            value: value.to_string(),
            detail: detail.into(),
        }
    }

    pub fn usize(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let limit = size_limit(key);
        // Some exporters write integral sizes as floats (4096.0); accept those.
        let n = match (v.as_u64(), v.as_f64()) {
            (Some(n), _) => n,
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < 1e18 => f as u64,
            // A number that is negative, fractional or beyond u64 (2^64 parses as a float):
            // show it, so the user sees which digit to fix.
            (None, Some(_)) => {
                return Err(self.bad_value(key, show(v), format!("a whole number from 0 to {limit}")));
            }
            _ => return Err(self.wrong_type(key, "a non-negative integer")),
        };
        if n > limit as u64 {
            return Err(self.bad_value(key, n, format!("at most {limit}; no model fwdbench can plan is that large")));
        }
        Ok(Some(n as usize))
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
