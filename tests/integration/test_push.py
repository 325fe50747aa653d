# SPDX-License-Identifier: Apache-2.0
"""trove push, login, use, cache and token against a real troved and a real
Nix: what is pushed is what Nix substitutes and verifies; only missing
chunks travel; the server refuses pushes that lie; an interrupted push
leaves nothing visible and a re-run finishes it; concurrent pushes of
overlapping closures all succeed."""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import trovetest
from trovetest import run, trove

# Nix for the substitution tests: no substituters unless a nix.conf adds one.
NIX_BASE_CONFIG = "build-users-group =\nsandbox = false\nexperimental-features = nix-command"


@pytest.fixture(scope="module")
def server(make_troved_module):
    return make_troved_module(log_level="info")


@pytest.fixture
def client(server, tmp_path):
    """A trove client configuration (XDG_CONFIG_HOME) logged in to server
    with an admin token; returns the environment to run trove with."""
    return trovetest.logged_in_env(server, tmp_path)


_cache_counter = 0


def new_cache(env, public=False):
    global _cache_counter
    _cache_counter += 1
    name = f"push{os.getpid()}-{_cache_counter}"
    trove("cache", "create", "--public" if public else "--private", name, env=env, text=True)
    info = json.loads(trove("cache", "info", "--json", name, env=env, text=True).stdout)
    assert info["publicKey"].startswith(name + "-1:")
    return name, info


def push(env, cache, *paths, expect=0, extra=(), timeout=900):
    return trove("push", "--no-progress", *extra, cache, *paths, env=env, text=True,
                 expect=expect, timeout=timeout)


def metric(server, name):
    return server.metrics().get(f"trove_{name}", 0.0)


def nix_env_for(tmp_path, tag, conf=None):
    """Environment for one Nix invocation: its own XDG_CACHE_HOME (Nix caches
    narinfo lookups there) and, if given, nix.conf as the only user config."""
    env = dict(os.environ)
    env["NIX_CONFIG"] = NIX_BASE_CONFIG + ("" if conf else "\nsubstituters =")
    env["XDG_CACHE_HOME"] = str(tmp_path / f"nix-cache-{tag}")
    env["NIX_USER_CONF_FILES"] = str(conf) if conf else str(tmp_path / "no-such-nix.conf")
    return env


def build(tmp_path, name, expr, timeout=600):
    f = tmp_path / f"{name}.nix"
    f.write_text(expr)
    return trovetest.nix_build(f, tmp_path / f"{name}-result", timeout=timeout)


MK = """
let mk = name: script: derivation {
  inherit name; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-ec" script ]; PATH = "/usr/bin:/bin"; LC_ALL = "C";
}; in
"""


# ---- (1) what trove pushes, Nix substitutes and verifies ----

def test_push_closure_then_nix_copy_and_substitute(server, client, test_closure, tmp_path):
    cache, info = new_cache(client)
    key = info["publicKey"]
    r = push(client, cache, test_closure.top)
    assert f"{len(test_closure.paths)} path(s) pushed" in r.stdout, r.stdout
    for p in test_closure.paths:
        ni = server.narinfo(cache, p)
        assert ni is not None, f"{p} not visible after push"
        assert ni["NarHash"] == trovetest.nix_path_hash(p)

    # nix copy from the cache into a fresh store, trusting only the cache key.
    netrc = trovetest.write_netrc(tmp_path / "netrc", server.admin)
    root = tmp_path / "copy-root"
    env = nix_env_for(tmp_path, "copy")
    run(["nix", "copy", "--from", f"{server.url}/{cache}", "--to", f"local?root={root}",
         "--option", "trusted-public-keys", key, "--option", "netrc-file", netrc,
         test_closure.top], env=env, timeout=900)
    run(["nix", "store", "verify", "--store", f"local?root={root}", "-r",
         "--option", "trusted-public-keys", key, test_closure.top],
        env=nix_env_for(tmp_path, "verify"), timeout=900)
    # A key the cache did not sign with is refused (the check can fail).
    bad = run(["nix", "copy", "--from", f"{server.url}/{cache}", "--to",
               f"local?root={tmp_path / 'copy-untrusted'}",
               "--option", "trusted-public-keys", "other-1:" + key.split(":", 1)[1],
               "--option", "netrc-file", netrc, test_closure["file"]],
              env=nix_env_for(tmp_path, "untrusted"), expect=None)
    assert bad.returncode != 0

    # trove use writes nix.conf + netrc; plain nix-store -r substitutes with it.
    conf = Path(client["XDG_CONFIG_HOME"]) / "nix" / "nix.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("substituters =\n")
    trove("use", cache, env=client, text=True)
    text = conf.read_text()
    assert f"extra-substituters = {server.url}/{cache}" in text
    assert f"extra-trusted-public-keys = {key}" in text
    assert "netrc-file = " in text
    root2 = tmp_path / "subst-root"
    target = test_closure["tree"]
    run(["nix-store", "-r", target, "--store", f"local?root={root2}"],
        env=nix_env_for(tmp_path, "subst", conf), timeout=900)
    h, size = trovetest.stream_sha256(["nix-store", "--dump", f"{root2}{target}"])
    want = trovetest.nix_dump_sha256(target)
    assert (h, size) == want


