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


@pytest.fixture(scope="session")
def radosgw(session_dir):
    """A throwaway Ceph radosgw on loopback for the session (ceph-s3.sh):
    a trovetest.RadosGW, i.e. a dict with S3_ENDPOINT, S3_ACCESS_KEY,
    S3_SECRET_KEY, S3_REGION, plus .env / .ctl() / .spec() /
    .list_chunks()."""
    gw = trovetest.RadosGW(session_dir / "ceph")
    try:
        yield gw.start()
    finally:
        gw.stop()


_bucket_counter = 0


@pytest.fixture
def bucket(radosgw):
    """A fresh bucket name per test (created by the store at open)."""
    global _bucket_counter
    _bucket_counter += 1
    return f"trove-test-{os.getpid()}-{_bucket_counter}"


class TrovedFactory:
    """Makes troved servers (trovetest.Troved) in a base directory and
    stops every one of them at the end (SIGTERM, which also stops an
    embedded PostgreSQL). On a failing test the logs stay in base."""

    def __init__(self, base):
        self.base = Path(base)
        self.servers = []
        self.count = 0

    def __call__(self, *, start=True, name=None, **kw):
        self.count += 1
        name = name or f"troved{self.count}"
        state = self.base / name
        t = trovetest.Troved(state, log_path=self.base / f"{name}.log", **kw)
        self.servers.append(t)
        if start:
            t.start()
        return t

    def close(self):
        errors = []
        for t in self.servers:
            try:
                t.stop()
            except Exception as e:  # keep stopping the others
                errors.append(e)
            if not t.database_url and (t.state_dir / "pg").exists():
                # A server killed and never restarted leaves its embedded
                # PostgreSQL running: stop it by its data directory.
                pid_file = t.state_dir / "pg" / "postmaster.pid"
                if pid_file.exists():
                    trovetest.run(["runuser", "-u", "trove", "--", trovetest.PG_BIN / "pg_ctl",
                                   "-D", t.state_dir / "pg", "-m", "immediate", "-w", "stop"],
                                  expect=None, timeout=60)
        if errors:
            raise errors[0]


def _troved_base(prefix):
    # World-traversable: the embedded PostgreSQL runs as an unprivileged user.
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def make_troved():
    """Factory of troved servers for one test: make_troved(**Troved kwargs)
    returns a started trovetest.Troved (start=False: not started)."""
    base = _troved_base("trove-troved-")
    f = TrovedFactory(base)
    yield f
    f.close()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def make_troved_module():
    """As make_troved, for servers shared by the tests of one module."""
    base = _troved_base("trove-troved-m-")
    f = TrovedFactory(base)
    yield f
    f.close()
    shutil.rmtree(base, ignore_errors=True)
