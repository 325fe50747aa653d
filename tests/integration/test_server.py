# SPDX-License-Identifier: Apache-2.0
"""troved, the cache server, end to end: real Nix (`nix copy --to/--from`
over HTTP), the embedded and an external PostgreSQL, the local and the S3
(radosgw) chunk store.

Servers are shared per module where the tests do not interfere:
`local` (embedded PostgreSQL, local chunks) holds several caches, one per
test; `s3` stores chunks in radosgw. Tests that kill or restart a server
get their own. Every Nix invocation has its own XDG_CACHE_HOME, as a
separate CI machine would (Nix caches narinfo lookups there).
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

import trovetest
from trovetest import nar_str, nix32_encode, run, store_hash_part

# ---- helpers ----


def expect_status(r, want, what, server=None, mark=None):
    """Asserts an HTTP status; the failure says what was asked, what came
    back and what troved logged meanwhile."""
    __tracebackhide__ = True
    wants = want if isinstance(want, (tuple, list, set)) else (want,)
    if r.status in wants:
        return r
    msg = f"{what}: expected HTTP {want}, got {r.status}: {r.body[:500]!r}"
    if server is not None:
        log = server.log_since(mark) if mark is not None else server.log()
        msg += "\n--- troved log ---\n" + trovetest._tail(log, 3000)
    raise AssertionError(msg)


def expect_error(r, lo, hi, what, server=None, mark=None):
    """A 4xx in [lo, hi] with an `error: <message>` body."""
    __tracebackhide__ = True
    expect_status(r, tuple(range(lo, hi + 1)), what, server, mark)
    assert r.text.startswith("error: ") and len(r.text.strip()) > len("error: "), \
        f"{what}: {r.status} without a message: {r.body[:200]!r}"
    return r


def nar_regular(data, executable=False):
    """The NAR of a store path that is one regular file."""
    out = nar_str(b"nix-archive-1") + nar_str(b"(") + nar_str(b"type") + nar_str(b"regular")
    if executable:
        out += nar_str(b"executable") + nar_str(b"")
    return out + nar_str(b"contents") + nar_str(data) + nar_str(b")")


def zstd_frame(data):
    """One zstd frame with the content size in its header (zstd writes it
    only when it knows the size: compress a file, not a pipe)."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        frame = run(["zstd", "-q", "-c", "--content-size", f.name]).stdout
    assert frame[:4] == b"\x28\xb5\x2f\xfd"
    return frame


def fake_store_path(name="synthetic"):
    return f"/nix/store/{nix32_encode(os.urandom(20))}-{name}"


def sha256_nix32(data):
    return nix32_encode(hashlib.sha256(data).digest())


def narinfo_text(store_path, nar, *, nar_hash=None, nar_size=None, url=None, refs=""):
    fh = sha256_nix32(nar)
    return (f"StorePath: {store_path}\n"
            f"URL: {url or f'nar/{fh}.nar'}\n"
            f"Compression: none\n"
            f"FileHash: sha256:{fh}\n"
            f"FileSize: {len(nar)}\n"
            f"NarHash: sha256:{nar_hash or fh}\n"
            f"NarSize: {len(nar) if nar_size is None else nar_size}\n"
            f"References: {refs}\n")


def put_synthetic(server, cache, data=None, token=None):
    """Pushes a one-file store path the way `nix copy` does (NAR, then
    narinfo) without Nix; returns (store path, NAR bytes)."""
    token = token or server.admin
    data = os.urandom(3000) if data is None else data
    nar = nar_regular(data)
    path = fake_store_path()
    r = server.request("PUT", f"/{cache}/nar/{sha256_nix32(nar)}.nar", nar, token=token)
    expect_status(r, 200, "PUT synthetic NAR", server)
    r = server.request("PUT", f"/{cache}/{store_hash_part(path)}.narinfo",
                       narinfo_text(path, nar), token=token)
    expect_status(r, 200, "PUT synthetic narinfo", server)
    return path, nar


class Dirs:
    """Fresh directories under one base: XDG cache homes, store roots."""

    def __init__(self, base):
        self.base = Path(base)
        self.n = 0

    def __call__(self, prefix="d"):
        self.n += 1
        d = self.base / f"{prefix}{self.n}"
        d.mkdir(parents=True)
        return d


@pytest.fixture(scope="module")
def dirs():
    base = Path(tempfile.mkdtemp(prefix="trove-server-"))
    os.chmod(base, 0o755)
    yield Dirs(base)
    shutil.rmtree(base, ignore_errors=True)


def build_expr(dirs, text, name, files=None):
    """nix-build of a Nix expression (text) written to its own directory
    next to files ({name: bytes}); returns the output paths."""
    d = dirs("expr")
    for fname, data in (files or {}).items():
        (d / fname).write_bytes(data)
    (d / "default.nix").write_text(text)
    return trovetest.nix_build(d / "default.nix", d / "result")


MK = """
  mk = name: script: derivation {
    inherit name; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-ec" script ]; PATH = "/usr/bin:/bin"; LC_ALL = "C";
  };
"""


def verify_store(root, paths, originals=None):
    """nix-store --verify --check-contents of a local?root store, and every
    path valid there with the same NAR hash as in /nix/store."""
    store = f"local?root={root}"
    r = run(["nix-store", "--store", store, "--verify", "--check-contents"],
            env=trovetest.nix_env(), text=True, expect=None)
    assert r.returncode == 0 and "was modified" not in r.stderr, \
        f"nix-store --verify --check-contents failed:\n{r.stderr[-3000:]}"
    for p in paths:
        got = run(["nix-store", "--store", store, "-q", "--hash", p],
                  env=trovetest.nix_env(), text=True).stdout.strip()
        assert got == trovetest.nix_path_hash(p), f"{p}: hash {got} in the pulled store"


def chunk_rows(server):
    return {row[0] for row in server.psql("SELECT encode(hash, 'hex') FROM chunks")}


def unreferenced_chunks(server):
    return server.scalar("SELECT count(*) FROM chunks c WHERE NOT EXISTS "
                         "(SELECT 1 FROM nar_chunks nc WHERE nc.chunk_id = c.id)")


def cache_id(server, name):
    return server.scalar(f"SELECT id FROM caches WHERE name = '{name}'")


# ---- shared servers and data ----