def test_same_machine_push_then_substitute(server, client, tmp_path):
    """One machine pushes and later substitutes the same paths, with one Nix
    narinfo cache (XDG_CACHE_HOME), as a developer box or a long-lived runner
    does. Nix remembers the narinfo it uploaded and never asks the server for
    its signed one: plain `nix copy --to` leaves paths that this machine cannot
    substitute ("lacks a valid signature"); `trove push`, or `nix copy --to`
    with `?secret-key=`, do not. README and docs/api.md say so."""
    cache, info = new_cache(client)
    key = info["publicKey"]
    netrc = trovetest.write_netrc(tmp_path / "netrc", server.admin)
    nix_key_sk, nix_key_pk = tmp_path / "uploader.sk", tmp_path / "uploader.pk"
    run(["nix-store", "--generate-binary-cache-key", "uploader-1", nix_key_sk, nix_key_pk])
    tag = os.urandom(8).hex()
    paths = {}
    for how in ("plain", "signed", "push"):
        paths[how] = build(tmp_path, f"same-{how}", MK + f"""
          mk "same-machine-{how}" "mkdir -p $out; echo {how}-{tag} > $out/id"
        """)[0]
    same = nix_env_for(tmp_path, "same-machine")  # one narinfo cache for all
    url = f"{server.url}/{cache}"

    def substitute(path, trusted, expect=0):
        root = tmp_path / f"root-{Path(path).name}"
        return run(["nix", "copy", "--from", url, "--to", f"local?root={root}",
                    "--option", "trusted-public-keys", trusted,
                    "--option", "netrc-file", netrc, path],
                   env=same, expect=expect, text=True, timeout=300)

    # The pitfall: uploaded unsigned, then refused on the same machine although
    # the server serves it signed with the trusted cache key.
    run(["nix", "copy", "--to", url + "?compression=zstd", "--option", "netrc-file", netrc,
         paths["plain"]], env=same, timeout=300)
    assert server.narinfo(cache, paths["plain"])["Sig"].startswith(cache + "-1:")
    r = substitute(paths["plain"], key, expect=None)
    assert r.returncode != 0 and "lacks a valid signature" in r.stderr, r.stderr

    # Signed on upload: the local narinfo cache holds a signature this machine trusts.
    run(["nix", "copy", "--to", f"{url}?compression=zstd&secret-key={nix_key_sk}",
         "--option", "netrc-file", netrc, paths["signed"]], env=same, timeout=300)
    substitute(paths["signed"], nix_key_pk.read_text().strip())

    # trove push: Nix's narinfo cache is not involved; the cache key verifies.
    push(client, cache, paths["push"])
    r = substitute(paths["push"], key)
    root = tmp_path / f"root-{Path(paths['push']).name}"
    assert (root / paths["push"].lstrip("/") / "id").read_text() == f"push-{tag}\n"


# ---- (2) chunk-level dedup on the wire ----

