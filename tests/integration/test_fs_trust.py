# SPDX-License-Identifier: Apache-2.0
"""trovefs does not trust what travels between it and troved: a tampering
HTTP proxy on 127.0.0.1 sits between the two and changes manifests. With
--trusted-key a changed or unsigned manifest is refused (the lookup fails,
nothing of it is shown or read); with the right key and no tampering the
mount is the store byte for byte; with a wrong key everything is refused.
Also: the local chunk cache is private to its owner."""

import http.client
import http.server
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

import trovetest
from test_fs import Mount, pushed_server, tree_entries, walk

CACHE = "trust"
SIG_HEADER = "Trove-Manifest-Signature"

# bin/hello is the program; bin/a-evil sorts before it, so in the NAR its
# bytes come first. The tampering proxy deletes a-evil from the listing and
# points hello at a-evil's bytes: a self-consistent manifest (offsets in
# NAR order, inside the NAR, chunk table untouched) that shows a wrong
# program under the right name.
TRUST_NIX = """
derivation {
  name = "trove-test-trust";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-ec" ''
    mkdir -p "$out/bin" "$out/share"
    printf '#!/bin/sh\\necho EVIL\\n' > "$out/bin/a-evil"
    printf '#!/bin/sh\\necho good program\\n' > "$out/bin/hello"
    chmod +x "$out/bin/a-evil" "$out/bin/hello"
    head -c 200000 /dev/urandom > "$out/share/data"
    ln -s ../bin/hello "$out/share/link"
  '' ];
  PATH = "/usr/bin:/bin";
}
"""


@pytest.fixture(scope="module")
def trust_path(session_dir, nix_environment):
    expr = session_dir / "fs-trust.nix"
    expr.write_text(TRUST_NIX)
    (out,) = trovetest.nix_build(expr, session_dir / "fs-trust")
    return out


@pytest.fixture(scope="module")
def server(trust_path, test_closure):
    with pushed_server("trove-fs-trust-", (trust_path, test_closure["file"]), cache=CACHE) as srv:
        srv.public_key = json.loads(srv.api("GET", f"/_api/v1/caches/{CACHE}"))["publicKey"]
        yield srv


def tamper_swap(body):
    """The manifest with bin/hello showing bin/a-evil's bytes."""
    m = json.loads(body)
    b = m["root"]["entries"]["bin"]["entries"]
    evil = b.pop("a-evil")
    b["hello"]["narOffset"] = evil["narOffset"]
    b["hello"]["size"] = evil["size"]
    return json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode()


def run_proxy(upstream_port):
    """A forwarding HTTP/1.1 proxy on 127.0.0.1 that can change manifest
    responses. It runs in a process of its own (see Proxy). Mode "pass"
    forwards everything, "swap" rewrites the body with tamper_swap
    (keeping the server's signature), "flip" adds a space to the body (the
    same JSON, other bytes), "strip" drops the signature header. GET
    /_proxy/mode/<mode> sets the mode, GET /_proxy/stats tells what it did.
    Prints its port on stdout when it listens."""
    state = {"mode": "pass", "manifests": 0, "tampered": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, headers, body):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.startswith("/_proxy/mode/"):
                state["mode"] = self.path.rsplit("/", 1)[1]
                return self.reply(200, [], b"ok")
            if self.path == "/_proxy/stats":
                return self.reply(200, [], json.dumps(state).encode())
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("authorization", "range", "accept")}
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            out = [(k, v) for k, v in resp.getheaders()
                   if k.lower() not in ("content-length", "connection", "transfer-encoding",
                                        "date", "server")]
            mode = state["mode"]
            if "/manifests/" in self.path and resp.status == 200:
                state["manifests"] += 1
                if mode != "pass":
                    state["tampered"] += 1
                if mode == "swap":
                    body = tamper_swap(body)
                elif mode == "flip":
                    i = body.index(b'"narSize":') + len('"narSize":')
                    body = body[:i] + b" " + body[i:]
                elif mode == "strip":
                    out = [(k, v) for k, v in out if k.lower() != SIG_HEADER.lower()]
            self.reply(resp.status, out, body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


class Proxy:
    """run_proxy in a child process: the test process itself must not serve
    trovefs's requests, since a thread of it that blocks in the kernel on
    the mount (vfork+exec of a program on it, stat) can hold the
    interpreter lock that the proxy's threads would need to answer."""

    def __init__(self, upstream_port):
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", __file__, "--proxy", str(upstream_port)],
            stdout=subprocess.PIPE, cwd=os.path.dirname(__file__),
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def _get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path)
        body = conn.getresponse().read()
        conn.close()
        return body

    def set_mode(self, mode):
        self._get(f"/_proxy/mode/{mode}")

    def stats(self):
        return json.loads(self._get("/_proxy/stats"))

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def proxy(server):
    p = Proxy(server.port)
    yield p
    p.stop()


@pytest.fixture
def mount(server, tmp_path):
    """mount(url, *extra_args, cache_dir=None) -> Mount on a fresh directory
    (and a fresh chunk cache unless cache_dir is given)."""
    mounts = []

    def make(url, *extra, cache_dir=None):
        mnt = tmp_path / f"mnt{len(mounts)}"
        mnt.mkdir()
        m = Mount(server, mnt, cache_dir or tmp_path / f"cache{len(mounts)}",
                  ("--timeout", "5", *extra), url=url, cache=CACHE)
        mounts.append(m)
        return m

    yield make
    for m in mounts:
        if m.proc.poll() is None:
            m.unmount()


def assert_refused(m, store_path):
    """The path cannot be seen at all: the lookup fails with EIO."""
    with pytest.raises(OSError) as e:
        os.lstat(m.path(store_path))
    assert e.value.errno == 5, e.value  # EIO
    with pytest.raises(OSError):
        (m.path(store_path) / "bin" / "hello").read_bytes()
    assert Path(store_path).name not in os.listdir(m.mnt)


