//! What people and machines see: log lines on stderr, results on stdout, and
//! progress bars only when stderr is a terminal.
//!
//! Log lines are plain (`bkp: …`, no colours or control characters) so that cron
//! mail and the journal stay readable. Messages quote what the store holds (a
//! key planted there may hold `ESC[31m`, a carriage return, a bell): every line
//! written to stderr or stdout is passed through [`plain`], which shows each
//! word with a control character in it as the seals show untrusted text
//! ([`printable`]), so that nothing bkp prints can recolour, retitle or
//! rewrite a terminal. When stderr is the systemd journal
//! (`JOURNAL_STREAM` names its device and inode), each line starts with its
//! syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` detail), which
//! journald strips and stores, so `journalctl -p warning` shows bkp's warnings
//! and errors. Secrets never reach this module: callers pass ids and paths,
//! never key material.
//!
//! Debug output (`-vv`, `-vvv` or `BKP_LOG`) includes the `tracing` events of
//! the libraries bkp uses (the S3 client's requests, retries and timings), as
//! plain `<7>`-priority lines through the same writer. The S3 client redacts
//! credentials in its own events, even at trace level (the secret key, the
//! session token, the signature headers): `tests/operator.rs` holds it to that,
//! against the real server, so that an SDK update that stops redacting fails
//! there before it ships.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::stages::progress::{Progress, Silent};

/// How much bkp itself says, from `-q` to `-vv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Quiet,
    Normal,
    /// `-v`: each step.
    Verbose,
    /// `-vv` (or `BKP_LOG` asking for bkp's debug output): each step and the
    /// detail behind it.
    Debug,
}

