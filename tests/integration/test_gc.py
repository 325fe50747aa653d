# SPDX-License-Identifier: Apache-2.0
"""The cache lifecycle against a real troved, PostgreSQL and radosgw:
retention counted from last use, closure-aware collection, pins, path
deletion, quotas, background and concurrent collections, a troved killed
in the middle of one, and signing-key rotation with real Nix clients."""

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

import trovetest
from trovetest import run, trove, store_hash_part
from test_server import (expect_error, expect_status, fake_store_path, nar_regular, narinfo_text,
                         sha256_nix32, verify_store)
from test_push import MK, build
from test_fs import Mount


@pytest.fixture(scope="module")
def s3srv(make_troved_module, radosgw):
    """troved with its embedded PostgreSQL and chunks in radosgw."""
    spec = radosgw.spec(f"trove-gc-{os.getpid()}", prefix="g/")
    t = make_troved_module(name="gc-s3", storage=spec, extra_env=radosgw.credentials_env())
    t.spec = spec
    t.radosgw = radosgw
    return t


@pytest.fixture
def client(s3srv, tmp_path):
    """A trove CLI configuration logged in to s3srv with an admin token."""
    return trovetest.logged_in_env(s3srv, tmp_path)


_caches = 0


def new_cache(t, retention=0, **settings):
    global _caches
    _caches += 1
    name = f"gc{_caches}"
    t.create_cache(name)
    body = {"retentionSeconds": retention, **settings}
    expect_status(t.request("PATCH", f"/_api/v1/caches/{name}", json.dumps(body), token=t.admin), 200,
                  "configure", t)
    return name


NARS = {}  # store path -> its NAR


def put_path(t, cache, refs=(), size=3000, name="p"):
    """A one-file store path pushed as `nix copy` does, referencing refs
    (store paths); returns its store path (its NAR is NARS[path])."""
    nar = nar_regular(os.urandom(size))
    path = fake_store_path(name)
    r = t.request("PUT", f"/{cache}/nar/{sha256_nix32(nar)}.nar", nar, token=t.admin)
    expect_status(r, 200, "PUT NAR", t)
    text = narinfo_text(path, nar, refs=" ".join(Path(p).name for p in refs))
    r = t.request("PUT", f"/{cache}/{store_hash_part(path)}.narinfo", text, token=t.admin)
    expect_status(r, 200, "PUT narinfo", t)
    NARS[path] = nar
    return path


def hashes_sql(paths):
    return ",".join(f"'{store_hash_part(p)}'" for p in paths)


def age_paths(t, cache, paths, seconds):
    """Makes paths look pushed and last used `seconds` ago (time travel in
    the database; nothing else about them changes)."""
    t.psql(f"UPDATE paths SET created_at = now() - make_interval(secs => {seconds}),"
           f" last_used = now() - make_interval(secs => {seconds})"
           f" WHERE cache_id = (SELECT id FROM caches WHERE name = '{cache}')"
           f" AND hash_part IN ({hashes_sql(paths)})")


AGE_ROWS = ("UPDATE chunks SET created_at = now() - interval '1 day';"
            " UPDATE nars SET created_at = now() - interval '1 day';"
            " UPDATE uploads SET created_at = now() - interval '1 day';"
            " UPDATE chunk_claims SET created_at = now() - interval '1 day'")


def present(t, cache, path):
    return t.narinfo(cache, path) is not None


def in_db(t, cache, path):
    """Whether the cache holds path, without reading it (a read is a use)."""
    return t.scalar(f"SELECT count(*) FROM paths WHERE hash_part = '{store_hash_part(path)}'"
                    f" AND cache_id = (SELECT id FROM caches WHERE name = '{cache}')") == 1


def stored_bytes(t, cache):
    """What `trove cache info` shows as stored bytes, computed now (the
    server recomputes its figure at most every few seconds)."""
    return t.scalar("SELECT coalesce(sum(stored_size), 0) FROM chunks WHERE id IN (SELECT nc.chunk_id"
                    " FROM nar_chunks nc JOIN paths p ON p.nar_id = nc.nar_id"
                    f" WHERE p.cache_id = (SELECT id FROM caches WHERE name = '{cache}'))")


