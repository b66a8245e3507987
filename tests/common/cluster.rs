//! A TigerBeetle cluster of several development replicas on loopback, each
//! replica's output in its own log; every replica is killed on drop.

use std::fs;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use super::{free_port, listens_on, repl, tool, wait_unlocked};

pub struct Cluster {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    children: Vec<Option<std::process::Child>>,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        Cluster {
            ports: (0..n).map(|_| free_port()).collect(),
            dir: tempfile::tempdir().unwrap(),
            children: (0..n).map(|_| None).collect(),
        }
    }

    /// Starts a cluster on the `n` data files `0_0.tigerbeetle` … in `from`
    /// (moved into the cluster's own directory).
    pub fn adopt(from: &Path, n: usize) -> Cluster {
        let mut c = Cluster::new(n);
        for i in 0..n {
            fs::rename(from.join(format!("0_{i}.tigerbeetle")), c.file(i)).unwrap();
        }
        c.start_all();
        c
    }

    /// Formats and starts a cluster of `n` replicas (cluster id 0).
    pub fn start(n: usize) -> Cluster {
        let mut c = Cluster::new(n);
        for i in 0..n {
            let out = std::process::Command::new(tool("tigerbeetle"))
                .args([
                    "format",
                    "--cluster=0",
                    &format!("--replica={i}"),
                    &format!("--replica-count={n}"),
                    "--development",
                ])
                .arg(c.file(i))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        c.start_all();
        c
    }

    /// Starts every replica; on new ports, all of them, when another process took one.
    fn start_all(&mut self) {
        for _ in 0..3 {
            let started = (0..self.ports.len()).try_for_each(|i| self.try_start_replica(i));
            match started {
                Ok(()) => return,
                Err(e) if e.contains("AddressInUse") => {
                    for i in 0..self.ports.len() {
                        self.stop_replica(i);
                    }
                    self.ports = self.ports.iter().map(|_| free_port()).collect();
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the cluster's ports kept being taken by other processes")
    }

    pub fn addresses(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("0_{i}.tigerbeetle"))
    }

    pub fn start_replica(&mut self, i: usize) {
        self.try_start_replica(i).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts replica `i` and waits until it listens on its port; Err with its log if it
    /// exits first or is not up within 60 s.
    fn try_start_replica(&mut self, i: usize) -> Result<(), String> {
        let path = self.dir.path().join(format!("replica{i}.log"));
        let log = fs::File::create(&path).unwrap();
        let child = std::process::Command::new(tool("tigerbeetle"))
            .arg("start")
            .arg(format!("--addresses={}", self.addresses()))
            .arg("--development")
            .arg(self.file(i))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        let child = self.children[i].insert(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !listens_on(pid, self.ports[i]) {
            let exited = child.try_wait().unwrap().is_some();
            if exited || std::time::Instant::now() > deadline {
                let log =
                    String::from_utf8_lossy(&fs::read(&path).unwrap_or_default()).into_owned();
                let how = if exited {
                    "exited"
                } else {
                    "is not up after 60 s"
                };
                return Err(format!("replica {i} {how}; {}:\n{log}", path.display()));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(())
    }

    /// SIGTERM, then waits until the data file is free.
    pub fn stop_replica(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            if child.try_wait().unwrap().is_none() {
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
            child.wait().unwrap();
            wait_unlocked(&self.file(i), std::time::Duration::from_secs(10)).unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Accounts 1 to 4 on ledger 700, which [`balances`] reads.
pub const FOUR_ACCOUNTS: &str =
    "create_accounts id=1 code=10 ledger=700, id=2 code=10 ledger=700, id=3 code=10 ledger=700, id=4 code=10 ledger=700;";

/// Every account's (debits pending, debits posted, credits pending, credits posted).
pub type Balances = BTreeMap<String, [String; 4]>;

/// Accounts 1 to 4's [`Balances`] in the cluster at `address`.
pub fn balances(address: &str) -> Balances {
    let text = repl(address, "lookup_accounts id=1, id=2, id=3, id=4;");
    serde_json::Deserializer::from_str(&text)
        .into_iter::<serde_json::Value>()
        .map(|v| {
            let v = v.unwrap();
            let f = |k: &str| v[k].as_str().unwrap().to_string();
            (
                f("id"),
                [
                    f("debits_pending"),
                    f("debits_posted"),
                    f("credits_pending"),
                    f("credits_posted"),
                ],
            )
        })
        .collect()
}
