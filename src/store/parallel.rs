//! Reading one large object as parallel ranged requests, delivered in order.
//!
//! One stream from an object store runs at a fraction of what the store and the
//! network can give; restic, rclone and the AWS CLI all read large objects as
//! several ranges at once. [`ParallelReader`] asks for `concurrency` parts of
//! `part_size` bytes at a time, each on a thread of its own, and hands the bytes
//! on in order. Workers never run more than `concurrency` parts ahead of the
//! part being read, so memory stays near `part_size × (concurrency + 1)`
//! whatever the object's size. A part that comes back short or fails ends the
//! stream with that error (each part's own reader resumes a broken body first);
//! what the bytes must hash to is checked above, as for any read.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use anyhow::Result;

/// Opens bytes `start..end` of the object.
pub type OpenRange = dyn Fn(u64, u64) -> Result<Box<dyn Read + Send>> + Send + Sync;

/// The part the consumer reads, and whether it went away.
struct Window {
    reading: u64,
    closed: bool,
}

struct Shared {
    window: Mutex<Window>,
    moved: Condvar,
    next: AtomicU64,
}

pub struct ParallelReader {
    rx: Option<Receiver<(u64, io::Result<Vec<u8>>)>>,
    ready: BTreeMap<u64, io::Result<Vec<u8>>>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    parts: u64,
    /// The part being read, and where in it.
    index: u64,
    cur: Vec<u8>,
    pos: usize,
    failed: bool,
}

impl ParallelReader {
    /// Reads `size` bytes through `open`, `part_size` at a time, with
    /// `concurrency` requests in flight.
    pub fn new(
        size: u64,
        part_size: u64,
        concurrency: usize,
        open: Arc<OpenRange>,
    ) -> io::Result<Self> {
        let part_size = part_size.max(1);
        let parts = size.div_ceil(part_size);
        let concurrency = concurrency.clamp(1, 64);
        let shared = Arc::new(Shared {
            window: Mutex::new(Window {
                reading: 0,
                closed: false,
            }),
            moved: Condvar::new(),
            next: AtomicU64::new(0),
        });
        let (tx, rx) = sync_channel(concurrency);
        let mut workers = Vec::new();
        for _ in 0..concurrency.min(parts as usize) {
            let (tx, shared, open) = (tx.clone(), shared.clone(), open.clone());
            let worker = move || loop {
                let i = shared.next.fetch_add(1, Ordering::SeqCst);
                if i >= parts {
                    return;
                }
                {
                    let mut w = shared.window.lock().unwrap_or_else(|p| p.into_inner());
                    while !w.closed && i >= w.reading + concurrency as u64 {
                        w = shared.moved.wait(w).unwrap_or_else(|p| p.into_inner());
                    }
                    if w.closed {
                        return;
                    }
                }
                let start = i * part_size;
                let end = (start + part_size).min(size);
                let got = fetch(&*open, start, end);
                let stop = got.is_err();
                if tx.send((i, got)).is_err() || stop {
                    return;
                }
            };
            workers.push(
                std::thread::Builder::new()
                    .name("bkp-get".into())
                    .spawn(worker)?,
            );
        }
        Ok(ParallelReader {
            rx: Some(rx),
            ready: BTreeMap::new(),
            shared,
            workers,
            parts,
            index: 0,
            cur: Vec::new(),
            pos: 0,
            failed: false,
        })
    }

    /// Waits for part `self.index`. A later part's failure waits its turn:
    /// every part before it is delivered first (their workers go on).
    fn next_part(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(p) = self.ready.remove(&self.index) {
                return p;
            }
            let got = self.rx.as_ref().and_then(|rx| rx.recv().ok());
            match got {
                Some((i, got)) => {
                    self.ready.insert(i, got);
                }
                None => {
                    return Err(io::Error::other(
                        "the parallel download stopped before the end of the object",
                    ))
                }
            }
        }
    }
}

