//! Runs a writer stage, or a reader stage, on its own thread.
//!
//! `ThreadWriter` hands buffers to a thread that owns the inner stage, through a
//! bounded channel, so the producer (say, tar) and the consumer (say, compression)
//! work in parallel while memory stays bounded by `depth × buffer size`. When the
//! inner stage fails, the next write returns its error; `finish` joins the thread and
//! returns whatever the thread's finishing function produced.
//!
//! The finishing function runs only after an explicit `finish`. A writer dropped
//! unfinished (an error upstream) makes the thread drop its stage unfinished, so an
//! incomplete stream is discarded (uploads aborted), never completed.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};

const BUF: usize = 1 << 20;
const DEPTH: usize = 4;

enum Msg {
    Data(Vec<u8>),
    End,
}

pub struct ThreadWriter<T: Send + 'static> {
    tx: Option<SyncSender<Msg>>,
    /// Buffers the stage is done with, to fill again: a long stream reuses
    /// the same few buffers instead of allocating one per MiB (which costs
    /// page faults, and lets the allocator's footprint grow with the stream).
    spare: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    handle: Option<JoinHandle<Result<T>>>,
    name: &'static str,
}

impl<T: Send + 'static> ThreadWriter<T> {
    /// Moves `inner` to a new thread named `name`. After the producer finishes,
    /// `finish_inner` runs on that thread and its result is returned by `finish`.
    pub fn spawn<W, F>(name: &'static str, mut inner: W, finish_inner: F) -> io::Result<Self>
    where
        W: Write + Send + 'static,
        F: FnOnce(W) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = sync_channel::<Msg>(DEPTH);
        let (spare_tx, spare) = sync_channel::<Vec<u8>>(DEPTH + 1);
        let handle = std::thread::Builder::new()
            .name(format!("bkp-{name}"))
            .spawn(move || -> Result<T> {
                for msg in rx {
                    match msg {
                        Msg::Data(mut buf) => {
                            inner.write_all(&buf)?;
                            buf.clear();
                            let _ = spare_tx.try_send(buf);
                        }
                        Msg::End => return finish_inner(inner),
                    }
                }
                Err(anyhow!(
                    "the {name} stage was abandoned before the end of its input"
                ))
            })?;
        Ok(ThreadWriter {
            tx: Some(tx),
            spare,
            buf: Vec::with_capacity(BUF),
            handle: Some(handle),
            name,
        })
    }

    fn join(&mut self) -> Result<T> {
        self.tx.take();
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow!("the {} stage panicked", self.name))?,
            None => Err(anyhow!("the {} stage already stopped", self.name)),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUF));
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self.tx.as_ref().map(|tx| tx.send(Msg::Data(full)).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The stage stopped: its result says why.
        match self.join() {
            Err(e) => Err(crate::exit::to_io(e)),
            Ok(_) => Err(io::Error::other(format!(
                "the {} stage stopped early",
                self.name
            ))),
        }
    }

    /// Sends what is buffered, ends the stream and returns the stage's result.
    pub fn finish(mut self) -> Result<T> {
        self.send()?;
        if let Some(tx) = &self.tx {
            // A failed send means the stage stopped; join reports why.
            let _ = tx.send(Msg::End);
        }
        self.join()
    }
}

impl<T: Send + 'static> Write for ThreadWriter<T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (BUF - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BUF {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl<T: Send + 'static> Drop for ThreadWriter<T> {
    fn drop(&mut self) {
        // Unfinished (error path): close the channel without `End` and wait, so the
        // stage is dropped unfinished and its own cleanup (aborting an upload,
        // removing a partial file) has run before we return.
        if self.handle.is_some() {
            let _ = self.join();
        }
    }
}

/// What a [`ThreadReader`]'s thread hands over.
enum Piece {
    Data(Vec<u8>),
    Failed(io::Error),
    End,
}

/// A reader stage on its own thread: the thread reads `inner` ahead, one buffer
/// at a time, while the consumer works on what came before (a download and its
/// decryption and decompression on one core, unpacking on another). At most
/// `DEPTH` buffers wait. The end of the stream is an explicit message, so a
/// stage that died is an error, never a short stream taken for a whole one.
pub struct ThreadReader {
    rx: Option<Receiver<Piece>>,
    /// Buffers read out, back to the thread to fill again.
    spare: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
    handle: Option<JoinHandle<()>>,
    name: &'static str,
}

