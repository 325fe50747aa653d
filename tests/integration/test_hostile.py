# SPDX-License-Identifier: Apache-2.0
"""troved against hostile clients and tenants who must not see each other.

Each test is an attack that once worked (or could have), kept so that it
keeps failing: cross-cache disclosure through narinfo PUTs, path commits,
missing-chunks and chunk uploads; bodies read before the permission check;
bytes past a fixed buffer in nix-cache-info; settings that stop GC for
everyone; chunk objects overwritten by later uploads; a Range request that
asks the chunk store about every chunk; aggregates any anonymous caller can
run; connections without a per-client limit; a large listing parsed on
every manifest GET. The route table (server/routes.c) decides every
request's permission and body cap before its body.

The attacks that need another setting live beside this file:
test_hardening.py (troved running as root; the embedded PostgreSQL letting
local users in), test_fs_trust.py (a man in the middle serving changed
manifests to trovefs; a world-readable chunk cache), test_fs.py
test_lookup_forget_race (trovefs dropping a path the kernel still holds),
test_s3.py test_write_once (S3 objects are never replaced).
"""

import hashlib
import json
import os
import socket
import subprocess
import threading
import time

import pytest

import trovetest
from trovetest import nix32_encode, store_hash_part
from test_server import (expect_error, expect_status, fake_store_path, narinfo_text, put_synthetic,
                         sha256_nix32, zstd_frame)


@pytest.fixture(scope="module")
def srv(make_troved_module):
    return make_troved_module(log_level="info",
                              args=["--max-connections-per-client", "16", "--idle-timeout", "3"])


_n = 0


def new_cache(t, public=False):
    global _n
    _n += 1
    name = f"h{os.getpid()}x{_n}"
    t.create_cache(name, public=public)
    return name


