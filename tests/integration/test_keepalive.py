# SPDX-License-Identifier: Apache-2.0
"""Keep-alive on every route: uploads with bodies interleaved with GETs on
one connection, including replies sent before (or without) reading the body.

The failure these keep from coming back: with keep-alive on, a refusal sent
before its request's body had been read left that body in the connection,
so the next exchange on it started in the middle of a body; curl, reusing
the connection, read something that was not a status line ("Unsupported
protocol"). troved now reads and drops a refused body of up to 1 MiB
before answering, so the connection stays in step and alive; a larger or
unknown-length refused body gets its answer at once with "Connection:
close" and the connection is closed, so no body byte is ever parsed as a
request. Every answer on a kept connection must begin with a status line
and be exactly as long as it says.
"""

import os
import re
import socket
import subprocess

import pytest

import trovetest
from trovetest import store_hash_part
from test_hostile import new_cache
from test_server import fake_store_path, nar_regular, narinfo_text, put_synthetic, sha256_nix32


@pytest.fixture(scope="module")
def srv(make_troved_module):
    return make_troved_module(log_level="info")


class Conn:
    """One HTTP/1.1 connection that sends requests byte by byte as told and
    parses every answer strictly: a status line first, then headers, then
    exactly Content-Length bytes (or a chunked body). 1xx answers are
    returned separately (expect100)."""

    def __init__(self, port, timeout=60):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.closed = False

    def close(self):
        self.s.close()

    def _fill(self):
        b = self.s.recv(65536)
        if not b:
            raise EOFError("connection closed by troved")
        self.buf += b

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, head=False):
        line = self._line()
        m = re.fullmatch(rb"HTTP/1\.1 (\d{3}) .*", line)
        assert m, f"answer does not begin with a status line: {line[:200]!r} (then {self.buf[:200]!r})"
        status = int(m.group(1))
        headers = {}
        while True:
            h = self._line()
            if not h:
                break
            k, _, v = h.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        if status < 200:
            return status, headers, b""
        if head or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exact(size)
                assert self._exact(2) == b"\r\n"
        else:
            body = self._exact(int(headers["content-length"]))
        if "close" in headers.get("connection", "").lower():
            self.closed = True
        return status, headers, body

    def send(self, method, path, body=b"", token=None, headers=None, send_body=True):
        h = {"Host": "127.0.0.1"}
        if token:
            h["Authorization"] = f"Bearer {token}"
        if body or method in ("PUT", "POST"):
            h["Content-Length"] = str(len(body))
        h.update(headers or {})
        req = f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(
            f"{k}: {v}\r\n".encode() for k, v in h.items()) + b"\r\n"
        self.s.sendall(req + (body if send_body else b""))

    def request(self, method, path, body=b"", token=None, headers=None):
        self.send(method, path, body, token, headers)
        r = self.read_response(head=method == "HEAD")
        while r[0] == 100:
            r = self.read_response(head=method == "HEAD")
        return r

    def assert_open_and_quiet(self):
        """Nothing is left over in the connection, and it still answers."""
        assert self.buf == b"", f"bytes after the last answer: {self.buf[:200]!r}"


def narinfo_upload():
    data = os.urandom(5000)
    nar = nar_regular(data)
    path = fake_store_path("keepalive")
    return path, nar, narinfo_text(path, nar).encode()


def test_uploads_and_gets_share_one_connection(srv):
    t = srv
    c = new_cache(t)
    known, _ = put_synthetic(t, c)
    conn = Conn(t.port)
    try:
        for i in range(5):
            path, nar, ni = narinfo_upload()
            st, h, _ = conn.request("GET", f"/{c}/{store_hash_part(known)}.narinfo", token=t.admin)
            assert st == 200
            st, h, b = conn.request("PUT", f"/{c}/nar/{sha256_nix32(nar)}.nar", nar, token=t.admin)
            assert st == 200, b
            st, h, b = conn.request("HEAD", f"/{c}/nar/{sha256_nix32(nar)}.nar", token=t.admin)
            assert st == 200, b
            st, h, b = conn.request("PUT", f"/{c}/{store_hash_part(path)}.narinfo", ni, token=t.admin)
            assert st == 200, b
            st, h, b = conn.request("GET", f"/{c}/{store_hash_part(path)}.narinfo", token=t.admin)
            assert st == 200 and f"StorePath: {path}".encode() in b
            st, h, b = conn.request("GET", f"/{c}/nar/{sha256_nix32(nar)}.nar", token=t.admin)
            assert st == 200 and b == nar
            st, h, b = conn.request("PUT", f"/{c}/{store_hash_part(path)}.ls", b'{"version":1}' * 200,
                                    token=t.admin)
            assert st == 200, b
            assert not conn.closed, f"troved closed a connection after an upload: {h}"
        conn.assert_open_and_quiet()
    finally:
        conn.close()


@pytest.mark.parametrize("refusal", ["no-token", "other-tenant", "bad-narinfo", "no-body-route",
                                     "unknown-route", "nar-mismatch", "garbage-token"])
