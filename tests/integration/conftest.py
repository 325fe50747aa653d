# SPDX-License-Identifier: Apache-2.0
"""pytest fixtures shared by trove's integration tests. The plain helpers
they use are in trovetest.py (import it from tests: `import trovetest`)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import trovetest


@pytest.fixture(scope="session", autouse=True)
def nix_environment():
    """Every test runs with Nix configured for daemonless root use without
    network (NIX_CONFIG also reaches the programs tests start). Returns the
    environment dict to pass to subprocesses explicitly."""
    old = os.environ.get("NIX_CONFIG")
    os.environ["NIX_CONFIG"] = trovetest.NIX_CONFIG
    yield trovetest.nix_env()
    if old is None:
        os.environ.pop("NIX_CONFIG", None)
    else:
        os.environ["NIX_CONFIG"] = old


@pytest.fixture(scope="session")
def build_dir():
    return trovetest.build_dir()


@pytest.fixture(scope="session")
def trove_bin():
    """Path of the built trove CLI."""
    return trovetest.binary("trove")


@pytest.fixture(scope="session")
def session_dir():
    """A temporary directory that lives for the whole test session (world
    readable, so unprivileged helpers can use it too)."""
    d = Path(tempfile.mkdtemp(prefix="trove-it-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def workdir(tmp_path):
    """A fresh temporary directory per test (pytest's tmp_path)."""
    return tmp_path


class Closure:
    """The built test closure (closure.nix): top is its root, paths every
    store path in it (nix-store -qR), by_name maps the short name ("tree",
    "big", ...) to the store path."""

    def __init__(self, top, paths):
        self.top = top
        self.paths = paths
        self.by_name = {}
        for p in paths:
            name = Path(p).name.split("-", 1)[1]
            self.by_name[name.removeprefix("trove-test-")] = p

    def __getitem__(self, name):
        return self.by_name[name]


@pytest.fixture(scope="session")
def test_closure(session_dir, nix_environment):
    """Builds closure.nix once per session (instant when Nix already has
    it); the out-link in the session directory keeps it from Nix's GC."""
    (top,) = trovetest.nix_build(trovetest.INTEGRATION_DIR / "closure.nix",
                                 session_dir / "closure", attr="top")
    return Closure(top, trovetest.nix_closure(top))


@pytest.fixture(scope="session")
def nix_file_cache(test_closure, session_dir):
    """The test closure copied by Nix into a file:// binary cache without
    compression and with NAR listings. Returns {store path: {"nar": Path of
    the NAR file Nix wrote, "ls": Path of its .ls, "narinfo": dict}}."""
    cache = session_dir / "nix-cache"
    trovetest.run(["nix", "copy", "--to",
                   f"file://{cache}?write-nar-listing=1&compression=none",
                   test_closure.top], env=trovetest.nix_env())
    out = {}
    for p in test_closure.paths:
        h = trovetest.store_hash_part(p)
        info = {}
        for line in (cache / f"{h}.narinfo").read_text().splitlines():
            k, _, v = line.partition(": ")
            info[k] = v
        assert info["StorePath"] == p
        out[p] = {"nar": cache / info["URL"], "ls": cache / f"{h}.ls", "narinfo": info}
    return out


@pytest.fixture(scope="session")
def postgres_cluster():
    """One private PostgreSQL cluster for the session (see
    trovetest.PostgresCluster); stopped and removed at the end."""
    with trovetest.PostgresCluster() as pg:
        yield pg


_db_counter = 0


@pytest.fixture
def postgres(postgres_cluster):
    """A fresh, empty database in the session's cluster for one test.
    Returns (cluster, dbname): use cluster.dsn(dbname) / cluster.url(dbname)."""
    global _db_counter
    _db_counter += 1
    name = f"t{os.getpid()}_{_db_counter}"
    postgres_cluster.create_database(name)
    yield postgres_cluster, name
    postgres_cluster.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', expect=None)