def zstd_level(data, level):
    """A zstd frame of data at another compression level than troved's."""
    with open(f"/tmp/trove-hostile-{os.getpid()}", "wb") as f:
        f.write(data)
    try:
        return trovetest.run(["zstd", "-q", "-c", f"-{level}", "--content-size",
                              f"/tmp/trove-hostile-{os.getpid()}"]).stdout
    finally:
        os.unlink(f"/tmp/trove-hostile-{os.getpid()}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def chunk_frames(t, cache, path):
    """[(id hex, length, uncompressed bytes)] of a path's chunks, by reading
    them back through the API."""
    man = t.manifest(cache, path)
    out = []
    for off, length, cid, _stored in man["chunks"]:
        r = t.get(f"/_api/v1/caches/{cache}/chunks/{cid}", token=t.admin)
        expect_status(r, 200, "chunk GET", t)
        data = subprocess.run(["zstd", "-d", "-q", "-c"], input=r.body, capture_output=True,
                              check=True).stdout
        assert hashlib.sha256(data).hexdigest() == cid
        out.append((cid, length, data, off))
    return out


# ---- 1. tenants do not see each other ----


@pytest.fixture(scope="module")
def tenants(srv):
    """Cache A (private) holds a path; cache B belongs to someone whose
    token may push to B only."""
    a, b = new_cache(srv), new_cache(srv)
    path, nar = put_synthetic(srv, a, os.urandom(300000))
    return {"a": a, "b": b, "path": path, "nar": nar,
            "push_b": srv.token(b, "push"), "chunks": chunk_frames(srv, a, path)}


def test_narinfo_put_cannot_adopt_another_caches_nar(srv, tenants):
    t, b, nar = srv, tenants["b"], tenants["nar"]
    victim = fake_store_path("stolen")
    h = store_hash_part(victim)
    fh = sha256_nix32(nar)
    # First try: a wrong size, hoping the error tells the right one.
    r = t.request("PUT", f"/{b}/{h}.narinfo", narinfo_text(victim, nar, nar_size=1),
                  token=tenants["push_b"])
    expect_error(r, 409, 409, "narinfo naming another cache's NAR (wrong size)", t)
    assert str(len(nar)) not in r.text, r.text
    # Second try: the right hash and size. Still nothing to adopt.
    r = t.request("PUT", f"/{b}/{h}.narinfo", narinfo_text(victim, nar, url=f"nar/{fh}.nar"),
                  token=tenants["push_b"])
    expect_error(r, 409, 409, "narinfo naming another cache's NAR", t)
    assert t.narinfo(b, victim) is None
    r = t.get(f"/{b}/nar/{fh}.nar", token=t.admin)
    assert r.status == 404, r
    # A token that may also pull A may reuse A's NAR: it could download it.
    both = trovetest.run([trovetest.binary("troved"), "token", "--state-dir", t.state_dir,
                          "--cache", tenants["a"], "--perm", "pull", "--cache", b, "--perm", "push"],
                         text=True).stdout.strip()
    r = t.request("PUT", f"/{b}/{h}.narinfo", narinfo_text(victim, nar), token=both)
    expect_status(r, 200, "narinfo reusing a NAR of a cache the token may pull", t)
    assert t.narinfo(b, victim)["NarHash"] == f"sha256:{fh}"


def test_missing_chunks_says_nothing_about_other_caches(srv, tenants):
    t, b = srv, tenants["b"]
    ids = [c[0] for c in tenants["chunks"]]
    r = t.request("POST", f"/_api/v1/caches/{b}/missing-chunks", json.dumps({"chunks": ids}),
                  token=tenants["push_b"])
    expect_status(r, 200, "missing-chunks", t)
    assert sorted(r.json()["missing"]) == sorted(ids), "chunks of cache A reported present to B"
    # The owner of A sees them as present (the check can fail).
    r = t.request("POST", f"/_api/v1/caches/{tenants['a']}/missing-chunks",
                  json.dumps({"chunks": ids}), token=t.admin)
    assert r.json()["missing"] == []


def test_chunk_upload_answers_alike_and_proves_possession(srv, tenants):
    t, b = srv, tenants["b"]
    objects = t.local_chunk_ids()
    fresh = os.urandom(70000)
    fresh_id = hashlib.sha256(fresh).hexdigest()
    r_new = t.request("PUT", f"/_api/v1/caches/{b}/chunks/{fresh_id}", zstd_frame(fresh),
                      token=tenants["push_b"])
    cid, _len, data, _off = tenants["chunks"][0]
    r_known = t.request("PUT", f"/_api/v1/caches/{b}/chunks/{cid}", zstd_frame(data),
                        token=tenants["push_b"])
    assert (r_new.status, r_new.body) == (r_known.status, r_known.body) == (201, b""), \
        (r_new, r_known)
    # The batch route answers without saying what was new either.
    rec = lambda i, f: bytes.fromhex(i) + len(f).to_bytes(4, "little") + f
    more = os.urandom(50000)
    body = rec(hashlib.sha256(more).hexdigest(), zstd_frame(more)) + rec(cid, zstd_frame(data))
    r = t.request("POST", f"/_api/v1/caches/{b}/chunks", body, token=tenants["push_b"])
    expect_status(r, 200, "chunk batch", t)
    assert r.json() == {"accepted": 2}
    # A known chunk is not stored twice.
    assert t.local_chunk_ids() - objects == {fresh_id, hashlib.sha256(more).hexdigest()}
    # Having uploaded it, B's uploader now has it: missing-chunks says so.
    r = t.request("POST", f"/_api/v1/caches/{b}/missing-chunks", json.dumps({"chunks": [cid]}),
                  token=tenants["push_b"])
    assert r.json()["missing"] == []


def test_path_commit_needs_every_chunk_proved(srv, tenants):
    t, a, b = srv, tenants["a"], tenants["b"]
    man = t.manifest(a, tenants["path"])
    victim = fake_store_path("commit-steal")
    body = commit_body(man, victim)
    # Nothing uploaded (beyond the first chunk, proved above): refused.
    c = b + "commit"
    t.create_cache(c)
    tok = t.token(c, "push")
    r = t.request("POST", f"/_api/v1/caches/{c}/paths", body, token=tok)
    expect_error(r, 400, 400, "commit of another cache's NAR without its chunks", t)
    assert t.narinfo(c, victim) is None
    # Upload every chunk (verified), then the commit stands; no object is added.
    objects = t.local_chunk_ids()
    for cid, _len, data, _off in tenants["chunks"]:
        r = t.request("PUT", f"/_api/v1/caches/{c}/chunks/{cid}", zstd_frame(data), token=tok)
        expect_status(r, 201, "chunk PUT", t)
    r = t.request("POST", f"/_api/v1/caches/{c}/paths", body, token=tok)
    expect_status(r, 201, "commit after proving every chunk", t)
    assert t.narinfo(c, victim)["NarHash"] == t.narinfo(a, tenants["path"])["NarHash"]
    assert t.local_chunk_ids() == objects


def commit_body(man, store_path):
    """A path-commit body: another path's manifest under a new store path."""
    return json.dumps(dict(man, storePath=store_path, sigs=[]))


# ---- 2. nothing is read before the permission check ----


def _patch_flood(port, path, size, token=None):
    """Sends a PATCH with a size-byte JSON body of [[],[],...]; returns the
    status line's code (None if the server closed without one)."""
    head = (f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n").encode()
    if token:
        head += f"Authorization: Bearer {token}\r\n".encode()
    piece = b"[]," * 21845 + b"[]"  # 65537 bytes of nested arrays
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    status = None
    try:
        s.sendall(head + b"\r\n")
        sent = 0
        try:
            while sent < size:
                n = min(len(piece), size - sent)
                s.sendall(piece[:n])
                sent += n
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            ans = s.recv(4096)
            if ans.startswith(b"HTTP/1."):
                status = int(ans[9:12])
        except (ConnectionResetError, socket.timeout):
            pass
    finally:
        s.close()
    return status


def test_anonymous_bodies_are_not_read(srv):
    t = srv
    pid = t.proc.pid
    before = rss_kib(pid)
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        _patch_flood(t.port, f"/_api/v1/caches/nosuch{i}", 60 << 20))) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    grown = rss_kib(pid) - before
    print(f"troved RSS growth under 8 x 60 MB anonymous PATCH: {grown} KiB")
    assert all(s in (401, None) for s in results), results
    assert 401 in results, results
    assert grown < 50 * 1024, f"troved grew by {grown} KiB"
    assert t.get("/health").status == 200