def wrong_key(server, tmp_path):
    """A key pair with the cache key's name but another key."""
    name = server.public_key.split(":")[0]
    trovetest.run(["nix-store", "--generate-binary-cache-key", name,
                   tmp_path / "wrong.sec", tmp_path / "wrong.pub"], env=trovetest.nix_env())
    return (tmp_path / "wrong.pub").read_text().strip()


def test_tampering_proxy_changes_the_program_without_key(trust_path, proxy, mount):
    """The attack the signatures stop: without --trusted-key the tampered
    manifest is taken, and bin/hello is another program."""
    proxy.set_mode("swap")
    m = mount(proxy.url)
    assert "manifests are NOT verified" in m.output()
    out = subprocess.run([m.path(trust_path) / "bin" / "hello"], capture_output=True,
                         text=True, timeout=30).stdout
    assert out == "EVIL\n"
    assert proxy.stats()["tampered"] == 1
    m.unmount()


def test_untampered_with_key_reads_exact(trust_path, test_closure, server, proxy, mount):
    m = mount(proxy.url, "--trusted-key", server.public_key)
    assert "NOT verified" not in m.output()
    for p in (trust_path, test_closure["file"]):
        assert tree_entries(m.path(p)) == tree_entries(p), p
        trovetest.run(["diff", "-r", "--no-dereference", p, m.path(p)])
    out = subprocess.run([m.path(trust_path) / "bin" / "hello"], capture_output=True,
                         text=True, timeout=30).stdout
    assert out == "good program\n"
    s = m.stats()
    assert s["manifestsFetched"] == 2 and s["manifestsRefused"] == 0, s
    assert proxy.stats()["manifests"] == 2
    m.unmount()


@pytest.mark.parametrize("mode", ["swap", "flip", "strip"])
def test_tampered_manifest_refused(trust_path, server, proxy, mount, mode):
    proxy.set_mode(mode)
    m = mount(proxy.url, "--trusted-key", server.public_key)
    assert_refused(m, trust_path)
    # Nothing of it was fetched or cached.
    s = m.stats()
    assert s["manifestsRefused"] >= 1 and s["chunksFetched"] == 0, s
    assert not [f for f in Path(m.cache_dir).glob("??/*")]
    # Logged with the path and the reason.
    name = Path(trust_path).name
    lines = [ln for ln in m.output().splitlines() if f"refusing {name}" in ln]
    assert lines, m.output()
    want = "no Trove-Manifest-Signature header" if mode == "strip" else "does not verify"
    assert want in lines[0], lines[0]
    # Once the proxy stops tampering, the same mount serves it exactly.
    proxy.set_mode("pass")
    trovetest.run(["diff", "-r", "--no-dereference", trust_path, m.path(trust_path)])
    m.unmount()


def test_wrong_key_refuses_everything(trust_path, test_closure, server, proxy, mount,
                                      tmp_path):
    other = wrong_key(server, tmp_path)
    m = mount(proxy.url, "--trusted-key", other)
    assert_refused(m, trust_path)
    with pytest.raises(OSError) as e:
        os.lstat(m.path(test_closure["file"]))
    assert e.value.errno == 5, e.value
    assert m.stats()["chunksFetched"] == 0
    m.unmount()
    # A key file holding the wrong and the right key (rotation): accepted.
    keys = tmp_path / "keys"
    keys.write_text(f"{other}\n  {server.public_key}\n")
    m = mount(proxy.url, "--trusted-key-file", keys)
    trovetest.run(["diff", "-r", "--no-dereference", trust_path, m.path(trust_path)])
    m.unmount()


def test_bad_trusted_key_is_refused_at_start(server, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([trovetest.binary("trovefs"), "-f", "--server", server.url,
                        "--cache", CACHE, "--trusted-key", "not-a-key", mnt],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "not a public key" in r.stderr, r
    assert not os.path.ismount(mnt)


def test_plain_http_to_other_host_warns(server, tmp_path, mount):
    # Nothing is fetched: the warning is said at mount.
    m = mount("http://192.0.2.1:9", "--trusted-key", server.public_key)
    assert "plain http to another machine" in m.output(), m.output()
    m.unmount()
    m = mount(server.url, "--trusted-key", server.public_key)
    assert "plain http" not in m.output(), m.output()
    m.unmount()


def test_chunk_cache_is_private(trust_path, server, tmp_path, mount):
    cache = tmp_path / "private-cache"
    m = mount(server.url, "--trusted-key", server.public_key, cache_dir=cache)
    assert (m.path(trust_path) / "share" / "data").read_bytes() == \
        (Path(trust_path) / "share" / "data").read_bytes()
    m.unmount()

    def modes():
        out = {}
        for p in walk(cache):
            st = os.lstat(p)
            out[os.path.relpath(p, cache)] = (stat.S_ISDIR(st.st_mode), st.st_mode & 0o7777)
        return out

    found = modes()
    assert any(not d for d, _ in found.values()), found
    for rel, (is_dir, mode) in found.items():
        assert mode == (0o700 if is_dir else 0o600), (rel, oct(mode))
    # A cache an older version left world-readable is made private on mount.
    for p in walk(cache):
        os.chmod(p, 0o755 if os.path.isdir(p) else 0o644)
    m = mount(server.url, "--trusted-key", server.public_key, cache_dir=cache)
    m.unmount()
    for rel, (is_dir, mode) in modes().items():
        assert mode == (0o700 if is_dir else 0o600), (rel, oct(mode))


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["--proxy"]:
        run_proxy(int(sys.argv[2]))
