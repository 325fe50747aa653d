# SPDX-License-Identifier: Apache-2.0
"""Pull-through: a cache with upstream binary caches fills itself from them.

The upstream is what users have: a static binary cache written by
`nix copy --to file://DIR?secret-key=…` (xz, as the public cache) of
Nix-built paths, served by nginx on 127.0.0.1 with an access log, so the
tests count what reached it. troved accepts an upstream narinfo only with a
valid signature of one of the cache's upstreamKeys, stores the NAR through
the same ingest as an upload, and never stores what does not verify."""

import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

import trovetest
from trovetest import Nginx, nix32_encode, run, store_hash_part, trove

MK = """
{ nonce }:
let mk = name: script: derivation {
  name = "pt-${name}-${nonce}"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-ec" script ]; PATH = "/usr/bin:/bin"; LC_ALL = "C";
}; in
"""

CLOSURE = MK + """
rec {
  lib1 = mk "lib1" "mkdir -p $out/lib; echo lib1-${nonce} > $out/lib/data; seq 1 20000 > $out/lib/numbers";
  lib2 = mk "lib2" "mkdir -p $out; echo ${lib1} > $out/ref; echo lib2 > $out/x";
  top = mk "top" ''
    mkdir -p $out/bin
    printf '#!/bin/sh\\ncat ${lib2}/ref ${lib1}/lib/data\\n' > $out/bin/top
    chmod +x $out/bin/top
  '';
  solo = mk "solo" "mkdir -p $out; seq 1 50000 > $out/numbers";
  otherkey = mk "otherkey" "echo signed by someone else > $out";
  corrupt = mk "corrupt" "echo its NAR will be swapped > $out";
  donor = mk "donor" "echo a NAR of another path > $out";
  big = mk "big" "head -c 1500000 /dev/zero > $out";
  redir = mk "redir" "echo behind a redirect > $out";
  down = mk "down" "echo on a stopped upstream > $out";
  remembered = mk "remembered" "echo only after a while > $out";
}
"""

NIX_BASE_CONFIG = "build-users-group =\nsandbox = false\nexperimental-features = nix-command"


def file_cache_copy(dest, sk, paths):
    """nix copy --to file://dest?secret-key=sk (xz, as cache.nixos.org)."""
    env = trovetest.nix_env()
    env["XDG_CACHE_HOME"] = str(Path(dest).parent / ("xdg-" + Path(dest).name))
    run(["nix", "copy", "--to", f"file://{dest}?secret-key={sk}", *paths], env=env, timeout=600)


def narinfo_field(text, key):
    m = re.search(rf"^{key}: (.*)$", text, re.M)
    return m.group(1) if m else None


@pytest.fixture(scope="module")
def up(make_troved_module, tmp_path_factory):
    """The upstream caches, the paths in them, and a troved (max-nar-size 1M)."""
    d = tmp_path_factory.mktemp("pullthrough")
    os.chmod(d, 0o755)
    nonce = secrets.token_hex(6)
    f = d / "closure.nix"
    f.write_text(CLOSURE)
    outs = trovetest.nix_build(f, d / "result", args={"nonce": nonce})
    paths = {}
    for name in ("lib1", "lib2", "top", "solo", "otherkey", "corrupt", "donor", "big", "redir", "down",
                 "remembered"):
        (paths[name],) = [p for p in outs if p.endswith(f"-pt-{name}-{nonce}")]

    keys = {}
    for k in ("up", "other"):
        sk, pk = d / f"{k}.sk", d / f"{k}.pk"
        run(["nix-store", "--generate-binary-cache-key", f"{k}-test-1", sk, pk])
        keys[k] = (sk, pk.read_text().strip())

    root = d / "www"
    good, bad = root / "good", root / "bad"
    sk = keys["up"][0]
    file_cache_copy(good, sk, [paths["lib2"], paths["solo"], paths["remembered"]])
    file_cache_copy(bad, sk, [paths["corrupt"], paths["donor"], paths["big"]])
    file_cache_copy(bad, keys["other"][0], [paths["otherkey"]])
    file_cache_copy(root / "redirtarget", sk, [paths["redir"]])
    file_cache_copy(root / "downcache", sk, [paths["down"]])
    # The corrupt path's NAR file is replaced by another path's (valid xz,
    # valid NAR, wrong hash).
    ci = (bad / f"{store_hash_part(paths['corrupt'])}.narinfo").read_text()
    di = (bad / f"{store_hash_part(paths['donor'])}.narinfo").read_text()
    shutil.copyfile(bad / narinfo_field(di, "URL"), bad / narinfo_field(ci, "URL"))
    # A narinfo for a hash whose StorePath is another path (validly signed).
    fake_hash = nix32_encode(secrets.token_bytes(20))
    (bad / f"{fake_hash}.narinfo").write_text(di)
    # A narinfo with a huge References list (several MiB).
    huge_hash = nix32_encode(secrets.token_bytes(20))
    refs = " ".join(f"{nix32_encode(secrets.token_bytes(20))}-ref{i}" for i in range(60000))
    (bad / f"{huge_hash}.narinfo").write_text(
        f"StorePath: /nix/store/{huge_hash}-huge\nURL: nar/x.nar.xz\nCompression: xz\n"
        f"NarHash: {narinfo_field(di, 'NarHash')}\nNarSize: {narinfo_field(di, 'NarSize')}\n"
        f"References: {refs}\n")
    os.system(f"chmod -R a+rX {root}")

    nginx = Nginx(d / "nginx", root,
                  extra='location /redir/ { return 302 "file:///etc/passwd"; }').start()
    server = make_troved_module(log_level="info", args=["--max-nar-size", "1M",
                                                        "--upstream-timeout", "5"])
    env = trovetest.logged_in_env(server, d)
    yield dict(paths=paths, keys=keys, nginx=nginx, server=server, env=env, dir=d, nonce=nonce,
               fake_hash=fake_hash, huge_hash=huge_hash)
    nginx.stop()


