# SPDX-License-Identifier: Apache-2.0
"""Learned prefetch: mounts report which chunks of a store path they read
soon after looking it up, troved merges the reports into a profile per
path, and a fresh mount prefetches a path's profile when it first looks
the path up. The hostile side: reports that name another path's chunks,
unknown paths, malformed or oversized bodies, and callers without the
cache's pull permission change nothing."""

import json
import os
import time
from pathlib import Path

import pytest

import trovetest
from test_fs import CACHE, fs_prog, mount  # noqa: F401 (fixtures)

OTHER = "other"
# The mounts of test_fs's fixture do not report unless told to.
LEARN = ("--prefetch", "on", "--record", "on")
USE = ("--prefetch", "on", "--record", "off")


@pytest.fixture(scope="module")
def server(test_closure, fs_prog, make_troved_module):  # noqa: F811
    srv = make_troved_module()
    base = srv.state_dir.parent
    srv.create_cache(CACHE)
    srv.create_cache(OTHER)
    srv.nix_copy_to(CACHE, [test_closure.top, fs_prog[0]], srv.admin, base / "xdg",
                    compression="zstd")
    srv.token_file = base / "token"
    srv.token_file.write_text(srv.admin + "\n")
    return srv


def profile(server, path, token=None):
    r = server.get(f"/_api/v1/caches/{CACHE}/profiles/{trovetest.store_hash_part(path)}",
                   token=token or server.admin)
    assert r.status == 200, r
    body = r.json()
    assert body["hash"] == trovetest.store_hash_part(path)
    return body["chunks"]


def manifest_chunks(server, path):
    return {c[2] for c in server.manifest(CACHE, path)["chunks"]}


def report(server, body, token="admin", raw=False):
    return server.request("POST", f"/_api/v1/caches/{CACHE}/profiles",
                          body if raw else json.dumps(body),
                          headers={"Content-Type": "application/json"},
                          token=server.admin if token == "admin" else token)


def run_program(m, prog, tree):
    """The job: a static program run from the mount, and some files of
    another store path read; its output."""
    out = trovetest.run([m.path(prog) / "bin" / "hello-static", "job"], env={},
                        text=True).stdout
    for rel in ["sizes/f70001", "sizes/f1", "share/refs"]:
        p = m.path(tree) / rel
        if p.is_file():
            out += f"{rel} {trovetest.file_sha256(p)}\n"
    return out


def final_counters(m):
    """The counters trovefs logged at unmount."""
    line = [ln for ln in m.output().splitlines() if "unmounted; counters: " in ln][-1]
    return json.loads(line.split("unmounted; counters: ", 1)[1])


def wait_for(pred, what, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.1)


def test_learned_profile_prefetched(test_closure, fs_prog, server, mount):  # noqa: F811
    prog = fs_prog[0]
    tree = test_closure["tree"]
    # Nobody has reported yet: profiles exist but are empty.
    assert profile(server, prog) == []

    # Learning runs, each on its own mount with its own empty chunk cache.
    # The first reports when its window ends, the others at unmount.
    # (The window is long enough for a loaded machine to finish the job in
    # it; the report goes out when it ends, with the mount still up.)
    m = mount(None, *LEARN, "--record-window", "8")
    want = run_program(m, prog, tree)
    assert want.startswith("static hello job\n")
    wait_for(lambda: m.stats()["pathsReported"] >= 2,
             lambda: f"the report of the first mount: {m.stats()}\n{m.output()}", 120)
    m.unmount()
    for _ in range(2):
        m = mount(None, *LEARN)
        assert run_program(m, prog, tree) == want
        m.unmount()
        c = final_counters(m)
        assert c["pathsReported"] >= 2 and c["reportErrors"] == 0, c

    learned = profile(server, prog)
    assert learned, "no profile learned"
    assert set(learned) <= manifest_chunks(server, prog)
    assert len(learned) == len(set(learned))
    assert set(profile(server, tree)) <= manifest_chunks(server, tree)

    # A fresh mount, empty chunk cache: looking the paths up prefetches
    # their profiles in the background.
    m = mount(None, *USE)
    os.stat(m.path(prog))
    os.stat(m.path(tree))
    # Both profiles fetched (they are fetched one after the other, so the
    # first can be done before the second is asked for), then no chunk moves
    # for a moment: the prefetch is over.
    s = wait_for(lambda: (lambda s: s if s["profilesFetched"] >= 2
                          and s["chunksPrefetched"] >= len(learned)
                          and s["chunksFetched"] >= s["chunksPrefetched"] else None)(m.stats()),
                 lambda: f"the prefetch: {m.stats()}")
    while True:
        time.sleep(0.5)
        s2 = m.stats()
        if s2["chunksFetched"] == s["chunksFetched"]:
            break
        s = s2
    assert s["profilesFetched"] == 2, s
    fetched = s["chunksFetched"]
    assert run_program(m, prog, tree) == want
    s = m.stats()
    # The job read what was prefetched and needed (almost) nothing else.
    assert s["prefetchedRead"] >= len(learned), s
    assert s["chunksFetched"] - fetched <= 1, s
    assert s["prefetchWastedBytes"] <= s["bytesPrefetched"] - s["prefetchedReadBytes"], s
    assert s["errors"] == 0, s

    # --prefetch off: no profile asked for, same output.
    m = mount(None, "--prefetch", "off", "--record", "off")
    assert run_program(m, prog, tree) == want
    s = m.stats()
    assert s["profilesFetched"] == 0 and s["chunksPrefetched"] == 0, s
    m.unmount()
    assert final_counters(m)["pathsReported"] == 0


