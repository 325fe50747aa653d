# SPDX-License-Identifier: Apache-2.0
"""troved through S3 faults, on a real radosgw (ceph-s3.sh): radosgw killed
(SIGKILL) during `trove push` and `nix copy --to`, then restarted; radosgw
stalled (SIGSTOP) longer than troved's S3 timeouts during pushes and reads,
then resumed (SIGCONT); troved stopped (SIGTERM) while radosgw is stalled;
trovefs reading through the outage. What an operator checks: requests that
need S3 fail at once with 503 and Retry-After while it is away, the rest keep
working, /health names the part that is down, and once S3 is back everything
recovers by itself: the retried push succeeds, sends only what is missing,
and the whole closure substitutes with nix copy --from and verifies."""

import os
import subprocess
import time
from pathlib import Path

import pytest

import trovetest
from trovetest import run, trove, store_hash_part
from test_server import verify_store
from test_s3 import curl_s3

# Short S3 timeouts, so that a stall is noticed within seconds.
S3_ARGS = ["--s3-connect-timeout", "2", "--s3-timeout", "2", "--s3-retry-budget", "5",
           "--s3-breaker", "3"]

MK = """
let mk = name: script: derivation {
  inherit name; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-ec" script ]; PATH = "/usr/bin:/bin"; LC_ALL = "C";
}; in
"""


@pytest.fixture
def rgw(radosgw):
    """The session's radosgw, running again after the test whatever the test
    did to it."""
    yield radosgw
    radosgw.ctl("resume-rgw", expect=None, timeout=30)
    if trovetest.run(["curl", "-s", "-o", "/dev/null", "-m", "5", radosgw["S3_ENDPOINT"] + "/"],
                     expect=None, timeout=30).returncode != 0:
        radosgw.ctl("kill-rgw", timeout=60)
        radosgw.ctl("start-rgw", timeout=180)


_counter = 0


@pytest.fixture
def server(make_troved, rgw):
    """troved on a fresh bucket of the radosgw, with short S3 timeouts."""
    global _counter
    _counter += 1
    spec = rgw.spec(f"trove-faults-{os.getpid()}-{_counter}", prefix="c/")
    t = make_troved(storage=spec, extra_env=rgw.credentials_env(), args=S3_ARGS)
    t.spec = spec
    return t


@pytest.fixture
def client(server, tmp_path):
    return trovetest.logged_in_env(server, tmp_path)


def build_closure(tmp_path, tag, sizes):
    """A closure of fresh random paths (one per size, each referencing the
    previous one), so nothing of it is stored anywhere yet."""
    seed = f"{tag}-{os.getpid()}-{time.time_ns()}"
    lets = []
    for i, size in enumerate(sizes):
        ref = f"echo ${{p{i - 1}}} > $out/ref" if i > 0 else ""
        lets.append(f'  p{i} = mk "trove-faults-{seed}-{i}" '
                    f"''mkdir $out; head -c {size} /dev/urandom > $out/data; {ref}'';")
    f = tmp_path / f"{tag}.nix"
    f.write_text(MK + "let\n" + "\n".join(lets) + f"\nin p{len(sizes) - 1}\n")
    (top,) = trovetest.nix_build(f, tmp_path / f"{tag}-result")
    return top, trovetest.nix_closure(top)


def metric(server, name):
    return server.metrics().get(f"trove_{name}", 0.0)


def wait_for(cond, what, timeout=300, proc=None):
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None:
            assert proc.poll() is None, f"finished before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def substitute_and_verify(server, cache, key, top, paths, tmp_path):
    root = tmp_path / f"root-{time.time_ns()}"
    server.nix_copy_from(cache, [top], root, key, tmp_path / f"xdg-{time.time_ns()}",
                         token=server.token(cache, "pull"))
    verify_store(root, paths)


def chunk_rows(server):
    return [r[0] for r in server.psql("SELECT encode(hash, 'hex') FROM chunks ORDER BY id")]


def bucket_of(server):
    return server.spec.split("://", 1)[1].split("?", 1)[0]


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def fault_during(rgw, proc, cond, what, fault="kill-rgw"):
    """Does fault to radosgw (kill-rgw: SIGKILL, pause-rgw: SIGSTOP) once
    cond() holds while proc runs; returns proc's (returncode, stdout,
    stderr) once it has ended."""
    try:
        wait_for(cond, what, proc=proc)
        rgw.ctl(fault, timeout=60)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


# ---- SIGKILL of radosgw during a push, restart, re-push ----