def test_refused_upload_keeps_the_connection_in_step(srv, refusal):
    """A refusal of an upload whose body is already on the way: the next
    request on the connection gets its own answer, not the tail of a body."""
    t = srv
    c = new_cache(t)
    other = new_cache(t)
    known, _ = put_synthetic(t, c)
    path, nar, ni = narinfo_upload()
    # The body looks like a request, as it would if troved read it as one.
    body = ni + b"\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(3000)
    method, target, token, want = {
        "no-token": ("PUT", f"/{c}/{store_hash_part(path)}.narinfo", None, 401),
        "other-tenant": ("PUT", f"/{c}/{store_hash_part(path)}.narinfo", t.token(other, "push"), 403),
        "bad-narinfo": ("PUT", f"/{c}/{store_hash_part(path)}.narinfo", t.admin, 400),
        "no-body-route": ("GET", f"/{c}/{store_hash_part(known)}.narinfo", t.admin, 400),
        "unknown-route": ("PUT", "/nowhere/at/all", t.admin, 404),
        "nar-mismatch": ("PUT", f"/{c}/nar/{sha256_nix32(b'x')}.nar", t.admin, 400),
        "garbage-token": ("PUT", f"/{c}/{store_hash_part(path)}.narinfo", "a.b.c", 401),
    }[refusal]
    if refusal == "nar-mismatch":
        body = nar
    conn = Conn(t.port)
    try:
        for _ in range(3):
            st, h, b = conn.request(method, target, body, token=token)
            assert st == want, (st, b)
            assert b.startswith(b"error: ")
            assert not conn.closed, "a refused small upload closed the connection"
            st, h, b = conn.request("GET", f"/{c}/{store_hash_part(known)}.narinfo", token=t.admin)
            assert st == 200, (st, b)
            assert f"StorePath: {known}".encode() in b
        conn.assert_open_and_quiet()
    finally:
        conn.close()


def test_expect_continue_with_the_body_sent_anyway(srv):
    """curl sends the body once its wait for "100 Continue" times out; the
    interim answer, if any, and the final one come in order, and the
    connection goes on."""
    t = srv
    c = new_cache(t)
    known, _ = put_synthetic(t, c)
    conn = Conn(t.port)
    try:
        for refused in (False, True, False):
            path, nar, ni = narinfo_upload()
            st, h, b = conn.request("PUT", f"/{c}/nar/{sha256_nix32(nar)}.nar", nar,
                                    token=None if refused else t.admin,
                                    headers={"Expect": "100-continue"})
            assert st == (401 if refused else 200), b
            st, h, b = conn.request("PUT", f"/{c}/{store_hash_part(path)}.narinfo", ni,
                                    token=None if refused else t.admin,
                                    headers={"Expect": "100-continue"})
            assert st == (401 if refused else 200), b
            st, h, b = conn.request("GET", f"/{c}/{store_hash_part(known)}.narinfo", token=t.admin)
            assert st == 200
        assert not conn.closed
        conn.assert_open_and_quiet()
    finally:
        conn.close()


def test_expect_continue_waits_for_the_go_ahead(srv):
    """A client that waits for "100 Continue" before sending: an upload
    troved accepts gets it; one it refuses gets the refusal instead."""
    t = srv
    c = new_cache(t)
    path, nar, ni = narinfo_upload()
    conn = Conn(t.port)
    try:
        conn.send("PUT", f"/{c}/nar/{sha256_nix32(nar)}.nar", nar, token=t.admin,
                  headers={"Expect": "100-continue"}, send_body=False)
        st, _, _ = conn.read_response()
        assert st == 100
        conn.s.sendall(nar)
        st, _, b = conn.read_response()
        assert st == 200, b
        conn.send("PUT", f"/{c}/{store_hash_part(path)}.narinfo", b"x" * (2 << 20), token=None,
                  headers={"Expect": "100-continue"}, send_body=False)
        st, h, b = conn.read_response()
        assert st == 401, (st, b)
        # Refused without its (large) body: the connection is not reused.
        assert conn.closed and "close" in h.get("connection", "")
    finally:
        conn.close()


def test_large_refused_body_closes_cleanly(srv):
    """A refused body too large to drain: the answer says "Connection:
    close" and is complete; no byte of the body is read as a request."""
    t = srv
    c = new_cache(t)
    path = fake_store_path("big")
    body = (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 70000)[: 2 << 20]
    conn = Conn(t.port)
    try:
        conn.send("PUT", f"/{c}/{store_hash_part(path)}.narinfo", body, token=None, send_body=False)
        st, h, b = conn.read_response()
        assert st == 401 and b.startswith(b"error: ")
        assert conn.closed and "close" in h.get("connection", "")
        try:
            conn.s.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        # What follows is the end of the connection, never another answer.
        try:
            conn._fill()
            extra = conn.buf
        except (EOFError, ConnectionResetError, socket.timeout):
            extra = b""
        assert extra == b"", f"troved answered bytes of a refused body: {extra[:200]!r}"
    finally:
        conn.close()


