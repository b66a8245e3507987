#!/usr/bin/env bash
# Proof of exact point-in-time recovery on a cluster as production runs it. Not a
# test (it takes minutes): run it after changing capture, replay or restore.
#
# Starts a TigerBeetle cluster of REPLICAS replicas (default 3; 6 as production may
# run) on loopback and a load generator that makes accounts, plain transfers,
# pending transfers with and without timeouts (some expire), posts, voids, linked
# chains, balancing and closing transfers, recording every account's balances at
# many instants (read twice around the instant: an instant whose reads differ, an
# expiry in between, is not used). Mid-load the primary (replica 0) is killed with
# SIGKILL and restarted two batches later. `bkp logs` runs every few batches; for a
# cluster, `bkp snapshot --from-log` builds a base three times during the load (for
# one replica, `bkp snapshot` copies the stopped replica's file twice). Then it
# restores `--at` INSTANTS of those instants (default 12, spread from before the
# first base to the end), in turn as REPLICAS data files (`--replicas`, from the
# newest base before the instant), into a running cluster started from that base
# (`restore BASE`, then `--into`), and as one data file; starts what was restored and
# compares every balance exactly.
#
# Prints the figures (the base used, the events replayed and the time of each
# restore) and writes them to bench/pitr-proof-results.md (or RESULTS; results of
# REPLICAS=3, 6 and 1 runs are kept side by side). Exit 1 on any mismatch, leaving
# the results file as it was.
#
#   bench/pitr-proof.sh
#   REPLICAS=6 bench/pitr-proof.sh
#   REPLICAS=1 BATCHES=60 INSTANTS=15 bench/pitr-proof.sh
#   RESULTS=/tmp/smoke.md BATCHES=6 INSTANTS=2 bench/pitr-proof.sh
set -euo pipefail
# shellcheck source=../scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$BKP_ROOT"
scripts/bootstrap >/dev/null
exec "$BKP_TOOLS/venv/bin/python" - "$BKP_TOOLS/bin/tigerbeetle" "$CARGO_TARGET_DIR/debug/bkp" \
  "${RESULTS:-$BKP_ROOT/bench/pitr-proof-results.md}" <<'PY'
import fcntl, json, os, random, shutil, signal, socket, subprocess, sys, tempfile, time

