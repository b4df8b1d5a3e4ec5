//! The kernels' A/B switches: `FWDBENCH_*` environment variables, read when a plan is bound,
//! that run a variant other than the measured default (docs/perf.md records each one's
//! same-call A/B). Each kernel module parses its own; this table names them all with the
//! values they take, so that a run can say which it ran under (the kernel CSV's `knobs`
//! column, `fwdbench info`) and refuse a value no kernel reads: a misspelled knob would
//! otherwise run the default and label it as the variant.

/// The values a knob takes.
#[derive(Debug, Clone, Copy)]
pub enum Values {
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// An integer in this closed range.
    Int(i64, i64),
}

impl Values {
    fn accepts(&self, v: &str) -> bool {
        match self {
            Values::OneOf(list) => list.contains(&v),
            Values::Int(lo, hi) => v.parse::<i64>().is_ok_and(|n| (*lo..=*hi).contains(&n)),
        }
    }
    /// The accepted values, for messages and `fwdbench info`.
    pub fn describe(&self) -> String {
        match self {
            Values::OneOf(list) => list.join(", "),
            Values::Int(lo, hi) => format!("an integer {lo}..={hi}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Knob {
    pub name: &'static str,
    pub values: Values,
    /// What a non-default value selects (the module that reads it documents the rest).
    pub what: &'static str,
}

const fn knob(name: &'static str, values: Values, what: &'static str) -> Knob {
    Knob { name, values, what }
}
use Values::{Int, OneOf};

/// Every kernel knob, by module.
pub const KNOBS: &[Knob] = &[
    knob("FWDBENCH_FA3_GRID", OneOf(&["tiles", "persistent"]), "fa3 prefill: one CTA per tile, or the persistent grid"),
    knob("FWDBENCH_FA3_LONG", OneOf(&["0", "1"]), "fa3 prefill: 0 drops the long-sequence schedule"),
    knob("FWDBENCH_FA3_D256", OneOf(&["nopp"]), "fa3 prefill d256: no pingpong"),
    knob("FWDBENCH_DECODE_BOX", OneOf(&["old"]), "GQA decode: v4's per-warp 16-key boxes"),
    knob("FWDBENCH_DECODE_HEADS", OneOf(&["1", "2", "4"]), "GQA decode: K heads per CTA (cap)"),
    knob(
        "FWDBENCH_DECODE_COMBINE",
        OneOf(&["fused", "kernel", "warm"]),
        "GQA decode: splits merged in their last CTA (fused), or the combine's code fetched early (warm)",
    ),
    knob("FWDBENCH_DECODE_KEYS", OneOf(&["16", "32", "64"]), "GQA decode: keys per v5 stage"),
    knob("FWDBENCH_DECODE_SPLITS", Int(1, 128), "GQA decode: the split count"),
    knob("FWDBENCH_DECODE_LOAD", OneOf(&["tma", "async"]), "GQA decode: v5's stages by TMA boxes, not v6's cp.async"),
    knob("FWDBENCH_DECODE_ENTRY", OneOf(&["v6"]), "GQA decode: v6 launches on the entry compiled for v6 alone"),
    knob("FWDBENCH_MLA_PAIR", OneOf(&["0", "1"]), "MLA decode: 0 keeps two splits on the combine kernel"),
    knob("FWDBENCH_MLA_KEYS", OneOf(&["0", "1"]), "MLA decode: 0 keeps <= 16 heads on the 64-row kernel"),
    knob("FWDBENCH_MLA_L2_PREFETCH", Int(0, 8), "MLA decode (64-row): tiles prefetched into L2"),
    knob("FWDBENCH_MLA_QREG", OneOf(&["0", "1"]), "MLA decode (64-row): Q's register chunks off / on"),
    knob("FWDBENCH_MLA_SCHED", OneOf(&["pv", "after", "release"]), "MLA decode (64-row): the tile schedule"),
    knob(
        "FWDBENCH_MOE_ALIGN",
        OneOf(&["v1", "v2"]),
        "MoE: the align in one CTA per expert (v1) or over warp chunks (v2)",
    ),
    knob("FWDBENCH_MOE_PAIRS", OneOf(&["0", "1", "auto"]), "bf16 MoE: CTA pairs off / on / the default rule"),
    knob("FWDBENCH_MOE_PREFETCH", Int(0, 64), "bf16 MoE: L2 prefetch distance in K-tiles"),
    knob("FWDBENCH_MOE_A_HINT", OneOf(&["0", "1"]), "bf16 MoE: 0 drops the A boxes' evict-last hint"),
    knob("FWDBENCH_MOE_FP8_PAIRS", OneOf(&["0", "1", "m"]), "FP8 MoE: CTA pairs off / all / along M"),
    knob("FWDBENCH_MOE_FP8_ORDER", OneOf(&["0", "1"]), "FP8 MoE: 1 takes consumer turns"),
    knob("FWDBENCH_MOE_FP8_SMEM_SCALES", OneOf(&["0", "1"]), "FP8 MoE: 0 keeps the scales in registers"),
];

/// `FWDBENCH_*` variables that are not kernel knobs: the multi-process launch, NVTX ranges,
/// the build's and the tests' switches, the scripts' binary path.
const OTHER_VARS: &[&str] = &[
    "FWDBENCH_RANK",
    "FWDBENCH_WORLD",
    "FWDBENCH_LOCAL_RANK",
    "FWDBENCH_MASTER",
    "FWDBENCH_RENDEZVOUS_TIMEOUT_S",
    "FWDBENCH_NVTX",
    "FWDBENCH_NVTX_LIB",
    "FWDBENCH_BIN",
    "FWDBENCH_GIT_REV",
    "FWDBENCH_SKIP_KERNELS",
    "FWDBENCH_PYREF",
    "FWDBENCH_TEST_COMPILE",
    "FWDBENCH_RDZV_TEST_ADDR",
    "FWDBENCH_RDZV_TEST_RANK",
    "FWDBENCH_RDZV_TEST_WORLD",
];

fn find(name: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| k.name == name)
}

/// The knobs among `vars`, `(name, value)` sorted by name.
pub fn set_in(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut set: Vec<_> = vars.into_iter().filter(|(k, _)| find(k).is_some()).collect();
    set.sort();
    set
}

/// The knobs this process runs under, as `NAME=value;NAME=value` (empty: the defaults).
pub fn active_label() -> String {
    set_in(std::env::vars()).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
}

/// What is wrong with the `FWDBENCH_*` variables among `vars`: notes for names no part of
/// fwdbench reads (with the nearest knob when it looks like a typo), errors for knob values
/// the knob does not take.
pub fn problems(vars: impl IntoIterator<Item = (String, String)>) -> (Vec<String>, Vec<String>) {
    let (mut notes, mut errors) = (Vec::new(), Vec::new());
    for (name, value) in vars {
        if !name.starts_with("FWDBENCH_") || OTHER_VARS.contains(&name.as_str()) {
            continue;
        }
        match find(&name) {
            Some(k) if !k.values.accepts(&value) => errors.push(format!(
                "{name}={value}: not a value this knob takes ({}); unset it for the default",
                k.values.describe()
            )),
            Some(_) => {}
            None => {
                let near = super::did_you_mean(&name, KNOBS.iter().map(|k| k.name));
                let hint = near.map(|n| format!(" (did you mean {n}?)")).unwrap_or_default();
                notes.push(format!(
                    "{name} is set but no fwdbench kernel reads it{hint}; `fwdbench info` lists the knobs"
                ));
            }
        }
    }
    notes.sort();
    errors.sort();
    (notes, errors)
}

/// Checks this process's environment: prints the notes (and which knobs are set, since what
/// runs then is not the default), fails on the first bad value.
pub fn check_env() -> anyhow::Result<()> {
    let (notes, errors) = problems(std::env::vars());
    notes.iter().for_each(|n| eprintln!("note: {n}"));
    let active = active_label();
    if errors.is_empty() && !active.is_empty() {
        eprintln!("note: kernel knobs set ({active}): the kernels measured are those variants, not the defaults");
    }
    match errors.first() {
        Some(e) => anyhow::bail!("{e}"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::string_pairs as vars;

    #[test]
    fn names_are_unique_and_prefixed() {
        for (i, k) in KNOBS.iter().enumerate() {
            assert!(k.name.starts_with("FWDBENCH_"), "{}", k.name);
            assert!(KNOBS[i + 1..].iter().all(|o| o.name != k.name), "{} twice", k.name);
            assert!(!OTHER_VARS.contains(&k.name));
        }
    }

    #[test]
    fn set_knobs_are_listed_sorted() {
        let v = vars(&[
            ("PATH", "/bin"),
            ("FWDBENCH_MLA_KEYS", "0"),
            ("FWDBENCH_DECODE_LOAD", "tma"),
            ("FWDBENCH_RANK", "1"),
        ]);
        assert_eq!(set_in(v), vars(&[("FWDBENCH_DECODE_LOAD", "tma"), ("FWDBENCH_MLA_KEYS", "0")]));
    }

    #[test]
    fn bad_values_are_errors_and_unknown_names_notes() {
        let (notes, errors) = problems(vars(&[
            ("FWDBENCH_DECODE_LOAD", "tmaa"),
            ("FWDBENCH_DECODE_SPLITS", "129"),
            ("FWDBENCH_MLA_L2_PREFETCH", "2"),
            ("FWDBENCH_DECODE_LAOD", "tma"),
            ("FWDBENCH_WORLD", "8"),
            ("HOME", "/root"),
        ]));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("FWDBENCH_DECODE_LOAD=tmaa") && errors[0].contains("tma, async"));
        assert!(errors[1].starts_with("FWDBENCH_DECODE_SPLITS=129") && errors[1].contains("1..=128"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("did you mean FWDBENCH_DECODE_LOAD?"), "{}", notes[0]);
        assert_eq!(problems(vars(&[("FWDBENCH_MOE_FP8_PAIRS", "m")])), (vec![], vec![]));
    }
}
