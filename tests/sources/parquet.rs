//! The Parquet cold tier for the conformance suite: a directory replicated whole and
//! again after files changed, appeared and went, compared file by file.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{tree, Source};

/// A Parquet cold tier (a directory), replicated whole and then again after files
/// changed, appeared and went.
#[derive(Default)]
pub struct ParquetTier {
    round: u32,
}

impl ParquetTier {
    fn cold(dir: &Path) -> PathBuf {
        dir.join("cold")
    }

    /// A small Parquet file at `cold/rel` whose rows depend on `seed`.
    fn file(dir: &Path, rel: &str, seed: u64) {
        let path = Self::cold(dir).join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let c = duckdb::Connection::open_in_memory().unwrap();
        c.execute_batch(&format!(
            "COPY (SELECT {seed} AS seed, i, md5((i * {seed})::VARCHAR) AS s FROM range(2000) t(i)) TO '{}' (FORMAT parquet)",
            path.display()
        ))
        .unwrap();
    }
}

impl Source for ParquetTier {
    fn kind(&self) -> &'static str {
        "parquet"
    }

    fn populate(&mut self, dir: &Path) {
        for (i, rel) in [
            "day=01/a.parquet",
            "day=01/b.parquet",
            "day=02/c.parquet",
            "top.parquet",
        ]
        .iter()
        .enumerate()
        {
            Self::file(dir, rel, i as u64 + 1);
        }
    }

    fn config_section(&self, _dir: &Path) -> String {
        "[replicate]\nsource = \"cold\"\n".into()
    }

    fn back_up(&self) -> Vec<String> {
        vec!["replicate".into()]
    }

    fn incremental(&mut self, dir: &Path) -> Option<Vec<String>> {
        self.round += 1;
        let n = self.round;
        Self::file(dir, "day=01/a.parquet", 100 + u64::from(n));
        Self::file(dir, &format!("day=03/new-{n}.parquet"), 200 + u64::from(n));
        let gone = ["day=02/c.parquet", "day=01/b.parquet", "top.parquet"];
        if let Some(rel) = gone.get(n as usize - 1) {
            fs::remove_file(Self::cold(dir).join(rel)).unwrap();
        }
        Some(self.back_up())
    }

    /// Every file, byte for byte (a replication holds files: a directory emptied
    /// by a deletion is not part of it).
    fn compare(&self, dir: &Path, target: &str) -> Result<(), String> {
        let files = |root: &Path| {
            let mut t = tree(root);
            t.retain(|_, digest| digest != "dir");
            t
        };
        let (source, restored) = (files(&Self::cold(dir)), files(Path::new(target)));
        (source == restored)
            .then_some(())
            .ok_or_else(|| format!("source {source:#?}\nrestored {restored:#?}"))
    }
}