def test_hostile_reports_change_nothing(test_closure, fs_prog, server):  # noqa: F811
    prog = fs_prog[0]
    tree = test_closure["tree"]
    hp = trovetest.store_hash_part(prog)
    own = sorted(manifest_chunks(server, prog))
    foreign = sorted(manifest_chunks(server, tree) - set(own))
    assert own and foreign
    # A well-formed report is taken (pull suffices).
    puller = server.token(CACHE, "pull")
    r = report(server, {"paths": [{"hash": hp, "chunks": own[:2]}]}, token=puller)
    assert r.status == 200, r
    before = profile(server, prog)
    assert before

    refused = [
        # another path's chunk among its own
        ({"paths": [{"hash": hp, "chunks": own[:1] + foreign[:1]}]}, 400, "not part of that path"),
        # a chunk no path has
        ({"paths": [{"hash": hp, "chunks": ["ab" * 32]}]}, 400, "not part of that path"),
        # the second path is bad: the first is not taken either
        ({"paths": [{"hash": hp, "chunks": own[:1]},
                    {"hash": "0" * 32, "chunks": own[:1]}]}, 404, "no such path"),
        ({"paths": [{"hash": hp, "chunks": ["xyz"]}]}, 400, "not a chunk id"),
        ({"paths": [{"hash": hp, "chunks": own[:1], "extra": 1}]}, 400, "expected"),
        ({"paths": [{"hash": "../etc", "chunks": own[:1]}]}, 400, "expected"),
        ({"paths": {"hash": hp}}, 400, "expected"),
        ({"paths": [{"hash": hp, "chunks": own[:1]}] * 257}, 400, "at most 256"),
        ({"paths": [{"hash": hp, "chunks": [own[0]] * 16385}]}, 400, "at most 16384"),
    ]
    for body, status, msg in refused:
        r = report(server, body)
        assert r.status == status and msg in r.text, (body if len(str(body)) < 300 else "", r)
    for raw in [b"", b"{", b"[]", b"\xff\xfe", b"[" * 100000]:
        r = report(server, raw, raw=True)
        assert r.status == 400, r
    # Over the body cap: refused before the body is read.
    r = report(server, b"{" + b" " * (4 << 20) + b"}", raw=True)
    assert r.status == 413, r

    # Without the cache's pull permission.
    body = {"paths": [{"hash": hp, "chunks": own[:1]}]}
    assert report(server, body, token=None).status == 401
    assert report(server, body, token=server.token(OTHER, "all")).status == 403
    r = server.get(f"/_api/v1/caches/{CACHE}/profiles/{hp}")
    assert r.status == 401, r
    r = server.get(f"/_api/v1/caches/{CACHE}/profiles/{hp}", token=server.token(OTHER, "all"))
    assert r.status == 403, r
    r = server.get(f"/_api/v1/caches/{OTHER}/profiles/{hp}")
    assert r.status in (401, 404), r
    r = server.get(f"/_api/v1/caches/{CACHE}/profiles/{'0' * 32}", token=server.admin)
    assert r.status == 404, r
    r = server.get(f"/_api/v1/caches/{CACHE}/profiles/not-a-hash", token=server.admin)
    assert r.status == 404, r

    assert profile(server, prog) == before


def test_profile_naming_missing_chunks_is_harmless(test_closure, fs_prog, server, mount):  # noqa: F811
    prog = fs_prog[0]
    tree = test_closure["tree"]
    hp = trovetest.store_hash_part(prog)
    m = mount(None, *LEARN)
    want = run_program(m, prog, tree)
    m.unmount()
    learned = profile(server, prog)
    assert learned
    # Chunks the cache does not have (never had, or GC deleted), with a
    # weight far above the real ones, first in order.
    cid = server.scalar(f"SELECT id FROM caches WHERE name = '{CACHE}'")
    for i in range(3):
        server.psql("INSERT INTO profile_chunks (cache_id, hash_part, chunk_hash, weight, pos)"
                    f" VALUES ({cid}, '{hp}', decode('{i:02x}{'ee' * 31}', 'hex'), 1000, -1)")
    assert profile(server, prog) == learned
    # A mount uses the profile as before.
    m = mount(None, *USE)
    assert run_program(m, prog, tree) == want
    s = m.stats()
    assert s["profilesFetched"] >= 1 and s["errors"] == 0, s
    # The path itself gone: no profile, and a lookup is a plain ENOENT.
    r = server.request("DELETE", f"/_api/v1/caches/{CACHE}/paths/{hp}", token=server.admin)
    assert r.status in (200, 204), r
    r = server.get(f"/_api/v1/caches/{CACHE}/profiles/{hp}", token=server.admin)
    assert r.status == 404, r
    m2 = mount(None, *USE)
    with pytest.raises(FileNotFoundError):
        os.stat(m2.path(prog))
    # Its profile rows went with it.
    assert server.scalar(f"SELECT count(*) FROM profile_chunks WHERE hash_part = '{hp}'") == 0