@pytest.fixture(scope="module")
def local(make_troved_module):
    """troved with nothing but a state directory: embedded PostgreSQL,
    chunks on local disk."""
    return make_troved_module(name="local")


@pytest.fixture(scope="module")
def s3(make_troved_module, radosgw):
    bucket = f"trove-server-{os.getpid()}"
    spec = radosgw.spec(bucket, prefix="c/")
    t = make_troved_module(name="s3", storage=spec, extra_env=radosgw.credentials_env())
    t.spec = spec
    t.radosgw = radosgw
    return t


def push_closure(server, dirs, cache, closure):
    info = server.create_cache(cache)
    t0 = time.monotonic()
    server.nix_copy_to(cache, [closure.top], server.admin, dirs("xdg"), compression="zstd")
    return {"server": server, "cache": cache, "key": info["publicKey"],
            "seconds": time.monotonic() - t0}


@pytest.fixture(scope="module")
def pushed_local(local, dirs, test_closure):
    """The shared test closure (~300 MB) pushed once to `local`."""
    return push_closure(local, dirs, "closure", test_closure)


@pytest.fixture(scope="module")
def small_closure(session_dir, nix_environment):
    """closure.nix with a 24 MB big file: every shape of the test closure,
    the big file still ~150 chunks, at a tenth of the S3 round trips (each
    chunk is one PUT to radosgw's single OSD)."""
    from conftest import Closure
    (top,) = trovetest.nix_build(trovetest.INTEGRATION_DIR / "closure.nix",
                                 session_dir / "closure-small", attr="top", args={"bigSize": "24M"})
    return Closure(top, trovetest.nix_closure(top))


@pytest.fixture(scope="module")
def pushed_s3(s3, dirs, small_closure):
    return push_closure(s3, dirs, "closure", small_closure)


# ---- 1. nix copy round trip, both chunk backends ----


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_nix_copy_roundtrip(backend, request, dirs):
    pushed = request.getfixturevalue(f"pushed_{backend}")
    t, cache = pushed["server"], pushed["cache"]
    test_closure = request.getfixturevalue("test_closure" if backend == "local" else "small_closure")

    # Every path of the closure is there, signed on the fly.
    for p in test_closure.paths:
        ni = t.narinfo(cache, p)
        assert ni is not None, f"{p} missing after nix copy --to"
        assert ni["NarHash"] == trovetest.nix_path_hash(p)
        assert any(s.startswith(cache + "-1:") for s in ni.get("Sig", "").split("\n")), ni

    # Pulled into a fresh store that trusts only the cache's key.
    root = dirs("root")
    t.nix_copy_from(cache, [test_closure.top], root, pushed["key"], dirs("xdg"),
                    token=t.token(cache, "pull"))
    verify_store(root, test_closure.paths)

    # Another key: refused, nothing added.
    other = t.create_cache(f"otherkey-{backend}")["publicKey"]
    root2 = dirs("root")
    r = t.nix_copy_from(cache, [test_closure.top], root2, other, dirs("xdg"),
                        token=t.token(cache, "pull"), expect=None)
    assert r.returncode != 0, "nix copy --from accepted paths signed by an untrusted key"
    assert "signature" in r.stderr, r.stderr[-2000:]
    r = run(["nix-store", "--store", f"local?root={root2}", "--check-validity", test_closure.top],
            env=trovetest.nix_env(), expect=None)
    assert r.returncode != 0

    # Chunks: rows in the database and objects in the store are the same set.
    rows = chunk_rows(t)
    assert len(rows) > (1000 if backend == "local" else 90)  # 300 MB (24 MB) in chunks of 16..256 KiB
    if backend == "s3":
        objects = t.radosgw.list_chunks(t.spec)
        assert set(objects) == rows
        sizes = dict(t.psql("SELECT encode(hash, 'hex'), stored_size FROM chunks"))
        assert all(int(sizes[k]) == v for k, v in objects.items())
        assert not t.local_chunk_ids()  # nothing on local disk
    else:
        assert t.local_chunk_ids() == rows


# ---- 9. the embedded default, restarted; xz uploads ----


def test_embedded_default_restart(make_troved, dirs, test_closure):
    t = make_troved()
    assert (t.state_dir / "pg").is_dir() and (t.state_dir / "chunks").is_dir()
    key = t.create_cache("small")["publicKey"]
    paths = [test_closure["link"], test_closure["empty"]]
    # Default compression of an http store: xz.
    t.nix_copy_to("small", paths, t.admin, dirs("xdg"))
    before = {p: t.narinfo("small", p) for p in paths + [test_closure["file"]]}
    assert all(before.values()), before
    chunks = chunk_rows(t)
    assert chunks and t.local_chunk_ids() == chunks

    mark = t.log_mark()
    t.restart()
    second = t.log_since(mark)
    assert "created token secret" not in second and "migrated" not in second, second
    for p, ni in before.items():
        assert t.narinfo("small", p) == ni, f"{p} changed or vanished over a restart"
    assert chunk_rows(t) == chunks
    assert t.cache_info("small")["publicKey"] == key
    root = dirs("root")
    t.nix_copy_from("small", paths, root, key, dirs("xdg"), token=t.admin)
    verify_store(root, before.keys())


# ---- 2. dedup ----


@pytest.fixture(scope="module")
def dedup_pair(dirs):
    """Two store paths with a 40 MB random file each, the second a copy of
    the first with three 16-byte changes."""
    text = "let " + MK + """
  a = mk "trove-dedup-a" ''
    mkdir $out; head -c 40M /dev/urandom > $out/data; echo a > $out/name
  '';
  b = mk "trove-dedup-b" ''
    mkdir $out; cp ${a}/data $out/data; chmod u+w $out/data
    for off in 5000000 20000000 35000000; do
      printf 'trove-changed!!!' | dd of=$out/data bs=1 seek=$off conv=notrunc status=none
    done
    echo b > $out/name
  '';
in [ a b ]
"""
    a, b = build_expr(dirs, text, "dedup")
    # b must not reference a (it only copied its bytes).
    assert trovetest.nix_closure(b) == [b]
    return a, b