def test_bodies_beyond_the_route_cap_are_refused_unread(srv):
    t = srv
    c = new_cache(t)
    # A token that may configure, but a body past the 64 KiB cap: 413 from the headers.
    status = _patch_flood(t.port, f"/_api/v1/caches/{c}", 60 << 20, token=t.token(c, "configure"))
    assert status == 413, status
    # Pull-only token: 403 before the body.
    status = _patch_flood(t.port, f"/_api/v1/caches/{c}", 60 << 20, token=t.token(c, "pull"))
    assert status == 403, status
    # Within the cap, a body of nothing but nested arrays is refused before parsing.
    r = t.request("PATCH", f"/_api/v1/caches/{c}", b"[]," * 20000 + b"[]", token=t.admin)
    expect_error(r, 400, 400, "JSON bomb within the cap", t)
    # missing-chunks: only its own cap and value count.
    r = t.request("POST", f"/_api/v1/caches/{c}/missing-chunks", b"[" + b"[]," * 200000 + b"[]]",
                  token=t.admin)
    expect_error(r, 400, 400, "missing-chunks of 200k empty arrays", t)
    # A body on a route that takes none.
    r = t.request("GET", f"/{c}/nix-cache-info", b"x" * 100, token=t.admin)
    expect_error(r, 400, 400, "GET with a body", t)
    # Unknown method on a known path.
    r = t.request("DELETE", f"/{c}/nix-cache-info", token=t.admin)
    expect_error(r, 405, 405, "DELETE nix-cache-info", t)
    assert "GET" in r.headers.get("allow", ""), r.headers


# ---- 3. cache settings a hostile admin of one cache could abuse ----


def test_store_dir_is_bounded_and_clean(srv):
    t = srv
    for what, sd in [("1001 bytes", "/" + "a" * 1000), ("newline", "/nix/store\nPriority: 1"),
                     ("relative", "nix/store"), ("dot-dot", "/nix/../store"), ("space", "/nix store")]:
        name = f"sd{os.getpid()}{abs(hash(what)) % 10000}"
        r = t.request("POST", f"/_api/v1/caches/{name}", json.dumps({"storeDir": sd}), token=t.admin)
        expect_error(r, 400, 400, f"storeDir with {what}", t)
        r = t.get(f"/_api/v1/caches/{name}", token=t.admin)
        assert r.status == 404, (what, r)
    name = f"sdok{os.getpid()}"
    r = t.request("POST", f"/_api/v1/caches/{name}", json.dumps({"storeDir": "/" + "a" * 255}),
                  token=t.admin)
    expect_status(r, 201, "a 256-byte storeDir", t)
    r = t.get(f"/{name}/nix-cache-info", token=t.admin)
    assert r.body == (b"StoreDir: /" + b"a" * 255 + b"\nWantMassQuery: 1\nPriority: 41\n"), r.body


def test_retention_cannot_stop_gc(srv):
    t = srv
    c = new_cache(t)
    tok = t.token(c, "configure")
    r = t.request("PATCH", f"/_api/v1/caches/{c}", json.dumps({"retentionSeconds": 2 ** 62}), token=tok)
    expect_error(r, 400, 400, "retentionSeconds of 2^62", t)
    r = t.request("PATCH", f"/_api/v1/caches/{c}", json.dumps({"retentionSeconds": 3153600000}),
                  token=tok)
    expect_status(r, 200, "retentionSeconds of 100 years", t)
    t.gc(0)  # still collects
    r = t.request("POST", "/_api/v1/gc?min-age=99999999999999999999", token=t.admin)
    expect_error(r, 400, 400, "min-age past any time", t)
    # GC needs destroy on every cache.
    r = t.request("POST", "/_api/v1/gc?min-age=0", token=t.token(c, "all"))
    expect_error(r, 403, 403, "GC with a token for one cache", t)
    r = t.request("POST", "/_api/v1/gc?min-age=0")
    expect_error(r, 401, 401, "anonymous GC", t)


