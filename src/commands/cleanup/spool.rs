//! Records a run makes by the hundred thousand and reads back once, in
//! order (the deletions of a first cleanup of years of history), kept in
//! an unnamed file of this process's own rather than in memory.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::workdir::ROOM;

/// Records of type `T`, one JSON line each, in a file made in `dir` at the
/// first push (none for a run that pushes none). Nobody else can open it:
/// it has no name, and goes with the process.
pub(super) struct Spool<T> {
    dir: PathBuf,
    file: Option<BufWriter<File>>,
    of: PhantomData<T>,
}

impl<T: Serialize + DeserializeOwned + 'static> Spool<T> {
    pub fn new(dir: &Path) -> Spool<T> {
        Spool {
            dir: dir.to_path_buf(),
            file: None,
            of: PhantomData,
        }
    }

    pub fn push(&mut self, record: &T) -> Result<()> {
        let w = match &mut self.file {
            Some(w) => w,
            None => {
                let f = tempfile::tempfile_in(&self.dir).with_context(|| {
                    format!(
                        "failed to make a spool file in {} ({ROOM})",
                        self.dir.display()
                    )
                })?;
                self.file.insert(BufWriter::with_capacity(1 << 16, f))
            }
        };
        let written = serde_json::to_writer(&mut *w, record)
            .map_err(anyhow::Error::new)
            .and_then(|()| Ok(w.write_all(b"\n")?));
        written.with_context(|| {
            format!(
                "failed to write to a spool file in {} ({ROOM})",
                self.dir.display()
            )
        })
    }

    /// Every record pushed, in order.
    pub fn read(self) -> Result<Box<dyn Iterator<Item = Result<T>>>> {
        let Some(w) = self.file else {
            return Ok(Box::new(std::iter::empty()));
        };
        let dir = self.dir;
        let failed = move || format!("failed to read back a spool file in {}", dir.display());
        let mut f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(failed.clone())?;
        f.seek(SeekFrom::Start(0)).with_context(failed.clone())?;
        let lines = BufReader::with_capacity(1 << 16, f).lines();
        Ok(Box::new(lines.map(move |line| {
            let line = line.with_context(failed.clone())?;
            serde_json::from_str(&line).with_context(failed.clone())
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order_and_none_makes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let none: Spool<(u32, String)> = Spool::new(dir.path());
        assert_eq!(none.read().unwrap().count(), 0);
        let mut spool = Spool::new(dir.path());
        let records: Vec<(u32, String)> = (0..1000).map(|i| (i, format!("key/{i}\nx"))).collect();
        for r in &records {
            spool.push(r).unwrap();
        }
        // Unnamed: nothing shows in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let back: Vec<(u32, String)> = spool.read().unwrap().map(Result::unwrap).collect();
        assert_eq!(back, records);
        let mut missing = Spool::<u32>::new(&dir.path().join("gone"));
        let e = missing.push(&1).unwrap_err();
        assert!(
            format!("{e:#}").contains("failed to make a spool file in")
                && format!("{e:#}").contains(ROOM),
            "{e:#}"
        );
    }
}