impl ThreadReader {
    /// Moves `inner` to a new thread named `name` that reads it ahead.
    pub fn spawn(name: &'static str, mut inner: Box<dyn Read + Send>) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Piece>(DEPTH);
        let (spare, spares) = sync_channel::<Vec<u8>>(DEPTH + 1);
        let handle = std::thread::Builder::new()
            .name(format!("bkp-{name}"))
            .spawn(move || loop {
                let mut buf = spares.try_recv().unwrap_or_default();
                buf.resize(BUF, 0);
                let mut n = 0;
                let failed = loop {
                    match inner.read(&mut buf[n..]) {
                        Ok(0) => break None,
                        Ok(k) => {
                            n += k;
                            if n == BUF {
                                break None;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Some(e),
                    }
                };
                let end = n < BUF;
                if n > 0 {
                    buf.truncate(n);
                    if tx.send(Piece::Data(buf)).is_err() {
                        return;
                    }
                }
                if let Some(e) = failed {
                    let _ = tx.send(Piece::Failed(e));
                    return;
                }
                if end {
                    let _ = tx.send(Piece::End);
                    return;
                }
            })?;
        Ok(ThreadReader {
            rx: Some(rx),
            spare,
            cur: Vec::new(),
            pos: 0,
            ended: false,
            handle: Some(handle),
            name,
        })
    }
}

impl Read for ThreadReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.ended || out.is_empty() {
                return Ok(0);
            }
            let piece = match &self.rx {
                Some(rx) => rx.recv().ok(),
                None => None,
            };
            match piece {
                Some(Piece::Data(buf)) => {
                    let done = std::mem::replace(&mut self.cur, buf);
                    if done.capacity() > 0 {
                        let _ = self.spare.try_send(done);
                    }
                    self.pos = 0;
                }
                Some(Piece::End) => self.ended = true,
                Some(Piece::Failed(e)) => {
                    self.rx = None;
                    return Err(e);
                }
                None => {
                    self.rx = None;
                    return Err(io::Error::other(format!(
                        "the {} stage stopped before the end of its input",
                        self.name
                    )));
                }
            }
        }
        let n = (self.cur.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ThreadReader {
    fn drop(&mut self) {
        // Closing the channel stops the thread at its next buffer; waiting for
        // it means whatever it held (a download, a shared digest) is free
        // again when this returns.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_unfinished_never_runs_the_finisher() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut w = ThreadWriter::spawn("test", Vec::new(), move |v: Vec<u8>| {
            tx.send(v.len()).unwrap();
            Ok(())
        })
        .unwrap();
        w.write_all(b"partial").unwrap();
        w.flush().unwrap();
        drop(w);
        assert!(rx.recv().is_err(), "finisher ran on an abandoned stream");
    }

    #[test]
    fn passes_every_byte_and_returns_the_result() {
        let mut w = ThreadWriter::spawn("test", Vec::new(), |v: Vec<u8>| Ok(v)).unwrap();
        let data: Vec<u8> = (0..3 * BUF + 17).map(|i| (i % 256) as u8).collect();
        for chunk in data.chunks(100_003) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.finish().unwrap(), data);
    }

    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn inner_failure_surfaces_on_write_or_finish() {
        let mut w = ThreadWriter::spawn("test", Failing, |_| Ok(())).unwrap();
        let mut err = None;
        for _ in 0..(DEPTH + 3) {
            if let Err(e) = w.write_all(&vec![0u8; BUF]) {
                err = Some(e.to_string());
                break;
            }
        }
        let msg = match err {
            Some(m) => m,
            None => format!("{:#}", w.finish().unwrap_err()),
        };
        assert!(msg.contains("disk on fire"), "{msg}");
    }

    #[test]
    fn a_thread_reader_passes_every_byte_then_ends() {
        let data: Vec<u8> = (0..3 * BUF + 17).map(|i| (i % 251) as u8).collect();
        let mut r = ThreadReader::spawn("test", Box::new(io::Cursor::new(data.clone()))).unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
    }

    struct Breaks(usize);
    impl Read for Breaks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("connection reset"));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_thread_reader_passes_on_a_failure_after_the_bytes_before_it() {
        let mut r = ThreadReader::spawn("test", Box::new(Breaks(BUF + 5))).unwrap();
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).unwrap_err();
        assert!(e.to_string().contains("connection reset"), "{e}");
        assert_eq!(got.len(), BUF + 5);
    }

    /// An endless source counting its reads.
    struct Endless(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            buf.fill(7);
            Ok(buf.len())
        }
    }

    #[test]
    fn dropping_a_thread_reader_early_stops_its_thread() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let reads = std::sync::Arc::new(AtomicUsize::new(0));
        let r = ThreadReader::spawn("test", Box::new(Endless(reads.clone()))).unwrap();
        // The drop must return (not wait for an end that never comes) ...
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(r);
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("dropping the reader did not return");
        // ... with its thread gone: the source is read no more.
        let after = reads.load(Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(reads.load(Ordering::SeqCst), after);
    }
}
