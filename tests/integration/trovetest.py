# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by trove's integration tests (plain functions and classes;
the pytest fixtures that wrap them are in conftest.py).

Everything here drives real programs: the built trove binaries, Debian's
Nix 2.8 (single-user, as root, no daemon) and PostgreSQL 15.
"""

import hashlib
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

# Nix without a daemon, as root, from world-readable inputs, no network.
NIX_CONFIG = ("build-users-group =\n"
              "substituters =\n"
              "sandbox = false\n"
              "experimental-features = nix-command")

SOURCE_DIR = Path(os.environ.get("TROVE_SOURCE_DIR",
                                 Path(__file__).resolve().parents[2]))
INTEGRATION_DIR = Path(__file__).resolve().parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
CHUNK = 1 << 20

# Where each program lands in the build tree.
_BINARIES = {
    "trove": "tools/trove",
    "troved": "server/troved",
    "trovefs": "fs/trovefs",
}


class CommandError(AssertionError):
    """A command that exited differently from what the test expected.
    An AssertionError so pytest reports it as a test failure, with the
    command, its status and the tail of what it printed."""


def build_dir():
    return Path(os.environ.get("TROVE_BUILD_DIR", "/work/main/build/release"))


def binary(name):
    """Path of a built program (trove, troved, trovefs, or a path relative
    to the build directory); fails with a hint when it was not built."""
    rel = _BINARIES.get(name, name)
    path = build_dir() / rel
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise CommandError(
            f"built program {name!r} not found at {path}; build it first "
            f"(ninja -C {build_dir()}) or point TROVE_BUILD_DIR at the build "
            f"directory")
    return path


def _tail(data, limit=4000):
    if data is None:
        return ""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    data = data.rstrip("\n")
    if len(data) > limit:
        data = "[...]\n" + data[-limit:]
    return data


def describe(cmd):
    return " ".join(str(c) if re.fullmatch(r"[\w@%+=:,./-]+", str(c))
                    else repr(str(c)) for c in cmd)


def check_status(proc_or_status, cmd, expect=0, stdout=None, stderr=None):
    __tracebackhide__ = True
    status = getattr(proc_or_status, "returncode", proc_or_status)
    if expect is None or status == expect:
        return
    msg = [f"command {describe(cmd)}",
           f"exited with status {status}, expected {expect}"]
    if stderr:
        msg.append("--- stderr ---\n" + _tail(stderr))
    if stdout:
        msg.append("--- stdout ---\n" + _tail(stdout))
    raise CommandError("\n".join(msg))


def run(cmd, *, expect=0, input=None, stdin=None, env=None, cwd=None, timeout=600,
        text=False, stdout=subprocess.PIPE, user=None):
    """Runs cmd (a list), captures stdout and stderr, and raises
    CommandError unless it exits with status expect (None: any status).
    input: bytes/str fed to stdin; stdin: a file path to read stdin from
    (streamed, for big files); neither: /dev/null."""
    __tracebackhide__ = True
    cmd = [str(c) for c in cmd]
    inf = None
    try:
        if input is None:
            inf = open(stdin, "rb") if stdin is not None else subprocess.DEVNULL
        proc = subprocess.run(cmd, input=input, stdout=stdout,
                              stderr=subprocess.PIPE, env=env, cwd=cwd,
                              timeout=timeout, text=text, user=user, stdin=inf)
    except subprocess.TimeoutExpired as e:
        raise CommandError(f"command {describe(cmd)} did not finish within "
                           f"{timeout}s\n--- stderr ---\n{_tail(e.stderr)}") from None
    except FileNotFoundError:
        raise CommandError(f"command {describe(cmd)}: program not found") from None
    finally:
        if inf not in (None, subprocess.DEVNULL):
            inf.close()
    check_status(proc, cmd, expect, proc.stdout if stdout == subprocess.PIPE else None,
                 proc.stderr)
    return proc


def trove(*args, **kw):
    """Runs the built trove CLI."""
    return run([binary("trove"), *args], **kw)


def logged_in_env(server, base):
    """The environment of a trove CLI whose configuration (under base) is
    logged in to server as "srv" with the server's admin token."""
    env = nix_env({"XDG_CONFIG_HOME": str(base / "config"), "XDG_CACHE_HOME": str(base / "xdg-cache")})
    env.pop("TROVE_TOKEN", None)
    out = trove("login", "srv", server.url, server.admin, env=env, text=True).stdout
    assert "logged in" in out, out
    return env


