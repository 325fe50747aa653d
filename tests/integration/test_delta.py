# SPDX-License-Identifier: Apache-2.0
"""Delta chunks against a real troved, PostgreSQL, Nix and FUSE: the second
of two similar paths (`nix copy --to` and `trove push` alike) is stored as
deltas against the first; `nix copy --from` verifies it, trovefs reads it
byte for byte, a damaged delta or base is detected (EIO, a cut stream, never
wrong bytes), GC keeps a base while a delta needs it, and clients cannot
choose bases."""

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import trovetest
from trovetest import run, trove, store_hash_part
from test_fs import Mount
from test_hostile import new_cache
from test_push import MK, build
from test_server import expect_error, expect_status

# Version 1: 3 MB that do not compress (as machine code barely does at the
# chunk level); version 2: the same with a 15-byte edit every 40 kB, so that
# almost every chunk differs a little from one of version 1.
VERSIONS_NIX = MK + """
let v1 = mk "trove-delta-app-1" ''
  mkdir -p $out/lib $out/bin
  head -c 3000000 /dev/urandom > $out/lib/libbig.so
  echo "app version 1" > $out/bin/app
'';
v2 = mk "trove-delta-app-2" ''
  mkdir -p $out/lib $out/bin
  cp ${v1}/lib/libbig.so $out/lib/libbig.so
  chmod u+w $out/lib/libbig.so
  off=20000
  while [ $off -lt 3000000 ]; do
    printf 'VERSION-2-PATCH' | dd of=$out/lib/libbig.so bs=1 seek=$off conv=notrunc status=none
    off=$((off + 40000))
  done
  echo "app version 2" > $out/bin/app
'';
in [ v1 v2 ]
"""


@pytest.fixture(scope="module")
def versions(tmp_path_factory, nix_environment):
    base = tmp_path_factory.mktemp("delta-build")
    v1, v2 = build(base, "versions", VERSIONS_NIX)
    assert v1.endswith("-trove-delta-app-1") and v2.endswith("-trove-delta-app-2")
    return v1, v2


def delta_rows(t, cache, path):
    """The version 2 manifest's chunk entries that name a base."""
    r = t.get(f"/_api/v1/caches/{cache}/manifests/{store_hash_part(path)}?version=2", token=t.admin)
    expect_status(r, 200, "manifest version 2", t)
    return [c for c in r.json()["chunks"] if len(c) == 6]


def stored_bytes(t, path):
    return t.scalar("SELECT coalesce(sum(c.stored_size), 0) FROM chunks c JOIN nar_chunks nc ON nc.chunk_id = c.id"
                    " JOIN nars n ON n.id = nc.nar_id JOIN paths p ON p.nar_id = n.id"
                    f" WHERE p.hash_part = '{store_hash_part(path)}' AND c.kind = 1")


def object_path(t, chunk_id):
    (p,) = (t.state_dir / "chunks").rglob(chunk_id)
    return p


def check_served(t, cache, path, tmp_path, tag):
    """nix copy --from verifies the path (NAR hash, signature); the .nar
    the server decodes is the path's NAR."""
    info = t.cache_info(cache)
    root = tmp_path / f"root-{tag}"
    t.nix_copy_from(cache, [path], root, info["publicKey"], tmp_path / f"xdg-from-{tag}", token=t.admin)
    copied = root / path.lstrip("/")
    for rel in ("lib/libbig.so", "bin/app"):
        assert (copied / rel).read_bytes() == (Path(path) / rel).read_bytes(), rel
    ni = t.narinfo(cache, path)
    want, _ = trovetest.nix_dump_sha256(path)
    got = hashlib.sha256(expect_status(t.get(f"/{cache}/nar/{ni['URL'].split('/')[-1].replace('.nar.zst', '.nar')}",
                                             token=t.admin), 200, "uncompressed NAR", t).body).hexdigest()
    assert got == want


@pytest.fixture(scope="module")
def server(make_troved_module):
    return make_troved_module(args=["--delta", "on"], log_level="info")


