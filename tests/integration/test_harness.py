# SPDX-License-Identifier: Apache-2.0
"""Self-tests of the integration harness: the PostgreSQL fixture really
serves queries, command failures are reported with what the command said,
and the test closure has the shapes the NAR tests rely on."""

import os
import stat
from pathlib import Path

import pytest

import trovetest


def test_postgres_answers_select_1(postgres_cluster):
    out = trovetest.run([trovetest.PG_BIN / "psql", "-X", "-At",
                         "-d", postgres_cluster.dsn(), "-c", "select 1"], text=True).stdout
    assert out.strip() == "1"
    # Not running as root, with fsync off, reachable over TCP on loopback too.
    assert postgres_cluster.psql("show fsync").strip() == "off"
    assert postgres_cluster.psql("select current_setting('data_directory')").strip() \
        == str(postgres_cluster.datadir)
    tcp = trovetest.run([trovetest.PG_BIN / "psql", "-X", "-At", "-d",
                         postgres_cluster.url(), "-c", "select 2"], text=True).stdout
    assert tcp.strip() == "2"
    if os.geteuid() == 0:
        owner = os.stat(postgres_cluster.datadir).st_uid
        assert owner != 0


def test_postgres_database_per_test(postgres):
    cluster, db = postgres
    cluster.psql("create table t (x int primary key); insert into t values (1), (2)", dbname=db)
    assert cluster.psql("select sum(x) from t", dbname=db).strip() == "3"
    # SQL errors surface as a failed command with psql's message.
    with pytest.raises(trovetest.CommandError, match="duplicate key"):
        cluster.psql("insert into t values (1)", dbname=db)


def test_postgres_stop_removes_everything():
    pg = trovetest.PostgresCluster().start()
    sock = pg.sockdir / f".s.PGSQL.{pg.port}"
    assert sock.exists()
    pg.stop()
    assert not pg.dir.exists()


def test_command_failure_names_command_status_and_stderr():
    with pytest.raises(trovetest.CommandError) as e:
        trovetest.run(["sh", "-c", "echo out; echo 'it broke' >&2; exit 3"])
    msg = str(e.value)
    assert "exited with status 3, expected 0" in msg
    assert "it broke" in msg and "out" in msg and "sh -c" in msg
    assert trovetest.run(["sh", "-c", "exit 4"], expect=4).returncode == 4


def test_stream_sha256_matches_file(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 3_000_001)
    digest, size = trovetest.stream_sha256(["cat", f])
    assert (digest, size) == (trovetest.file_sha256(f), 3_000_001)
    with pytest.raises(trovetest.CommandError, match="status 1"):
        trovetest.stream_sha256(["cat", tmp_path / "missing"])


def test_closure_has_the_promised_shapes(test_closure):
    by = test_closure.by_name
    assert set(by) == {"top", "tree", "big", "file", "link", "empty"}
    assert test_closure.top == by["top"]
    assert Path(by["file"]).is_file() and not Path(by["file"]).is_symlink()
    assert Path(by["empty"]).stat().st_size == 0
    assert os.readlink(by["link"]) == by["file"]
    assert os.path.getsize(Path(by["big"]) / "big.bin") == 300 * 1024 * 1024

    tree = Path(by["tree"])
    names = set(os.listdir(tree / "names"))
    assert {"a", "a-b", "a.b", "A", "é ü 日本.txt", "quote\"back\\slash", "tab\there",
            "L" * 255} <= names
    assert os.readlink(tree / "to-big") == by["big"] + "/big.bin"
    assert not os.path.exists(tree / "dangling-abs")
    assert not os.path.exists(tree / "dangling-rel")
    assert os.readlink(tree / "bin/readme") == "../share/doc/README"
    assert os.listdir(tree / "empty-dir/also-empty") == []
    assert stat.S_IMODE(os.stat(tree / "bin/hello").st_mode) == 0o555
    deep = tree / "deep" / "/".join(f"d{i}" for i in range(60)) / "leaf"
    assert deep.read_text() == "bottom\n"
    sizes = {int(n[1:]) for n in os.listdir(tree / "sizes") if n.startswith("f")}
    assert any(s % 8 for s in sizes) and any(s and s % 8 == 0 for s in sizes)

    # References between the paths, as Nix recorded them.
    refs = trovetest.run(["nix-store", "-q", "--references", by["tree"]],
                         text=True).stdout.split()
    assert set(refs) == {by["file"], by["big"], by["link"], by["empty"]}