_count = 0


def make_cache(up, upstreams, keys=None):
    global _count
    _count += 1
    name = f"pt{_count}"
    s = up["server"]
    body = {"upstreams": upstreams, "upstreamKeys": keys or up["keys"]["up"][1]}
    r = s.request("POST", f"/_api/v1/caches/{name}", json.dumps(body), token=s.admin)
    assert r.status == 201, r
    assert r.json()["upstreams"] == upstreams
    return name, r.json()


def rows(server, sql):
    return server.scalar(sql)


def path_rows(server, cache, hash_part):
    return rows(server, f"SELECT count(*) FROM paths p JOIN caches c ON c.id = p.cache_id "
                        f"WHERE c.name = '{cache}' AND p.hash_part = '{hash_part}'")


def nix_env_for(tmp_path, tag):
    env = dict(os.environ)
    env["NIX_CONFIG"] = NIX_BASE_CONFIG + "\nsubstituters ="
    env["XDG_CACHE_HOME"] = str(tmp_path / f"nix-cache-{tag}")
    env["NIX_USER_CONF_FILES"] = str(tmp_path / "no-such-nix.conf")
    return env


# ---- configuration ----

def test_upstreams_configuration(up):
    s, env, pk = up["server"], up["env"], up["keys"]["up"][1]
    name, info = make_cache(up, [up["nginx"].url + "/good"])
    assert info["upstreamKeys"] == pk

    def patch(body):
        return s.request("PATCH", f"/_api/v1/caches/{name}", json.dumps(body), token=s.admin)

    # A bare key name cannot verify anything.
    r = patch({"upstreamKeys": "cache.nixos.org-1"})
    assert r.status == 400 and "public keys" in r.text, r
    r = s.request("POST", "/_api/v1/caches/ptbare", json.dumps({"upstreams": ["http://127.0.0.1:1/x"]}),
                  token=s.admin)
    assert r.status == 400, r
    for bad in (["ftp://127.0.0.1/x"], ["file:///etc"], ["http://"], ["http://h/x?a=b"],
                ["http://h/" + "a" * 600], [f"http://h/{i}" for i in range(9)], "http://h/", [1]):
        r = patch({"upstreams": bad})
        assert r.status == 400, (bad, r)
    assert s.cache_info(name)["upstreams"] == [up["nginx"].url + "/good"]

    out = trove("cache", "configure", "--upstream", "http://127.0.0.1:9/a", "--upstream",
                "https://example.org/b", name, env=env, text=True).stdout
    assert "http://127.0.0.1:9/a" in out and "https://example.org/b" in out
    assert s.cache_info(name)["upstreams"] == ["http://127.0.0.1:9/a", "https://example.org/b"]
    trove("cache", "configure", "--upstream", "none", name, env=env, text=True)
    assert s.cache_info(name)["upstreams"] == []
    # Without upstreams a bare key name is fine again (trove push uses names).
    assert patch({"upstreamKeys": "cache.nixos.org-1"}).status == 200


# ---- the closure: lower paths from the upstream, the top path pushed ----