def check_nar(t, cache, path):
    """The path's NAR is served whole (every chunk object is there)."""
    ni = t.narinfo(cache, path)
    r = t.get(f"/{cache}/{ni['URL']}", token=t.admin)
    assert r.status == 200, (path, r)
    assert int(ni["FileSize"]) == len(r.body)


def store_objects(t):
    return set(t.radosgw.list_chunks(t.spec))


def chunk_rows(t):
    return {r[0] for r in t.psql("SELECT encode(hash, 'hex') FROM chunks")}


def assert_no_missing_chunks(t):
    """Every chunk of every path has its object in the store."""
    needed = {r[0] for r in t.psql(
        "SELECT DISTINCT encode(c.hash, 'hex') FROM paths p JOIN nar_chunks nc ON nc.nar_id = p.nar_id"
        " JOIN chunks c ON c.id = nc.chunk_id")}
    missing = needed - store_objects(t)
    assert not missing, f"{len(missing)} chunks of live paths have no object"


# ---- retention from last use ----


def test_retention_counts_from_last_use(s3srv):
    t = s3srv
    cache = new_cache(t, retention=86400)
    by_narinfo, by_nar, by_manifest, by_chunk, by_listing, unread, repushed = (
        put_path(t, cache, name=n) for n in ("narinfo", "nar", "manifest", "chunk", "ls", "unread", "repushed"))
    age_paths(t, cache, [by_narinfo, by_nar, by_manifest, by_chunk, by_listing, unread, repushed], 2 * 86400)
    # One read of each kind, one path each. A small NAR is one chunk: its
    # id is the NAR's SHA-256, its URL the NAR hash.
    assert t.narinfo(cache, by_narinfo) is not None
    r = t.get(f"/{cache}/nar/{sha256_nix32(NARS[by_nar])}.nar", token=t.admin)
    assert r.status == 200 and r.body == NARS[by_nar]
    assert t.manifest(cache, by_manifest)["chunks"]
    chunk = hashlib.sha256(NARS[by_chunk]).hexdigest()
    assert t.get(f"/_api/v1/caches/{cache}/chunks/{chunk}", token=t.admin).status == 200
    assert t.get(f"/{cache}/{store_hash_part(by_listing)}.ls", token=t.admin).status == 200
    # A second push of a path counts as a use too.
    r = t.request("PUT", f"/{cache}/{store_hash_part(repushed)}.narinfo", narinfo_text(repushed, NARS[repushed]),
                  token=t.admin)
    expect_status(r, 200, "second push of a narinfo", t)
    # Learned prefetch profiles go with their paths.
    cid = t.scalar(f"SELECT id FROM caches WHERE name = '{cache}'")
    for p in (unread, by_narinfo):
        t.psql("INSERT INTO profile_chunks (cache_id, hash_part, chunk_hash, weight, pos)"
               f" VALUES ({cid}, '{store_hash_part(p)}', sha256('x'::bytea), 1, 0)")

    res = t.gc(0)
    assert not present(t, cache, unread)
    profiles = f"SELECT count(*) FROM profile_chunks WHERE cache_id = {cid} AND hash_part = '%s'"
    assert t.scalar(profiles % store_hash_part(unread)) == 0
    assert t.scalar(profiles % store_hash_part(by_narinfo)) == 1
    for p in (by_narinfo, by_nar, by_manifest, by_chunk, by_listing, repushed):
        assert present(t, cache, p), p
        check_nar(t, cache, p)
    assert res["pathsDeleted"] == 1, res
    # The collection's transactions that held a lock pushes wait for: at
    # least the one that deleted the path.
    assert res["lockedTransactions"] >= 1 and res["longestLockedMs"] > 0, res
    assert_no_missing_chunks(t)


# ---- closures ----