def test_sigkill_during_trove_push(server, client, rgw, tmp_path):
    top, paths = build_closure(tmp_path, "kpush", ["40M", "40M", "40M"])
    name = f"kpush{os.getpid()}"
    key = server.create_cache(name)["publicKey"]
    chunks0 = metric(server, "chunks_stored_total")
    proc = subprocess.Popen([str(trovetest.binary("trove")), "push", "--no-progress", name, top],
                            env=client, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, out, err = fault_during(rgw, proc, lambda: metric(server, "chunks_stored_total") - chunks0 >= 200,
                               "200 chunks stored")
    assert rc != 0, f"the push succeeded without S3: {out}"
    # While S3 is away: narinfo (PostgreSQL) answers, /health names the store.
    for p in paths:
        r = server.get(f"/{name}/{store_hash_part(p)}.narinfo", token=server.admin)
        assert r.status in (200, 404), r
    r = server.get("/health")
    assert r.status == 200 and r.json() == {"status": "degraded", "database": "ok",
                                            "chunkStore": "unavailable"}, r
    m = server.metrics()
    assert m.get("trove_s3_breaker_opens_total", 0) >= 1, m
    stored = metric(server, "chunks_stored_total") - chunks0
    rgw.ctl("start-rgw", timeout=180)

    # Objects lost with the server: rows without objects must not be trusted.
    rows = chunk_rows(server)
    assert len(rows) >= 200
    lost = rows[:3] + rows[-3:]
    for h in lost:
        curl_s3(rgw, f"/{bucket_of(server)}/c/chunks/{h[:2]}/{h}", "-X", "DELETE", expect_status=204)

    bytes0 = metric(server, "bytes_received_total")
    r = trove("push", "--no-progress", name, top, env=client, text=True, timeout=900)
    assert f"{len(paths)} path(s) pushed" in r.stdout, r.stdout + r.stderr
    nar_total = sum(int(server.narinfo(name, p)["NarSize"]) for p in paths)
    resent = metric(server, "bytes_received_total") - bytes0
    # Only what was missing travelled again.
    assert resent < nar_total - (stored - len(lost)) * 16 * 1024, (resent, nar_total, stored)
    # Every row stands for an object again.
    objects = rgw.list_chunks(server.spec)
    assert set(chunk_rows(server)) <= set(objects)
    assert r.returncode == 0 and server.get("/health").json()["status"] == "ok"
    substitute_and_verify(server, name, key, top, paths, tmp_path)


def test_sigkill_during_nix_copy(server, rgw, tmp_path):
    top, paths = build_closure(tmp_path, "kcopy", ["30M", "30M"])
    name = f"kcopy{os.getpid()}"
    key = server.create_cache(name)["publicKey"]
    chunks0 = metric(server, "chunks_stored_total")
    netrc = trovetest.write_netrc(tmp_path / "netrc", server.admin)
    cmd = ["nix", "copy", "--netrc-file", str(netrc), "--to", f"{server.url}/{name}?compression=zstd", top]
    proc = subprocess.Popen(cmd, env=trovetest.nix_env({"XDG_CACHE_HOME": str(tmp_path / "xdg1")}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, out, err = fault_during(rgw, proc, lambda: metric(server, "chunks_stored_total") - chunks0 >= 100,
                               "100 chunks stored")
    assert rc != 0, "nix copy succeeded without S3"
    assert "503" in err, err[-2000:]
    # Still away: an upload is refused at its headers, before its body (no
    # "100 Continue", nothing drained), and the connection closes. A Nix
    # retry sends no body at all; one that got "100 Continue" would wait.
    for extra in ("Expect: 100-continue\r\nContent-Length: 31457280", "Content-Length: 1000"):
        head = (f"PUT /{name}/nar/{'1' * 52}.nar HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {server.admin}\r\n{extra}\r\n\r\n")
        st, answer = trovetest.raw_http(server.port, head.encode())
        assert st == 503 and b" 100 " not in answer, answer
        assert b"retry-after:" in answer.lower() and b"connection: close" in answer.lower(), answer
    # Who may upload is decided first: no token is 401, a pull token 403.
    puller = server.token(cache=name, perm="pull")
    for auth, want in (("", 401), (f"Authorization: Bearer {puller}\r\n", 403)):
        head = (f"PUT /{name}/nar/{'1' * 52}.nar HTTP/1.1\r\nHost: x\r\n{auth}"
                "Expect: 100-continue\r\nContent-Length: 31457280\r\n\r\n")
        st, answer = trovetest.raw_http(server.port, head.encode())
        assert st == want, answer
    rgw.ctl("start-rgw", timeout=180)
    server.nix_copy_to(name, [top], server.admin, tmp_path / "xdg2", compression="zstd")
    substitute_and_verify(server, name, key, top, paths, tmp_path)


# ---- SIGSTOP of radosgw: fail fast, recover ----

def test_sigstop_fails_fast_and_recovers(server, client, rgw, tmp_path):
    top, paths = build_closure(tmp_path, "stop", ["20M", "20M"])
    name = f"stop{os.getpid()}"
    key = server.create_cache(name)["publicKey"]
    trove("push", "--no-progress", name, paths[0], env=client, text=True, timeout=900)
    first = paths[0]
    man = server.manifest(name, first)
    chunk = man["chunks"][0]["id"] if isinstance(man["chunks"][0], dict) else man["chunks"][0][2]
    ni = server.narinfo(name, first)
    # The anchor: the same requests with S3 up.
    up = 0.0
    for path in (f"/_api/v1/caches/{name}/chunks/{chunk}", f"/{name}/{ni['URL']}"):
        r, took = timed(lambda: server.get(path, token=server.admin))
        assert r.status == 200, r
        up = max(up, took)

    chunks0 = metric(server, "chunks_stored_total")
    proc = subprocess.Popen([str(trovetest.binary("trove")), "push", "--no-progress", name, top],
                            env=client, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, out, err = fault_during(rgw, proc, lambda: metric(server, "chunks_stored_total") - chunks0 >= 50,
                                "50 chunks stored", fault="pause-rgw")
    assert rc != 0, "the push succeeded with S3 stopped"
    # The breaker is open now: requests that need S3 fail at once, with 503
    # and Retry-After, without asking S3; the rest is answered.
    wait_for(lambda: metric(server, "s3_breaker_state") == 1 or metric(server, "s3_breaker_state") == 2,
             "the breaker to open", timeout=120)
    m0 = server.metrics()
    slowest = 0.0
    for _ in range(3):
        for path, need_s3 in ((f"/_api/v1/caches/{name}/chunks/{chunk}", True),
                              (f"/{name}/{ni['URL']}", True),
                              (f"/{name}/{store_hash_part(first)}.narinfo", False),
                              (f"/_api/v1/caches/{name}/manifests/{store_hash_part(first)}", False)):
            r, took = timed(lambda: server.get(path, token=server.admin))
            if need_s3:
                assert r.status == 503, (path, r)
                assert int(r.headers["retry-after"]) >= 1, r.headers
                slowest = max(slowest, took)
            else:
                assert r.status == 200, (path, r)
    print(f"slowest answer needing S3 while radosgw was stopped: {slowest:.3f} s "
          f"(the same requests with S3 up: {up:.3f} s; S3 stall timeout 2 s)")
    m1 = server.metrics()
    rejected = sum(v for k, v in m1.items() if k.startswith("trove_s3_rejected_total"))
    rejected0 = sum(v for k, v in m0.items() if k.startswith("trove_s3_rejected_total"))
    sent = sum(v for k, v in m1.items() if k.startswith("trove_s3_requests_total"))
    sent0 = sum(v for k, v in m0.items() if k.startswith("trove_s3_requests_total"))
    # At most one probe per breaker window reached S3; the chunk downloads
    # were refused by the breaker, the NARs before their first byte.
    assert rejected - rejected0 >= 3 and sent - sent0 <= 2, (rejected - rejected0, sent - sent0)
    assert m1["trove_s3_breaker_opens_total"] >= 1
    assert sum(v for k, v in m1.items() if k.startswith("trove_s3_timeouts_total")) >= 1
    r = server.get("/health")
    assert r.status == 200 and r.json()["chunkStore"] == "unavailable", r

    rgw.ctl("resume-rgw", timeout=30)
    # Back by itself: the next push succeeds, the closure substitutes.
    r = trove("push", "--no-progress", name, top, env=client, text=True, timeout=900)
    assert "path(s) pushed" in r.stdout, r.stdout + r.stderr
    assert server.get("/health").json()["status"] == "ok"
    assert server.get(f"/_api/v1/caches/{name}/chunks/{chunk}", token=server.admin).status == 200
    substitute_and_verify(server, name, key, top, paths, tmp_path)


# ---- SIGTERM of troved while radosgw is stopped ----

def test_sigterm_while_s3_stalled(make_troved, rgw, tmp_path):
    spec = rgw.spec(f"trove-faults-term-{os.getpid()}", prefix="c/")
    # Default timeouts: S3 calls would hang far longer than the shutdown bound.
    t = make_troved(storage=spec, extra_env=rgw.credentials_env(), args=["--shutdown-timeout", "10"])
    t.create_cache("term")
    path, _ = put_one_nar(t, "term", tmp_path)
    rows = chunk_rows(t)
    client = trovetest.logged_in_env(t, tmp_path)
    fresh, _ = build_closure(tmp_path, "term-fresh", ["2M"])
    rgw.ctl("pause-rgw", timeout=30)
    # Requests that wait on S3: chunk downloads and a push's uploads.
    procs = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "120",
                               "-H", f"Authorization: Bearer {t.admin}",
                               f"{t.url}/_api/v1/caches/term/chunks/{h}"],
                              stdout=subprocess.PIPE, text=True) for h in rows[:3]]
    bytes0 = metric(t, "bytes_received_total")
    push = subprocess.Popen([str(trovetest.binary("trove")), "push", "--no-progress", "term", fresh],
                            env=client, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: metric(t, "bytes_received_total") - bytes0 > 1024 * 1024, "chunks uploaded",
             timeout=120, proc=push)
    time.sleep(1)  # let them reach S3
    assert all(p.poll() is None for p in procs)
    t0 = time.monotonic()
    t.proc.terminate()
    try:
        rc = t.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        t.proc.kill()
        raise AssertionError("troved did not exit on SIGTERM within 60 s while S3 was stopped")
    took = time.monotonic() - t0
    print(f"troved exited {took:.2f} s after SIGTERM with radosgw stopped (exit status {rc})")
    assert took < 10 + 5, took
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert out in ("503", "000"), out
    _, err = push.communicate(timeout=300)
    assert push.returncode != 0, "the push succeeded with troved stopped"
    rgw.ctl("resume-rgw", timeout=30)
    # Nothing half-visible: restarted, the old path is there and whole, the
    # abandoned one is not there at all, and every row has its object.
    t.start()
    r = t.get(f"/term/{store_hash_part(path)}.narinfo", token=t.admin)
    assert r.status == 200, r
    assert t.get(f"/term/{store_hash_part(fresh)}.narinfo", token=t.admin).status == 404
    assert set(chunk_rows(t)) <= set(rgw.list_chunks(spec))
    # The abandoned push, run again, completes.
    r = trove("push", "--no-progress", "term", fresh, env=client, text=True, timeout=600)
    assert "1 path(s) pushed" in r.stdout, r.stdout + r.stderr


def put_one_nar(t, cache, tmp_path):
    """A NAR of a fresh random path uploaded with nix copy."""
    top, _ = build_closure(tmp_path, "term", ["3M"])
    t.nix_copy_to(cache, [top], t.admin, tmp_path / "xdg-term", compression="zstd")
    return top, None


# ---- trovefs through an outage ----

def test_trovefs_through_outage(server, client, rgw, tmp_path):
    top, paths = build_closure(tmp_path, "fs", ["6M", "6M"])
    name = f"fs{os.getpid()}"
    server.create_cache(name)
    trove("push", "--no-progress", name, top, env=client, text=True, timeout=900)
    token_file = tmp_path / "token"
    token_file.write_text(server.token(name, "pull"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = open(tmp_path / "trovefs.log", "wb")
    proc = subprocess.Popen([trovetest.binary("trovefs"), "-f", "--server", server.url, "--cache", name,
                             "--token-file", token_file, "--cache-dir", tmp_path / "fscache",
                             "--timeout", "8", mnt], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: os.path.ismount(mnt), "the mount", timeout=30, proc=proc)
        a, b = (mnt / Path(p).name / "data" for p in paths)
        # The manifests are fetched while S3 is up (they come from PostgreSQL
        # anyway); the data is not.
        assert a.stat().st_size == b.stat().st_size == 6 * 1024 * 1024
        rgw.ctl("pause-rgw", timeout=30)
        try:
            t0 = time.monotonic()
            with pytest.raises(OSError) as e:
                a.read_bytes()
            took = time.monotonic() - t0
            assert e.value.errno == 5, e.value  # EIO
            print(f"trovefs read during the outage: EIO after {took:.2f} s (--timeout 8)")
        finally:
            rgw.ctl("resume-rgw", timeout=30)
        # Back without a remount.
        wait_for(lambda: server.get("/health").json()["chunkStore"] == "ok", "S3 back", timeout=120)
        for p, f in zip(paths, (a, b)):
            got = f.read_bytes()
            assert got == (Path(p) / "data").read_bytes()
    finally:
        run(["fusermount3", "-u", mnt], expect=None)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- the settings refuse bad values ----

@pytest.mark.parametrize("option", ["--s3-connect-timeout", "--s3-timeout", "--s3-request-timeout",
                                    "--s3-retry-budget", "--s3-breaker", "--shutdown-timeout"])
def test_bad_settings_are_refused(option, tmp_path):
    for bad in ("0", "3601", "-1", "ten", "", "1e3", "99999999999999999999999"):
        r = run([trovetest.binary("troved"), "--state-dir", tmp_path / "state", option, bad],
                expect=None, timeout=60, text=True)
        assert r.returncode == 2, (option, bad, r.stdout, r.stderr)
        assert f"bad value '{bad}' for '{option[2:]}'" in r.stderr, r.stderr
        assert not (tmp_path / "state").exists(), "a refused start left a state directory"
    out = run([trovetest.binary("troved"), "--help"], text=True).stdout
    assert option in out
