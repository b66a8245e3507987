//! Progress reporting as a small trait, so stages stay free of terminal concerns.
//! The terminal implementation lives at the CLI edge (`crate::ui`).
//!
//! Every byte stream of a run passes through a progress stage, which is also
//! where an interrupt (SIGINT, SIGTERM, SIGHUP) stops it: the next read or write
//! fails (see `crate::interrupt`).

use std::io::{self, Read, Write};
use std::sync::Arc;

pub trait Progress: Send + Sync {
    /// A new phase (`"uploading"`, `"restoring"`) with its size when known.
    fn begin(&self, label: &str, total: Option<u64>);
    fn advance(&self, bytes: u64);
    fn end(&self);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}

/// Counts bytes read through it into a [`Progress`].
pub struct ProgressReader<R> {
    pub inner: R,
    progress: Arc<dyn Progress>,
}

impl<R> ProgressReader<R> {
    pub fn new(inner: R, progress: Arc<dyn Progress>) -> Self {
        ProgressReader { inner, progress }
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::interrupt::check()?;
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Counts bytes written through it into a [`Progress`].
pub struct ProgressWriter<W> {
    inner: W,
    progress: Arc<dyn Progress>,
}

impl<W: Write> ProgressWriter<W> {
    pub fn new(inner: W, progress: Arc<dyn Progress>) -> Self {
        ProgressWriter { inner, progress }
    }
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::interrupt::check()?;
        let n = self.inner.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