def test_closure_through_upstream(up, tmp_path):
    s, env, p, nginx = up["server"], up["env"], up["paths"], up["nginx"]
    name, info = make_cache(up, [nginx.url + "/empty", nginx.url + "/good"])
    key = info["publicKey"]
    out = trove("push", "--no-progress", "--no-closure", name, p["top"], env=env, text=True).stdout
    assert "1 path(s) pushed" in out, out
    for lower in ("lib1", "lib2"):
        assert path_rows(s, name, store_hash_part(p[lower])) == 0

    netrc = trovetest.write_netrc(tmp_path / "netrc", s.admin)
    root = tmp_path / "root"
    run(["nix", "copy", "--from", f"{s.url}/{name}", "--to", f"local?root={root}",
         "--option", "trusted-public-keys", key, "--option", "netrc-file", netrc, p["top"]],
        env=nix_env_for(tmp_path, "copy"), timeout=600)
    for k in ("top", "lib1", "lib2"):
        assert trovetest.stream_sha256(["nix-store", "--dump", f"{root}{p[k]}"]) == \
            trovetest.nix_dump_sha256(p[k])
    assert p["lib1"] in (root / p["lib2"][1:] / "ref").read_text()

    # Pulled paths keep the upstream signature and get the cache's.
    ni = s.narinfo(name, p["lib1"])
    sigs = ni["Sig"].split("\n")
    assert any(x.startswith("up-test-1:") for x in sigs), sigs
    assert any(x.startswith(key.split(":")[0] + ":") for x in sigs), sigs
    # Manifests of the lower paths are served.
    m = s.manifest(name, p["lib1"])
    assert m["chunks"]
    # Marked as pulled, counted apart from pushed paths.
    assert rows(s, f"SELECT count(*) FROM paths p JOIN caches c ON c.id = p.cache_id "
                   f"WHERE c.name = '{name}' AND p.pulled") == 2
    # (usage in the API lags by up to 30 s; test_concurrent_requests_one_download checks it)
    # The first upstream lacks them, the second served each NAR once.
    for k in ("lib1", "lib2"):
        assert len(nginx.requests(f"/empty/{store_hash_part(p[k])}.narinfo")) == 1
        assert len(nginx.requests(f"/good/{store_hash_part(p[k])}.narinfo")) == 1
    met = s.metrics()
    assert met["trove_upstream_hits_total"] >= 2
    assert met["trove_upstream_bytes_total"] > 0


MOUNT_AND_RUN = r"""
"$TROVEFS" -f --server "$URL" --cache "$CACHE" --token-file "$TOKEN" --trusted-key "$KEY" \
        --cache-dir "$CD" /nix/store 2>"$LOG" &
pid=$!
# The mount hides the machine's own /nix/store (which has these paths too).
for _ in $(seq 1 300); do
        [ "$(stat -f -c %t /nix/store)" = 65735546 ] && break  # FUSE_SUPER_MAGIC
        kill -0 $pid || { cat "$LOG" >&2; exit 1; }
        sleep 0.05
done
[ "$(stat -f -c %t /nix/store)" = 65735546 ] || { echo "trovefs did not mount" >&2; exit 1; }
"$TOP"
getfattr --only-values -n user.trove.stats /nix/store > "$STATS"
umount /nix/store
wait $pid
"""


def test_mount_runs_program_through_upstream(up, tmp_path):
    """A trovefs mount at /nix/store runs a pushed program whose lower paths
    only the upstream has: they come through troved. A second mount with an
    empty chunk cache runs it again without a request reaching the upstream."""
    s, env, p, nginx = up["server"], up["env"], up["paths"], up["nginx"]
    name, info = make_cache(up, [nginx.url + "/good"])
    trove("push", "--no-progress", "--no-closure", name, p["top"], env=env, text=True)
    token = tmp_path / "token"
    token.write_text(s.admin + "\n")
    lower = [store_hash_part(p[k]) for k in ("lib1", "lib2")]

    def upstream_requests():
        return sum(len(nginx.requests(f"/good/{h}")) for h in lower) + \
            len(nginx.requests("/good/nar/"))

    outputs = []
    for run_no in range(2):
        before = upstream_requests()
        stats = tmp_path / f"stats{run_no}"
        out = run(["unshare", "-m", "--propagation", "private", "bash", "-euo", "pipefail", "-c",
                   MOUNT_AND_RUN],
                  env=dict(os.environ, TROVEFS=str(trovetest.binary("trovefs")), URL=s.url, CACHE=name,
                           TOKEN=str(token), KEY=info["publicKey"], CD=str(tmp_path / f"cd{run_no}"),
                           LOG=str(tmp_path / f"trovefs{run_no}.log"), STATS=str(stats),
                           TOP=f"{p['top']}/bin/top"),
                  text=True, timeout=300).stdout
        outputs.append(out)
        fetched = json.loads(stats.read_text())
        assert fetched["chunksFetched"] > 0 and fetched.get("errors", 0) == 0, fetched
        if run_no == 0:
            assert upstream_requests() > before, "the lower paths did not come from the upstream"
        else:
            assert upstream_requests() == before, "the second mount reached the upstream"
    assert outputs[0] == outputs[1] == f"{p['lib1']}\nlib1-{up['nonce']}\n", outputs