def stream_sha256(cmd, *, stdin=None, env=None, timeout=600):
    """Runs cmd and hashes its stdout as it arrives (never holding it in
    memory). Returns (sha256 hex, byte count); raises CommandError if the
    command fails. stdin: a path to feed, or None for /dev/null."""
    __tracebackhide__ = True
    cmd = [str(c) for c in cmd]
    h = hashlib.sha256()
    size = 0
    with tempfile.TemporaryFile() as errf, \
            open(stdin if stdin is not None else os.devnull, "rb") as inf:
        proc = subprocess.Popen(cmd, stdin=inf, stdout=subprocess.PIPE,
                                stderr=errf, env=env)
        deadline = time.monotonic() + timeout
        try:
            while True:
                block = proc.stdout.read(CHUNK)
                if not block:
                    break
                h.update(block)
                size += len(block)
                if time.monotonic() > deadline:
                    raise CommandError(f"command {describe(cmd)} ran longer than {timeout}s")
        finally:
            proc.stdout.close()
            status = proc.wait()
        errf.seek(0)
        check_status(status, cmd, 0, stderr=errf.read())
    return h.hexdigest(), size


def pipeline(producer, consumer, *, env=None, timeout=600, text=True):
    """Runs `producer | consumer` and returns the consumer's stdout; raises
    CommandError naming the side that failed."""
    __tracebackhide__ = True
    producer = [str(c) for c in producer]
    consumer = [str(c) for c in consumer]
    with tempfile.TemporaryFile() as err1, tempfile.TemporaryFile() as err2:
        p1 = subprocess.Popen(producer, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=err1, env=env)
        try:
            p2 = subprocess.Popen(consumer, stdin=p1.stdout, stdout=subprocess.PIPE,
                                  stderr=err2, env=env, text=text)
        finally:
            p1.stdout.close()
        try:
            out, _ = p2.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p2.kill()
            p1.kill()
            raise CommandError(f"pipeline {describe(producer)} | {describe(consumer)} "
                               f"did not finish within {timeout}s") from None
        s1 = p1.wait()
        err2.seek(0)
        check_status(p2.returncode, consumer, 0, stdout=out, stderr=err2.read())
        err1.seek(0)
        # The consumer must read all the producer wrote: a producer killed
        # by SIGPIPE means the consumer stopped early, which is a failure.
        check_status(s1, producer, 0, stderr=err1.read())
    return out


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                return h.hexdigest()
            h.update(block)


# ---- FUSE ----

def fuse_holders(mnt):
    """Processes whose mount namespace has a copy of the mount at mnt: a
    namespace made while the mount existed (`nix copy --to local?root=…`
    makes one, so do unshare and podman) keeps a copy of it after it is
    unmounted here, and with it the FUSE connection."""
    out = []
    for mi in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            if f" {mnt} " in mi.read_text():
                out.append(mi.parent.name)
        except OSError:
            pass
    return out


def abort_fuse_connection(dev):
    """Ends the FUSE connection of the mount on device dev (st_dev of its
    root) through fusectl: its server sees the end of its device."""
    conns = Path("/sys/fs/fuse/connections")
    if not any(conns.iterdir()):
        run(["mount", "-t", "fusectl", "fusectl", conns], expect=None)
    (conns / str(os.minor(dev)) / "abort").write_text("1")


def wait_fuse_server(proc, mnt, dev, timeout=30, grace=2):
    """Waits up to timeout seconds for the FUSE server proc to exit after its
    mount at mnt (device dev) was unmounted. It exits within moments
    unless another process's namespace still holds a copy of the mount
    (see fuse_holders): not the server's doing, and possible whenever test
    files run at the same time; such a connection is ended after grace
    seconds. Returns whether proc exited."""
    t0 = time.monotonic()
    aborted = False
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if not aborted and time.monotonic() - t0 > grace and fuse_holders(mnt):
            abort_fuse_connection(dev)
            aborted = True
        time.sleep(0.05)
    return proc.poll() is not None