/// Whether errors carry the whole chain of a library's detail (`-v` and up).
static ERROR_DETAIL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set once as a run starts, from its verbosity.
pub fn show_error_detail(on: bool) {
    ERROR_DETAIL.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether an error should carry a library's whole detail, not one line.
pub fn error_detail() -> bool {
    ERROR_DETAIL.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub level: Level,
    pub json: bool,
    /// Progress bars allowed (`--no-progress` turns them off even on a terminal).
    pub bars: bool,
}

impl Ui {
    /// A step worth telling an operator (hidden by `--quiet`, and by `--json`
    /// unless `-v`: the JSON document says it).
    pub fn info(&self, msg: &str) {
        if self.level != Level::Quiet && (!self.json || self.level >= Level::Verbose) {
            log(Priority::Info, &format!("bkp: {msg}"));
        }
    }

    /// Detail for `--verbose`.
    pub fn detail(&self, msg: &str) {
        if self.level >= Level::Verbose {
            log(Priority::Debug, &format!("bkp: {msg}"));
        }
    }

    /// Runs `f`, then says with `-v` how long it took: "`what` in 1.2s".
    pub fn timed<T>(&self, what: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
        let clock = std::time::Instant::now();
        let out = f();
        self.detail(&format!(
            "{} in {:.1}s",
            what(),
            clock.elapsed().as_secs_f64()
        ));
        out
    }

    /// Debug output, for `-vv`.
    pub fn debug(&self, msg: &str) {
        if self.level >= Level::Debug {
            log(Priority::Debug, &format!("bkp: debug: {msg}"));
        }
    }

    /// Always shown.
    pub fn warn(&self, msg: &str) {
        log(Priority::Warning, &format!("bkp: warning: {msg}"));
    }

    /// A progress reporter: a bar on a terminal, nothing otherwise.
    pub fn progress(&self) -> Arc<dyn Progress> {
        if self.bars && self.level != Level::Quiet && std::io::stderr().is_terminal() {
            Arc::new(Bar::default())
        } else {
            Arc::new(Silent)
        }
    }
}

/// A log line's syslog priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Error = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

/// Whether this run prints JSON (`--json`): its warnings go to stderr as JSON
/// lines too.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The warnings this run gave, for the JSON it prints (see [`warnings`]).
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Set once as a run starts, from `--json`.
pub fn json_lines(on: bool) {
    JSON.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The most warnings a JSON document lists: one per object of a bucket
/// someone filled with junk would otherwise grow without bound. The rest are
/// counted (see [`warnings`]); each is on stderr all the same.
const WARNINGS_MAX: usize = 100;

/// Warnings given beyond [`WARNINGS_MAX`].
static WARNINGS_OMITTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The warnings this run gave so far under `--json`, without the `bkp:
/// warning: ` prefix: the `warnings` member of the JSON a run prints (its
/// result, or its error). Past the first 100, one last entry says how many
/// more were given.
pub fn warnings() -> Vec<String> {
    let mut w = WARNINGS.lock().map(|w| w.clone()).unwrap_or_default();
    let omitted = WARNINGS_OMITTED.load(std::sync::atomic::Ordering::Relaxed);
    if omitted > 0 {
        w.push(format!("{omitted} more warnings (on stderr)"));
    }
    w
}

/// Writes one log line to stderr, with its priority prefix when stderr is the
/// journal. Every line of a multi-line message gets the prefix. A warning is
/// kept for [`warnings`]; under `--json` it is written as one JSON object
/// (`bkp.warning/1`), as the error is, so that stderr holds JSON only.
pub fn log(priority: Priority, text: &str) {
    use std::io::Write;
    let mut owned = None;
    if priority == Priority::Warning && JSON.load(std::sync::atomic::Ordering::Relaxed) {
        let message = text.strip_prefix("bkp: warning: ").unwrap_or(text);
        if let Ok(mut w) = WARNINGS.lock() {
            if w.len() < WARNINGS_MAX {
                w.push(message.to_string());
            } else {
                WARNINGS_OMITTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        owned =
            Some(serde_json::json!({"schema": "bkp.warning/1", "message": message}).to_string());
    }
    let text = owned.as_deref().unwrap_or(text);
    let mut e = std::io::stderr().lock();
    if stderr_is_journal() {
        for line in text.lines() {
            let _ = writeln!(e, "<{}>{}", priority as u8, plain(line));
        }
    } else {
        let _ = writeln!(e, "{}", plain_text(text));
    }
}

/// `text` with each of its lines [`plain`].
fn plain_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(|c: char| c.is_control() && c != '\t' && c != '\n') {
        return std::borrow::Cow::Borrowed(text);
    }
    let lines: Vec<_> = text.split('\n').map(plain).collect();
    std::borrow::Cow::Owned(lines.join("\n"))
}

/// `s` cut to something safe to print: untrusted text from the store.
pub fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// `line` with every space-separated word that holds a control character
/// (other than a tab) shown through [`printable`]; the line itself when it
/// holds none, as nearly every line does.
pub fn plain(line: &str) -> std::borrow::Cow<'_, str> {
    let control = |c: char| c.is_control() && c != '\t';
    if !line.contains(control) {
        return std::borrow::Cow::Borrowed(line);
    }
    let words: Vec<std::borrow::Cow<'_, str>> = line
        .split(' ')
        .map(|w| {
            if w.contains(control) {
                printable(w).into()
            } else {
                w.into()
            }
        })
        .collect();
    std::borrow::Cow::Owned(words.join(" "))
}

/// Whether stderr is the systemd journal's stream: `JOURNAL_STREAM` is
/// `DEVICE:INODE` of the socket systemd connected it to.
fn stderr_is_journal() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| {
        let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        journal_matches(v.to_str().unwrap_or(""), &std::io::stderr())
    })
}

fn journal_matches(value: &str, stream: &impl std::os::fd::AsFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = stream.as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The environment variable holding a `RUST_LOG`-style filter for debug
/// output: `debug`, `trace`, `aws_smithy_runtime=trace`, `bkp=debug,warn`.
pub const LOG_ENV: &str = "BKP_LOG";

/// The debug filter of a run: `BKP_LOG` when set (and not empty), else from the
/// number of `-v`: `-vv` debug, `-vvv` trace, fewer none. Refuses a filter that
/// does not parse, naming it.
pub fn log_filter(
    verbose: u8,
    env: Option<&str>,
) -> anyhow::Result<Option<tracing_subscriber::filter::Targets>> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    if let Some(spec) = env.map(str::trim).filter(|s| !s.is_empty()) {
        return spec.parse::<Targets>().map(Some).map_err(|e| {
            crate::exit::coded(
                crate::exit::Code::Config,
                format!(
                    "{LOG_ENV}={spec:?} is not a log filter ({e}); examples: debug, trace, aws_smithy_runtime=trace, bkp=debug,warn"
                ),
            )
        });
    }
    Ok(match verbose {
        0 | 1 => None,
        2 => Some(Targets::new().with_default(LevelFilter::DEBUG)),
        _ => Some(Targets::new().with_default(LevelFilter::TRACE)),
    })
}

/// Whether `filter` asks for bkp's own debug output.
pub fn wants_bkp_debug(filter: &tracing_subscriber::filter::Targets) -> bool {
    tracing_subscriber::filter::LevelFilter::DEBUG
        .into_level()
        .is_some_and(|debug| filter.would_enable("bkp", &debug))
}

/// Sends the `tracing` events that `filter` lets through to stderr, one plain
/// line each, through [`log`]. Once per process; a second call changes nothing.
pub fn init_tracing(filter: tracing_subscriber::filter::Targets) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_target(true)
        .with_writer(|| TracingLine)
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Where the `tracing` formatter writes: it formats each event whole and
/// writes it in one call, which becomes one [`log`] line.
struct TracingLine;

impl std::io::Write for TracingLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let text = text.trim_end();
        if !text.is_empty() {
            log(Priority::Debug, &format!("bkp: {text}"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Human-readable bytes (`1.06 GiB`).
/// `d` for people: `45s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) if secs == 0 => format!("{mins}m"),
        (0, 0, _) => format!("{mins}m {secs}s"),
        (0, _, 0) => format!("{hours}h"),
        (0, _, _) => format!("{hours}h {mins}m"),
        (_, 0, _) => format!("{days}d"),
        _ => format!("{days}d {hours}h"),
    }
}

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
    o.write_all(plain_text(line).as_bytes())
        .and_then(|_| o.write_all(b"\n"))
        .and_then(|_| o.flush())
        .map_err(stdout_error)
}

/// An error writing to stdout, as [`StdoutClosed`] when its reader went away.
pub fn stdout_error(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(e.kind(), StdoutClosed)
    } else {
        e
    }
}