def test_dedup_on_the_wire(server, client, tmp_path):
    cache, _ = new_cache(client)
    seed = f"{os.getpid()}-{time.time_ns()}"
    expr = MK + f"""rec {{
  base = mk "trove-push-base-{seed}" ''
    mkdir $out; head -c 100M /dev/urandom > $out/data; echo one > $out/small
  '';
  edited = mk "trove-push-edited-{seed}" ''
    mkdir $out; cp ${{base}}/data $out/data; chmod u+w $out/data
    for off in 1000000 40000000 90000000; do
      printf 'EDIT' | dd of=$out/data bs=1 seek=$off conv=notrunc 2>/dev/null
    done
    echo two > $out/small
  '';
}}"""
    f = tmp_path / "dedup.nix"
    f.write_text(expr)
    (base,) = trovetest.nix_build(f, tmp_path / "base", attr="base")
    (edited,) = trovetest.nix_build(f, tmp_path / "edited", attr="edited")
    edited_size = int(json.loads(run(["nix", "path-info", "--json", edited], text=True,
                                     env=trovetest.nix_env()).stdout)[0]["narSize"])

    push(client, cache, base)
    before = metric(server, "bytes_received_total")
    push(client, cache, edited)
    sent = metric(server, "bytes_received_total") - before
    assert sent <= 0.10 * edited_size, \
        f"pushing a path that differs in 3 places sent {sent:.0f} bytes of a {edited_size}-byte NAR"
    assert server.narinfo(cache, edited) is not None

    # The same closure into another cache: every chunk is already stored.
    other, _ = new_cache(client)
    chunks0 = metric(server, "chunks_stored_total")
    bytes0 = metric(server, "bytes_received_total")
    r = push(client, other, base, edited, extra=("--json",))
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e for e in events if e["event"] == "pushed"], events
    assert metric(server, "chunks_stored_total") == chunks0
    # What travels is the questions (chunk ids) and the two manifests, no chunk.
    assert metric(server, "bytes_received_total") - bytes0 < 0.005 * 2 * edited_size
    summary = events[-1]
    assert summary["event"] == "summary" and summary["failed"] == 0
    assert summary["dedupPercent"] > 99.0

    # Re-pushing to the same cache sends nothing but the question.
    bytes1 = metric(server, "bytes_received_total")
    r = push(client, other, base, edited)
    assert "0 path(s) pushed" in r.stdout and "already in the cache" in r.stdout
    # bytes_received_total counts every request body: here only the
    # missing-paths question.
    assert metric(server, "bytes_received_total") - bytes1 < 1024
    assert metric(server, "chunks_stored_total") == chunks0


def test_push_and_nix_copy_store_what_nar_chunks_computes(server, client, tmp_path):
    """trove push (one read, groups hashed and compressed by several
    uploaders) and nix copy (the server cuts, then hashes, compresses and
    stores batches on its pool) both store exactly the chunk table that
    `trove nar chunks` computes alone (offsets, lengths, ids, frame sizes),
    also for content that repeats within and across groups and batches; and
    both substitute and verify."""
    def repeats(tag):
        seed = f"{tag}-{os.getpid()}-{time.time_ns()}"
        script = ("mkdir $out; head -c 6M /dev/urandom > $out/r; "
                  "head -c 20M /dev/zero > $out/zeros; "
                  "cat $out/r $out/r $out/r > $out/r3; "
                  "for i in $(seq 1 300); do echo $i > $out/s$i; done")
        (path,) = build(tmp_path, tag, MK + f'mk "trove-repeats-{seed}" "{script}"')
        out = trovetest.pipeline(["nix-store", "--dump", path],
                                 [trovetest.binary("trove"), "nar", "chunks", "-"])
        want = [[int(o), int(n), h, int(z)] for o, n, h, z in
                (line.split() for line in out.splitlines())]
        ids = [c[2] for c in want]
        assert len(set(ids)) < len(ids) / 2, "the content was meant to repeat"
        return path, want

    cache, info = new_cache(client)
    pushed, want_pushed = repeats("pushed")
    copied, want_copied = repeats("copied")
    push(client, cache, pushed)
    server.nix_copy_to(cache, [copied], server.admin, tmp_path / "xdg-nixcopy", compression="zstd")
    for path, want in ((pushed, want_pushed), (copied, want_copied)):
        m = server.manifest(cache, path)
        assert m["narHash"] == trovetest.nix_path_hash(path)
        assert m["chunks"] == want
        ni = server.narinfo(cache, path)
        assert int(ni["FileSize"]) == sum(c[3] for c in want)
        root = tmp_path / f"root-{Path(path).name}"
        server.nix_copy_from(cache, [path], root, info["publicKey"], tmp_path / f"xdg-{Path(path).name}",
                             token=server.admin)
        assert trovetest.stream_sha256(["nix-store", "--dump", f"{root}{path}"]) == \
            trovetest.nix_dump_sha256(path)