def test_closure_is_kept_and_deletion_refused_while_referenced(s3srv):
    t = s3srv
    cache = new_cache(t, retention=86400)
    dep = put_path(t, cache, name="dep")
    mid = put_path(t, cache, refs=[dep], name="mid")
    top = put_path(t, cache, refs=[mid, dep], name="top")
    lone_dep = put_path(t, cache, name="lone-dep")
    lone_top = put_path(t, cache, refs=[lone_dep], name="lone-top")
    age_paths(t, cache, [dep, mid, top, lone_dep, lone_top], 3 * 86400)
    # Only the top is used; what it references stays with it, even old.
    assert t.narinfo(cache, top)
    t.gc(0)
    for p in (top, mid, dep):
        assert present(t, cache, p), p
        check_nar(t, cache, p)
    assert not present(t, cache, lone_top) and not present(t, cache, lone_dep)

    # Deleting a path others reference is refused with the referrers named.
    r = t.request("DELETE", f"/_api/v1/caches/{cache}/paths/{store_hash_part(dep)}", token=t.admin)
    expect_error(r, 409, 409, "delete of a referenced path", t)
    assert Path(mid).name in r.text and Path(top).name in r.text, r.text
    body = {"paths": [store_hash_part(mid), store_hash_part(dep)]}
    r = t.request("POST", f"/_api/v1/caches/{cache}/delete-paths", json.dumps(body), token=t.admin)
    expect_error(r, 409, 409, "delete of a referenced pair", t)
    assert Path(top).name in r.text and Path(mid).name not in r.text, r.text
    assert present(t, cache, dep) and present(t, cache, mid)
    # The whole closure together goes; so does one path with force.
    body["paths"].append(store_hash_part(top))
    r = t.request("POST", f"/_api/v1/caches/{cache}/delete-paths", json.dumps(body), token=t.admin)
    expect_status(r, 200, "delete of a whole closure", t)
    assert r.json() == {"deleted": 3}
    assert not any(present(t, cache, p) for p in (top, mid, dep))
    a = put_path(t, cache, name="a")
    b = put_path(t, cache, refs=[a], name="b")
    r = t.request("DELETE", f"/_api/v1/caches/{cache}/paths/{store_hash_part(a)}?force=1", token=t.admin)
    expect_status(r, 200, "forced delete", t)
    assert not present(t, cache, a) and present(t, cache, b)
    r = t.request("DELETE", f"/_api/v1/caches/{cache}/paths/{store_hash_part(a)}", token=t.admin)
    expect_error(r, 404, 404, "delete of a path already gone", t)
    t.gc(0)
    assert_no_missing_chunks(t)


# ---- pins and quotas ----


def test_pins_survive_retention_and_quota_lru(s3srv, client):
    t = s3srv
    size = 200_000  # random, so stored as big as it is
    cache = new_cache(t, retention=86400)
    paths = [put_path(t, cache, size=size, name=f"q{i}") for i in range(5)]
    # p0 is the least recently used of all, and pinned.
    for i, p in enumerate(paths):
        age_paths(t, cache, [p], (10 - i) * 86400 if i == 0 else 3600 * (10 - i))
    out = trove("cache", "pin", cache, paths[0], env=client, text=True).stdout
    assert "pinned 1 paths" in out
    assert trove("cache", "pins", cache, env=client, text=True).stdout.split() == [paths[0]]
    stored = stored_bytes(t, cache)
    quota = stored * 7 // 10  # room for three and a half of the five
    trove("cache", "configure", "--quota", str(quota), cache, env=client, text=True)
    res = t.gc(0)
    # Pinned p0 stays although oldest and past the retention; then the
    # least recently used go until the cache is within its quota.
    assert [present(t, cache, p) for p in paths] == [True, False, False, True, True], res
    assert stored_bytes(t, cache) <= quota
    for p in (paths[0], paths[3], paths[4]):
        check_nar(t, cache, p)

    # A pinned path cannot be deleted unless forced, nor does a quota of
    # nothing take it; unpinning lets it go.
    r = t.request("DELETE", f"/_api/v1/caches/{cache}/paths/{store_hash_part(paths[0])}", token=t.admin)
    expect_error(r, 409, 409, "delete of a pinned path", t)
    assert "pinned" in r.text
    trove("cache", "configure", "--quota", "1", cache, env=client, text=True)
    # (the reads above were uses: a path used within the last minute stays;
    # the first collection records them, then they are made old again)
    t.gc(0)
    assert [in_db(t, cache, p) for p in paths] == [True, False, False, True, True]
    age_paths(t, cache, paths[3:], 3600)
    t.gc(0)
    assert [in_db(t, cache, p) for p in paths] == [True, False, False, False, False]
    trove("cache", "unpin", cache, paths[0], env=client, text=True)
    assert trove("cache", "pins", cache, env=client, text=True).stdout.strip() == ""
    age_paths(t, cache, [paths[0]], 10 * 86400)
    t.gc(0)
    assert not in_db(t, cache, paths[0])

    # --keep-closure pins what the path references too, and those stay
    # pinned when the path itself is unpinned.
    trove("cache", "configure", "--quota", "0", cache, env=client, text=True)
    leaf = put_path(t, cache, name="leaf")
    root = put_path(t, cache, refs=[leaf], name="root")
    trove("cache", "pin", "--keep-closure", cache, root, env=client, text=True)
    assert sorted(trove("cache", "pins", cache, env=client, text=True).stdout.split()) == sorted([root, leaf])
    trove("cache", "unpin", cache, Path(root).name, env=client, text=True)
    age_paths(t, cache, [root, leaf], 30 * 86400)
    t.gc(0)
    assert not in_db(t, cache, root) and in_db(t, cache, leaf)
    r = trove("cache", "delete-path", cache, leaf, env=client, text=True, expect=1)
    assert "pinned" in r.stderr
    trove("cache", "delete-path", "--force", cache, leaf, env=client, text=True)
    assert not in_db(t, cache, leaf)
    assert "deleted" in trove("gc", "--min-age", "0", env=client, text=True).stdout
    assert_no_missing_chunks(t)