def test_nix_copy_stores_deltas(server, versions, tmp_path):
    t = server
    v1, v2 = versions
    cache = new_cache(t)
    before = t.metrics()
    t.nix_copy_to(cache, [v1], t.admin, tmp_path / "xdg1", compression="zstd")
    assert not delta_rows(t, cache, v1)
    t.nix_copy_to(cache, [v2], t.admin, tmp_path / "xdg2", compression="zstd")
    deltas = delta_rows(t, cache, v2)
    after = t.metrics()
    assert len(deltas) >= 20, deltas
    assert after["trove_deltas_stored_total"] - before.get("trove_deltas_stored_total", 0) >= 20
    # The deltas hold the edits, not the 64 kB around each of them.
    delta_len = sum(c[1] for c in deltas)
    assert stored_bytes(t, v2) * 10 < delta_len, (stored_bytes(t, v2), delta_len)
    # Every base is a plain chunk of version 1's NAR.
    v1_ids = {c[2] for c in t.manifest(cache, v1)["chunks"]}
    assert {c[4] for c in deltas} <= v1_ids
    # A client that does not ask gets version 1 (no bases) with the sizes
    # of the frames it will be sent.
    m1 = t.manifest(cache, v2)
    assert m1["version"] == 1 and all(len(c) == 4 for c in m1["chunks"])
    check_served(t, cache, v2, tmp_path, "nix")
    # Such a client's chunk download of a delta chunk is a plain frame.
    r = expect_status(t.get(f"/_api/v1/caches/{cache}/chunks/{deltas[0][2]}", token=t.admin), 200, "chunk", t)
    plain = run(["zstd", "-dc"], input=r.body).stdout
    assert hashlib.sha256(plain).hexdigest() == deltas[0][2]
    raw = expect_status(t.get(f"/_api/v1/caches/{cache}/chunks/{deltas[0][2]}?raw=1", token=t.admin), 200,
                        "raw chunk", t).body
    assert raw[:4] == bytes.fromhex("5e2a4d18") and raw[16:48] == bytes.fromhex(deltas[0][4])


def test_push_stores_deltas(server, versions, tmp_path):
    t = server
    v1, v2 = versions
    cache = new_cache(t)
    env = trovetest.logged_in_env(t, tmp_path)
    trove("push", "--no-progress", cache, v1, env=env, text=True)
    trove("push", "--no-progress", cache, v2, env=env, text=True)
    deltas = delta_rows(t, cache, v2)
    assert len(deltas) >= 20, deltas
    assert stored_bytes(t, v2) * 10 < sum(c[1] for c in deltas)
    check_served(t, cache, v2, tmp_path, "push")
    # Stored bytes by kind: the cache's (with the bases its deltas need),
    # the server's in /metrics, and what `trove cache info` prints.
    want = t.scalar(
        "SELECT sum(c.stored_size) FROM chunks c WHERE c.kind = 1 AND c.id IN (SELECT nc.chunk_id FROM nar_chunks nc"
        f" JOIN paths p ON p.nar_id = nc.nar_id JOIN caches k ON k.id = p.cache_id WHERE k.name = '{cache}')")
    # Usage is recomputed at most every few seconds.
    deadline = time.monotonic() + 30
    while True:
        usage = json.loads(trove("cache", "info", "--json", cache, env=env, text=True).stdout)["usage"]
        kinds = usage["storedBytesByKind"]
        if kinds["delta"] == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert kinds["delta"] == want
    assert kinds["plain"] > 2_000_000 and kinds["recompressed"] == 0
    assert kinds["plain"] + kinds["delta"] + kinds["recompressed"] == usage["storedBytes"]
    m = t.metrics()
    assert m['trove_stored_bytes_by_kind{kind="delta"}'] >= kinds["delta"]
    assert m['trove_stored_bytes_by_kind{kind="delta"}'] + m['trove_stored_bytes_by_kind{kind="plain"}'] + \
        m['trove_stored_bytes_by_kind{kind="recompressed"}'] == m["trove_stored_bytes"]
    text = trove("cache", "info", cache, env=env, text=True).stdout
    assert "by kind:" in text and "delta" in text, text