/// [`out`] for callers that return `anyhow::Result`.
pub fn print(line: &str) -> anyhow::Result<()> {
    Ok(out(line)?)
}

/// Prints the JSON document of a run (`--json`) with the run's [`warnings`]
/// added as its `warnings` member; while documents are [held](hold_documents),
/// keeps it to print when they are released.
pub fn document(mut doc: serde_json::Value) -> anyhow::Result<()> {
    if let Ok(mut held) = HELD.lock() {
        if let Some(held) = held.as_mut() {
            held.push(doc);
            return Ok(());
        }
    }
    if let Some(o) = doc.as_object_mut() {
        o.insert("warnings".into(), warnings().into());
    }
    print(&serde_json::to_string_pretty(&doc)?)
}

/// [`document`] for a large document, written as it is rather than built as
/// one JSON value first; `doc` takes the run's warnings (its `warnings`
/// member). Its members must be in the order a JSON object prints them
/// (sorted), so that the output is the same as [`document`]'s.
pub fn document_of<T: serde::Serialize>(doc: impl FnOnce(Vec<String>) -> T) -> anyhow::Result<()> {
    let held = HELD.lock().map(|h| h.is_some()).unwrap_or(false);
    if held {
        // Held back: [`document`] adds the warnings when it is released.
        let mut v = serde_json::to_value(doc(Vec::new()))?;
        if let Some(o) = v.as_object_mut() {
            o.remove("warnings");
        }
        return document(v);
    }
    // Written as it serializes: a year of backups is tens of MiB as text.
    let mut w = PlainLines {
        out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock()),
        line: Vec::new(),
    };
    serde_json::to_writer_pretty(&mut w, &doc(warnings()))
        .map_err(std::io::Error::from)
        .and_then(|_| w.finish())
        .map_err(stdout_error)?;
    Ok(())
}

/// A writer of text that passes each line through [`plain`], as [`out`]
/// does with a whole text, holding one line at a time.
struct PlainLines<W: std::io::Write> {
    out: W,
    line: Vec<u8>,
}

impl<W: std::io::Write> PlainLines<W> {
    fn emit(&mut self) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(&self.line);
        self.out.write_all(plain(&text).as_bytes())?;
        self.line.clear();
        Ok(())
    }

    /// Writes the last line and its newline, and flushes.
    fn finish(mut self) -> std::io::Result<W> {
        self.emit()?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: std::io::Write> std::io::Write for PlainLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..nl]);
            self.emit()?;
            self.out.write_all(b"\n")?;
            rest = &rest[nl + 1..];
        }
        self.line.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The documents a run holds back (see [`hold_documents`]).
static HELD: Mutex<Option<Vec<serde_json::Value>>> = Mutex::new(None);

/// Holds the run's documents back until [`Held::release`]: a run with a step
/// after its engine printed (a restore's ledger record) puts that step's
/// result and warnings in the document. Dropped unreleased, it prints what
/// it held (a document is never lost).
pub fn hold_documents() -> Held {
    if let Ok(mut held) = HELD.lock() {
        held.get_or_insert_with(Vec::new);
    }
    Held(())
}