# ---- 4. chunk objects are write-once and served as recorded ----


def test_chunk_objects_are_write_once(srv):
    t = srv
    c = new_cache(t)
    path, nar = put_synthetic(t, c, os.urandom(200000) + b"\0" * 300000)
    ni = t.narinfo(c, path)
    chunks = chunk_frames(t, c, path)
    objects_dir = t.state_dir / "chunks"
    before = {cid: next(objects_dir.rglob(cid)).read_bytes() for cid, *_ in chunks}
    # The same chunks uploaded again as other frames (another level).
    for cid, _len, data, _off in chunks:
        other = zstd_level(data, 19)
        assert other != before[cid]
        r = t.request("PUT", f"/_api/v1/caches/{c}/chunks/{cid}", other, token=t.admin)
        expect_status(r, 201, "chunk PUT of another frame", t)
    for cid, *_ in chunks:
        assert next(objects_dir.rglob(cid)).read_bytes() == before[cid], "object overwritten"
    # What is served still matches the narinfo's FileHash and FileSize.
    r = t.get(f"/{c}/{ni['URL']}", token=t.admin)
    expect_status(r, 200, "GET .nar.zst", t)
    assert len(r.body) == int(ni["FileSize"])
    assert "sha256:" + nix32_encode(hashlib.sha256(r.body).digest()) == ni["FileHash"]


# ---- 5. cost of a request is bounded by what it asks for ----


def test_range_request_checks_only_its_chunks(srv):
    t = srv
    c = new_cache(t)
    path, nar = put_synthetic(t, c, os.urandom(4 << 20))
    n_chunks = len(t.manifest(c, path)["chunks"])
    assert n_chunks >= 8
    url = f"/{c}/nar/{t.narinfo(c, path)['NarHash'].split(':')[1]}.nar"
    ops = lambda: t.metrics()["trove_chunk_store_operations_total"]
    before = ops()
    r = t.request("GET", url, headers={"Range": "bytes=0-0"}, token=t.admin)
    expect_status(r, 206, "Range bytes=0-0", t)
    assert r.body == nar[:1]
    assert ops() - before <= 2, f"{ops() - before} chunk store calls for one byte of {n_chunks} chunks"
    # A full GET checks every chunk once; the next one remembers them.
    r = t.get(url, token=t.admin)
    assert r.body == nar
    before = ops()
    r = t.get(url, token=t.admin)
    assert r.body == nar
    assert ops() - before <= n_chunks, "presence of every chunk asked again"


def test_aggregates_are_not_run_per_request(srv):
    t = srv
    c = new_cache(t, public=True)
    t.metrics()
    t.get(f"/_api/v1/caches/{c}")
    before = t.metrics()["trove_usage_queries_total"]
    for _ in range(30):
        assert t.get("/metrics").status == 200          # anonymous
        assert t.get(f"/_api/v1/caches/{c}").status == 200  # anonymous, public cache
    assert t.metrics()["trove_usage_queries_total"] - before <= 2


def test_manifest_listing_is_not_parsed_per_request(srv):
    t = srv
    c = new_cache(t)
    path, _ = put_synthetic(t, c, os.urandom(1000))
    built = lambda: t.metrics()["trove_manifests_built_total"]
    before = built()
    first = t.get(f"/_api/v1/caches/{c}/manifests/{store_hash_part(path)}", token=t.admin)
    expect_status(first, 200, "manifest GET", t)
    for _ in range(20):
        r = t.get(f"/_api/v1/caches/{c}/manifests/{store_hash_part(path)}", token=t.admin)
        assert r.body == first.body
        assert r.headers["trove-manifest-signature"] == first.headers["trove-manifest-signature"]
    assert built() - before == 1, "the manifest was built again for a repeated GET"


def test_connections_per_client_are_limited(srv):
    t = srv
    socks = []
    try:
        for _ in range(24):
            socks.append(socket.create_connection(("127.0.0.1", t.port), timeout=5))
        time.sleep(0.5)
        # Past 16 connections from this address, new ones are closed unanswered.
        refused = 0
        for s in socks[16:]:
            try:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                if not s.recv(100):
                    refused += 1
            except (ConnectionResetError, BrokenPipeError, socket.timeout):
                refused += 1
        assert refused == 8, refused
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    assert t.get("/health").status == 200


def test_idle_connections_are_closed(srv):
    t = srv
    with socket.create_connection(("127.0.0.1", t.port), timeout=15) as s:
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by the server, silent client
        assert time.monotonic() - t0 < 12