# ---- (3) the server refuses pushes that lie ----

def zstd_frame(data):
    # zstd writes the content size into the frame header when it compresses
    # a file (not when it reads a pipe).
    import tempfile
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        return run(["zstd", "-q", "-c", "-3", f.name]).stdout


def test_server_refuses_lying_pushes(server, client, test_closure, tmp_path):
    cache, _ = new_cache(client)
    tok = server.admin
    # A path with content the server has never seen (a NAR it already holds
    # is taken from its own records whatever the client claims), with a
    # reference so that the references check is passed for real.
    seed = f"{os.getpid()}-{time.time_ns()}"
    ref = test_closure["file"]
    (path,) = build(tmp_path, "lie", MK + f'mk "trove-lie-{seed}" "mkdir $out; echo {seed} > $out/a; '
                    f'echo ${{builtins.storePath "{ref}"}} > $out/b"')
    nar = run(["nix-store", "--dump", path], env=trovetest.nix_env()).stdout
    root = json.loads(run([trovetest.binary("trove"), "nar", "ls", "-"], input=nar).stdout)["root"]
    cid = hashlib.sha256(nar).hexdigest()
    api = f"/_api/v1/caches/{cache}"

    # A chunk whose bytes do not match its id.
    wrong_id = hashlib.sha256(b"something else").hexdigest()
    r = server.request("PUT", f"{api}/chunks/{wrong_id}", zstd_frame(nar), token=tok)
    assert r.status == 400 and b"does not match its id" in r.body, r

    # The same lie inside a batch (the way trove push uploads): the whole
    # batch is refused, even the honest record before it, and nothing of it
    # is recorded.
    honest = os.urandom(5000)
    honest_id = hashlib.sha256(honest).hexdigest()

    def record(chunk_id, frame):
        return bytes.fromhex(chunk_id) + len(frame).to_bytes(4, "little") + frame

    body = record(honest_id, zstd_frame(honest)) + record(wrong_id, zstd_frame(nar))
    r = server.request("POST", f"{api}/chunks", body, token=tok)
    assert r.status == 400 and b"does not match its id" in r.body, r
    r = server.request("POST", f"{api}/missing-chunks", json.dumps({"chunks": [honest_id, wrong_id]}), token=tok)
    assert r.status == 200 and sorted(json.loads(r.body)["missing"]) == sorted([honest_id, wrong_id]), r
    # A truncated batch record is refused too.
    r = server.request("POST", f"{api}/chunks", record(honest_id, zstd_frame(honest))[:-3], token=tok)
    assert r.status == 400, r
    # The honest record alone is stored.
    r = server.request("POST", f"{api}/chunks", record(honest_id, zstd_frame(honest)), token=tok)
    assert r.status == 200 and json.loads(r.body) == {"accepted": 1}, r
    r = server.request("POST", f"{api}/missing-chunks", json.dumps({"chunks": [honest_id]}), token=tok)
    assert r.status == 200 and json.loads(r.body)["missing"] == [], r

    def manifest(nar_hash, nar_size, chunk_id, length):
        return json.dumps({
            "version": 1, "storePath": path, "narHash": nar_hash, "narSize": nar_size,
            "references": sorted(Path(p).name for p in trovetest.run(
                ["nix-store", "-q", "--references", path], text=True,
                env=trovetest.nix_env()).stdout.split()),
            "sigs": [], "chunks": [[0, length, chunk_id, length]], "root": root})

    # The server's references check comes first: push the references for real.
    refs = [p for p in run(["nix-store", "-q", "--references", path], text=True,
                           env=trovetest.nix_env()).stdout.split() if p != path]
    if refs:
        push(client, cache, *refs)
    nar_hash = trovetest.nix_path_hash(path)

    # A commit naming a chunk never uploaded.
    r = server.request("POST", f"{api}/paths", manifest(nar_hash, len(nar), cid, len(nar)), token=tok)
    assert r.status == 400 and b"never uploaded" in r.body, r
    assert server.narinfo(cache, path) is None

    # The real chunk uploaded, but a commit claiming another NarHash.
    r = server.request("PUT", f"{api}/chunks/{cid}", zstd_frame(nar), token=tok)
    assert r.status in (200, 201), r
    other_hash = trovetest.nix_path_hash(test_closure["file"])
    r = server.request("POST", f"{api}/paths", manifest(other_hash, len(nar), cid, len(nar)), token=tok)
    assert 400 <= r.status < 500, r
    assert server.narinfo(cache, path) is None
    # ... and one claiming another NarSize.
    r = server.request("POST", f"{api}/paths", manifest(nar_hash, len(nar) + 8, cid, len(nar) + 8),
                       token=tok)
    assert 400 <= r.status < 500, r
    assert server.narinfo(cache, path) is None
    # The honest commit of the same chunk works (so the refusals above were
    # about the lies, not the shape).
    r = server.request("POST", f"{api}/paths", manifest(nar_hash, len(nar), cid, len(nar)), token=tok)
    assert r.status == 201, r
    assert server.narinfo(cache, path) is not None