/// Documents held back by [`hold_documents`].
#[must_use = "release the documents, or they print when this is dropped"]
pub struct Held(());

impl Held {
    /// Prints the held documents, each with the members `add` (when it has
    /// none of that name) and the run's warnings so far.
    pub fn release(self, add: &[(&str, serde_json::Value)]) -> anyhow::Result<()> {
        let docs = take_held();
        for mut doc in docs {
            if let Some(o) = doc.as_object_mut() {
                for (k, v) in add {
                    o.entry(k.to_string()).or_insert_with(|| v.clone());
                }
            }
            document(doc)?;
        }
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for doc in take_held() {
            let _ = document(doc);
        }
    }
}

fn take_held() -> Vec<serde_json::Value> {
    HELD.lock()
        .ok()
        .and_then(|mut h| h.take())
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_document_written_as_it_serializes_is_the_text_out_prints() {
        use std::io::Write;
        let doc = serde_json::json!({
            "backups": [{"host": "a\u{9b}31mb", "id": 1}, {"host": "plain"}],
            "warnings": ["x\u{85}y"],
        });
        let text = serde_json::to_string_pretty(&doc).unwrap();
        let mut w = PlainLines {
            out: Vec::new(),
            line: Vec::new(),
        };
        // In pieces that split lines (and a character) anywhere.
        let bytes = text.as_bytes();
        for piece in bytes.chunks(7) {
            w.write_all(piece).unwrap();
        }
        let out = w.finish().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{}\n", plain_text(&text))
        );
        assert!(!plain_text(&text).contains('\u{9b}'));
    }

    #[test]
    fn control_characters_never_reach_a_line() {
        assert!(matches!(
            plain("bkp: all\twell"),
            std::borrow::Cow::Borrowed(_)
        ));
        let key = "manifests/tigerbeetle/\x1b[31mred\r.json";
        let line = format!("bkp: warning: manifest {key} cannot be read: junk");
        assert_eq!(
            plain(&line),
            "bkp: warning: manifest manifests/tigerbeetle/?[31mred?.json cannot be read: junk"
        );
        let text = format!("first\n{line}\nlast\x07");
        let shown = plain_text(&text);
        assert_eq!(shown.lines().count(), 3);
        assert!(
            !shown.contains(|c: char| c.is_control() && c != '\n'),
            "{shown:?}"
        );
    }

    #[test]
    fn the_log_filter_comes_from_bkp_log_else_from_the_count_of_v() {
        use tracing_subscriber::filter::LevelFilter;
        let debug = LevelFilter::DEBUG.into_level().unwrap();
        let trace = LevelFilter::TRACE.into_level().unwrap();
        assert!(log_filter(0, None).unwrap().is_none());
        assert!(log_filter(1, None).unwrap().is_none());
        assert!(log_filter(1, Some("  ")).unwrap().is_none());
        let vv = log_filter(2, None).unwrap().unwrap();
        assert!(vv.would_enable("aws_smithy_runtime::client", &debug));
        assert!(!vv.would_enable("aws_smithy_runtime::client", &trace));
        assert!(wants_bkp_debug(&vv));
        let vvv = log_filter(3, None).unwrap().unwrap();
        assert!(vvv.would_enable("aws_sigv4", &trace));
        // BKP_LOG wins over the flags, and may leave bkp's own debug lines off.
        let env = log_filter(0, Some("aws_smithy_runtime=trace"))
            .unwrap()
            .unwrap();
        assert!(env.would_enable("aws_smithy_runtime::client", &trace));
        assert!(!env.would_enable("aws_sigv4", &debug));
        assert!(!wants_bkp_debug(&env));
        assert!(wants_bkp_debug(
            &log_filter(0, Some("bkp=debug")).unwrap().unwrap()
        ));
        let bad = log_filter(3, Some("=[")).unwrap_err();
        assert_eq!(crate::exit::exit_code(&bad), crate::exit::CONFIG);
        assert!(format!("{bad:#}").contains("BKP_LOG"));
    }

    #[test]
    fn the_journal_is_recognised_by_device_and_inode() {
        let f = tempfile::tempfile().unwrap();
        let m = f.metadata().unwrap();
        assert!(journal_matches(&format!("{}:{}", m.dev(), m.ino()), &f));
        assert!(!journal_matches(
            &format!("{}:{}", m.dev(), m.ino() + 1),
            &f
        ));
        assert!(!journal_matches("", &f));
        assert!(!journal_matches("12", &f));
        assert!(!journal_matches("a:b", &f));
    }
}