def test_delta_off(make_troved, versions, tmp_path):
    t = make_troved(args=["--delta", "off"], log_level="info")
    v1, v2 = versions
    cache = new_cache(t)
    t.nix_copy_to(cache, [v1, v2], t.admin, tmp_path / "xdg", compression="zstd")
    assert not delta_rows(t, cache, v2)
    assert t.scalar("SELECT count(*) FROM chunks WHERE kind <> 0") == 0


def test_no_bases_across_caches(server, make_troved, versions, tmp_path):
    """A base is a chunk the cache itself holds: a reader of the cache may
    fetch it, and it says nothing about another tenant's paths."""
    t = server
    v1, v2 = versions
    a, b = new_cache(t), new_cache(t)
    t.nix_copy_to(a, [v1], t.admin, tmp_path / "xdg-a", compression="zstd")
    t.nix_copy_to(b, [v2], t.admin, tmp_path / "xdg-b", compression="zstd")
    # v2 is stored already (an earlier test: its chunks are deltas against
    # chunks of another cache), so b shares its chunks; none of its
    # manifests names a base b does not hold, and b's readers still read.
    assert t.scalar("SELECT count(*) FROM chunks WHERE kind = 1") > 0
    assert not delta_rows(t, b, v2)
    check_served(t, b, v2, tmp_path, "b")
    # A fresh server: a's chunks are no candidates for b's.
    t2 = make_troved(args=["--delta", "on"], log_level="info")
    a2, b2 = new_cache(t2), new_cache(t2)
    t2.nix_copy_to(a2, [v1], t2.admin, tmp_path / "xdg-a2", compression="zstd")
    t2.nix_copy_to(b2, [v2], t2.admin, tmp_path / "xdg-b2", compression="zstd")
    assert t2.scalar("SELECT count(*) FROM chunks WHERE kind = 1") == 0


def mount(t, tmp_path, cache, tag):
    """trovefs on a fresh directory with an empty chunk cache."""
    t.token_file = tmp_path / "token"
    t.token_file.write_text(t.admin + "\n")
    mnt = tmp_path / f"mnt-{tag}"
    mnt.mkdir()
    return Mount(t, mnt, tmp_path / f"fscache-{tag}", cache=cache)


def read_all(mnt_path):
    return {rel: (mnt_path / rel).read_bytes() for rel in ("lib/libbig.so", "bin/app")}


def server_with_versions(make_troved, versions, tmp_path):
    """A fresh troved whose cache holds version 1, then version 2 (as deltas)."""
    t = make_troved(args=["--delta", "on"], log_level="info")
    v1, v2 = versions
    cache = new_cache(t)
    t.nix_copy_to(cache, [v1], t.admin, tmp_path / "xdg1", compression="zstd")
    t.nix_copy_to(cache, [v2], t.admin, tmp_path / "xdg2", compression="zstd")
    deltas = delta_rows(t, cache, v2)
    assert deltas
    return t, cache, deltas