def test_dedup(local, dirs, dedup_pair):
    t = local
    a, b = dedup_pair
    t.create_cache("dedup")
    rows0, objs0 = chunk_rows(t), t.local_chunk_ids()
    t.nix_copy_to("dedup", [a], t.admin, dirs("xdg"), compression="zstd")
    rows_a = chunk_rows(t)
    m_a = t.metrics()
    t.nix_copy_to("dedup", [b], t.admin, dirs("xdg"), compression="zstd")
    rows_b = chunk_rows(t)
    m_b = t.metrics()

    man_a, man_b = t.manifest("dedup", a), t.manifest("dedup", b)
    ids_a = {c[2] for c in man_a["chunks"]}
    ids_b = {c[2] for c in man_b["chunks"]}
    assert len(ids_a) > 200
    new_a, new_b = rows_a - rows0, rows_b - rows_a
    assert ids_a <= rows_a and ids_b <= rows_b
    # Three small changes touch a few chunks each; everything else is shared.
    assert len(new_b) <= 12, f"b added {len(new_b)} chunks for 3 small changes"
    assert len(ids_b - ids_a) == len(new_b)
    assert new_b == ids_b - ids_a
    # Stored once: one row per chunk, one object per row.
    assert t.scalar("SELECT count(*) FROM chunks") == len(rows_b)
    assert t.local_chunk_ids() - objs0 == new_a | new_b

    # Metrics count the chunks b did not have to store.
    hits = m_b["trove_dedup_hits_total"] - m_a["trove_dedup_hits_total"]
    dbytes = m_b["trove_dedup_bytes_total"] - m_a["trove_dedup_bytes_total"]
    shared = [c for c in man_b["chunks"] if c[2] in ids_a]
    assert hits >= len(shared), (hits, len(shared))
    assert dbytes >= sum(c[1] for c in shared) >= man_b["narSize"] - 12 * 256 * 1024
    assert m_b["trove_dedup_ratio"] > 0

    usage = t.cache_info("dedup")["usage"]
    assert usage["paths"] == 2
    assert usage["narBytes"] == man_a["narSize"] + man_b["narSize"]
    assert usage["chunks"] == len(ids_a | ids_b)
    # Random data does not compress: stored ≈ one copy of the data.
    assert usage["storedBytes"] < 0.6 * usage["narBytes"], usage
    assert usage["dedupRatio"] > 1.8, usage


# ---- 3. the served NAR is the stored frames ----


def dump_head_tail(path, keep=1 << 20):
    """(first keep bytes, last keep bytes, size) of nix-store --dump."""
    p = subprocess.Popen(["nix-store", "--dump", path], stdout=subprocess.PIPE,
                         env=trovetest.nix_env())
    head, tail, size = b"", b"", 0
    while True:
        block = p.stdout.read(trovetest.CHUNK)
        if not block:
            break
        if len(head) < keep:
            head += block[:keep - len(head)]
        tail = (tail + block)[-keep:]
        size += len(block)
    assert p.wait() == 0
    return head, tail, size


