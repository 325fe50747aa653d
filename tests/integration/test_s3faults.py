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

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import trovetest
from trovetest import run, trove, store_hash_part
from test_server import verify_store

# Short S3 timeouts, so that a stall is noticed within seconds.
S3_ARGS = []

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
    env = trovetest.nix_env({"XDG_CONFIG_HOME": str(tmp_path / "config"),
                             "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")})
    env.pop("TROVE_TOKEN", None)
    trove("login", "srv", server.url, server.admin, env=env, text=True)
    return env


def build_closure(tmp_path, tag, sizes):
    """A closure of fresh random paths (one per size, each referencing the
    previous one), so nothing of it is stored anywhere yet."""
    seed = f"{tag}-{os.getpid()}-{time.time_ns()}"
    lets, prev = [], None
    for i, size in enumerate(sizes):
        ref = f"echo ${{p{i - 1}}} > $out/ref" if prev else ""
        lets.append(f'  p{i} = mk "trove-faults-{seed}-{i}" '
                    f"''mkdir $out; head -c {size} /dev/urandom > $out/data; {ref}'';")
        prev = i
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


# ---- SIGKILL of radosgw during a push, restart, re-push ----

def test_sigkill_during_trove_push(server, client, rgw, tmp_path):
    top, paths = build_closure(tmp_path, "kpush", ["40M", "40M", "40M"])
    name = f"kpush{os.getpid()}"
    key = server.create_cache(name)["publicKey"]
    chunks0 = metric(server, "chunks_stored_total")
    proc = subprocess.Popen([str(trovetest.binary("trove")), "push", "--no-progress", name, top],
                            env=client, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: metric(server, "chunks_stored_total") - chunks0 >= 200,
                 "200 chunks stored", proc=proc)
        rgw.ctl("kill-rgw", timeout=60)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0, f"the push succeeded without S3: {out}"
    stored = metric(server, "chunks_stored_total") - chunks0
    rgw.ctl("start-rgw", timeout=180)

    bytes0 = metric(server, "bytes_received_total")
    r = trove("push", "--no-progress", name, top, env=client, text=True, timeout=900)
    assert f"{len(paths)} path(s) pushed" in r.stdout, r.stdout + r.stderr
    nar_total = sum(int(server.narinfo(name, p)["NarSize"]) for p in paths)
    resent = metric(server, "bytes_received_total") - bytes0
    # Only what was missing travelled again.
    assert resent < nar_total - stored * 16 * 1024, (resent, nar_total, stored)
    substitute_and_verify(server, name, key, top, paths, tmp_path)