def test_trovefs_reads_deltas(make_troved, versions, tmp_path):
    t, cache, deltas = server_with_versions(make_troved, versions, tmp_path)
    v1, v2 = versions
    m = mount(t, tmp_path, cache, "first")
    try:
        got = read_all(m.path(v2))
        for rel, data in got.items():
            assert data == (Path(v2) / rel).read_bytes(), rel
        st = m.stats()
        assert st["verifyFailures"] == 0 and st["chunksFetched"] > 0, st
    finally:
        m.unmount()

    # Damaged objects, a fresh mount without a local cache each time: a
    # delta object, then a base. The read fails (EIO); the .nar.zst and
    # .nar downloads are refused or cut; never wrong bytes.
    ni = t.narinfo(cache, v2)
    nar_url = f"/{cache}/{ni['URL']}"
    for which, victim in (("delta", deltas[0][2]), ("base", deltas[0][4])):
        p = object_path(t, victim)
        good = p.read_bytes()
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        p.write_bytes(bytes(bad))
        try:
            m = mount(t, tmp_path, cache, which)
            try:
                with pytest.raises(OSError) as e:
                    (m.path(v2) / "lib/libbig.so").read_bytes()
                assert e.value.errno == 5, e.value
            finally:
                m.unmount()
            for url in (nar_url, nar_url.replace(".nar.zst", ".nar")):
                try:
                    r = t.get(url, token=t.admin)
                except Exception:
                    continue  # cut in the middle: the client sees a broken stream
                if r.status != 200:
                    continue
                # A 200 whose body is complete would be wrong bytes.
                if url.endswith(".nar"):
                    assert hashlib.sha256(r.body).hexdigest() != trovetest.nix_dump_sha256(v2)[0]
                    assert len(r.body) < int(ni["NarSize"])
                else:
                    assert len(r.body) < int(ni["FileSize"])
        finally:
            p.write_bytes(good)
    # Repaired: everything reads again.
    check_served(t, cache, v2, tmp_path, "repaired")


def test_gc_keeps_bases(make_troved, versions, tmp_path):
    t, cache, deltas = server_with_versions(make_troved, versions, tmp_path)
    v1, v2 = versions
    bases = {c[4] for c in deltas}
    r = t.request("DELETE", f"/_api/v1/caches/{cache}/paths/{store_hash_part(v1)}", token=t.admin)
    expect_status(r, 200, "delete version 1", t)
    t.gc(min_age=0)
    t.gc(min_age=0)
    objects = t.local_chunk_ids()
    assert bases <= objects, "a base a delta needs was collected"
    # Chunks of version 1 that no delta needs went.
    v1_only = t.scalar("SELECT count(*) FROM chunks c WHERE c.kind = 0"
                       " AND NOT EXISTS (SELECT 1 FROM nar_chunks nc WHERE nc.chunk_id = c.id)"
                       " AND NOT EXISTS (SELECT 1 FROM chunks d WHERE d.base_id = c.id)")
    assert v1_only == 0
    check_served(t, cache, v2, tmp_path, "after-gc")
    # The bases belong to no path of the cache now: its manifests no longer
    # name them (the chunks are sent decoded) and they are not served alone.
    assert not delta_rows(t, cache, v2)
    for b in list(bases)[:3]:
        expect_error(t.get(f"/_api/v1/caches/{cache}/chunks/{b}", token=t.admin), 404, 404, "base chunk", t)
    for c in [c for c in t.manifest(cache, v2)["chunks"]][:5]:
        r = expect_status(t.get(f"/_api/v1/caches/{cache}/chunks/{c[2]}", token=t.admin), 200, "chunk", t)
        assert hashlib.sha256(run(["zstd", "-dc"], input=r.body).stdout).hexdigest() == c[2]
        assert len(r.body) == c[3]
    # Version 2 gone too: its deltas, then their bases, are collected.
    r = t.request("DELETE", f"/_api/v1/caches/{cache}/paths/{store_hash_part(v2)}", token=t.admin)
    expect_status(r, 200, "delete version 2", t)
    for _ in range(3):
        t.gc(min_age=0)
    assert t.scalar("SELECT count(*) FROM chunks") == 0
    assert not (bases & t.local_chunk_ids())


def zstd_frame(data):
    return run(["zstd", "-q", "-c", "--no-check"], input=data).stdout


def delta_object(base_id_hex, base_len, body):
    """A delta object's header naming base_id_hex, before a zstd frame."""
    return (bytes.fromhex("5e2a4d18") + (40).to_bytes(4, "little") + b"TRVD" +
            base_len.to_bytes(4, "little") + bytes.fromhex(base_id_hex) + zstd_frame(body))


