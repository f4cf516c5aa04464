#!/usr/bin/env python3
"""The paired benchmark of kmsfs (run through scripts/bench.sh, which
installs the peers and builds the binaries first). Not part of CI.

Each comparison runs kmsfs and its peers alternately, one pair after the
other (the order flips every pair, so drift of this VM falls on both
sides), on fresh files per pair (random data, so no dedup is measured by
accident), with the page cache dropped and the filesystems remounted before
every cold read. The ceilings are measured in the same pairs: native tmpfs,
and nullfs (examples/nullfs.rs, a FUSE filesystem with kmsfs's session
settings that discards writes and reads zeros).

Prints min/median/max MB/s of each side, the median of the per-pair ratios,
kmsfs against the ceiling, the daemon's peak RSS, and the goals of the
restore-speed issue; writes the same as JSON (BENCH_JSON, default
target/bench/bench-<time>.json).

Last, the daemon's peak RSS (VmHWM, from a fresh mount each) while it
ingests RSS_MB of random data into an LSU and into a tape pool, and while
it restores each: memory must stay bounded whatever the image's size.

First of all, AES-256-GCM inside kmsfs's crypto module against the
aes-gcm crate it used before (examples/aead_speed.rs).

A cloud LSU (containers in an S3 bucket, a moto server on loopback from
target/moto-venv) against a local LSU of the same store, alternately: the
ingest of a file with cp, and its cold restore (local cache emptied,
remounted). The ratio is cloud/local: what the object store costs.

Environment: SIZE_MB (1024), PAIRS (5), RSS_MB (4096), ONLY (comma list
of: aead, tape, lsu, cloud, dedup, rss; cloud is not in the default), KMSFS,
NULLFS, AEAD (the binaries) and MOTO (moto_server).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

KMSFS = os.environ.get("KMSFS", "target/release/kmsfs")
NULLFS = os.environ.get("NULLFS", "target/release/examples/nullfs")
SIZE_MB = int(os.environ.get("SIZE_MB", "1024"))
PAIRS = int(os.environ.get("PAIRS", "5"))
AEAD = os.environ.get("AEAD", "target/release/examples/aead_speed")
ONLY = set(filter(None, os.environ.get("ONLY", "aead,tape,lsu,dedup,rss").split(",")))
SIZE = SIZE_MB * 1048576
RSS_MB = int(os.environ.get("RSS_MB", "4096"))
MOTO = os.environ.get("MOTO", "target/moto-venv/bin/moto_server")
PASS = "bench-pass"

# What the restore-speed issue asks, as (comparison, peer): ratio.
GOALS = {
    ("tape write", "gocryptfs"): 6.0,
    ("tape cold read", "gocryptfs"): 1.8,
    ("LSU ingest", "restic"): 5.0,
    ("LSU ingest", "borg"): 3.0,
    ("LSU cold read", "gocryptfs"): 1.5,
}


def run(*args, env=None, quiet=True):
    """Runs a command; fails the benchmark if it fails (with its stderr)."""
    out = subprocess.DEVNULL if quiet else None
    # A file, not a pipe: a daemon that keeps stderr open must not block us.
    with tempfile.TemporaryFile() as err:
        p = subprocess.run(args, stdout=out, stderr=err, env=env)
        if p.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read().decode(errors="replace"))
            sys.exit(f"bench: {' '.join(args)} failed ({p.returncode})")


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def timed(*args, env=None):
    """MB/s of one command that moves SIZE bytes, caches dropped before."""
    drop_caches()
    start = time.monotonic()
    run(*args, env=env)
    return SIZE / 1e6 / (time.monotonic() - start)


def dd_write(src, dst):
    return timed("dd", f"if={src}", f"of={dst}", "bs=1M", "status=none")


def dd_read(path):
    return timed("dd", f"if={path}", "of=/dev/null", "bs=1M", "status=none")


def is_mounted(path):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path for line in f)


def wait_for(cond, what, seconds=30):
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            sys.exit(f"bench: timed out waiting for {what}")
        time.sleep(0.05)


def umount(path):
    if is_mounted(path):
        run("umount", path)


# gocryptfs reads fastest with a 1 MiB window on this machine (median of
# five pairs: 1412 MB/s at 1 MiB, 1025 at 4 MiB); kmsfs and nullfs set
# 4 MiB themselves. Each filesystem is measured at its own best window.
GOCRYPTFS_READAHEAD_KB = int(os.environ.get("GOCRYPTFS_READAHEAD_KB", "1024"))


def raise_readahead(path):
    """The kernel caps a FUSE mount's readahead at 128 KiB unless raised:
    raised for gocryptfs as kmsfs and nullfs raise it for themselves."""
    dev = os.stat(path).st_dev
    with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb", "w") as f:
        f.write(str(GOCRYPTFS_READAHEAD_KB))


class Kmsfs:
    """A store of its own per pair: an ENCR_ pool and a KMS-mode LSU."""

    def __init__(self, work, name):
        self.store = os.path.join(work, name)
        self.mnt = os.path.join(work, name + "-mnt")
        os.makedirs(self.mnt)
        k = lambda *a: run(KMSFS, "--store", self.store, *a)  # noqa: E731
        run(KMSFS, "init", self.store, "--volume-capacity", "64G")
        k("kms", "createkg", "ENCR_Bench")
        k("kms", "createkey", "--key-group", "ENCR_Bench", "--name", "k", "--activate")
        k("kms", "createkg", "KG")
        k("kms", "createkey", "--key-group", "KG", "--name", "root", "--activate")
        k("lsu", "create", "bench", "--kms", "--key-group", "KG")
        self.peak_kb = 0

    def pid(self):
        with open(os.path.join(self.store, "kmsfs.pid")) as f:
            return int(f.read())

    def mount(self):
        run(KMSFS, "mount", self.store, self.mnt)
        self.daemon = self.pid()

    def umount(self):
        """Unmounts, waits for the daemon to end; returns its peak RSS in KiB."""
        with open(f"/proc/{self.daemon}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
        umount(self.mnt)
        wait_for(lambda: not os.path.exists(f"/proc/{self.daemon}"), "kmsfs to exit")
        return hwm

    def remount(self):
        self.umount()
        self.mount()

    def pool(self, name):
        return os.path.join(self.mnt, "pools", "ENCR_Bench", name)

    def lsu(self, name):
        return os.path.join(self.mnt, "msdp", "bench", name)

    def destroy(self):
        if is_mounted(self.mnt):
            self.umount()
        shutil.rmtree(self.store)
        os.rmdir(self.mnt)


class Moto:
    """A moto S3 server on a free loopback port with bucket `bench`,
    stopped by PID."""

    def __init__(self, work):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = open(os.path.join(work, "moto.log"), "w")
        self.proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log, stderr=self.log)
        wait_for(self.answers, "moto to start", seconds=60)
        python = os.path.join(os.path.dirname(MOTO), "python")
        run(python, "tests/s3/s3_admin.py", str(self.port), "mkbucket", "bench")
        self.creds = os.path.join(work, "s3.credentials")
        with open(self.creds, "w") as f:
            f.write("[default]\naws_access_key_id = testing\naws_secret_access_key = testing-secret\n")

    def answers(self):
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def destroy(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


class Gocryptfs:
    def __init__(self, work, name):
        self.cipher = os.path.join(work, name)
        self.mnt = os.path.join(work, name + "-mnt")
        self.passfile = os.path.join(work, "gpass")
        with open(self.passfile, "w") as f:
            f.write(PASS)
        os.makedirs(self.cipher)
        os.makedirs(self.mnt)
        run("gocryptfs", "-q", "-init", "-scryptn", "10", "-passfile", self.passfile, self.cipher)

    def mount(self):
        run("gocryptfs", "-q", "-nosyslog", "-passfile", self.passfile, self.cipher, self.mnt)
        raise_readahead(self.mnt)

    def remount(self):
        umount(self.mnt)
        self.mount()

    def path(self, name):
        return os.path.join(self.mnt, name)

    def destroy(self):
        umount(self.mnt)
        shutil.rmtree(self.cipher)
        os.rmdir(self.mnt)


class Restic:
    def __init__(self, work, name):
        self.env = dict(
            os.environ,
            RESTIC_PASSWORD=PASS,
            RESTIC_REPOSITORY=os.path.join(work, name),
            RESTIC_CACHE_DIR=os.path.join(work, name + "-cache"),
        )
        run("restic", "init", "-q", env=self.env)

    def backup(self, srcdir):
        return timed("restic", "backup", "-q", srcdir, env=self.env)

    def stored(self):
        return du(self.env["RESTIC_REPOSITORY"])

    def destroy(self):
        shutil.rmtree(self.env["RESTIC_REPOSITORY"])
        shutil.rmtree(self.env["RESTIC_CACHE_DIR"], ignore_errors=True)


class Borg:
    def __init__(self, work, name):
        self.repo = os.path.join(work, name)
        self.env = dict(
            os.environ,
            BORG_PASSPHRASE=PASS,
            BORG_BASE_DIR=os.path.join(work, name + "-base"),
        )
        self.n = 0
        run("borg", "init", "-e", "repokey", self.repo, env=self.env)

    def create(self, srcdir):
        self.n += 1
        return timed("borg", "create", f"{self.repo}::a{self.n}", srcdir, env=self.env)

    def stored(self):
        return du(self.repo)

    def destroy(self):
        shutil.rmtree(self.repo)
        shutil.rmtree(self.env["BORG_BASE_DIR"], ignore_errors=True)


class Nullfs:
    def __init__(self, work):
        self.mnt = os.path.join(work, "null-mnt")
        os.makedirs(self.mnt)
        self.proc = subprocess.Popen([NULLFS, self.mnt, str(SIZE)])
        try:
            wait_for(lambda: is_mounted(self.mnt), "nullfs to mount")
        except SystemExit:
            self.proc.kill()
            raise

    def destroy(self):
        umount(self.mnt)
        self.proc.wait(timeout=30)


def du(path):
    return int(subprocess.run(["du", "-sb", path], check=True, capture_output=True, text=True).stdout.split()[0])


def random_file(path, size):
    with open("/dev/urandom", "rb") as r, open(path, "wb") as w:
        left = size
        while left:
            n = min(left, 1 << 22)
            w.write(r.read(n))
            left -= n


def alternate(i, sides):
    """The sides of pair i, rotated by i: A B, then B A, ..."""
    k = i % len(sides)
    return sides[k:] + sides[:k]


class Results:
    def __init__(self):
        self.runs = {}  # comparison -> side -> [MB/s per pair]
        self.peak_kb = {}  # comparison -> max daemon VmHWM

    def add(self, comparison, side, mbps):
        self.runs.setdefault(comparison, {}).setdefault(side, []).append(mbps)

    def peak(self, comparison, kb):
        self.peak_kb[comparison] = max(self.peak_kb.get(comparison, 0), kb)


def pair(i, work, res, null):
    src = os.path.join(work, "src", "data")
    os.makedirs(os.path.dirname(src), exist_ok=True)
    random_file(src, SIZE)
    native = os.path.join(work, "native")
    # Ceilings, in the same pair.
    res.add("ceiling", "tmpfs write", dd_write(src, native))
    res.add("ceiling", "tmpfs read", dd_read(native))
    os.remove(native)
    res.add("ceiling", "nullfs write", dd_write(src, os.path.join(null.mnt, f"w{i}")))
    res.add("ceiling", "nullfs read", dd_read(os.path.join(null.mnt, "zero")))
    os.remove(os.path.join(null.mnt, f"w{i}"))

    k = Kmsfs(work, "kstore")
    g = Gocryptfs(work, "gcipher")
    k.mount()
    os.mkdir(os.path.dirname(k.pool("img")))
    g.mount()
    try:
        if "tape" in ONLY:
            tape_pair(i, src, k, g, res)
        if "lsu" in ONLY:
            lsu_pair(i, work, src, k, g, res)
    finally:
        try:
            k.destroy()
        finally:
            g.destroy()
            os.remove(src)


def tape_pair(i, src, k, g, res):
    for side in alternate(i, ["kmsfs", "gocryptfs"]):
        if side == "kmsfs":
            k.remount()
            res.add("tape write", "kmsfs", dd_write(src, k.pool("img")))
            res.peak("tape write", k.umount())
            k.mount()
        else:
            res.add("tape write", "gocryptfs", dd_write(src, g.path("img")))
    cold_read(i, "tape cold read", src, k, k.pool("img"), g, res)


def cold_read(i, comparison, src, k, path, g, res):
    """kmsfs reading `path`, gocryptfs reading its copy: each remounted."""
    for side in alternate(i, ["kmsfs", "gocryptfs"]):
        if side == "kmsfs":
            k.remount()
            res.add(comparison, "kmsfs", dd_read(path))
            run("cmp", src, path)
            res.peak(comparison, k.umount())
            k.mount()
        else:
            g.remount()
            res.add(comparison, "gocryptfs", dd_read(g.path("img")))


def lsu_pair(i, work, src, k, g, res):
    for side in alternate(i, ["kmsfs", "restic", "borg"]):
        if side == "kmsfs":
            k.remount()
            res.add("LSU ingest", "kmsfs", timed("cp", src, k.lsu("img")))
            res.peak("LSU ingest", k.umount())
            k.mount()
            continue
        # Each peer's repository lives only for its run (tmpfs is memory).
        peer = Restic(work, "restic") if side == "restic" else Borg(work, "borg")
        try:
            go = peer.backup if side == "restic" else peer.create
            res.add("LSU ingest", side, go(os.path.dirname(src)))
        finally:
            peer.destroy()
    if not os.path.exists(g.path("img")):
        run("cp", src, g.path("img"))
    cold_read(i, "LSU cold read", src, k, k.lsu("img"), g, res)


def cloud_pair(i, work, res):
    """A cloud LSU against a local LSU of the same store: ingest with cp,
    then a cold restore of each (the cloud LSU's cache emptied)."""
    src = os.path.join(work, "src", "data")
    os.makedirs(os.path.dirname(src), exist_ok=True)
    random_file(src, SIZE)
    s3 = Moto(work)
    k = Kmsfs(work, "cstore")
    try:
        run(KMSFS, "--store", k.store, "lsu", "create", "cloud", "--kms", "--key-group", "KG",
            "--cloud", "s3://bench/p", "--endpoint", s3.endpoint(), "--credentials-file", s3.creds)
        k.mount()
        local = k.lsu("img")
        cloud = os.path.join(k.mnt, "msdp", "cloud", "img")
        for side in alternate(i, ["cloud", "local"]):
            k.remount()
            mbps = timed("cp", src, cloud if side == "cloud" else local)
            res.add("cloud LSU ingest", "kmsfs" if side == "cloud" else "local LSU", mbps)
            kb = k.umount()
            if side == "cloud":
                res.peak("cloud LSU ingest", kb)
            k.mount()
        for side in alternate(i, ["cloud", "local"]):
            k.umount()
            if side == "cloud":
                cache = os.path.join(k.store, "lsu", "cloud", "containers")
                for name in os.listdir(cache):
                    os.remove(os.path.join(cache, name))
            k.mount()
            path = cloud if side == "cloud" else local
            res.add("cloud LSU cold read", "kmsfs" if side == "cloud" else "local LSU", dd_read(path))
            run("cmp", src, path)
            if side == "cloud":
                res.peak("cloud LSU cold read", k.umount())
                k.mount()
    finally:
        try:
            k.destroy()
        finally:
            s3.destroy()
            os.remove(src)


def dedup(work):
    """Bytes a second version with three 100-byte insertions adds."""
    v1 = os.path.join(work, "v1", "data")
    v2 = os.path.join(work, "v2", "data")
    os.makedirs(os.path.dirname(v1))
    os.makedirs(os.path.dirname(v2))
    random_file(v1, SIZE)
    q = SIZE // 4
    with open(v1, "rb") as a, open(v2, "wb") as b:
        for part in range(4):
            b.write(a.read(q if part < 3 else SIZE - 3 * q))
            if part < 3:
                b.write(os.urandom(100))
    added = {}
    k = Kmsfs(work, "dstore")
    k.mount()
    # The whole store (containers, catalog, keys), as the peers' whole repositories.
    s0 = du(k.store)
    run("cp", v1, k.lsu("v1"))
    s1 = du(k.store)
    run("cp", v2, k.lsu("v2"))
    added["kmsfs"] = (s1 - s0, du(k.store) - s1)
    run("cmp", v2, k.lsu("v2"))
    k.destroy()
    # The peers back up one path twice: what a nightly backup of a changed file does.
    data = os.path.join(work, "bsrc", "data")
    os.makedirs(os.path.dirname(data))
    for name, cls, go in [("restic", Restic, "backup"), ("borg", Borg, "create")]:
        shutil.copyfile(v1, data)
        peer = cls(work, name)
        s0 = peer.stored()
        getattr(peer, go)(os.path.dirname(data))
        s1 = peer.stored()
        shutil.copyfile(v2, data)
        getattr(peer, go)(os.path.dirname(data))
        added[name] = (s1 - s0, peer.stored() - s1)
        peer.destroy()
    return added


def peak_rss(work):
    """VmHWM of the daemon over an RSS_MB ingest and restore, LSU and tape."""
    global SIZE
    size, SIZE = SIZE, RSS_MB * 1048576
    src = os.path.join(work, "rss-src")
    random_file(src, SIZE)
    k = Kmsfs(work, "rstore")
    peaks = {}
    try:
        k.mount()
        os.mkdir(os.path.dirname(k.pool("img")))
        for what, path in [("LSU", k.lsu("img")), ("tape pool", k.pool("img"))]:
            k.remount()
            mbps = timed("cp", src, path)
            peaks[f"{what} ingest"] = (k.umount(), mbps)
            k.mount()
        for what, path in [("LSU", k.lsu("img")), ("tape pool", k.pool("img"))]:
            k.remount()
            mbps = dd_read(path)
            run("cmp", src, path)
            peaks[f"{what} restore"] = (k.umount(), mbps)
            k.mount()
    finally:
        k.destroy()
        os.remove(src)
        SIZE = size
    return peaks


def summary(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def report(res, added, peaks, started):
    rows = []
    ceilings = res.runs.get("ceiling", {})
    ceiling_of = {
        "tape write": "nullfs write",
        "LSU ingest": "nullfs write",
        "tape cold read": "nullfs read",
        "LSU cold read": "nullfs read",
    }
    out = {
        "size_mb": SIZE_MB,
        "pairs": PAIRS,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "started": started,
        "comparisons": {},
        "ceilings": {k: dict(summary(v), runs=v) for k, v in ceilings.items()},
        "dedup_bytes": {k: {"v1": v[0], "v2_added": v[1]} for k, v in added.items()},
        "peak_rss": {k: {"mib": v[0] / 1024, "mbps": v[1], "size_mb": RSS_MB} for k, v in peaks.items()},
    }
    print(f"\nkmsfs paired benchmark: {SIZE_MB} MiB per file, {PAIRS} pairs, tmpfs-backed, commit {out['commit']}")
    print("MB/s as min / median / max; ratio = median of the per-pair ratios kmsfs/peer\n")
    hdr = f"{'work':<16} {'kmsfs MB/s':>20} {'peer':<10} {'peer MB/s':>20} {'ratio':>6} {'goal':>5}  {'kmsfs/ceiling':>18} {'peak RSS':>9}"
    print(hdr)
    print("-" * len(hdr))
    for comp, sides in res.runs.items():
        if comp == "ceiling":
            continue
        ks = sides["kmsfs"]
        c = ceiling_of.get(comp)
        cm = statistics.median(ceilings[c]) if c in ceilings else None
        entry = {"kmsfs": dict(summary(ks), runs=ks), "peers": {}, "peak_rss_mib": res.peak_kb.get(comp, 0) / 1024}
        if cm:
            entry["ceiling"] = {"name": c, "median": cm, "ratio": statistics.median(ks) / cm}
        first = True
        for peer, ps in sides.items():
            if peer == "kmsfs":
                continue
            ratios = [a / b for a, b in zip(ks, ps)]
            ratio = statistics.median(ratios)
            goal = GOALS.get((comp, peer))
            entry["peers"][peer] = dict(summary(ps), runs=ps, ratios=ratios, ratio=ratio, goal=goal, met=goal is None or ratio >= goal)
            fmt = lambda s: "{min:.0f} / {median:.0f} / {max:.0f}".format(**summary(s))  # noqa: E731
            ceil = f"{statistics.median(ks) / cm:.2f} of {c}" if (cm and first) else ""
            rss = f"{res.peak_kb.get(comp, 0) / 1024:.0f} MiB" if first else ""
            mark = "" if goal is None else (f"{goal:.1f}" + ("" if ratio >= goal else "!"))
            print(f"{comp if first else '':<16} {fmt(ks) if first else '':>20} {peer:<10} {fmt(ps):>20} {ratio:>5.2f}x {mark:>5}  {ceil:>18} {rss:>9}")
            first = False
        out["comparisons"][comp] = entry
    print()
    for name, s in ceilings.items():
        print(f"ceiling {name:<14} {s and '{min:.0f} / {median:.0f} / {max:.0f}'.format(**summary(s)):>20} MB/s")
    if added:
        print(f"\ndedup: {SIZE_MB} MiB, then the same with three 100-byte insertions (bytes stored)")
        for name, (v1, v2) in added.items():
            print(f"  {name:<8} first version {v1:>12,}   second version adds {v2:>12,}")
    if peaks:
        print(f"\ndaemon peak RSS (VmHWM of a fresh mount) over {RSS_MB} MiB of random data")
        for what, (kb, mbps) in peaks.items():
            print(f"  {what:<18} {kb / 1024:>6.0f} MiB   ({mbps:.0f} MB/s, one run)")
    missed = [f"{c} vs {p}" for c, e in out["comparisons"].items() for p, v in e["peers"].items() if not v["met"]]
    print("\ngoals: " + ("all met" if not missed else "missed: " + ", ".join(missed)) + "  (a '!' marks a ratio below its goal)")
    return out


def cleanup(work, null):
    """Unmounts whatever is still mounted under `work` (lazily if busy),
    stops nullfs, and removes `work` only if nothing is mounted in it."""
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f if line.split()[1].startswith(work + "/")]
    for m in sorted(mounts, key=len, reverse=True):
        if subprocess.run(["umount", m]).returncode != 0:
            subprocess.run(["umount", "-l", m])
    if null:
        try:
            null.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            null.proc.kill()
    if not any(is_mounted(m) for m in mounts):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"bench: {work} left in place: still mounted", file=sys.stderr)