def test_served_nar_is_stored_frames(pushed_local, test_closure):
    t, cache = pushed_local["server"], pushed_local["cache"]
    big = test_closure["big"]
    tok = t.token(cache, "pull")
    man = t.manifest(cache, big)
    ni = t.narinfo(cache, big)
    assert ni["Compression"] == "zstd" and ni["URL"].endswith(".nar.zst")
    assert len(man["chunks"]) > 1000

    # Concatenated chunk frames, fetched one by one through the API.
    h = hashlib.sha256()
    size = 0
    for off, length, cid, stored in man["chunks"]:
        r = t.get(f"/_api/v1/caches/{cache}/chunks/{cid}", token=tok)
        assert r.status == 200 and len(r.body) == stored, (cid, r.status, len(r.body), stored)
        h.update(r.body)
        size += len(r.body)
    status, served_sha, served_size = t.http.get_sha256(f"/{cache}/{ni['URL']}", token=tok)
    assert status == 200
    assert (served_sha, served_size) == (h.hexdigest(), size), \
        "the .nar.zst differs from the concatenation of the chunk frames"
    assert ni["FileSize"] == str(size)
    assert ni["FileHash"] == "sha256:" + nix32_encode(bytes.fromhex(served_sha))

    # zstd -d of it is the NAR Nix dumps.
    got = trovetest.stream_sha256(
        ["bash", "-o", "pipefail", "-c",
         f'curl -sSf -H "Authorization: Bearer {tok}" {t.url}/{cache}/{ni["URL"]} | zstd -dc'])
    assert got == trovetest.nix_dump_sha256(big)

    # Ranges of the uncompressed NAR, against the real bytes.
    head, tail, nar_size = dump_head_tail(big)
    assert nar_size == man["narSize"]
    file_off = man["root"]["entries"]["big.bin"]["narOffset"]
    big_bin = Path(big) / "big.bin"

    def expected(a, b):
        if b < len(head):
            return head[a:b + 1]
        if a >= nar_size - len(tail):
            return tail[a - (nar_size - len(tail)):b + 1 - (nar_size - len(tail))]
        assert a >= file_off and b < file_off + big_bin.stat().st_size
        with open(big_bin, "rb") as f:
            f.seek(a - file_off)
            return f.read(b - a + 1)

    nar_url = f"/{cache}/nar/{ni['NarHash'].split(':')[1]}.nar"
    bounds = [c[0] for c in man["chunks"]]
    ranges = [(0, 0), (0, 99), (1, 4096), (bounds[1] - 100, bounds[1] + 100),
              (bounds[1] - 1, bounds[1]), (bounds[1], bounds[1]),
              (bounds[5] - 10, bounds[8] + 10), (bounds[-1] - 3, bounds[-1] + 3),
              (nar_size // 2, nar_size // 2 + 300000), (nar_size - 100, nar_size - 1)]
    for a, b in ranges:
        r = t.get(nar_url, token=tok, headers={"Range": f"bytes={a}-{b}"})
        expect_status(r, 206, f"Range bytes={a}-{b}")
        assert r.headers["content-range"] == f"bytes {a}-{b}/{nar_size}"
        assert r.body == expected(a, b), f"bytes={a}-{b}"
    for spec, a, b in [(f"-{500}", nar_size - 500, nar_size - 1),
                       (f"{nar_size - 10}-", nar_size - 10, nar_size - 1),
                       (f"{nar_size - 10}-{nar_size + 1000}", nar_size - 10, nar_size - 1)]:
        r = t.get(nar_url, token=tok, headers={"Range": f"bytes={spec}"})
        expect_status(r, 206, f"Range bytes={spec}")
        assert r.body == expected(a, b), spec
    for spec in [f"{nar_size}-", f"{nar_size + 5}-{nar_size + 10}", "-0"]:
        r = t.get(nar_url, token=tok, headers={"Range": f"bytes={spec}"})
        expect_status(r, 416, f"unsatisfiable Range bytes={spec}")
        assert r.headers.get("content-range") == f"bytes */{nar_size}"

    # A small NAR: every byte, and the whole of it without Range.
    tree = test_closure["tree"]
    nar = run(["nix-store", "--dump", tree], env=trovetest.nix_env()).stdout
    tni = t.narinfo(cache, tree)
    turl = f"/{cache}/nar/{tni['NarHash'].split(':')[1]}.nar"
    r = t.get(turl, token=tok)
    assert r.status == 200 and r.body == nar
    for spec, want in [("0-0", nar[:1]), ("-1", nar[-1:]), ("7-", nar[7:]),
                       (f"0-{len(nar) - 1}", nar), ("-100000000", nar)]:
        r = t.get(turl, token=tok, headers={"Range": f"bytes={spec}"})
        expect_status(r, 206, f"Range bytes={spec} of {tree}")
        assert r.body == want, spec


# ---- 4. concurrent pushes ----


@pytest.fixture(scope="module")
def family(dirs):
    """16 small top paths over 4 shared dependencies and one common path;
    every top and the common path hold the same 1 MB blob (shared chunks
    in different NARs)."""
    import random
    blob = random.Random(20240601).randbytes(1 << 20)
    text = "let " + MK + """
  common = mk "trove-fam-common" ''
    mkdir $out; cat ${./blob} > $out/blob; echo common > $out/name
  '';
  dep = i: mk "trove-fam-dep${toString i}" ''
    mkdir $out; echo dep${toString i} ${common} > $out/ref; head -c 300000 ${./blob} > $out/part
  '';
  deps = builtins.genList dep 4;
  top = i: mk "trove-fam-top${toString i}" ''
    mkdir $out
    echo ${builtins.elemAt deps (i - (i / 4) * 4)} ${builtins.elemAt deps (i + 1 - ((i + 1) / 4) * 4)} > $out/refs
    cat ${./blob} > $out/blob; echo top${toString i} >> $out/blob
  '';
in builtins.genList top 16
"""
    tops = build_expr(dirs, text, "family", {"blob": blob})
    assert len(tops) == 16
    return tops


def test_concurrent_pushes(local, dirs, family):
    t = local
    key = t.create_cache("family")["publicKey"]
    tok = t.token("family", "pull,push")
    procs = []
    for top in family:
        xdg = dirs("xdg")
        netrc = trovetest.write_netrc(xdg.with_suffix(".netrc"), tok)
        procs.append((top, subprocess.Popen(
            ["nix", "copy", "--netrc-file", str(netrc), "--to", f"{t.url}/family", top],
            env=trovetest.nix_env({"XDG_CACHE_HOME": str(xdg)}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    failed = []
    for top, p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            failed.append(f"{top}: status {p.returncode}\n{err[-1500:]}")
    assert not failed, "concurrent nix copy --to failed:\n" + "\n".join(failed) + \
        "\n--- troved log ---\n" + trovetest._tail(t.log(), 3000)

    all_paths = sorted({p for top in family for p in trovetest.nix_closure(top)})
    assert len(all_paths) == 21
    cid = cache_id(t, "family")
    rows = t.psql(f"SELECT store_path FROM paths WHERE cache_id = {cid} ORDER BY store_path")
    assert sorted(r[0] for r in rows) == all_paths, "one row per store path"
    # One NAR row per distinct NAR; one chunk row per distinct chunk.
    assert t.scalar(f"SELECT count(DISTINCT nar_id) FROM paths WHERE cache_id = {cid}") == 21
    assert t.scalar("SELECT count(*) FROM nars") == t.scalar("SELECT count(DISTINCT nar_hash) FROM nars")
    assert t.scalar("SELECT count(*) FROM chunks") == t.scalar("SELECT count(DISTINCT hash) FROM chunks")
    assert t.scalar("SELECT count(*) FROM nars n WHERE n.n_chunks <> "
                    "(SELECT count(*) FROM nar_chunks nc WHERE nc.nar_id = n.id)") == 0
    for p in all_paths:
        assert t.narinfo("family", p)["NarHash"] == trovetest.nix_path_hash(p)
    # The blob's chunks are shared by the 17 NARs that hold it.
    shared = t.scalar(f"SELECT count(*) FROM (SELECT nc.chunk_id FROM nar_chunks nc "
                      f"JOIN paths p ON p.nar_id = nc.nar_id AND p.cache_id = {cid} "
                      f"GROUP BY nc.chunk_id HAVING count(*) >= 17) s")
    assert shared >= 5, f"only {shared} chunks shared by the blob holders"
    assert chunk_rows(t) == t.local_chunk_ids()

    root = dirs("root")
    t.nix_copy_from("family", family, root, key, dirs("xdg"), token=tok)
    verify_store(root, all_paths)


# ---- 5. interrupted uploads ----


@pytest.fixture(scope="module")
def unique_path(dirs):
    """A 24 MB random store path made for this run (so its chunks are new
    to every server), deleted from the Nix store at the end."""
    nonce = uuid.uuid4().hex[:12]
    text = "let " + MK + f"""
in mk "trove-kill-{nonce}" ''
    mkdir $out; head -c 24M /dev/urandom > $out/data; echo {nonce} > $out/name
''
"""
    d = dirs("expr")
    (d / "default.nix").write_text(text)
    (path,) = trovetest.nix_build(d / "default.nix", d / "result")
    nar = dirs("nar") / "path.nar"
    with open(nar, "wb") as f:
        run(["nix-store", "--dump", path], env=trovetest.nix_env(), stdout=f)
    yield path, nar
    (d / "result").unlink()
    run(["nix-store", "--delete", path], env=trovetest.nix_env(), expect=None)


def slow_put(server, cache, nar, token, rate="6M"):
    """curl PUT of an uncompressed NAR file at a limited rate."""
    name = nix32_encode(bytes.fromhex(trovetest.file_sha256(nar)))
    return subprocess.Popen(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--limit-rate", rate,
         "-H", f"Authorization: Bearer {token}", "-T", str(nar),
         f"{server.url}/{cache}/nar/{name}.nar"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE), name


def wait_chunks(server, at_least, timeout=60):
    deadline = time.monotonic() + timeout
    while server.scalar("SELECT count(*) FROM chunks") < at_least:
        assert time.monotonic() < deadline, "ingest did not progress"
        time.sleep(0.05)


def check_reclaimed(server, gone):
    """GC with min-age=0 deletes every unreferenced chunk, rows and
    objects; gone: how many at least."""
    before_rows = chunk_rows(server)
    unref = unreferenced_chunks(server)
    assert unref >= gone, f"expected >= {gone} unreferenced chunks, found {unref}"
    res = server.gc(0)
    assert res["chunksDeleted"] == unref, res
    after = chunk_rows(server)
    assert len(before_rows) - len(after) == unref
    assert unreferenced_chunks(server) == 0
    return after


def test_client_killed_mid_upload(local, dirs, unique_path):
    t = local
    path, nar = unique_path
    t.create_cache("killclient")
    tok = t.token("killclient", "pull,push")
    n0 = t.scalar("SELECT count(*) FROM chunks")
    proc, name = slow_put(t, "killclient", nar, tok)
    try:
        wait_chunks(t, n0 + 60)  # about 40% of the NAR
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(1.0)
    cid = cache_id(t, "killclient")
    assert t.narinfo("killclient", path) is None
    assert t.scalar(f"SELECT count(*) FROM uploads WHERE cache_id = {cid}") == 0
    r = t.request("HEAD", f"/killclient/nar/{name}.nar", token=tok)
    assert r.status == 404, r
    assert t.get("/health").status == 200

    rows = check_reclaimed(t, 50)
    assert t.local_chunk_ids() == rows

    # The same push, complete this time.
    key = t.cache_info("killclient")["publicKey"]
    t.nix_copy_to("killclient", [path], tok, dirs("xdg"), compression="zstd")
    root = dirs("root")
    t.nix_copy_from("killclient", [path], root, key, dirs("xdg"), token=tok)
    verify_store(root, [path])


def test_troved_killed_mid_ingest(make_troved, dirs, unique_path):
    t = make_troved()
    path, nar = unique_path
    key = t.create_cache("killserver")["publicKey"]
    tok = t.token("killserver", "pull,push")
    proc, name = slow_put(t, "killserver", nar, tok)
    try:
        wait_chunks(t, 60)
        t.kill()
    finally:
        out, err = proc.communicate(timeout=60)
    assert out != b"200", "the upload was acknowledged although troved was killed"

    t.start()  # same state directory: the embedded PostgreSQL must come back
    assert t.narinfo("killserver", path) is None
    assert t.scalar("SELECT count(*) FROM uploads") == 0
    assert t.scalar("SELECT count(*) FROM nars") == 0
    rows = check_reclaimed(t, 50)
    assert rows == set()
    objects = t.local_chunk_ids()
    # A kill between storing an object and recording its row can leave at
    # most that one object behind.
    assert len(objects) <= 1, f"{len(objects)} chunk objects left that no row names"

    t.nix_copy_to("killserver", [path], tok, dirs("xdg"), compression="zstd")
    root = dirs("root")
    t.nix_copy_from("killserver", [path], root, key, dirs("xdg"), token=tok)
    verify_store(root, [path])


# ---- 6. bad input ----


@pytest.fixture(scope="module")
def bad(local):
    local.create_cache("bad")
    return local


def stored_counts(t):
    return (t.scalar("SELECT count(*) FROM chunks"), t.scalar("SELECT count(*) FROM nars"),
            t.scalar("SELECT count(*) FROM uploads"), t.scalar("SELECT count(*) FROM paths"),
            len(t.local_chunk_ids()))


def test_bad_nar_upload(bad):
    t = bad
    t.gc(0)  # so that the GC below deletes only what this test left
    before = stored_counts(t)
    garbage = b"this is not a NAR" * 1000
    mark = t.log_mark()
    r = t.request("PUT", f"/bad/nar/{sha256_nix32(garbage)}.nar", garbage, token=t.admin)
    expect_error(r, 400, 400, "PUT of garbage as a NAR", t, mark)
    # A NAR with unsorted entries, and one with trailing bytes.
    good = nar_regular(b"x" * 100)
    r = t.request("PUT", f"/bad/nar/{sha256_nix32(good + b'junk')}.nar", good + b"junk", token=t.admin)
    expect_error(r, 400, 400, "PUT of a NAR with trailing bytes", t, mark)
    # Body does not match the hash in its name.
    r = t.request("PUT", f"/bad/nar/{sha256_nix32(b'other')}.nar", good, token=t.admin)
    expect_error(r, 400, 400, "PUT of a NAR under another file hash", t, mark)
    # Corrupt compressed upload.
    r = t.request("PUT", f"/bad/nar/{sha256_nix32(garbage)}.nar.xz", garbage, token=t.admin)
    expect_error(r, 400, 400, "PUT of garbage as .nar.xz", t, mark)
    r = t.request("PUT", f"/bad/nar/{sha256_nix32(garbage)}.nar.gz", garbage, token=t.admin)
    expect_error(r, 415, 415, "PUT of an unsupported compression", t, mark)
    assert stored_counts(t) == before

    # Errors found only at the end of a big NAR (trailing bytes, hash in the
    # name): chunks cut before may have been stored, but nothing is visible
    # and GC reclaims them.
    big = nar_regular(os.urandom(3 << 20))
    for what, name, body in [("trailing bytes", sha256_nix32(big + b"\0" * 8), big + b"\0" * 8),
                             ("another file hash", sha256_nix32(b"x"), big)]:
        r = t.request("PUT", f"/bad/nar/{name}.nar", body, token=t.admin)
        expect_error(r, 400, 400, f"PUT of a 3 MiB NAR with {what}", t, mark)
        r = t.request("HEAD", f"/bad/nar/{name}.nar", token=t.admin)
        assert r.status == 404, (what, r)
    assert stored_counts(t)[1:4] == before[1:4]
    t.gc(0)
    assert unreferenced_chunks(t) == 0
    assert stored_counts(t) == before


def test_narinfo_mismatch(bad):
    t = bad
    nar = nar_regular(os.urandom(5000))
    fh = sha256_nix32(nar)
    r = t.request("PUT", f"/bad/nar/{fh}.nar", nar, token=t.admin)
    expect_status(r, 200, "PUT of a valid NAR", t)
    before = stored_counts(t)
    path = fake_store_path()
    h = store_hash_part(path)
    other_hash = sha256_nix32(b"something else")
    for what, text in [
            ("NarHash of another NAR", narinfo_text(path, nar, nar_hash=other_hash)),
            ("NarSize too large", narinfo_text(path, nar, nar_size=len(nar) + 8)),
            ("NarSize too small", narinfo_text(path, nar, nar_size=len(nar) - 8))]:
        mark = t.log_mark()
        r = t.request("PUT", f"/bad/{h}.narinfo", text, token=t.admin)
        expect_error(r, 400, 409, f"narinfo with {what}", t, mark)
        assert t.narinfo("bad", path) is None, f"{what}: path became visible"
    # The NAR of the narinfo was never uploaded.
    missing = nar_regular(b"never uploaded")
    p2 = fake_store_path()
    r = t.request("PUT", f"/bad/{store_hash_part(p2)}.narinfo", narinfo_text(p2, missing),
                  token=t.admin)
    expect_error(r, 409, 409, "narinfo whose NAR is missing", t)
    assert t.narinfo("bad", p2) is None
    # StorePath of another hash than the narinfo's name.
    r = t.request("PUT", f"/bad/{h}.narinfo", narinfo_text(fake_store_path(), nar), token=t.admin)
    expect_error(r, 400, 400, "narinfo under another path's name", t)
    # Not a narinfo at all.
    r = t.request("PUT", f"/bad/{h}.narinfo", "garbage\n", token=t.admin)
    expect_error(r, 400, 400, "garbage narinfo", t)
    assert stored_counts(t) == before
    # And the right narinfo is accepted (the checks above are not blanket refusals).
    r = t.request("PUT", f"/bad/{h}.narinfo", narinfo_text(path, nar), token=t.admin)
    expect_status(r, 200, "correct narinfo", t)
    assert t.narinfo("bad", path)["NarHash"] == f"sha256:{fh}"
    # Pushing it again is harmless; the same path with other contents is not.
    r = t.request("PUT", f"/bad/{h}.narinfo", narinfo_text(path, nar), token=t.admin)
    expect_status(r, 200, "the same narinfo again", t)
    nar2 = nar_regular(os.urandom(5000))
    r = t.request("PUT", f"/bad/nar/{sha256_nix32(nar2)}.nar", nar2, token=t.admin)
    expect_status(r, 200, "PUT of a second NAR", t)
    r = t.request("PUT", f"/bad/{h}.narinfo", narinfo_text(path, nar2), token=t.admin)
    expect_error(r, 409, 409, "the same store path with other contents", t)
    assert t.narinfo("bad", path)["NarHash"] == f"sha256:{fh}"


def test_oversized_requests(bad):
    t = bad
    before = stored_counts(t)
    # Authorised, so that only the size can be what is refused.
    auth = f"Authorization: Bearer {t.admin}\r\n".encode()
    req = b"GET /bad/nix-cache-info HTTP/1.1\r\nHost: x\r\n" + auth
    status, ans = trovetest.raw_http(t.port, req + b"Connection: close\r\n\r\n")
    assert status == 200, ans[:300]
    # A 1 MiB header; 50 000 headers; a 1 MiB request target.
    for what, data in [
            ("1 MiB header", req + b"X-Big: " + b"a" * (1 << 20) + b"\r\nConnection: close\r\n\r\n"),
            ("50000 headers", req + b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(50000)) +
             b"Connection: close\r\n\r\n"),
            ("1 MiB target", b"GET /bad/" + b"a" * (1 << 20) + b".narinfo HTTP/1.1\r\nHost: x\r\n" +
             auth + b"Connection: close\r\n\r\n")]:
        status, ans = trovetest.raw_http(t.port, data)
        assert status in (413, 414, 431), f"{what}: {status} {ans[:300]!r}"
    # A narinfo body beyond any narinfo (4 MiB).
    h = store_hash_part(fake_store_path())
    r = t.request("PUT", f"/bad/{h}.narinfo", b"StorePath: x\n" + b"#" * (5 << 20), token=t.admin)
    expect_error(r, 413, 413, "5 MiB narinfo", t)
    # A JSON API body beyond its limit.
    big = json.dumps({"paths": ["0" * 32] * 300000})
    r = t.request("POST", "/_api/v1/caches/bad/missing-paths", big, token=t.admin)
    expect_error(r, 400, 413, "huge missing-paths request", t)
    # A chunk that claims more than the chunk limit.
    frame = zstd_frame(b"\0" * (17 << 20))
    cid = hashlib.sha256(b"\0" * (17 << 20)).hexdigest()
    r = t.request("PUT", f"/_api/v1/caches/bad/chunks/{cid}", frame, token=t.admin)
    expect_error(r, 413, 413, "17 MiB chunk", t)
    assert t.get("/health").status == 200
    assert stored_counts(t) == before


def test_bad_cache_names(bad):
    t = bad
    tok = t.admin
    auth = f"Authorization: Bearer {tok}\r\n".encode()
    for target in [b"/../x/nix-cache-info", b"/%2e%2e/nix-cache-info", b"/%2E%2E/x/nix-cache-info",
                   b"//nix-cache-info", b"/" + b"a" * 65 + b"/nix-cache-info",
                   b"/.hidden/nix-cache-info", b"/-x/nix-cache-info", b"/a%2fb/nix-cache-info",
                   b"/bad/../bad/nix-cache-info", b"/bad%00/nix-cache-info"]:
        status, ans = trovetest.raw_http(
            t.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + auth + b"Connection: close\r\n\r\n")
        assert status is not None and 400 <= status < 500 and status != 401, (target, status, ans[:300])
    names_before = t.psql("SELECT name FROM caches ORDER BY name")
    for target in [b"/_api/v1/caches/..", b"/_api/v1/caches/%2e%2e", b"/_api/v1/caches/",
                   b"/_api/v1/caches/" + b"a" * 65, b"/_api/v1/caches/a%2fb",
                   b"/_api/v1/caches/../../x", b"/_api/v1/caches/.x", b"/_api/v1/caches/a%20b"]:
        status, ans = trovetest.raw_http(
            t.port, b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n" + auth +
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        assert status is not None and 400 <= status < 500, (target, status, ans[:300])
    assert t.psql("SELECT name FROM caches ORDER BY name") == names_before
    # 64 characters is still a name.
    ok = "a" * 64
    t.create_cache(ok)
    assert t.cache_info(ok)["name"] == ok


def test_chunk_not_matching_id(bad):
    t = bad
    before = stored_counts(t)
    data = os.urandom(50000)
    frame = zstd_frame(data)
    wrong = hashlib.sha256(data + b"!").hexdigest()
    r = t.request("PUT", f"/_api/v1/caches/bad/chunks/{wrong}", frame, token=t.admin)
    expect_error(r, 400, 400, "chunk PUT under another id", t)
    r = t.request("PUT", f"/_api/v1/caches/bad/chunks/{hashlib.sha256(data).hexdigest()[:63]}x",
                  frame, token=t.admin)
    expect_error(r, 400, 404, "chunk PUT under a malformed id", t)
    r = t.request("PUT", f"/_api/v1/caches/bad/chunks/{hashlib.sha256(data).hexdigest()}",
                  data, token=t.admin)
    expect_error(r, 400, 400, "chunk PUT that is not a zstd frame", t)
    assert stored_counts(t) == before
    # The right id is accepted, and then it is there.
    right = hashlib.sha256(data).hexdigest()
    r = t.request("PUT", f"/_api/v1/caches/bad/chunks/{right}", frame, token=t.admin)
    expect_status(r, 201, "chunk PUT under its id", t)
    assert right in t.local_chunk_ids()


def test_truncated_upload(bad):
    t = bad
    before = stored_counts(t)
    nar = nar_regular(os.urandom(2 << 20))
    fh = sha256_nix32(nar)
    mark = t.log_mark()
    head = (f"PUT /bad/nar/{fh}.nar HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t.admin}\r\n"
            f"Content-Length: {len(nar)}\r\n\r\n").encode()
    status, ans = trovetest.raw_http(t.port, head + nar[:len(nar) // 2], close_write=True,
                                     read_timeout=15)
    assert status is None or 400 <= status < 500, (status, ans[:300])
    time.sleep(0.5)
    r = t.request("HEAD", f"/bad/nar/{fh}.nar", token=t.admin)
    assert r.status == 404, r
    after = stored_counts(t)
    # Chunks cut before the connection dropped may be there (GC reclaims
    # them); no NAR, upload or path.
    assert after[1:4] == before[1:4], (before, after, t.log_since(mark)[-2000:])
    assert t.get("/health").status == 200


def test_missing_chunk_object(bad):
    """The chunk rows are the truth: a NAR is served without asking the
    chunk store about every chunk first. A missing first object is a 503
    before any byte; one missing further on is a logged server error and a
    cut connection, never a complete-looking 200."""
    t = bad
    path, nar = put_synthetic(t, "bad", os.urandom(600000))
    man = t.manifest("bad", path)
    assert len(man["chunks"]) >= 2
    ni = t.narinfo("bad", path)
    urls = (f"/bad/{ni['URL']}", f"/bad/nar/{ni['NarHash'].split(':')[1]}.nar")

    # One store call per chunk served: no existence check in front of them.
    ops = lambda: t.metrics()["trove_chunk_store_operations_total"]
    before = ops()
    r = t.get(urls[1], token=t.admin)
    assert r.status == 200 and r.body == nar
    assert ops() - before == len(man["chunks"]), "store calls beyond one GET per chunk"

    for which in (0, -1):
        victim = man["chunks"][which][2]
        obj = next(p for p in (t.state_dir / "chunks").rglob(victim))
        saved = obj.read_bytes()
        obj.unlink()
        try:
            for url in urls:
                mark = t.log_mark()
                if which == 0:
                    r = t.get(url, token=t.admin)
                    expect_error(r, 503, 503, f"GET {url} with its first chunk object missing", t)
                    continue
                req = (f"GET {url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t.admin}\r\n"
                       "Connection: close\r\n\r\n").encode()
                status, answer = trovetest.raw_http(t.port, req)
                head, _, body = answer.partition(b"\r\n\r\n")
                assert status == 200, answer[:300]
                m = re.search(rb"(?i)content-length: (\d+)", head)
                assert m and len(body) < int(m.group(1)), "a NAR with a missing chunk was served whole"
                assert "chunk of a served NAR is unreadable" in t.log_since(mark)
        finally:
            obj.write_bytes(saved)
    r = t.get(urls[1], token=t.admin)
    assert r.status == 200 and r.body == nar


# ---- 7. auth ----


def test_auth_matrix(local, dirs, test_closure):
    t = local

    def t_file_path():
        return test_closure["file"]
    t.create_cache("priv")
    t.create_cache("pub", public=True)
    t.create_cache("other")
    ppath, _ = put_synthetic(t, "priv")
    upath, _ = put_synthetic(t, "pub")
    pni = f"/priv/{store_hash_part(ppath)}.narinfo"
    uni = f"/pub/{store_hash_part(upath)}.narinfo"
    pull = t.token("priv", "pull")
    push = t.token("priv", "pull,push")

    def put_narinfo(cache, **kw):
        nar = nar_regular(os.urandom(100))
        p = fake_store_path()
        return t.request("PUT", f"/{cache}/{store_hash_part(p)}.narinfo", narinfo_text(p, nar), **kw)

    def put_nar(cache, **kw):
        nar = nar_regular(os.urandom(100))
        return t.request("PUT", f"/{cache}/nar/{sha256_nix32(nar)}.nar", nar, **kw)

    # Private cache: no anonymous pull.
    expect_error(t.get(pni), 401, 401, "anonymous narinfo GET on a private cache")
    expect_error(t.get("/priv/nix-cache-info"), 401, 401, "anonymous nix-cache-info")
    expect_error(t.get(f"/_api/v1/caches/priv/manifests/{store_hash_part(ppath)}"), 401, 401,
                 "anonymous manifest GET")
    expect_status(t.get(pni, token=pull), 200, "pull token GET")
    expect_status(t.get(pni, basic=("anyone", pull)), 200, "Basic auth with the token as password")
    expect_status(t.get(pni, basic=("", pull)), 200, "Basic auth with empty user")
    # Push needs push.
    expect_error(put_nar("priv", token=pull), 403, 403, "NAR PUT with a pull-only token")
    expect_error(put_narinfo("priv", token=pull), 403, 403, "narinfo PUT with a pull-only token")
    expect_error(put_nar("priv"), 401, 401, "anonymous NAR PUT")
    expect_status(put_nar("priv", token=push), 200, "NAR PUT with a push token")
    # A token for priv is no good on other.
    expect_error(t.get("/other/nix-cache-info", token=push), 403, 403, "token of another cache")
    expect_error(put_nar("other", token=push), 403, 403, "push token of another cache")
    # Unknown cache: 401 anonymously, 404 for an admin.
    expect_error(t.get("/nosuchcache/nix-cache-info"), 401, 401, "anonymous, unknown cache")
    expect_error(t.get("/nosuchcache/nix-cache-info", token=t.admin), 404, 404, "admin, unknown cache")
    # Expired, forged, malformed tokens: 401, even on a public cache.
    # A token used while valid is remembered (verified once), but never past
    # its expiry; a truncated copy of a remembered token is verified anew.
    expired = t.token("priv", "pull", valid="4s")
    made = time.monotonic()
    expect_status(t.get(pni, token=expired), 200, "pull with a token that expires in 4 s")
    forged = t.token("priv", "pull", state_dir=dirs("otherstate"))
    time.sleep(max(0.0, 5.1 - (time.monotonic() - made)))
    for what, hdr in [("expired", f"Bearer {expired}"), ("forged", f"Bearer {forged}"),
                      ("malformed", "Bearer not.a.token"), ("garbage", "Bearer %%%"),
                      ("truncated", f"Bearer {pull[:-5]}"), ("empty", "Bearer "),
                      ("bad Basic", "Basic !!!!"), ("Basic without colon", "Basic YWJj"),
                      ("unknown scheme", f"Token {pull}")]:
        for url in (pni, uni):
            r = t.get(url, headers={"Authorization": hdr})
            expect_error(r, 401, 401, f"{what} token on {url}")
    r = t.get(pni, basic=("u", forged))
    expect_error(r, 401, 401, "forged token via Basic")
    # Public cache: anonymous pull, but not push.
    expect_status(t.get(uni), 200, "anonymous pull on a public cache")
    expect_status(t.get("/pub/nix-cache-info"), 200, "anonymous nix-cache-info of a public cache")
    expect_error(put_nar("pub"), 401, 401, "anonymous push to a public cache")
    expect_error(put_narinfo("pub"), 401, 401, "anonymous narinfo PUT to a public cache")
    # Cache patterns: a glob grants what it matches, nothing else.
    glob = t.token("pri*", "pull")
    expect_status(t.get(pni, token=glob), 200, "pull with a 'pri*' token")
    expect_error(t.get("/other/nix-cache-info", token=glob), 403, 403, "'pri*' token on 'other'")
    # Nix itself: pushing with a pull-only token fails, and stores nothing.
    before = t.scalar("SELECT count(*) FROM paths")
    r = t.nix_copy_to("priv", [t_file_path()], pull, dirs("xdg"), expect=None)
    assert r.returncode != 0, "nix copy --to succeeded with a pull-only token"
    assert "403" in r.stderr, r.stderr[-1500:]
    assert t.scalar("SELECT count(*) FROM paths") == before
    # Admin API: creating caches needs create.
    expect_error(t.request("POST", "/_api/v1/caches/newcache", "{}", token=push), 403, 403,
                 "cache create without create permission")
    expect_error(t.request("POST", "/_api/v1/caches/newcache", "{}"), 401, 401,
                 "anonymous cache create")
    expect_error(t.request("POST", "/_api/v1/gc?min-age=0", token=push), 403, 403,
                 "gc with a push token")
    # Deleting a path needs delete; then it is gone (narinfo 404), once.
    dpath = f"/_api/v1/caches/priv/paths/{store_hash_part(ppath)}"
    expect_error(t.request("DELETE", dpath, token=push), 403, 403, "path delete with a push token")
    expect_error(t.request("DELETE", dpath), 401, 401, "anonymous path delete")
    assert t.get(pni, token=pull).status == 200
    delete = t.token("priv", "pull,delete")
    expect_status(t.request("DELETE", dpath, token=delete), 200, "path delete with a delete token")
    expect_error(t.get(pni, token=pull), 404, 404, "narinfo of a deleted path")
    expect_error(t.request("DELETE", dpath, token=delete), 404, 404, "deleting a deleted path")


# ---- 8. PostgreSQL goes away and comes back ----


def test_postgres_restart(make_troved, postgres):
    cluster, db = postgres
    t = make_troved(database_url=cluster.dsn(db))
    t.create_cache("pgr")
    path, nar = put_synthetic(t, "pgr")
    url = f"/pgr/{store_hash_part(path)}.narinfo"
    tok = t.token("pgr", "pull")
    assert t.get(url, token=tok).status == 200
    # A narinfo troved has not rendered recently needs the database.
    cold, _ = put_synthetic(t, "pgr")
    cold_url = f"/pgr/{store_hash_part(cold)}.narinfo"
    time.sleep(6)  # past the few seconds troved keeps cache rows
    cluster.stop_server()
    try:
        for what in ("/health", cold_url, "/_api/v1/health"):
            t0 = time.monotonic()
            r = t.get(what, token=tok if what == cold_url else None)
            elapsed = time.monotonic() - t0
            expect_status(r, 503, f"GET {what} with PostgreSQL down", t)
            assert elapsed < 5, f"GET {what} took {elapsed:.1f}s with PostgreSQL down"
        # One answered a moment ago may still come from memory, and then
        # it is the right one.
        r = t.get(url, token=tok)
        assert r.status in (200, 503), r
        if r.status == 200:
            assert trovetest.parse_narinfo(r.body)["StorePath"] == path
        assert t.running()
    finally:
        cluster.start_server()
    deadline = time.monotonic() + 30
    while t.get("/health").status != 200:
        assert time.monotonic() < deadline, "troved did not recover after PostgreSQL came back"
        time.sleep(0.2)
    r = t.get(url, token=tok)
    expect_status(r, 200, "narinfo after PostgreSQL came back", t)
    assert trovetest.parse_narinfo(r.body)["StorePath"] == path
    # Writes work again too.
    put_synthetic(t, "pgr")
    assert t.running()