def test_clients_cannot_name_bases(server, versions, tmp_path):
    """Bases are the server's choice: an upload of a delta object (naming a
    base that is a delta itself, or one not in the cache) and a commit
    manifest naming a base are refused, and nothing is stored."""
    t = server
    v1, v2 = versions
    cache = new_cache(t)
    t.nix_copy_to(cache, [v1, v2], t.admin, tmp_path / "xdg", compression="zstd")
    deltas = delta_rows(t, cache, v2)
    assert deltas
    content = os.urandom(70000)
    cid = hashlib.sha256(content).hexdigest()
    n_chunks = t.scalar("SELECT count(*) FROM chunks")
    for what, base in (("a delta as base", deltas[0][2]), ("a base not in the cache", "ab" * 32),
                       ("a plain base", deltas[0][4])):
        body = delta_object(base, 65536, content)
        r = t.request("PUT", f"/_api/v1/caches/{cache}/chunks/{cid}", body, token=t.admin)
        expect_error(r, 400, 400, f"PUT of a delta object naming {what}", t)
        rec = bytes.fromhex(cid) + len(body).to_bytes(4, "little") + body
        r = t.request("POST", f"/_api/v1/caches/{cache}/chunks", rec, token=t.admin)
        expect_error(r, 400, 400, f"POST of a delta object naming {what}", t)
    assert t.scalar("SELECT count(*) FROM chunks") == n_chunks
    assert cid not in t.local_chunk_ids()

    # A commit manifest naming a base.
    m = t.get(f"/_api/v1/caches/{cache}/manifests/{store_hash_part(v2)}?version=2", token=t.admin).json()
    other = new_cache(t)
    r = t.request("POST", f"/_api/v1/caches/{other}/paths", json.dumps(m), token=t.admin)
    r = expect_error(r, 400, 400, "commit naming bases", t)
    assert "base" in r.text
    assert t.get(f"/_api/v1/caches/{other}/manifests/{store_hash_part(v2)}", token=t.admin).status == 404

    # Bad query values; no token; another tenant's token.
    h = store_hash_part(v2)
    expect_error(t.get(f"/_api/v1/caches/{cache}/manifests/{h}?version=3", token=t.admin), 400, 400,
                 "manifest version 3", t)
    expect_error(t.get(f"/_api/v1/caches/{cache}/chunks/{deltas[0][2]}?raw=yes", token=t.admin), 400, 400,
                 "raw=yes", t)
    expect_error(t.get(f"/_api/v1/caches/{cache}/chunks/{deltas[0][2]}?raw=1"), 401, 401, "no token", t)
    expect_error(t.get(f"/_api/v1/caches/{cache}/manifests/{h}?version=2"), 401, 401, "no token", t)
    stranger = t.token(cache=other, perm="pull")
    for url in (f"/_api/v1/caches/{cache}/chunks/{deltas[0][2]}?raw=1",
                f"/_api/v1/caches/{cache}/chunks/{deltas[0][4]}",
                f"/_api/v1/caches/{cache}/manifests/{h}?version=2"):
        expect_error(t.get(url, token=stranger), 403, 403, "another tenant's token", t)
    # The base of a chunk of cache, asked through a cache that does not hold it.
    expect_error(t.get(f"/_api/v1/caches/{other}/chunks/{deltas[0][4]}", token=t.admin), 404, 404,
                 "base through another cache", t)


TEXT_NIX = MK + """
mk "trove-recompress-text" ''
  mkdir -p $out/share
  seq 1 500000 | sed 's/$/ trove recompression test line/' > $out/share/lines.txt
''
"""


