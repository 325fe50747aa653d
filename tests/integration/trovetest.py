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
        os.chmod(self.dir, 0o700)

    def _pg(self, prog, *args, expect=0, timeout=120):
        return run([PG_BIN / prog, *args], user=self.user, cwd=self.dir,
                   expect=expect, timeout=timeout, text=True)

    def start(self):
        self._pg("initdb", "-D", self.datadir, "-U", self.SUPERUSER, "--auth=trust",
                 "--no-sync", "--encoding=UTF8", "--locale=C")
        self.port = free_tcp_port()
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
