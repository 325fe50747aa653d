# SPDX-License-Identifier: Apache-2.0
"""troved started as root: it drops to an unprivileged user once it is set
up (the embedded PostgreSQL's user, `trove`), keeps root only when asked,
keeps what it creates private, and its embedded PostgreSQL lets nobody in
without the password."""

import hashlib
import os
import pwd
import socket
import stat
import time
from pathlib import Path

import pytest

import trovetest
from trovetest import run
from test_server import zstd_frame


def put_chunk(t, cache, data):
    cid = hashlib.sha256(data).hexdigest()
    r = t.request("PUT", f"/_api/v1/caches/{cache}/chunks/{cid}", zstd_frame(data), token=t.admin)
    assert r.status in (200, 201), r
    return cid


def process_ids(pid):
    """(uids, gids, supplementary groups) of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.split()
    return ([int(x) for x in fields["Uid"]], [int(x) for x in fields["Gid"]],
            [int(x) for x in fields["Groups"]])


def ps_user(pid):
    return run(["ps", "-o", "user=", "-p", str(pid)], text=True).stdout.strip()


def postmaster_pid(t):
    return int((t.state_dir / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])


def alive(pid):
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return text.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def assert_private_tree(root, owner):
    """Every file and directory under root is owner's and has no group or
    other permission bits."""
    for p in [root, *root.rglob("*")]:
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        assert st.st_uid == owner.pw_uid, f"{p} is owned by uid {st.st_uid}"
        assert st.st_mode & 0o077 == 0, f"{p} has mode {oct(st.st_mode & 0o7777)}"


def test_drops_to_trove(make_troved):
    """Embedded default, started as root: troved runs as `trove`, with no
    supplementary groups and every id switched; it still serves uploads and
    downloads; its files are private; SIGTERM still stops PostgreSQL."""
    t = make_troved()
    trove = pwd.getpwnam("trove")
    assert ps_user(t.proc.pid) == "trove"
    uids, gids, groups = process_ids(t.proc.pid)
    assert uids == [trove.pw_uid] * 4
    assert gids == [trove.pw_gid] * 4
    assert groups == []
    assert "running as user trove" in t.log()

    # Works after the drop: the database (fresh connections too) and chunk writes.
    t.create_cache("hard")
    data = os.urandom(70000)
    cid = put_chunk(t, "hard", data)
    stored = t.state_dir / "chunks" / "chunks" / cid[:2] / cid[2:4] / cid
    assert stored.is_file()

    # Private: chunk store 0700/0600 and trove's, secrets 0600.
    assert stat.S_IMODE((t.state_dir / "chunks").stat().st_mode) == 0o700
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert_private_tree(t.state_dir / "chunks", trove)
    assert stat.S_IMODE((t.state_dir / "token-secret").stat().st_mode) == 0o600
    st = (t.state_dir / "pg-password").stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == trove.pw_uid
    st = (t.state_dir / "pg-run").stat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == trove.pw_uid

    # Shutdown as trove still stops the embedded PostgreSQL.
    pg = postmaster_pid(t)
    assert ps_user(pg) == "trove"
    assert t.stop() == 0
    for _ in range(100):
        if not alive(pg):
            break
        time.sleep(0.1)
    assert not alive(pg), "the embedded PostgreSQL outlived troved"
    assert "stopping the embedded PostgreSQL" not in t.log()
    assert not (t.state_dir / "pg" / "postmaster.pid").exists()


def test_keeps_root_only_when_asked_then_hands_over(make_troved):
    """TROVED_USER=root keeps root (and its chunk objects are root's); the
    next start without it drops to trove and hands the old objects over,
    private to trove."""
    t = make_troved(extra_env={"TROVED_USER": "root"})
    assert ps_user(t.proc.pid) == "root"
    t.create_cache("hard")
    old = os.urandom(50000)
    old_id = put_chunk(t, "hard", old)
    obj = t.state_dir / "chunks" / "chunks" / old_id[:2] / old_id[2:4] / old_id
    assert obj.stat().st_uid == 0
    # What an older troved left: world-readable objects and directories.
    os.chmod(obj, 0o644)
    os.chmod(obj.parent, 0o755)
    assert t.stop() == 0

    t.extra_env = {}
    t.start()
    assert ps_user(t.proc.pid) == "trove"
    assert_private_tree(t.state_dir / "chunks", pwd.getpwnam("trove"))
    assert "handing the chunk store" in t.log()
    # New objects land in the handed-over store.
    new_id = put_chunk(t, "hard", os.urandom(60000))
    assert (t.state_dir / "chunks" / "chunks" / new_id[:2] / new_id[2:4] / new_id).is_file()
    assert t.stop() == 0


def free_low_port():
    for port in range(1023, 900, -1):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


def test_privileged_port(make_troved):
    """A port below 1024 works: troved binds it before dropping root."""
    t = make_troved(start=False)
    t.port = free_low_port()
    t.http = trovetest.HttpClient("127.0.0.1", t.port)
    t.start()
    assert ps_user(t.proc.pid) == "trove"
    assert t.get("/health").status == 200


def test_bad_user_is_refused(tmp_path):
    """An unknown --user, or a user with uid 0 under another name, is an
    error, never a silent run as root."""
    state = tmp_path / "state"
    r = run([trovetest.binary("troved"), "--state-dir", state, "--listen",
             f"127.0.0.1:{trovetest.free_tcp_port()}", "--user", "no-such-user-trove"],
            expect=None, timeout=60, text=True)
    assert r.returncode != 0
    assert "no-such-user-trove" in r.stderr
    assert not (state / "pg").exists()


def psql(t, *extra, user=None, password=None, expect=None):
    env = dict(os.environ, PGPASSFILE="/dev/null")
    env.pop("PGPASSWORD", None)
    if password is not None:
        env["PGPASSWORD"] = password
    cmd = [trovetest.PG_BIN / "psql", "-X", "-w", "-At", "-h", t.state_dir / "pg-run",
           "-U", "trove", "-d", "trove", "-c", "select 1", *extra]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return run(cmd, env=env, expect=expect, timeout=60, text=True)


def test_embedded_database_needs_the_password(make_troved):
    """Another local user cannot reach the socket, even with the password;
    root and the cluster's own user are refused without it or with a wrong
    one; no TCP; the password file lets troved (and an admin) in."""
    t = make_troved()
    password = (t.state_dir / "pg-password").read_text().strip()
    assert len(password) == 64

    r = psql(t, user="nobody", password=password)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    for user in (None, "trove"):
        r = psql(t, user=user)
        assert r.returncode != 0 and "no password supplied" in r.stderr, r.stderr
        r = psql(t, user=user, password="0" * 64)
        assert r.returncode != 0 and "password authentication failed" in r.stderr, r.stderr
    assert psql(t, password=password, expect=0).stdout.strip() == "1"

    assert t.psql("show listen_addresses") == [[""]]
    assert t.psql("select rolpassword like 'SCRAM-SHA-256$%' from pg_authid "
                  "where rolname = 'trove'") == [["t"]]
    hba = (t.state_dir / "pg" / "pg_hba.conf").read_text()
    assert "trust" not in hba and "scram-sha-256" in hba
    # troved itself got in (it serves requests that need the database).
    t.create_cache("pw")
    assert "password=" not in t.log()