/// Reads bytes `start..end` whole.
fn fetch(open: &OpenRange, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let want = (end - start) as usize;
    let mut buf = Vec::with_capacity(want);
    open(start, end)
        .map_err(crate::exit::to_io)?
        .take(want as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() != want {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "bytes {start}..{end} of the object came back as {} bytes: the object is not the size it was",
                buf.len()
            ),
        ));
    }
    Ok(buf)
}

impl Read for ParallelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("an earlier read of this object failed"));
        }
        while self.pos == self.cur.len() {
            if self.index >= self.parts || out.is_empty() {
                return Ok(0);
            }
            match self.next_part() {
                Ok(p) => {
                    self.cur = p;
                    self.pos = 0;
                }
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
            self.index += 1;
            let mut w = self.shared.window.lock().unwrap_or_else(|p| p.into_inner());
            w.reading = self.index;
            self.shared.moved.notify_all();
        }
        let n = (self.cur.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ParallelReader {
    fn drop(&mut self) {
        {
            let mut w = self.shared.window.lock().unwrap_or_else(|p| p.into_inner());
            w.closed = true;
            self.shared.moved.notify_all();
        }
        self.rx.take();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn object(n: usize) -> Arc<Vec<u8>> {
        Arc::new((0..n).map(|i| (i * 31 % 253) as u8).collect())
    }

    fn opener(data: Arc<Vec<u8>>) -> Arc<OpenRange> {
        Arc::new(move |a, b| {
            let part = data[a as usize..b as usize].to_vec();
            Ok(Box::new(io::Cursor::new(part)) as Box<dyn Read + Send>)
        })
    }

    #[test]
    fn parts_arrive_in_order_whatever_their_number_and_size() {
        for (size, part, conc) in [
            (0, 10, 4),
            (1, 10, 4),
            (10, 10, 4),
            (95, 10, 4),
            (100_003, 1000, 3),
            (5000, 7, 64),
        ] {
            let data = object(size);
            let mut r = ParallelReader::new(size as u64, part, conc, opener(data.clone())).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert!(got == *data, "size {size}, part {part}");
        }
    }

    #[test]
    fn a_short_or_failed_part_ends_the_stream_with_an_error() {
        let data = object(10_000);
        let short: Arc<OpenRange> = {
            let data = data.clone();
            Arc::new(move |a, b| {
                let end = if a == 3000 { b - 1 } else { b };
                Ok(
                    Box::new(io::Cursor::new(data[a as usize..end as usize].to_vec()))
                        as Box<dyn Read + Send>,
                )
            })
        };
        let mut r = ParallelReader::new(10_000, 1000, 4, short).unwrap();
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("not the size it was"), "{e}");

        let failing: Arc<OpenRange> = Arc::new(|a, _| {
            if a >= 5000 {
                anyhow::bail!("service unavailable")
            }
            Ok(Box::new(io::Cursor::new(vec![0u8; 1000])) as Box<dyn Read + Send>)
        });
        let mut r = ParallelReader::new(10_000, 1000, 2, failing).unwrap();
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).unwrap_err();
        assert!(e.to_string().contains("service unavailable"), "{e}");
        assert_eq!(got.len(), 5000, "every part before the failure, in order");
    }

    #[test]
    fn workers_stay_within_the_window_and_stop_when_dropped() {
        let opened = Arc::new(AtomicUsize::new(0));
        let data = object(1000);
        let counting: Arc<OpenRange> = {
            let opened = opened.clone();
            Arc::new(move |a, b| {
                opened.fetch_add(1, Ordering::SeqCst);
                Ok(
                    Box::new(io::Cursor::new(data[a as usize..b as usize].to_vec()))
                        as Box<dyn Read + Send>,
                )
            })
        };
        let mut r = ParallelReader::new(1000, 10, 3, counting).unwrap();
        let mut first = [0u8; 5];
        r.read_exact(&mut first).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // Part 0 is being read: parts 1..=3 may wait, nothing further.
        let n = opened.load(Ordering::SeqCst);
        assert!((1..=4).contains(&n), "{n} parts opened");
        drop(r);
        assert!(opened.load(Ordering::SeqCst) <= 4);
    }
}