# ---- Nix ----

def nix_env(extra=None):
    env = dict(os.environ)
    env["NIX_CONFIG"] = NIX_CONFIG
    if extra:
        env.update(extra)
    return env


def nix_build(expr, out_link, *, attr=None, args=None, timeout=600):
    """nix-build of a .nix file; out_link keeps the result a GC root for as
    long as the link exists. Returns the list of output paths."""
    cmd = ["nix-build", str(expr), "--out-link", str(out_link)]
    if attr:
        cmd += ["-A", attr]
    for k, v in (args or {}).items():
        cmd += ["--argstr", k, v]
    out = run(cmd, env=nix_env(), text=True, timeout=timeout).stdout
    return out.split()


def nix_closure(path):
    """Every store path in the closure of path (nix-store -qR)."""
    out = run(["nix-store", "-qR", path], env=nix_env(), text=True).stdout
    return out.split()


def nix_path_hash(path):
    """NAR hash as Nix prints it: sha256:<base32>."""
    return run(["nix-store", "-q", "--hash", path], env=nix_env(),
               text=True).stdout.strip()


def nix_dump_sha256(path):
    """(sha256 hex, size) of `nix-store --dump path`, streamed."""
    return stream_sha256(["nix-store", "--dump", path], env=nix_env())


def store_hash_part(path):
    """The 32-character hash part of /nix/store/<hash>-<name>."""
    return Path(path).name.split("-", 1)[0]


# ---- NAR inspection (for building malformed inputs in tests) ----

def nar_str(b):
    """One NAR string: u64 LE length, bytes, zero padding to 8."""
    return struct.pack("<Q", len(b)) + b + b"\0" * (-len(b) % 8)


def nar_entry_names(nar):
    """Walks a NAR held in memory and returns [(name bytes, offset of the
    name string's length field, depth)] for every directory entry, in NAR
    order. Trusts its input (use it on NARs Nix wrote)."""
    pos = 0
    out = []

    def s():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", nar, pos)
        start = pos
        pos += 8 + n + (-n % 8)
        return nar[start + 8:start + 8 + n], start

    def node(depth):
        assert s()[0] == b"("
        assert s()[0] == b"type"
        t = s()[0]
        if t == b"regular":
            tag = s()[0]
            if tag == b"executable":
                s()
                tag = s()[0]
            assert tag == b"contents"
            s()
        elif t == b"symlink":
            s()
            s()
        elif t == b"directory":
            while True:
                tag = s()[0]
                if tag == b")":
                    return
                assert tag == b"entry"
                s()
                assert s()[0] == b"name"
                name, off = s()
                out.append((name, off, depth))
                assert s()[0] == b"node"
                node(depth + 1)
                assert s()[0] == b")"
        assert s()[0] == b")"

    assert s()[0] == b"nix-archive-1"
    node(0)
    assert pos == len(nar), "trailing bytes"
    return out


# ---- PostgreSQL ----

def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_system_user():
    """The unprivileged account PostgreSQL runs as when tests run as root
    (initdb refuses root): 'trove-test', created on first use."""
    if os.geteuid() != 0:
        return None
    name = "trove-test"
    try:
        pwd.getpwnam(name)
    except KeyError:
        r = subprocess.run(["useradd", "--system", "--no-create-home",
                            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                            name], capture_output=True, text=True)
        # Another test process may have created it meanwhile.
        if r.returncode not in (0, 9):
            try:
                pwd.getpwnam(name)
            except KeyError:
                return "nobody"
    return name