tb, bkp, results = sys.argv[1:4]
replicas = int(os.environ.get("REPLICAS", "3"))
batches = int(os.environ.get("BATCHES", "40"))
instants = int(os.environ.get("INSTANTS", "12"))
rng = random.Random(int(os.environ.get("SEED", "7")))
work = tempfile.mkdtemp(prefix="bkp-pitr-proof.")
procs = []
# SIGTERM (timeout, CI) ends the run through `finally`, which stops the replicas.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cluster:
    """REPLICAS replicas of cluster 0 in development mode, on fresh ports."""

    def __init__(self, files, fresh):
        self.files = files
        self.ports = [free_port() for _ in files]
        self.addresses = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        self.children = [None] * len(files)
        for i, f in enumerate(files):
            if fresh:
                subprocess.run([tb, "format", "--cluster=0", f"--replica={i}",
                                f"--replica-count={len(files)}", "--development", f],
                               check=True, capture_output=True)
        for i in range(len(files)):
            self.start(i)

    def start(self, i):
        log = open(self.files[i] + ".log", "ab")
        self.children[i] = subprocess.Popen(
            [tb, "start", f"--addresses={self.addresses}", "--development", self.files[i]],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        procs.append(self.children[i])
        deadline = time.time() + 60
        while True:
            if self.children[i].poll() is not None:
                sys.exit(f"replica {i} on {self.files[i]} exited {self.children[i].returncode}: "
                         f"see {self.files[i]}.log")
            try:
                socket.create_connection(("127.0.0.1", self.ports[i]), 1).close()
                return
            except OSError:
                if time.time() > deadline:
                    sys.exit(f"replica {i} on {self.files[i]} did not come up")
                time.sleep(0.1)

    def stop(self, i):
        c = self.children[i]
        if c and c.poll() is None:
            c.send_signal(signal.SIGTERM)
            c.wait()
        self.children[i] = None
        # The data file's lock can outlive the process briefly.
        with open(self.files[i], "rb") as f:
            for _ in range(100):
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(f, fcntl.LOCK_UN)
                    break
                except OSError:
                    time.sleep(0.05)

    def stop_all(self):
        for i in range(len(self.files)):
            self.stop(i)


def repl(addresses, command):
    out = subprocess.run([tb, "repl", "--cluster=0", f"--addresses={addresses}",
                          f"--command={command}"], capture_output=True, text=True)
    # The repl exits 1 when a request's events failed or found nothing;
    # anything else is a repl that did not get through.
    if out.returncode not in (0, 1):
        sys.exit(f"tigerbeetle repl {command[:60]}... exited {out.returncode}: {out.stderr}")
    return out.stdout


ACCOUNTS = list(range(1, 9))
CLOSING = 8  # closed and reopened by pending closing transfers


def balances(addresses):
    text = repl(addresses, "lookup_accounts " + ", ".join(f"id={a}" for a in ACCOUNTS) + ";")
    dec, pos, out = json.JSONDecoder(), 0, {}
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        v, pos = dec.raw_decode(text, pos)
        # Replayed accounts carry the imported flag besides the source's.
        out[v["id"]] = (v["debits_pending"], v["debits_posted"], v["credits_pending"],
                        v["credits_posted"], "closed" in str(v.get("flags", "")))
    # Every account, or the comparison would pass on two empty answers.
    if sorted(int(a) for a in out) != ACCOUNTS:
        sys.exit(f"the cluster at {addresses} answered for accounts {sorted(out)}, not {ACCOUNTS}")
    return out


def run_bkp(cfg, *args):
    p = subprocess.run([bkp, "--config", cfg, *args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bkp {' '.join(args)} exited {p.returncode}:\n{p.stderr}")
    return p


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


try:
    files = [os.path.join(work, f"0_{i}.tigerbeetle") for i in range(replicas)]
    src = Cluster(files, fresh=True)
    snap_replica = 1 if replicas > 1 else 0
    with open(os.path.join(work, "key"), "wb") as f:
        f.write(os.urandom(32))
    os.chmod(os.path.join(work, "key"), 0o600)  # bkp refuses a key file others may read
    cfg = os.path.join(work, "bkp.toml")
    with open(cfg, "w") as f:
        f.write(f'''work_dir = "work"
[store]
type = "local"
path = "store"
[encryption]
key_file = "key"
[tigerbeetle]
data_file = "{files[snap_replica]}"
addresses = "{src.addresses}"
binary = "{tb}"
replica_args = ["--development"]
''')
    repl(src.addresses, "create_accounts " + ", ".join(
        f"id={a} code=10 ledger=700" for a in ACCOUNTS) + ";")
    next_id = 1000
    open_pendings = []  # pending transfers without a timeout, not yet resolved
    closing_pending = None
    recorded = []  # (instant, balances, bases taken before it)
    snapshots = 0
    crash_at = batches // 2 + 1
    base_points = ((batches // 4, batches // 2, 3 * batches // 4) if replicas > 1
                   else (batches // 3, 2 * batches // 3))
    counts = {"plain": 0, "pending": 0, "timeout": 0, "post": 0, "void": 0, "linked": 0,
              "balancing": 0, "closing": 0}
    began = time.time()
    for b in range(batches):
        ts = []

        def t(dr, cr, amount, flags="", extra=""):
            global next_id
            next_id += 1
            ts.append(f"id={next_id} debit_account_id={dr} credit_account_id={cr} "
                      f"amount={amount} ledger=700 code=10" + (f" flags={flags}" if flags else "")
                      + (f" {extra}" if extra else ""))
            return next_id

        def resolve(flags, pending, amount=0):
            global next_id
            next_id += 1
            ts.append(f"id={next_id} pending_id={pending} amount={amount} ledger=700 code=10 "
                      f"flags={flags}")

        pair = lambda: rng.sample(ACCOUNTS[:-1], 2)
        for _ in range(3):
            t(*pair(), rng.randint(1, 500)); counts["plain"] += 1
        dr, cr = pair()
        amount = rng.randint(1, 300)
        open_pendings.append((t(dr, cr, amount, "pending"), amount)); counts["pending"] += 1
        dr, cr = pair()
        t(dr, cr, rng.randint(1, 300), "pending", f"timeout={rng.choice([1, 2, 3, 3600])}")
        counts["timeout"] += 1
        if len(open_pendings) > 1:
            pid, amount = open_pendings.pop(0)
            if rng.random() < 0.5:
                # Part of the amount, at times.
                resolve("post_pending_transfer", pid, rng.choice([amount, max(1, amount // 2)]))
                counts["post"] += 1
            else:
                resolve("void_pending_transfer", pid); counts["void"] += 1
        dr, cr = pair()
        t(dr, cr, rng.randint(1, 50), "linked")
        t(cr, dr, rng.randint(1, 50)); counts["linked"] += 2
        dr, cr = pair()
        t(dr, cr, 10**6, "balancing_debit"); counts["balancing"] += 1
        if closing_pending is None and b % 7 == 3:
            closing_pending = t(CLOSING, 1, 0, "closing_debit|pending"); counts["closing"] += 1
        elif closing_pending is not None and b % 7 == 5:
            resolve("void_pending_transfer", closing_pending)
            closing_pending = None; counts["void"] += 1
        if b == crash_at:
            # The primary of view 0 dies mid-load; the others carry on.
            src.children[0].send_signal(signal.SIGKILL)
            src.children[0].wait()
            src.children[0] = None
            if replicas == 1:
                src.start(0)
        if b == crash_at + 2 and src.children[0] is None:
            src.start(0)
        repl(src.addresses, "create_transfers " + ", ".join(ts) + ";")
        before = balances(src.addresses)
        instant = time.time()
        time.sleep(0.01)
        after = balances(src.addresses)
        if before == after:
            recorded.append((instant, before, snapshots))
        if b % 5 == 4:
            run_bkp(cfg, "logs")
        if b in base_points:
            if replicas > 1:
                run_bkp(cfg, "logs")
                run_bkp(cfg, "snapshot", "--from-log")
            else:
                src.stop(snap_replica)
                run_bkp(cfg, "snapshot")
                src.start(snap_replica)
            snapshots += 1
    run_bkp(cfg, "logs")
    load_secs = time.time() - began

    # Instants spread over the whole run, the first and the last among them.
    step = max(1, (len(recorded) - 1) / max(1, instants - 1))
    chosen = sorted({min(len(recorded) - 1, round(i * step)) for i in range(instants)})
    src.stop_all()
    rows, failures = [], 0
    modes = ["cluster", "into", "file"] if replicas > 1 else ["file"]
    for n, k in enumerate(chosen):
        instant, want, snaps = recorded[k]
        mode = modes[n % len(modes)]
        at = rfc3339(instant)
        target = os.path.join(work, f"restored-{n}")
        t0 = time.time()
        if mode == "into":
            plan = json.loads(run_bkp(cfg, "--json", "restore", "--at", at, "--target", target,
                                      "--replicas", str(replicas), "--dry-run").stdout)
            base = plan["backup"]
            if base:
                run_bkp(cfg, "restore", base, "--target", target)
                restored = Cluster([os.path.join(target, f"0_{i}.tigerbeetle")
                                    for i in range(replicas)], fresh=False)
            else:
                os.makedirs(target)
                restored = Cluster([os.path.join(target, f"0_{i}.tigerbeetle")
                                    for i in range(replicas)], fresh=True)
            report = json.loads(run_bkp(cfg, "--json", "restore", "--at", at, "--into",
                                        restored.addresses).stdout)
            report["id"] = base
            secs = time.time() - t0
        else:
            args = ["--json", "restore", "--at", at, "--target", target]
            if mode == "cluster":
                args += ["--replicas", str(replicas)]
            report = json.loads(run_bkp(cfg, *args).stdout)
            secs = time.time() - t0
            restored = Cluster([os.path.join(target, f["name"]) for f in report["files"]],
                               fresh=False)
        got = balances(restored.addresses)
        restored.stop_all()
        shutil.rmtree(target)
        ok = got == want
        failures += not ok
        shape = {"cluster": f"{replicas} data files", "into": f"--into {replicas} replicas",
                 "file": "1 data file"}[mode]
        r = report["replayed"]
        events = r["accounts"] + r["transfers"] + r["expiries"]
        rows.append(f"| {at} | {snaps} | {(report.get('id') or 'the log')[:13]} | {shape} "
                    f"| {r['segments']} | {events} | {r['expiries']} "
                    f"| {secs:.1f} | {'exact' if ok else 'MISMATCH'} |")
        print(rows[-1], flush=True)
        if not ok:
            for a in sorted(set(want) | set(got)):
                if want.get(a) != got.get(a):
                    print(f"  account {a}: source {want.get(a)}, restored {got.get(a)}")
    head = (f"### {replicas} replica(s), {batches} batches of load in {load_secs:.0f} s, "
            f"{len(recorded)} instants recorded, {len(chosen)} restored; "
            f"{time.strftime('%Y-%m-%d', time.gmtime())}\n\n"
            f"Load: {', '.join(f'{v} {k}' for k, v in counts.items())} transfers "
            f"(pending with timeouts of 1, 2, 3 s or 1 h; closing ones voided later); "
            f"replica 0 killed (SIGKILL) before batch {crash_at} and restarted two batches "
            f"later.\n\n"
            "| --at | bases before | from | restored as | segments | events replayed | expiries "
            "| seconds | balances |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(head)
    if failures:
        sys.exit(f"{failures} restore(s) did not match: {results} is left as it was")
    old = open(results).read() if os.path.exists(results) else ""
    keep = [s for s in old.split("### ")[1:] if not s.startswith(f"{replicas} replica(s)")]
    with open(results, "w") as f:
        f.write("# Point-in-time recovery proof (bench/pitr-proof.sh)\n\n"
                + "".join("### " + s.rstrip("\n") + "\n\n" for s in keep) + head)
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
    if not os.environ.get("KEEP"):
        shutil.rmtree(work, ignore_errors=True)
PY