def test_object_damaged_before_commit_is_refused(make_troved, tmp_path):
    """A push commit reads its chunks back. An object that troved stored
    moments before is not hashed against its id a second time (it was when
    it was uploaded), so the NAR hash must catch one damaged on disk in
    between; after a restart the chunk's own hash does. Either way the
    commit is refused and nothing becomes visible; an intact object then
    commits."""
    t = make_troved()
    cache = "damaged"
    t.create_cache(cache)
    tok = t.admin
    api = f"/_api/v1/caches/{cache}"
    seed = f"{os.getpid()}-{time.time_ns()}"
    # Random bytes: zstd stores them as a raw block, so one flipped byte of
    # the frame is another content of the same length that still decodes.
    (path,) = build(tmp_path, "damaged", MK + f'mk "trove-damaged-{seed}" '
                    f'"mkdir $out; head -c 9000 /dev/urandom > $out/data"')
    nar = run(["nix-store", "--dump", path], env=trovetest.nix_env()).stdout
    root = json.loads(run([trovetest.binary("trove"), "nar", "ls", "-"], input=nar).stdout)["root"]
    cid = hashlib.sha256(nar).hexdigest()
    # From a file, so that the frame declares its content size.
    (tmp_path / "damaged.nar").write_bytes(nar)
    frame = run(["zstd", "-q", "-c", "--no-check", tmp_path / "damaged.nar"]).stdout
    manifest = json.dumps({"version": 1, "storePath": path, "narHash": trovetest.nix_path_hash(path),
                           "narSize": len(nar), "references": [], "sigs": [],
                           "chunks": [[0, len(nar), cid, len(frame)]], "root": root})
    obj = t.state_dir / "chunks" / "chunks" / cid[:2] / cid[2:4] / cid

    def damage():
        b = bytearray(obj.read_bytes())
        assert bytes(b) == frame
        b[len(b) - 100] ^= 0xFF
        obj.chmod(0o600)
        obj.write_bytes(bytes(b))

    def record(chunk_id, data):
        return bytes.fromhex(chunk_id) + len(data).to_bytes(4, "little") + data

    r = t.request("POST", f"{api}/chunks", record(cid, frame), token=tok)
    assert r.status == 200, r
    damage()
    r = t.request("POST", f"{api}/paths", manifest, token=tok)
    assert r.status == 400 and b"chunks reassemble to" in r.body, r
    assert t.narinfo(cache, path) is None

    # After a restart nothing is remembered: the chunk's hash refuses it.
    t.restart()
    r = t.request("POST", f"{api}/paths", manifest, token=tok)
    assert r.status == 400 and b"does not match the manifest" in r.body, r
    assert t.narinfo(cache, path) is None

    # The intact object put back, the same commit goes through.
    obj.write_bytes(frame)
    r = t.request("POST", f"{api}/paths", manifest, token=tok)
    assert r.status == 201, r
    assert t.narinfo(cache, path) is not None


