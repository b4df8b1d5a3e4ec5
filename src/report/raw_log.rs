//! The raw log of a run, results/raw_output/<model>_<mconf>_<deploy>_<unix>.log: a header
//! naming the build, GPU and deployment, then the table's lines as they are printed.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{now_secs, table, Meta};

pub struct RawLog {
    file: File,
    pub path: PathBuf,
}

impl RawLog {
    pub fn create(results_dir: &Path, meta: &Meta) -> anyhow::Result<Self> {
        let dir = results_dir.join("raw_output");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}_{}_{}_{}.log", meta.model, meta.mconf, meta.deploy, now_secs()));
        let mut file = File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(
            file,
            "# fwdbench {} on {} ({}), model {} {}, deploy {}",
            meta.rev, meta.gpu, meta.backend, meta.model, meta.mconf, meta.deploy
        )?;
        writeln!(file, "{}", table::HEADER)?;
        Ok(RawLog { file, path })
    }

    /// Appends a line and flushes it, so a crash later loses nothing written.
    pub fn line(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.file, "{line}")?;
        self.file.flush()?;
        Ok(())
    }
}