def test_recompress_cold_chunks(make_troved, tmp_path):
    """Cold chunks recompressed at a higher level: fewer stored bytes, the
    same ids, the same .nar.zst bytes (FileHash holds), nix copy --from and
    trovefs read them; a second run finds nothing to do; the route refuses
    what it should."""
    t = make_troved(args=["--delta", "on"], log_level="info")
    (text,) = build(tmp_path, "text", TEXT_NIX)
    cache = new_cache(t)
    t.nix_copy_to(cache, [text], t.admin, tmp_path / "xdg", compression="zstd")
    ni = t.narinfo(cache, text)
    nar_url = f"/{cache}/{ni['URL']}"
    zst_before = expect_status(t.get(nar_url, token=t.admin), 200, "nar.zst", t).body
    man_before = t.get(f"/_api/v1/caches/{cache}/manifests/{store_hash_part(text)}", token=t.admin).body
    stored_before = t.scalar("SELECT sum(stored_size) FROM chunks")

    # Hostile and malformed requests first: nothing happens.
    for q, status in (("level=2", 400), ("level=23", 400), ("level=x", 400), ("level=19&max=0", 400),
                      ("level=19&min-age=-1", 400)):
        expect_error(t.request("POST", f"/_api/v1/recompress?{q}", token=t.admin), status, status, q, t)
    expect_error(t.request("POST", "/_api/v1/recompress?level=19&min-age=0"), 401, 401, "no token", t)
    puller = t.token(cache=cache, perm="pull")
    expect_error(t.request("POST", "/_api/v1/recompress?level=19&min-age=0", token=puller), 403, 403,
                 "a pull token", t)
    expect_error(t.request("POST", "/_api/v1/recompress?min-age=0", token=t.admin), 400, 400,
                 "off without a level", t)
    # Paths used within min-age are not cold.
    r = expect_status(t.request("POST", "/_api/v1/recompress?level=19&min-age=3600", token=t.admin), 200,
                      "recompress, nothing cold", t).json()
    assert r["recompressed"] == 0
    assert t.scalar("SELECT count(*) FROM chunks WHERE kind <> 0") == 0

    r = expect_status(t.request("POST", "/_api/v1/recompress?level=19&min-age=0", token=t.admin), 200,
                      "recompress", t).json()
    assert r["recompressed"] > 0 and r["bytesAfter"] < r["bytesBefore"], r
    assert t.scalar("SELECT count(*) FROM chunks WHERE kind = 2") == r["recompressed"]
    assert t.scalar("SELECT sum(stored_size) FROM chunks") == stored_before - (r["bytesBefore"] - r["bytesAfter"])
    # Same ids, same manifest, same served bytes.
    assert t.get(f"/_api/v1/caches/{cache}/manifests/{store_hash_part(text)}", token=t.admin).body == man_before
    assert expect_status(t.get(nar_url, token=t.admin), 200, "nar.zst", t).body == zst_before
    m = t.metrics()
    assert m['trove_stored_bytes_by_kind{kind="recompressed"}'] > 0
    assert m["trove_chunks_recompressed_total"] == r["recompressed"]
    # nix copy --from verifies; trovefs reads byte for byte.
    info = t.cache_info(cache)
    root = tmp_path / "root"
    t.nix_copy_from(cache, [text], root, info["publicKey"], tmp_path / "xdg-from", token=t.admin)
    rel = "share/lines.txt"
    assert (root / text.lstrip("/") / rel).read_bytes() == (Path(text) / rel).read_bytes()
    mt = mount(t, tmp_path, cache, "recompressed")
    try:
        assert (mt.path(text) / rel).read_bytes() == (Path(text) / rel).read_bytes()
    finally:
        mt.unmount()
    # Done once: a second run finds nothing left to gain.
    r2 = expect_status(t.request("POST", "/_api/v1/recompress?level=19&min-age=0", token=t.admin), 200,
                       "recompress again", t).json()
    assert r2["recompressed"] == 0


def test_options_refuse_bad_values(tmp_path):
    for args, msg in ((["--delta", "maybe"], "bad value 'maybe' for 'delta'"),
                      (["--recompress-level", "23"], "bad value '23' for 'recompress-level'"),
                      (["--recompress-level", "3"], "recompress-level 3 must be above compression-level 3"),
                      (["--recompress-age", "5"], "bad value '5' for 'recompress-age'"),
                      (["--recompress-batch", "0"], "bad value '0' for 'recompress-batch'")):
        r = run([trovetest.binary("troved"), "--state-dir", tmp_path / "state", *args],
                expect=None, text=True, timeout=60)
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)
        assert not (tmp_path / "state").exists()
    out = run([trovetest.binary("troved"), "--help"], text=True).stdout
    for opt in ("--delta", "--recompress-level", "--recompress-age", "--recompress-batch"):
        assert opt in out