# ---- (4) interrupted and concurrent pushes ----

def test_sigkill_halfway_then_rerun(server, client, tmp_path):
    cache, _ = new_cache(client)
    # Fresh random content: chunks are shared between caches, so the test
    # closure's big path would already be stored by the tests before.
    seed = f"{os.getpid()}-{time.time_ns()}"
    script = "mkdir $out; head -c 150M /dev/urandom > $out/data"
    (big,) = build(tmp_path, "killed", MK + f'mk "trove-killed-{seed}" "{script}"')
    chunks0 = metric(server, "chunks_stored_total")
    proc = subprocess.Popen([str(trovetest.binary("trove")), "push", "--no-progress", cache, big],
                            env=client, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        # Kill it once a good part of the chunks is stored, before the commit.
        while metric(server, "chunks_stored_total") - chunks0 < 500:
            assert proc.poll() is None, f"push finished before it could be killed: {proc.communicate()}"
            assert time.monotonic() < deadline, "push made no progress"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert server.narinfo(cache, big) is None, "a path became visible from an interrupted push"
    stored = metric(server, "chunks_stored_total") - chunks0
    bytes0 = metric(server, "bytes_received_total")
    r = push(client, cache, big)
    assert "1 path(s) pushed" in r.stdout
    assert server.narinfo(cache, big) is not None
    # The re-run sent only what the killed one had not.
    nar_size = int(server.narinfo(cache, big)["NarSize"])
    resent = metric(server, "bytes_received_total") - bytes0
    assert resent < nar_size - stored * 16 * 1024, (resent, nar_size, stored)


def test_concurrent_overlapping_pushes(server, client, tmp_path):
    cache, _ = new_cache(client)
    seed = f"{os.getpid()}-{time.time_ns()}"
    expr = MK + f"""rec {{
  shared = mk "trove-cc-shared-{seed}" ''mkdir $out; head -c 3M /dev/urandom > $out/blob'';
  leaf = i: mk "trove-cc-leaf-{seed}-${{toString i}}" ''
    mkdir $out; head -c 300K /dev/urandom > $out/x; echo ${{shared}} > $out/ref
  '';
  tops = builtins.genList (i: mk "trove-cc-top-{seed}-${{toString i}}" ''
    mkdir $out; echo ${{leaf (i - i / 3 * 3)}} ${{leaf 3}} ${{shared}} > $out/refs
  '') 8;
}}"""
    f = tmp_path / "cc.nix"
    f.write_text(expr)
    tops = trovetest.nix_build(f, tmp_path / "cc", attr="tops")
    assert len(tops) == 8
    procs = [subprocess.Popen([str(trovetest.binary("trove")), "push", "--no-progress", cache, t],
                              env=client, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for t in tops]
    outs = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    for status, out, err in outs:
        assert status == 0, f"concurrent push failed:\n{out}\n{err}"
    for t in tops:
        for p in trovetest.nix_closure(t):
            assert server.narinfo(cache, p) is not None, p


# ---- (5) use, login, token, cache admin ----

def test_use_twice_is_idempotent(server, client, tmp_path):
    cache, info = new_cache(client)
    conf = tmp_path / "nix.conf"
    for _ in range(2):
        trove("use", "--nix-conf", conf, cache, env=client, text=True)
    text = conf.read_text()
    assert text.count(f"{server.url}/{cache}") == 1, text
    assert text.count(info["publicKey"]) == 1, text
    assert text.count("netrc-file") == 1, text
    netrc = next(line.split("=", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("netrc-file"))
    lines = Path(netrc).read_text().splitlines()
    assert len([x for x in lines if x.startswith("machine 127.0.0.1 ")]) == 1, lines
    assert server.admin in lines[0]
    assert os.stat(netrc).st_mode & 0o077 == 0


def test_login_with_bad_token_fails(server, tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    r = trove("login", "srv", server.url, "not-a-token", env=env, text=True, expect=1)
    assert "refused" in r.stderr
    assert not (tmp_path / "cfg" / "trove" / "config.json").exists()
    # A token signed by another server's secret is refused too.
    secret = tmp_path / "other-secret"
    secret.write_text("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\n")
    os.chmod(secret, 0o600)
    forged = trove("token", "create", "--secret-file", secret, "--cache", "*", "--perm", "all",
                   env=env, text=True).stdout.strip()
    r = trove("login", "srv", server.url, forged, env=env, text=True, expect=1)
    assert "refused" in r.stderr
    # A token made locally from the server's own secret is accepted.
    good = trove("token", "create", "--secret-file", server.state_dir / "token-secret",
                 "--cache", "x*", "--perm", "pull", "--valid", "1h", env=env, text=True).stdout.strip()
    trove("login", "srv", server.url, good, env=env, text=True)


def test_cache_admin(server, client):
    cache, info = new_cache(client)
    assert info["public"] is False
    trove("cache", "configure", "--public", "--priority", "12", "--retention", "7d",
          "--upstream-keys", "a-1 b-1", cache, env=client, text=True)
    out = trove("cache", "info", cache, env=client, text=True).stdout
    assert "public key:" in out and info["publicKey"] in out
    assert "dedup ratio:" in out
    j = json.loads(trove("cache", "info", "--json", cache, env=client, text=True).stdout)
    assert (j["public"], j["priority"], j["retentionSeconds"], j["upstreamKeys"]) == \
        (True, 12, 7 * 86400, "a-1 b-1")
    trove("cache", "destroy", "--yes", cache, env=client, text=True)
    r = trove("cache", "info", cache, env=client, text=True, expect=1)
    assert "404" in r.stderr


def test_upstream_signed_paths_are_skipped(server, client, test_closure, tmp_path):
    cache, _ = new_cache(client)
    # Sign a path with a key named as the cache's upstream key.
    keyfile = tmp_path / "up.sec"
    run(["nix-store", "--generate-binary-cache-key", "upstream-test-1", keyfile, tmp_path / "up.pub"])
    path = test_closure["file"]
    run(["nix", "store", "sign", "--key-file", keyfile, path], env=trovetest.nix_env())
    trove("cache", "configure", "--upstream-keys", "upstream-test-1", cache, env=client, text=True)
    r = trove("push", "--no-progress", "--no-closure", cache, path, env=client, text=True)
    assert "signed by upstream key upstream-test-1" in r.stdout
    assert server.narinfo(cache, path) is None
    trove("push", "--no-progress", "--no-closure", "--ignore-upstream-keys", cache, path,
          env=client, text=True)
    assert server.narinfo(cache, path) is not None


def test_push_of_invalid_path_fails(server, client, tmp_path):
    cache, _ = new_cache(client)
    r = trove("push", "--no-progress", cache, "/nix/store/00000000000000000000000000000000-nope",
              env=client, text=True, expect=1)
    assert "nix path-info" in r.stderr


def test_watch_store_pushes_new_paths(server, client, tmp_path):
    cache, _ = new_cache(client)
    proc = subprocess.Popen([str(trovetest.binary("trove")), "watch-store", "--interval", "0.2",
                             "--batch-delay", "0.5", cache], env=client,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        seed = f"{os.getpid()}-{time.time_ns()}"
        (p,) = build(tmp_path, "watched", MK + f'mk "trove-watched-{seed}" "echo {seed} > $out"')
        deadline = time.monotonic() + 60
        while server.narinfo(cache, p) is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "watch-store did not push the new path"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert p in out