# ---- a collection that is killed, and concurrent ones ----


def test_sigkill_in_the_middle_of_gc(make_troved, radosgw):
    spec = radosgw.spec(f"trove-gc-kill-{os.getpid()}", prefix="k/")
    t = make_troved(storage=spec, extra_env=radosgw.credentials_env(), log_level="info")
    t.spec, t.radosgw = spec, radosgw
    cache = new_cache(t, retention=86400)
    keep = [put_path(t, cache, size=600_000, name=f"keep{i}") for i in range(3)]
    doomed = [put_path(t, cache, size=1_500_000, name=f"old{i}") for i in range(30)]
    age_paths(t, cache, doomed, 2 * 86400)
    t.psql(AGE_ROWS)
    objects_before = store_objects(t)
    assert len(objects_before) > 300

    def collect():
        try:
            t.request("POST", "/_api/v1/gc?min-age=60", token=t.admin)
        except OSError:
            pass  # the kill cuts the answer off

    gc = threading.Thread(target=collect)
    gc.daemon = True
    gc.start()
    # Killed once rows are gone and their objects are being deleted.
    deadline = time.monotonic() + 120
    while t.scalar("SELECT count(*) FROM orphan_objects WHERE first_seen = '-infinity'") == 0:
        assert time.monotonic() < deadline, "the collection never reached its object deletion"
        time.sleep(0.02)
    t.kill()
    gc.join(30)
    t.start()
    assert store_objects(t) - chunk_rows(t), "the kill came after the run had deleted every object"
    assert_no_missing_chunks(t)
    for p in keep:
        check_nar(t, cache, p)
    # The next collection finishes the job: every object without a row goes.
    t.gc(60)
    assert t.scalar("SELECT count(*) FROM orphan_objects") == 0
    assert store_objects(t) == chunk_rows(t)
    assert not any(present(t, cache, p) for p in doomed)
    for p in keep:
        check_nar(t, cache, p)