class PostgresCluster:
    """A private PostgreSQL 15 cluster in its own temporary directory,
    reachable over a Unix socket in that directory and on 127.0.0.1:port.
    Superuser 'trove', trust authentication, fsync off. Use start()/stop()
    or as a context manager."""

    SUPERUSER = "trove"

    def __init__(self, base=None):
        self.user = pg_system_user()
        # Not under pytest's per-user tmp (0700 root): the server account
        # must be able to reach its own directory.
        self.dir = Path(tempfile.mkdtemp(prefix="trove-pg-", dir=base))
        self.datadir = self.dir / "data"
        self.sockdir = self.dir
        self.logfile = self.dir / "postgres.log"
        self.port = None
        self.running = False
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        # Others may reach the socket (as in /run/postgresql: troved started
        # as root connects as the user it drops to), not list the directory.
        os.chmod(self.dir, 0o711)

    def _pg(self, prog, *args, expect=0, timeout=120):
        return run([PG_BIN / prog, *args], user=self.user, cwd=self.dir,
                   expect=expect, timeout=timeout, text=True)

    def start(self):
        self._pg("initdb", "-D", self.datadir, "-U", self.SUPERUSER, "--auth=trust",
                 "--no-sync", "--encoding=UTF8", "--locale=C")
        self.port = free_tcp_port()
        return self.start_server()

    def start_server(self):
        """Starts the server of an initialised cluster (again, after
        stop_server(): same port, same data)."""
        opts = (f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=100 -c shared_buffers=32MB")
        try:
            self._pg("pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w",
                     "-t", "60", "-o", opts, "start")
        except CommandError as e:
            raise CommandError(f"{e}\n--- postgres.log ---\n{_tail(self.log())}") from None
        self.running = True
        return self

    def stop_server(self, mode="fast"):
        """Stops the server and keeps the data (start_server() resumes)."""
        if self.running:
            self._pg("pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop")
            self.running = False

    def stop(self):
        if self.running:
            self._pg("pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "stop",
                     expect=None)
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def dsn(self, dbname="postgres"):
        """libpq connection string over the Unix socket."""
        return f"host={self.sockdir} port={self.port} user={self.SUPERUSER} dbname={dbname}"

    def url(self, dbname="postgres"):
        """postgresql:// URL over TCP on loopback."""
        return f"postgresql://{self.SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql, dbname="postgres", expect=0):
        """Runs sql with psql (unaligned, tuples only) and returns its stdout."""
        return run([PG_BIN / "psql", "-X", "-v", "ON_ERROR_STOP=1", "-At",
                    "-d", self.dsn(dbname), "-c", sql], text=True, expect=expect).stdout

    def create_database(self, name):
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---- nix32 (Nix's base-32) ----

NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"


def nix32_encode(data):
    """Nix's base-32 of bytes (what narinfo NarHash/FileHash use)."""
    n = (len(data) * 8 - 1) // 5 + 1
    out = []
    for k in range(n - 1, -1, -1):
        bit = k * 5
        i, j = divmod(bit, 8)
        c = data[i] >> j
        if i + 1 < len(data):
            c |= data[i + 1] << (8 - j)
        out.append(NIX32_ALPHABET[c & 0x1f])
    return "".join(out)


def parse_narinfo(text):
    """narinfo text -> dict (keys as written; Sig lines joined by newline)."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(": ")
        assert sep, f"bad narinfo line {line!r}"
        out[k] = out[k] + "\n" + v if k in out else v
    return out


# ---- HTTP ----

class Response:
    """status (int), headers (dict, lower-case names), body (bytes)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        import json
        return json.loads(self.body)

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:300]!r}>"


class HttpClient:
    """A keep-alive HTTP/1.1 client for one host:port (http.client),
    reconnecting when the server closed the connection."""

    def __init__(self, host, port, timeout=60):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def _auth_headers(self, token, basic):
        import base64
        h = {}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if basic is not None:
            user, pw = basic
            h["Authorization"] = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        return h

    def open(self, method, path, body=None, headers=None, token=None, basic=None):
        """Sends a request and returns the http.client response, unread
        (for streaming big bodies); the caller must read it fully."""
        import http.client
        hdrs = self._auth_headers(token, basic)
        hdrs.update(headers or {})
        if isinstance(body, str):
            body = body.encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                try:
                    self.conn.request(method, path, body=body, headers=hdrs)
                except (BrokenPipeError, ConnectionResetError):
                    # The server may have answered before reading the
                    # whole body (e.g. 413) and closed: read that answer.
                    resp = self.conn.getresponse()
                    resp.will_close = True
                    return resp
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                self.close()
                if attempt:
                    raise

    def request(self, method, path, body=None, headers=None, token=None, basic=None):
        resp = self.open(method, path, body, headers, token, basic)
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if resp.will_close:
            self.close()
        return Response(resp.status, hdrs, data)

    def get_sha256(self, path, token=None, headers=None):
        """(status, sha256 hex, size) of a GET body, streamed."""
        resp = self.open("GET", path, headers=headers, token=token)
        h = hashlib.sha256()
        size = 0
        while True:
            block = resp.read(CHUNK)
            if not block:
                break
            h.update(block)
            size += len(block)
        if resp.will_close:
            self.close()
        return resp.status, h.hexdigest(), size


