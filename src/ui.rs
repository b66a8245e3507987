//! What people and machines see: log lines on stderr, results on stdout, and
//! progress bars only when stderr is a terminal.
//!
//! Log lines are plain (`bkp: …`, no colours or control characters) so that cron
//! mail and the journal stay readable. Secrets never reach this module: callers
//! pass ids and paths, never key material.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::stages::progress::{Progress, Silent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub level: Level,
    pub json: bool,
}

impl Ui {
    /// A step worth telling an operator (hidden by `--quiet`).
    pub fn info(&self, msg: &str) {
        if self.level != Level::Quiet {
            eprintln!("bkp: {msg}");
        }
    }

    /// Detail for `--verbose`.
    pub fn detail(&self, msg: &str) {
        if self.level == Level::Verbose {
            eprintln!("bkp: {msg}");
        }
    }

    /// Always shown.
    pub fn warn(&self, msg: &str) {
        eprintln!("bkp: warning: {msg}");
    }

    /// A progress reporter: a bar on a terminal, nothing otherwise.
    pub fn progress(&self) -> Arc<dyn Progress> {
        if self.level != Level::Quiet && std::io::stderr().is_terminal() {
            Arc::new(Bar::default())
        } else {
            Arc::new(Silent)
        }
    }
}

/// Human-readable bytes (`1.06 GiB`).
pub fn size(bytes: u64) -> String {
    humansize::format_size(bytes, humansize::BINARY)
}

/// Throughput in MB/s, for people.
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!("{:.1} MB/s", bytes as f64 / secs / 1e6)
}

#[derive(Default)]
struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bar {
    fn begin(&self, label: &str, total: Option<u64>) {
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        let style = ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }
    fn advance(&self, bytes: u64) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(b) = slot.as_ref() {
                b.inc(bytes);
            }
        }
    }
    fn end(&self) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(b) = slot.take() {
                b.finish_and_clear();
            }
        }
    }
}

/// Writes one line of results to stdout. Returns the error (rather than
/// panicking like `println!`); a reader that went away (`bkp list | head`) gives
/// [`StdoutClosed`], which `main` treats as a quiet end.
pub fn out(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(line.as_bytes())
        .and_then(|_| o.write_all(b"\n"))
        .and_then(|_| o.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::io::Error::new(e.kind(), StdoutClosed)
            } else {
                e
            }
        })
}

/// Standard output was closed by its reader.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Whether `err` is only that standard output was closed.
pub fn is_stdout_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}