def test_instances_sharing_a_database_take_turns(make_troved, postgres, radosgw):
    cluster, db = postgres
    spec = radosgw.spec(f"trove-gc-two-{os.getpid()}", prefix="t/")
    a, b = (make_troved(database_url=cluster.url(db), storage=spec, extra_env=radosgw.credentials_env())
            for _ in range(2))
    cache = new_cache(a, retention=86400)
    paths = [put_path(a, cache, size=100_000, name=f"s{i}") for i in range(20)]
    cluster.psql("UPDATE paths SET last_used = now() - interval '2 days', created_at = now() - interval '2 days';"
                 + AGE_ROWS, dbname=db)
    results = []

    def collect(t):
        # Its own connection, patient: it may wait for the other's run.
        c = trovetest.HttpClient("127.0.0.1", t.port, timeout=600)
        try:
            r = c.request("POST", "/_api/v1/gc?min-age=60", token=t.admin)
            results.append((r.status, r.json() if r.status == 200 else r.text))
        except OSError as e:
            results.append((None, repr(e)))
        finally:
            c.close()

    threads = [threading.Thread(target=collect, args=(t,)) for t in (a, b, a, b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(900)
    assert [s for s, _ in results] == [200] * 4, results
    assert sum(j["pathsDeleted"] for _, j in results) == len(paths)
    assert not any(a.narinfo(cache, p) for p in paths)
    assert radosgw.list_chunks(spec) == {}, "objects left in the bucket"


# ---- background collection and settings ----


def test_scheduled_gc(make_troved):
    t = make_troved(args=["--gc-interval", "10"], log_level="info")
    cache = new_cache(t, retention=3600)
    old, fresh = put_path(t, cache, name="old"), put_path(t, cache, name="fresh")
    age_paths(t, cache, [old], 7200)
    deadline = time.monotonic() + 120
    while in_db(t, cache, old):
        assert time.monotonic() < deadline, "no scheduled collection within 120 s"
        time.sleep(1)
    assert in_db(t, cache, fresh)
    assert "garbage collection deleted 1 paths" in t.log()


def test_gc_settings_are_bounded(make_troved, s3srv):
    for bad in (["--gc-interval", "5"], ["--gc-interval", "9999999"], ["--gc-min-age", "10"],
                ["--gc-min-age", "-1"], ["--gc-interval", "x"]):
        t = make_troved(start=False, args=bad)
        r = run([str(c) for c in t.command()], expect=None, text=True, timeout=60)
        assert r.returncode != 0 and "bad value" in r.stderr, (bad, r.stderr)
    t = s3srv
    cache = new_cache(t)
    for body in ({"quotaBytes": -1}, {"quotaBytes": 2 ** 61}, {"quotaBytes": "1G"}, {"quotaBytes": 1.5},
                 {"retentionSeconds": -5}, {"retentionSeconds": "1d"}):
        r = t.request("PATCH", f"/_api/v1/caches/{cache}", json.dumps(body), token=t.admin)
        expect_error(r, 400, 400, f"configure {body}", t)
    info = t.cache_info(cache)
    assert info["quotaBytes"] == 0 and info["retentionSeconds"] == 0


def test_lifecycle_routes_refuse_hostile_clients(s3srv):
    t = s3srv
    cache, other = new_cache(t), new_cache(t)
    path = put_path(t, cache)
    h = store_hash_part(path)
    pin = json.dumps({"paths": [h]})
    tok_other = t.token(other, "all")
    tok_pull = t.token(cache, "pull")
    tok_push = t.token(cache, "pull,push")
    routes = [("POST", f"/_api/v1/caches/{cache}/pin", pin), ("POST", f"/_api/v1/caches/{cache}/unpin", pin),
              ("POST", f"/_api/v1/caches/{cache}/delete-paths", pin),
              ("POST", f"/_api/v1/caches/{cache}/rotate-key", "{}"), ("GET", f"/_api/v1/caches/{cache}/pins", None),
              ("DELETE", f"/_api/v1/caches/{cache}/paths/{h}", None), ("POST", "/_api/v1/gc?min-age=0", None)]
    for method, url, body in routes:
        expect_error(t.request(method, url, body), 401, 401, f"{method} {url} without a token", t)
        expect_error(t.request(method, url, body, token=tok_other), 403, 404,
                     f"{method} {url} with another cache's token", t)
    for method, url, body in routes:
        if "pin" in url and method == "POST" and "unpin" not in url or url.endswith("/pins"):
            continue
        expect_error(t.request(method, url, body, token=tok_pull if "delete" in url or method == "DELETE"
                               else tok_push), 403, 403, f"{method} {url} without the permission", t)
    for body in ("", "[]", "{", '{"paths": []}', '{"paths": "x"}', '{"paths": [1]}',
                 '{"paths": ["not-a-hash"]}', json.dumps({"paths": [h], "keepClosure": "yes"}),
                 json.dumps({"paths": [h], "other": 1}), json.dumps({"paths": [h] * 100001})):
        for route in ("pin", "unpin", "delete-paths"):
            r = t.request("POST", f"/_api/v1/caches/{cache}/{route}", body, token=t.admin)
            expect_error(r, 400, 413, f"{route} with body {body[:40]!r}", t)
    r = t.request("POST", f"/_api/v1/caches/{cache}/pin", json.dumps({"paths": [h, "0" * 32]}), token=t.admin)
    expect_error(r, 404, 404, "pin of a path not in the cache", t)
    assert t.request("GET", f"/_api/v1/caches/{cache}/pins", token=t.admin).json() == {"pins": []}
    for body in ('{"retire": 1}', '{"keyName": 5}', '{"keyName": ""}', '{"keyName": "x", "retire": true}',
                 '{"nope": 1}', "[1]", json.dumps({"keyName": "k" * 200})):
        r = t.request("POST", f"/_api/v1/caches/{cache}/rotate-key", body, token=t.admin)
        expect_error(r, 400, 400, f"rotate-key with {body[:40]}", t)
    r = t.request("POST", f"/_api/v1/caches/{cache}/rotate-key", '{"retire": true}', token=t.admin)
    expect_error(r, 409, 409, "retire without a rotation", t)
    r = t.request("DELETE", f"/_api/v1/caches/{cache}/paths/{h}?force=maybe", token=t.admin)
    expect_error(r, 400, 400, "force=maybe", t)
    assert present(t, cache, path)


# ---- key rotation ----


def test_key_rotation_both_keys_substitute(s3srv, client, tmp_path):
    t = s3srv
    cache = new_cache(t)
    tag = os.urandom(6).hex()
    (path,) = build(tmp_path, "rot", MK + f'mk "trove-rot-{tag}" "mkdir $out; echo {tag} > $out/id"')
    trove("push", "--no-progress", cache, path, env=client, text=True)
    old = t.cache_info(cache)["publicKey"]

    def substitute(key, expect=0):
        root = tmp_path / f"root-{os.urandom(4).hex()}"
        r = t.nix_copy_from(cache, [path], root, key, tmp_path / f"xdg-{os.urandom(4).hex()}", token=t.admin,
                            expect=expect)
        if expect == 0:
            verify_store(root, [path])
        return r

    substitute(old)
    out = trove("cache", "rotate-key", cache, env=client, text=True).stdout
    info = t.cache_info(cache)
    new = info["publicKey"]
    assert new != old and info["retiringPublicKey"] == old and new.startswith(f"{cache}-2:"), info
    assert "until retired" in out
    sigs = t.narinfo(cache, path)["Sig"]
    assert sigs  # parse_narinfo keeps the last Sig: check the raw text
    raw = t.get(f"/{cache}/{store_hash_part(path)}.narinfo", token=t.admin).text
    assert raw.count("Sig: ") == 2, raw
    # During the transition a client trusting only the old key and one
    # trusting only the new key both substitute and verify.
    substitute(old)
    substitute(new)
    # Manifests carry both signatures too: a mount trusting only the old key
    # and one trusting only the new key both read the path.
    t.token_file = tmp_path / "token"
    t.token_file.write_text(t.admin + "\n")

    def mount_read(key):
        mnt = tmp_path / f"mnt-{os.urandom(4).hex()}"
        mnt.mkdir()
        m = Mount(t, mnt, tmp_path / f"cc-{os.urandom(4).hex()}", ("--timeout", "5", "--trusted-key", key),
                  cache=cache)
        try:
            return (mnt / Path(path).name / "id").read_text()
        except OSError as e:
            return e
        finally:
            m.unmount()

    assert mount_read(old) == f"{tag}\n"
    assert mount_read(new) == f"{tag}\n"
    r = t.request("POST", f"/_api/v1/caches/{cache}/rotate-key", "{}", token=t.admin)
    expect_error(r, 409, 409, "a second rotation during the first", t)
    trove("cache", "rotate-key", "--retire", cache, env=client, text=True)
    assert "retiringPublicKey" not in t.cache_info(cache)
    substitute(new)
    r = substitute(old, expect=None)
    assert r.returncode != 0 and "signature" in r.stderr, r.stderr
    assert mount_read(new) == f"{tag}\n"
    refused = mount_read(old)
    assert isinstance(refused, OSError) and refused.errno == 5, refused  # EIO: not signed by a trusted key


# ---- pushes while collections run ----


def test_concurrent_pushes_while_gc_runs(s3srv, client, tmp_path):
    """8 loops, half `trove push` and half `nix copy --to`, push fresh paths
    into their caches while collections run back to back and a churn cache
    loses old paths that share content with what is pushed; no push fails,
    and every pushed path substitutes and verifies afterwards."""
    t = s3srv
    loops, per_loop = 8, 3
    seed = os.urandom(6).hex()
    shared = os.urandom(1 << 20)
    (tmp_path / "shared").write_bytes(shared)
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "shared", 0o644)
    expr = MK + f"""builtins.genList (i: mk "trove-gcc-{seed}-${{toString i}}" ''
      mkdir $out; cp {tmp_path}/shared $out/shared; head -c 200K /dev/urandom > $out/own; echo ${{toString i}} > $out/i
    '') {loops * per_loop}"""
    built = build(tmp_path, "gcc", expr)
    assert len(built) == loops * per_loop
    # The churn cache holds the shared content in old paths that the
    # collections drop while the pushes reuse those chunks.
    churn = new_cache(t, retention=3600)
    tok = t.admin
    for i in range(4):
        t.nix_copy_to(churn, [built[i]], tok, tmp_path / f"xdg-churn{i}", compression="zstd")
    t.psql("UPDATE paths SET last_used = now() - interval '2 hours', created_at = now() - interval '2 hours'"
           f" WHERE cache_id = (SELECT id FROM caches WHERE name = '{churn}');" + AGE_ROWS)
    caches = [new_cache(t) for _ in range(loops)]
    stop = threading.Event()
    gc_runs, gc_errors = [], []

    def collect():
        while not stop.is_set() and len(gc_runs) < 500:
            r = t.request("POST", "/_api/v1/gc?min-age=120", token=tok)
            (gc_runs if r.status == 200 else gc_errors).append(r)

    collector = threading.Thread(target=collect)
    collector.start()
    procs = []
    try:
        for i, cache in enumerate(caches):
            mine = built[i * per_loop:(i + 1) * per_loop]
            if i % 2 == 0:
                cmd = " && ".join(f"{trovetest.binary('trove')} push --no-progress {cache} {p}" for p in mine)
                env = client
            else:
                netrc = trovetest.write_netrc(tmp_path / f"netrc{i}", tok)
                cmd = " && ".join(f"nix copy --netrc-file {netrc} --to '{t.url}/{cache}?compression=zstd' {p}"
                                  for p in mine)
                env = trovetest.nix_env({"XDG_CACHE_HOME": str(tmp_path / f"xdg-loop{i}")})
            procs.append(subprocess.Popen(["sh", "-ec", cmd], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        outs = [(p.wait(timeout=900), *p.communicate()) for p in procs]
    finally:
        stop.set()
        collector.join(600)
    failed = [(s, e[-2000:]) for s, _, e in outs if s != 0]
    assert not failed, f"{len(failed)} push loops failed: {failed}"
    assert not gc_errors, gc_errors[:3]
    assert len(gc_runs) >= 2
    assert sum(r.json()["pathsDeleted"] for r in gc_runs) >= 4  # the churn cache's
    assert_no_missing_chunks(t)
    for i, cache in enumerate(caches):
        key = t.cache_info(cache)["publicKey"]
        mine = built[i * per_loop:(i + 1) * per_loop]
        root = tmp_path / f"root{i}"
        t.nix_copy_from(cache, mine, root, key, tmp_path / f"xdg-from{i}", token=tok)
        verify_store(root, mine)