def raw_http(port, data, *, read_timeout=10, close_write=False, host="127.0.0.1"):
    """Sends raw bytes to a server and returns (status or None, whole
    answer bytes) — for requests http.client will not send (bad paths,
    lying Content-Length, huge headers). close_write: shut down our side
    after sending (a client that went away mid-body)."""
    with socket.create_connection((host, port), timeout=read_timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if close_write:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except (ConnectionResetError, socket.timeout):
            pass
    answer = b"".join(chunks)
    m = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return (int(m.group(1)) if m else None), answer


def write_netrc(path, token, host="127.0.0.1"):
    Path(path).write_text(f"machine {host} password {token}\n")
    os.chmod(path, 0o600)
    return path


# ---- troved ----

class Troved:
    """One troved process on 127.0.0.1:<port>, logging to log_path.

    No database_url: troved runs its embedded PostgreSQL in state_dir/pg.
    storage: chunk store spec (default state_dir/chunks). The port is kept
    across restarts. extra_env: added to the process environment (S3 keys).
    """

    def __init__(self, state_dir, *, database_url=None, storage=None, extra_env=None,
                 args=(), log_level="debug", log_path=None):
        self.state_dir = Path(state_dir)
        self.database_url = database_url
        self.storage = storage
        self.extra_env = dict(extra_env or {})
        self.args = list(args)
        self.log_level = log_level
        self.port = free_tcp_port()
        self.log_path = Path(log_path) if log_path else self.state_dir.parent / (
            self.state_dir.name + ".troved.log")
        self.proc = None
        self.http = HttpClient("127.0.0.1", self.port)
        self._admin = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def command(self):
        cmd = [binary("troved"), "--state-dir", self.state_dir,
               "--listen", f"127.0.0.1:{self.port}", "--log-level", self.log_level]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        if self.storage:
            cmd += ["--storage", self.storage]
        return [str(c) for c in cmd + self.args]

    def start(self, timeout=90):
        """Starts troved and waits until /health answers 200."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = dict(os.environ, **self.extra_env)
        with open(self.log_path, "ab") as log:
            log.write(f"---- start: {describe(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise CommandError(f"troved exited with status {self.proc.returncode} while "
                                   f"starting\n--- log ---\n{_tail(self.log())}")
            try:
                if self.http.request("GET", "/health").status == 200:
                    return self
            except OSError:
                self.http.close()
            if time.monotonic() > deadline:
                raise CommandError(f"troved did not become healthy within {timeout}s\n"
                                   f"--- log ---\n{_tail(self.log())}")
            time.sleep(0.1)

    def stop(self, timeout=60):
        """SIGTERM and wait (troved stops its embedded PostgreSQL)."""
        self.http.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise CommandError(f"troved did not stop on SIGTERM within {timeout}s")
        return self.proc.returncode if self.proc else None

    def kill(self):
        """SIGKILL (the embedded PostgreSQL is left running, as after a crash)."""
        self.http.close()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        self.stop()
        return self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_mark(self):
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, mark):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # -- tokens and requests --

    def token(self, cache="*", perm="all", valid=None, state_dir=None, sub=None):
        cmd = [binary("troved"), "token", "--state-dir", state_dir or self.state_dir,
               "--cache", cache, "--perm", perm]
        if valid:
            cmd += ["--valid", valid]
        if sub:
            cmd += ["--sub", sub]
        return run(cmd, text=True).stdout.strip()

    @property
    def admin(self):
        """A token with every permission on every cache."""
        if self._admin is None:
            self._admin = self.token("*", "all")
        return self._admin

    def request(self, method, path, body=None, headers=None, token=None, basic=None):
        return self.http.request(method, path, body, headers, token, basic)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def create_cache(self, name, public=False, token=None):
        """Creates a cache and returns its JSON (with publicKey)."""
        import json
        r = self.request("POST", f"/_api/v1/caches/{name}", json.dumps({"public": public}),
                         token=token or self.admin)
        assert r.status == 201, f"creating cache {name}: {r}"
        return r.json()

    def cache_info(self, name, token=None):
        r = self.get(f"/_api/v1/caches/{name}", token=token or self.admin)
        assert r.status == 200, r
        return r.json()

    def narinfo(self, cache, path, token=None):
        """The parsed narinfo of a store path, or None on 404."""
        r = self.get(f"/{cache}/{store_hash_part(path)}.narinfo", token=token or self.admin)
        if r.status == 404:
            return None
        assert r.status == 200, r
        return parse_narinfo(r.body)

    def manifest(self, cache, path, token=None):
        r = self.get(f"/_api/v1/caches/{cache}/manifests/{store_hash_part(path)}",
                     token=token or self.admin)
        assert r.status == 200, r
        return r.json()

    def metrics(self):
        """/metrics as {name: float} (samples without labels)."""
        r = self.get("/metrics")
        assert r.status == 200, r
        out = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def gc(self, min_age=0, token=None):
        r = self.request("POST", f"/_api/v1/gc?min-age={min_age}", token=token or self.admin)
        assert r.status == 200, r
        return r.json()

    # -- the embedded database and the local chunk store --

    def psql(self, sql):
        """Runs sql against the embedded PostgreSQL; returns rows as lists."""
        assert not self.database_url, "psql() is for the embedded database"
        password = (self.state_dir / "pg-password").read_text().strip()
        dsn = f"host={self.state_dir / 'pg-run'} user=trove dbname=trove password={password}"
        out = run([PG_BIN / "psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t",
                   "-d", dsn, "-c", sql], text=True).stdout
        return [line.split("\t") for line in out.splitlines()]

    def scalar(self, sql):
        (row,) = self.psql(sql)
        return int(row[0])

    def local_chunk_ids(self):
        """Ids of the chunk objects in the default local chunk store."""
        root = Path(self.storage) if self.storage and self.storage.startswith("/") \
            else self.state_dir / "chunks"
        return {p.name for p in root.rglob("*")
                if p.is_file() and re.fullmatch(r"[0-9a-f]{64}", p.name)}

    # -- Nix against this server --

    def nix_copy_to(self, cache, paths, token, xdg_cache, compression=None, expect=0,
                    timeout=900, netrc=None):
        """nix copy --to this cache, with its own XDG_CACHE_HOME (a fresh
        Nix narinfo cache, as on another machine)."""
        netrc = netrc or write_netrc(Path(xdg_cache).with_suffix(".netrc"), token)
        url = f"{self.url}/{cache}"
        if compression:
            url += f"?compression={compression}"
        return run(["nix", "copy", "--netrc-file", netrc, "--to", url, *paths],
                   env=nix_env({"XDG_CACHE_HOME": str(xdg_cache)}), expect=expect,
                   timeout=timeout, text=True)

    def nix_copy_from(self, cache, paths, root, key, xdg_cache, token=None, expect=0,
                      timeout=900):
        """nix copy --from this cache into local?root=ROOT trusting only key."""
        cmd = ["nix", "copy"]
        if token:
            cmd += ["--netrc-file", write_netrc(Path(xdg_cache).with_suffix(".netrc"), token)]
        cmd += ["--from", f"{self.url}/{cache}", "--to", f"local?root={root}",
                "--option", "trusted-public-keys", key, *paths]
        return run(cmd, env=nix_env({"XDG_CACHE_HOME": str(xdg_cache)}), expect=expect,
                   timeout=timeout, text=True)


# ---- nginx ----

class Nginx:
    """nginx serving the directory root on 127.0.0.1:port, with an access log
    (an upstream binary cache, an OpenID issuer's keys, a load balancer).
    extra goes into the server block, http_extra into the http block."""

    def __init__(self, workdir, root, port=None, extra="", default_type="application/octet-stream",
                 http_extra="", workers=1, access_log=True):
        self.workers = workers
        self.log_requests = access_log
        self.dir = Path(workdir)
        self.root = Path(root)
        self.port = port or free_tcp_port()
        self.extra = extra
        self.http_extra = http_extra
        self.default_type = default_type
        self.proc = None
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.access_log = self.dir / "access.log"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        d = self.dir
        conf = d / "nginx.conf"
        conf.write_text(f"""
user root;
worker_processes {self.workers};
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {self.access_log if self.log_requests else "off"};
    default_type {self.default_type};
    types {{ text/x-nix-narinfo narinfo; }}
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    {self.http_extra}
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        {self.extra}
    }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-p", str(d), "-c", str(conf), "-g", "daemon off;"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(d / "stderr.log", "ab"))
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited: " + (d / "stderr.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("nginx did not start")
                time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def requests(self, needle):
        """Access log lines whose request contains needle."""
        try:
            lines = self.access_log.read_text().splitlines()
        except OSError:
            return []
        return [ln for ln in lines if needle in ln]


def balancer(workdir, ports, workers=1, access_log=True):
    """A started nginx on 127.0.0.1 spreading requests round-robin over the
    troved instances on ports, as a load balancer in front of a fleet would:
    kept-alive upstream connections, request and response bodies streamed,
    no size limit of its own. Every connection an instance gets comes from
    one address: start the instances with a --max-connections-per-client
    above the balancer's workers × (keepalive + concurrent requests)."""
    servers = " ".join(f"server 127.0.0.1:{p};" for p in ports)
    return Nginx(workdir, workdir, workers=workers, access_log=access_log,
                 http_extra=f"upstream troved {{ {servers} keepalive 16; }}",
                 extra="""client_max_body_size 0;
        location / {
            proxy_pass http://troved;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_request_buffering off;
            proxy_buffering off;
        }""").start()


# ---- S3 (radosgw) ----

class RadosGW(dict):
    """A running ceph-s3.sh radosgw: the s3.env settings (S3_ENDPOINT,
    S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION) as a dict; .env is the
    environment for ceph-s3.sh, .ctl(cmd) runs it (stop-rgw, start-rgw)."""

    SCRIPT = INTEGRATION_DIR / "ceph-s3.sh"

    def __init__(self, state_dir):
        super().__init__()
        self.dir = Path(state_dir)
        self.env = dict(os.environ, CEPH_S3_DIR=str(self.dir))

    def ctl(self, cmd, timeout=300, expect=0):
        return run([self.SCRIPT, cmd], env=self.env, timeout=timeout, expect=expect)

    def start(self):
        self.ctl("start")
        for line in (self.dir / "s3.env").read_text().splitlines():
            k, _, v = line.partition("=")
            self[k] = v
        return self

    def stop(self):
        self.ctl("stop", timeout=120, expect=None)
        self.ctl("kill", timeout=60, expect=None)

    def credentials_env(self):
        return {"AWS_ACCESS_KEY_ID": self["S3_ACCESS_KEY"],
                "AWS_SECRET_ACCESS_KEY": self["S3_SECRET_KEY"]}

    def spec(self, bucket, prefix="", create=True, endpoint=None, attempts=None):
        import urllib.parse
        q = {"endpoint": endpoint or self["S3_ENDPOINT"], "region": self["S3_REGION"]}
        if attempts:
            q["attempts"] = str(attempts)
        if prefix:
            q["prefix"] = prefix
        if create:
            q["create"] = "1"
        return f"s3://{bucket}?" + urllib.parse.urlencode(q)

    def list_chunks(self, spec):
        """{chunk id: stored size} in a chunk store spec (chunkstore-tool list)."""
        out = run([binary("tests/integration/chunkstore-tool"), spec, "list"],
                  env=dict(os.environ, **self.credentials_env()), text=True).stdout
        return {k: int(v) for k, v in (line.split() for line in out.splitlines())}