def test_curl_reuses_connections_across_uploads(srv, workdir):
    """curl, as Nix drives it: PUTs (some refused) and GETs over reused
    connections, sending bodies without waiting for "100 Continue"."""
    t = srv
    c = new_cache(t)
    known, _ = put_synthetic(t, c)
    netrc = trovetest.write_netrc(workdir / "netrc", t.admin)
    args = ["curl", "-sS", "--fail-with-body", "--netrc-file", str(netrc), "--expect100-timeout", "0.001",
            "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\\n"]
    first = True
    paths = []
    for i in range(12):
        path, nar, ni = narinfo_upload()
        (workdir / f"nar{i}").write_bytes(nar)
        (workdir / f"ni{i}").write_bytes(ni)
        paths.append(path)
        steps = [["-T", str(workdir / f"nar{i}"), f"{t.url}/{c}/nar/{sha256_nix32(nar)}.nar"],
                 [f"{t.url}/{c}/{store_hash_part(known)}.narinfo"],
                 ["-T", str(workdir / f"ni{i}"), f"{t.url}/{c}/{store_hash_part(path)}.narinfo"],
                 ["-I", f"{t.url}/{c}/{store_hash_part(path)}.narinfo"]]
        for s in steps:
            if not first:
                args.append("--next")
                args += ["-sS", "--netrc-file", str(netrc), "--expect100-timeout", "0.001", "-o", "/dev/null",
                         "-w", "%{http_code} %{num_connects}\\n"]
            first = False
            args += s
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    codes, connects = lines[0::2], [int(x) for x in lines[1::2]]
    assert codes == ["200"] * 48, out.stdout
    # One connection for all of it: curl never had to open another.
    assert sum(connects) == 1, f"connections opened: {connects}"
    for p in paths:
        assert t.narinfo(c, p)["StorePath"] == p


def test_blocking_request_does_not_stall_its_loop(make_troved):
    """With one event loop, a narinfo request that waits for its upstream
    (pull-through) runs on a worker with its connection suspended: health,
    nix-cache-info, metrics and narinfo GETs on other connections are
    answered while it is still pending. Before, they queued behind it on the
    loop until the upstream answered."""
    import http.server
    import json
    import threading

    asked = threading.Event()
    release = threading.Event()

    class Held(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.set()
            release.wait(60)  # bounded: the test releases it much earlier
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Held)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    s = make_troved(log_level="info", args=["--http-threads", "1", "--upstream-timeout", "120"])
    try:
        sk, pk = s.state_dir.parent / "held.sk", s.state_dir.parent / "held.pk"
        trovetest.run(["nix-store", "--generate-binary-cache-key", "held-1", sk, pk])
        key = pk.read_text().strip()
        r = s.request("POST", "/_api/v1/caches/held",
                      json.dumps({"upstreams": [f"http://127.0.0.1:{upstream.server_address[1]}"],
                                  "upstreamKeys": key}), token=s.admin)
        assert r.status == 201, r
        s.create_cache("near")
        pending = {}

        def blocked():
            c = trovetest.HttpClient("127.0.0.1", s.port, timeout=120)
            try:
                pending["status"] = c.get_sha256(f"/held/{'1' * 32}.narinfo", token=s.admin)[0]
            finally:
                c.close()
                pending["done"] = True

        t = threading.Thread(target=blocked, daemon=True)
        t.start()
        assert asked.wait(60), "the upstream was never asked"
        answered = []
        for i in range(3):
            c = trovetest.HttpClient("127.0.0.1", s.port, timeout=120)
            try:
                answered.append(c.request("GET", "/health").status)
                answered.append(c.request("GET", "/near/nix-cache-info", token=s.admin).status)
                answered.append(c.request("GET", f"/near/{str(i) * 32}.narinfo", token=s.admin).status)
                answered.append(c.request("GET", "/metrics").status)
            finally:
                c.close()
            # The held request is still waiting for its upstream.
            assert "done" not in pending, (i, answered)
        assert answered == [200, 200, 404, 200] * 3, answered
        release.set()
        t.join(150)
        assert pending == {"status": 404, "done": True}, pending
    finally:
        release.set()
        upstream.shutdown()
        upstream.server_close()


def test_bad_http_workers_refused(tmp_path):
    for bad in ("0", "257", "-1", "ten", "", "1e3", "99999999999999999999999"):
        r = trovetest.run([trovetest.binary("troved"), "--state-dir", tmp_path / "state", "--http-workers", bad],
                          expect=None, timeout=60, text=True)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert f"bad value '{bad}' for 'http-workers'" in r.stderr, r.stderr
        assert not (tmp_path / "state").exists(), "a refused start left a state directory"
    assert "--http-workers" in trovetest.run([trovetest.binary("troved"), "--help"], text=True).stdout