def test_concurrent_requests_one_download(up):
    s, p, nginx = up["server"], up["paths"], up["nginx"]
    name, _ = make_cache(up, [nginx.url + "/good"])
    h = store_hash_part(p["solo"])
    before = len(nginx.requests("/good/nar/"))
    results = []

    def get(i):
        http = trovetest.HttpClient("127.0.0.1", s.port, timeout=120)
        path = f"/{name}/{h}.narinfo" if i % 2 else f"/_api/v1/caches/{name}/manifests/{h}"
        try:
            results.append(http.request("GET", path, token=s.admin).status)
        finally:
            http.close()

    threads = [threading.Thread(target=get, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 32, results
    assert len(nginx.requests(f"/good/{h}.narinfo")) == 1
    assert len(nginx.requests("/good/nar/")) - before == 1
    assert path_rows(s, name, h) == 1
    # Usage counts it as pulled, not pushed (the first usage asked of this cache).
    out = trove("cache", "info", name, env=up["env"], text=True).stdout
    assert re.search(r"pulled paths: +1 ", out) and re.search(r"pushed paths: +0\n", out), out
    usage = s.cache_info(name)["usage"]
    assert (usage["paths"], usage["pulledPaths"], usage["pushedPaths"]) == (1, 1, 0), usage
    assert usage["pulledNarBytes"] > 0


# ---- what is refused: a clean answer, a log line, nothing stored ----

def expect_refused(up, cache, hash_part, status, log_re):
    s = up["server"]
    mark = s.log_mark()
    r = s.get(f"/{cache}/{hash_part}.narinfo", token=s.admin)
    assert r.status == status, r
    log = s.log_since(mark)
    assert re.search(log_re, log), log
    assert path_rows(s, cache, hash_part) == 0
    assert s.running()


def test_refused_upstream_paths(up):
    s, p, nginx, keys = up["server"], up["paths"], up["nginx"], up["keys"]
    name, _ = make_cache(up, [nginx.url + "/bad"])
    nars = rows(s, "SELECT count(*) FROM nars")
    expect_refused(up, name, store_hash_part(p["otherkey"]), 404,
                   r"narinfo not signed by any of cache \S+'s upstream keys")
    expect_refused(up, name, store_hash_part(p["corrupt"]), 404, r"NAR does not match its narinfo")
    expect_refused(up, name, up["fake_hash"], 404, r"narinfo is for another path")
    expect_refused(up, name, up["huge_hash"], 404, r"narinfo larger than")
    expect_refused(up, name, store_hash_part(p["big"]), 404, r"not within max-nar-size")
    assert rows(s, "SELECT count(*) FROM nars") == nars
    # The corrupt NAR was downloaded, the too-big one never.
    assert len(nginx.requests("/bad/nar/")) == 1
    # A cache that trusts the other key takes the path signed with it.
    name2, _ = make_cache(up, [nginx.url + "/bad"], keys=keys["other"][1])
    assert s.narinfo(name2, p["otherkey"]) is not None


def test_redirect_is_not_followed(up):
    p, nginx = up["paths"], up["nginx"]
    name, _ = make_cache(up, [nginx.url + "/redir"])
    expect_refused(up, name, store_hash_part(p["redir"]), 502, r"HTTP 302 \(redirects are not followed\)")


def test_stopped_upstream_is_an_error_not_remembered(up, tmp_path):
    s, p = up["server"], up["paths"]
    other = Nginx(tmp_path / "nginx2", up["dir"] / "www")
    name, _ = make_cache(up, [other.url + "/downcache"])
    h = store_hash_part(p["down"])
    errors = s.metrics().get("trove_upstream_errors_total", 0)
    expect_refused(up, name, h, 502, r"narinfo request failed: Connection refused")
    assert s.metrics()["trove_upstream_errors_total"] == errors + 1
    # Not remembered: once the upstream is back, the path comes.
    other.start()
    try:
        assert s.narinfo(name, p["down"]) is not None
        assert len(other.requests(f"/downcache/{h}.narinfo")) == 1
    finally:
        other.stop()


def test_miss_is_remembered(up):
    s, p, nginx = up["server"], up["paths"], up["nginx"]
    # The path is not where this cache looks at first ...
    name, _ = make_cache(up, [nginx.url + "/bad"])
    h = store_hash_part(p["remembered"])
    misses = s.metrics().get("trove_upstream_misses_total", 0)
    for _ in range(3):
        assert s.get(f"/{name}/{h}.narinfo", token=s.admin).status == 404
        assert s.get(f"/{name}/{h}.ls", token=s.admin).status == 404
    assert len(nginx.requests(f"/bad/{h}.narinfo")) == 1
    # The first narinfo GET is a pull that misses; the others are answered
    # from the server's narinfo memory (not found, kept --cache-ttl seconds)
    # without a pull, or, past that, meet the remembered miss; so does each
    # .ls GET.
    assert misses + 4 <= s.metrics()["trove_upstream_misses_total"] <= misses + 6
    # ... and changing the upstreams forgets what was remembered.
    r = s.request("PATCH", f"/_api/v1/caches/{name}", json.dumps({"upstreams": [nginx.url + "/good"]}),
                  token=s.admin)
    assert r.status == 200, r
    assert s.narinfo(name, p["remembered"]) is not None
    assert s.get(f"/{name}/{h}.ls", token=s.admin).status == 200


def test_silent_upstream_times_out(up):
    """An upstream that accepts connections and never answers costs at most
    upstream-timeout (5 s here), then 504; the error is not remembered."""
    s, p = up["server"], up["paths"]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # never accepted: the kernel completes handshakes, nobody answers
    try:
        name, _ = make_cache(up, [f"http://127.0.0.1:{silent.getsockname()[1]}/x"])
        h = store_hash_part(p["solo"])
        t0 = time.monotonic()
        expect_refused(up, name, h, 504, r"narinfo request failed: Connection timed out")
        assert 4 <= time.monotonic() - t0 < 20
        t0 = time.monotonic()
        assert s.get(f"/{name}/{h}.narinfo", token=s.admin).status == 504
        assert time.monotonic() - t0 >= 4
    finally:
        silent.close()


# ---- the closure comes in parallel ----

class GateProxy:
    """An HTTP proxy in front of an upstream directory that holds back the
    answer to one URL until another URL has been asked for (or a bounded
    wait ran out), and records every path asked."""

    def __init__(self, upstream, hold, until, wait=30):
        import http.client
        import http.server
        import urllib.parse

        self.requests = []
        self.released_by_request = None
        opened = threading.Event()
        target = urllib.parse.urlsplit(upstream)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                proxy.requests.append(self.path)
                if self.path == until:
                    opened.set()
                if self.path == hold:
                    proxy.released_by_request = opened.wait(wait)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    conn.request("GET", target.path + self.path)
                    r = conn.getresponse()
                    body = r.read()
                finally:
                    conn.close()
                self.send_response(r.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_references_pulled_while_the_nar_downloads(up, make_troved):
    """Asked for lib2 alone, troved pulls lib1 (its reference) too, starting
    as soon as lib2's narinfo is accepted: the upstream holds lib2's NAR
    back until lib1's NAR has been asked for, which happens only if the
    reference pull does not wait for lib2 to be stored."""
    p, nginx, pk = up["paths"], up["nginx"], up["keys"]["up"][1]
    good = up["dir"] / "www" / "good"
    h1, h2 = store_hash_part(p["lib1"]), store_hash_part(p["lib2"])
    nar1 = "/" + narinfo_field((good / f"{h1}.narinfo").read_text(), "URL")
    nar2 = "/" + narinfo_field((good / f"{h2}.narinfo").read_text(), "URL")
    # Its own server: the held NAR must not run into the 5 s upstream timeout of the module's.
    s = make_troved(log_level="info", args=["--upstream-timeout", "60"])
    gate = GateProxy(nginx.url + "/good", hold=nar2, until=nar1)
    try:
        r = s.request("POST", "/_api/v1/caches/par", json.dumps({"upstreams": [gate.url], "upstreamKeys": pk}),
                      token=s.admin)
        assert r.status == 201, r
        assert s.manifest("par", p["lib2"])["chunks"]
        assert gate.released_by_request is True, gate.requests
        # lib1 is stored without anyone asking for it, from one download.
        for _ in range(600):
            if path_rows(s, "par", h1) == 1:
                break
            time.sleep(0.1)
        assert path_rows(s, "par", h1) == 1
        assert gate.requests.count(nar1) == 1 and gate.requests.count(f"/{h1}.narinfo") == 1, gate.requests
        assert s.manifest("par", p["lib1"])["chunks"]
        assert gate.requests.count(f"/{h1}.narinfo") == 1, gate.requests
    finally:
        gate.stop()