def main():
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    work = tempfile.mkdtemp(prefix="kmsfs-bench.", dir="/dev/shm")
    res = Results()
    added = {}
    peaks = {}
    null = None
    try:
        if "aead" in ONLY:
            subprocess.run([AEAD], check=True)
        # This VM maps guest memory lazily: touch what the runs will use once.
        warm = os.path.join(work, "warm")
        run("dd", "if=/dev/zero", f"of={warm}", "bs=1M", f"count={SIZE_MB * 4}", "status=none")
        os.remove(warm)
        null = Nullfs(work)
        if ONLY & {"tape", "lsu"}:
            for i in range(PAIRS):
                print(f"pair {i + 1} of {PAIRS}", file=sys.stderr, flush=True)
                pair(i, work, res, null)
        if "cloud" in ONLY:
            for i in range(PAIRS):
                print(f"cloud pair {i + 1} of {PAIRS}", file=sys.stderr, flush=True)
                cloud_pair(i, work, res)
        if "dedup" in ONLY:
            added = dedup(work)
        if "rss" in ONLY:
            peaks = peak_rss(work)
    finally:
        cleanup(work, null)
    out = report(res, added, peaks, started)
    path = os.environ.get("BENCH_JSON") or f"target/bench/bench-{started.replace(':', '')}.json"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
