# SPDX-License-Identifier: Apache-2.0
"""A runner host as docs/runners.md sets it up, with a real container
runtime (Debian's podman with runc, no image registry): the systemd units,
one trovefs host mount (allow_other) bound read-only at /nix/store into many
containers at once, a container without the mount that substitutes from
troved with plain Nix, `trove nix-db` against `nix-store --dump-db`, and a
job that builds with Nix on an overlay of the mount and pushes the result.

The command blocks of docs/runners.md are read from the page (`<!-- block:
NAME -->` before a fenced block) and run here, with the test's paths, server
URL and token put in place of the page's."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

import trovetest

CACHE = "main"
CONTAINERS = 10
PODMAN = ["podman", "run", "--rm", "--runtime", "runc",
          "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
DOC = trovetest.SOURCE_DIR / "docs" / "runners.md"

# The closure the jobs run: copies of host programs whose interpreter and
# RUNPATH point into the closure's own "libc" path, data files, and a
# script (the top) that reads every file of the closure and runs the
# programs. From world-readable inputs; the sandbox is off.
CLOSURE_NIX = """
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-ec" script ];
    PATH = "/usr/bin:/bin";
    LC_ALL = "C";
  };
in rec {
  libc = mk "trove-runner-libc" ''
    mkdir -p "$out/lib"
    cp -L /lib64/ld-linux-x86-64.so.2 "$out/lib/"
    for l in libc.so.6 libz.so.1 liblzma.so.5 liblz4.so.1 libzstd.so.1; do
      cp -L "/lib/x86_64-linux-gnu/$l" "$out/lib/"
    done
  '';
  tools = mk "trove-runner-tools" ''
    mkdir -p "$out/bin" "$out/share"
    for p in cat sha256sum sort wc zstd; do
      cp "/usr/bin/$p" "$out/bin/$p"
      chmod u+w "$out/bin/$p"
      patchelf --set-interpreter ${libc}/lib/ld-linux-x86-64.so.2 \\
               --set-rpath ${libc}/lib "$out/bin/$p"
    done
    head -c 6M /dev/urandom > "$out/share/data.bin"
    head -c 3M /dev/urandom | zstd -q -o "$out/share/data.zst"
    seq 1 50000 | sort -R > "$out/share/numbers"
  '';
  app = mk "trove-runner-app" ''
    mkdir -p "$out/bin"
    {
      echo '#!/bin/sh'
      echo 'set -e'
      echo 't=${tools}/bin'
      echo '# every file of the closure, read to the end'
      printf '"$t/cat"'
      find ${libc} ${tools} -type f | sort | while read -r f; do printf ' %s' "$f"; done
      echo ' | "$t/sha256sum"'
      echo '"$t/zstd" -dc ${tools}/share/data.zst | "$t/wc" -c'
      echo '"$t/sort" -n ${tools}/share/numbers | "$t/sha256sum"'
      echo 'echo "app ok"'
    } > "$out/bin/app"
    chmod +x "$out/bin/app"
  '';
}
"""

# What a job builds on top of the closure (docs/runners.md's job.nix).
JOB_NIX = """
let
  app = builtins.storePath "@APP@";
  tools = builtins.storePath "@TOOLS@";
in derivation {
  name = "trove-runner-job";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-ec" ''
    mkdir "$out"
    ${app}/bin/app > "$out/report"
    ${tools}/bin/sha256sum ${tools}/share/data.bin > "$out/data.sha256"
  '' ];
  PATH = "/usr/bin:/bin";
}
"""


# ---- docs/runners.md ----

def doc_block(name):
    """The fenced block after `<!-- block: NAME -->` in docs/runners.md."""
    m = re.search(r"<!-- block: " + re.escape(name) + r" -->\n```\w*\n(.*?)\n```",
                  DOC.read_text(), re.S)
    assert m, f"docs/runners.md has no block {name!r}"
    return m.group(1) + "\n"


class Host:
    """Where the page's paths are on this test's runner host."""

    def __init__(self, base, server):
        self.base = base
        self.server = server
        self.etc = base / "etc-trove"
        self.mnt = base / "trovefs-store"
        self.tmp = base / "var-tmp"
        self.bin = base / "bin"
        self.config = base / "config"
        for d in (self.etc, self.tmp, self.bin, self.config):
            d.mkdir(parents=True, exist_ok=True)
        for name in ("trove", "troved", "trovefs"):
            (self.bin / name).symlink_to(trovetest.binary(name))

    def localize(self, text):
        text = text.replace("/var/lib/trovefs/store", str(self.mnt))
        text = text.replace("/var/cache/trovefs", str(self.base / "chunk-cache"))
        text = re.sub(r"/var/lib/trove(?![\w-])", str(self.server.state_dir), text)
        text = text.replace("/etc/trove", str(self.etc))
        text = text.replace("/var/tmp/", f"{self.tmp}/")
        return text.replace("https://cache.example.org", self.server.url)

    def env(self, extra=None):
        env = trovetest.nix_env({
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "XDG_CONFIG_HOME": str(self.config),
            "XDG_CACHE_HOME": str(self.base / "xdg-cache"),
        })
        env.update(extra or {})
        return env

    def run_block(self, name, extra_env=None, cwd=None, timeout=900):
        script = self.localize(doc_block(name))
        return trovetest.run(["bash", "-euo", "pipefail", "-c", script], env=self.env(extra_env),
                             cwd=cwd or self.base, text=True, timeout=timeout)


# ---- the units ----

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`meson install` of the build into a staging directory: returns
    (destdir, {unit name: path})."""
    dest = tmp_path_factory.mktemp("destdir")
    trovetest.run(["meson", "install", "-C", trovetest.build_dir(), "--no-rebuild",
                   "--destdir", dest], timeout=300)
    units = {p.name: p for p in dest.rglob("*.service") if "systemd/system" in str(p)}
    assert set(units) == {"troved.service", "trovefs.service"}, units
    return dest, units


def unit_service(path):
    """The [Service] section of a unit file as a list of (key, value)."""
    out, section = [], None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            k, _, v = line.partition("=")
            out.append((k, v))
    return out


def expand_exec(value, env):
    """An Exec*= line as systemd runs it: a leading '-' ignores failure;
    words are split as systemd splits them; ${VAR} is replaced inside a
    word, a word "$VAR" becomes the value's whitespace-separated words, and
    "$$" is a literal '$'."""
    ignore = value.startswith("-")
    argv = []
    for word in shlex.split(value.lstrip("-")):
        m = re.fullmatch(r"\$(\w+)", word)
        if m:
            argv += env.get(m.group(1), "").split()
            continue
        argv.append(re.sub(r"\$\$|\$\{(\w+)\}",
                           lambda x: "$" if x.group(0) == "$$" else env.get(x.group(1), ""), word))
    return ignore, argv


class UnitProcess:
    """trovefs.service run as systemd runs it (no systemd on the test
    machine): the EnvironmentFile, ExecStartPre lines, ExecStart in the
    background, ExecStartPost; stop(): ExecStop, then KillSignal."""

    def __init__(self, unit, destdir, host):
        self.service = unit_service(unit)
        self.host = host
        self.destdir = destdir
        conf = host.localize(dict(self.service)["EnvironmentFile"].lstrip("-"))
        self.vars = {}
        for line in Path(conf).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                k, _, v = line.partition("=")
                self.vars[k.strip()] = v.strip()
        self.env = dict(os.environ, **self.vars)
        self.log = host.base / "trovefs.journal"
        self.proc = None
        self.stopped_before_signal = False

    def _argv(self, value):
        ignore, argv = expand_exec(value, self.vars)
        # The installed program (in the staging directory).
        if argv[0].endswith("/trovefs"):
            argv[0] = str(self.destdir) + argv[0]
        return ignore, argv

    def _run(self, key):
        env = dict(self.env)
        if self.proc is not None:
            env["MAINPID"] = str(self.proc.pid)
        for k, v in self.service:
            if k == key:
                ignore, argv = self._argv(v)
                trovetest.run(argv, env=env, expect=None if ignore else 0, timeout=60)

    def start(self):
        self._run("ExecStartPre")
        (value,) = [v for k, v in self.service if k == "ExecStart"]
        _, argv = self._argv(value)
        self.argv = argv
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        self._run("ExecStartPost")
        assert os.path.ismount(self.vars["TROVEFS_MOUNTPOINT"])

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self._run("ExecStop")
        # systemd signals what is left of the service after ExecStop.
        self.stopped_before_signal = self.proc.poll() is not None
        if not self.stopped_before_signal:
            kill = dict(self.service).get("KillSignal", "SIGTERM")
            self.proc.send_signal(getattr(signal, kill))
        return self.proc.wait(30)

    def journal(self):
        return self.log.read_text(errors="replace")


def check_clean_stop(unit, status):
    """After the unit's stop: unmounted, and trovefs ended by itself after
    ExecStop (before systemd's SIGTERM), with exit status 0."""
    journal = unit.journal()
    assert not os.path.ismount(unit.vars["TROVEFS_MOUNTPOINT"])
    assert status == 0, (status, journal)
    assert unit.stopped_before_signal, journal
    assert "unmounted; counters: {" in journal, journal
    assert "failed to unmount" not in journal, journal


def stats(mnt):
    out = trovetest.run(["getfattr", "--only-values", "-n", "user.trove.stats", mnt], text=True)
    return json.loads(out.stdout)


def test_units_verify(installed, tmp_path):
    """systemd-analyze verify accepts both installed units (their programs
    pointed at the staged copies: verify checks that they exist), and the
    check is not blind: a misspelt key is reported."""
    dest, units = installed
    checked = []
    for name, path in units.items():
        text = path.read_text()
        assert "Restart=on-failure" in text, name
        text = re.sub(r"(ExecStart=)(/\S+)", lambda m: m.group(1) + str(dest) + m.group(2), text)
        (tmp_path / name).write_text(text)
        checked.append(str(tmp_path / name))
    r = trovetest.run(["systemd-analyze", "verify", *checked], text=True)
    assert r.stderr.strip() == "", r.stderr
    fs = units["trovefs.service"].read_text()
    assert "-o allow_other" in fs and "EnvironmentFile=/etc/trove/trovefs.conf" in fs
    (stop,) = re.findall(r"^ExecStop=(.*)$", fs, re.M)
    assert "fusermount3 -u " in stop and "fusermount3 -u -z " in stop, stop
    bad = tmp_path / "bad.service"
    bad.write_text(Path(checked[0]).read_text().replace("Restart=", "Restrat="))
    r = trovetest.run(["systemd-analyze", "verify", bad], text=True, expect=None)
    assert "Restrat" in r.stderr, r.stderr


# ---- the server and the closure ----

@pytest.fixture(scope="module")
def server(make_troved_module):
    srv = make_troved_module()
    srv.create_cache(CACHE)
    return srv


@pytest.fixture(scope="module")
def closure(session_dir, server, tmp_path_factory):
    """The jobs' closure, built and pushed with trove push. Returns a dict
    with app, tools, libc (store paths), paths (the closure) and expected
    (the app's output, run from the real store)."""
    expr = session_dir / "runner-closure.nix"
    expr.write_text(CLOSURE_NIX)
    (app,) = trovetest.nix_build(expr, session_dir / "runner-app", attr="app")
    paths = trovetest.nix_closure(app)
    by = {Path(p).name.split("-", 1)[1]: p for p in paths}
    base = tmp_path_factory.mktemp("pusher")
    env = trovetest.logged_in_env(server, base)
    trovetest.trove("push", "--no-progress", f"srv:{CACHE}", app, env=env, text=True, timeout=900)
    expected = trovetest.run([f"{app}/bin/app"], text=True).stdout
    assert expected.endswith("app ok\n") and "3145728" in expected, expected
    return {"app": app, "tools": by["trove-runner-tools"], "libc": by["trove-runner-libc"],
            "paths": paths, "expected": expected}


def closure_chunks(server, paths):
    """{chunk id: stored size} of every NAR of paths, from the manifests."""
    out = {}
    for p in paths:
        for _, _, cid, stored in server.manifest(CACHE, p)["chunks"]:
            out[cid] = stored
    return out


# ---- trove nix-db ----

def test_nix_db_matches_dump_db(server, closure, tmp_path):
    """`trove nix-db` prints for the closure exactly what `nix-store
    --dump-db` prints for the same paths (in path order), and a fresh Nix
    database that loads it knows the paths as Nix does."""
    host = Host(tmp_path, server)
    trovetest.trove("login", "ci", server.url, server.admin, env=host.env(), text=True)
    paths = sorted(closure["paths"])
    want = trovetest.run(["nix-store", "--dump-db", *paths], text=True).stdout
    got = trovetest.trove("nix-db", f"ci:{CACHE}", closure["app"], env=host.env(), text=True).stdout
    assert got == want
    # From a symlink to the top (./result), a file inside it, several roots.
    link = tmp_path / "result"
    link.symlink_to(closure["app"])
    for args in ([link], [f"{closure['app']}/bin/app"], [closure["tools"], closure["app"]],
                 [Path(closure["app"]).name]):
        out = trovetest.trove("nix-db", f"ci:{CACHE}", *args, env=host.env(), text=True).stdout
        assert out == want, args
    # Only the closure of what was asked.
    out = trovetest.trove("nix-db", f"ci:{CACHE}", closure["libc"], env=host.env(), text=True).stdout
    assert out == trovetest.run(["nix-store", "--dump-db", closure["libc"]], text=True).stdout
    # The cache's key: signed narinfo passes, another key refuses.
    key = server.cache_info(CACHE)["publicKey"]
    trovetest.trove("nix-db", "--trusted-key", key, f"ci:{CACHE}", closure["app"], env=host.env())
    secret = trovetest.trove("key", "generate", "other-1", text=True).stdout
    other = trovetest.trove("key", "public", "-", input=secret, text=True).stdout.strip()
    r = trovetest.trove("nix-db", "--trusted-key", other, f"ci:{CACHE}", closure["app"],
                        env=host.env(), text=True, expect=1)
    assert r.stdout == "" and "no signature by a trusted key" in r.stderr
    # A path the cache does not hold: status 1, nothing printed.
    missing = "/nix/store/" + "0" * 32 + "-not-there"
    r = trovetest.trove("nix-db", f"ci:{CACHE}", closure["app"], missing, env=host.env(),
                        text=True, expect=1)
    assert r.stdout == "" and "is not in cache" in r.stderr
    trovetest.trove("nix-db", f"ci:{CACHE}", "/tmp/not-a-store-path", env=host.env(), expect=2)
    # Loaded into a fresh database: valid, with Nix's own metadata.
    state = tmp_path / "state"
    trovetest.run(["nix-store", "--load-db"], input=got, text=True,
                  env=trovetest.nix_env({"NIX_STATE_DIR": str(state)}))
    dumped = trovetest.run(["nix-store", "--dump-db", *paths], text=True,
                           env=trovetest.nix_env({"NIX_STATE_DIR": str(state)})).stdout
    assert dumped == want


# ---- one mount, many containers ----

def make_rootfs(path):
    """A minimal root file system: a static busybox and its applets."""
    for d in ("bin", "nix/store", "proc", "sys", "dev", "etc", "tmp", "barrier"):
        (path / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", path / "bin" / "busybox")
    for applet in ("sh", "ls", "cat", "sleep", "touch", "wc", "echo"):
        (path / "bin" / applet).symlink_to("busybox")
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (path / "etc" / "group").write_text("root:x:0:\n")
    os.chmod(path, 0o755)
    return path


def podman_volume_from_docs(host):
    """The docker executor's volumes entry of docs/runners.md, on this host."""
    cfg = tomllib.loads(doc_block("docker-config"))
    (runner,) = cfg["runners"]
    assert runner["executor"] == "docker"
    (volume,) = runner["docker"]["volumes"]
    return host.localize(volume)


def start_host_mount(host, installed):
    """docs/runners.md's server-token, host-setup and host-start blocks."""
    dest, units = installed
    host.run_block("server-token", cwd=host.etc)
    assert (host.etc / "pull-token").read_text().count(".") == 2
    host.run_block("host-setup")
    conf = (host.etc / "trovefs.conf").read_text()
    assert f"TROVEFS_MOUNTPOINT={host.mnt}" in conf and "--trusted-key main-1:" in conf
    assert f"--cache-dir {host.base / 'chunk-cache'} " in conf, conf
    unit = UnitProcess(units["trovefs.service"], dest, host)
    start = host.localize(doc_block("host-start"))
    assert "systemctl enable --now trovefs.service" in start
    unit.start()
    getfattr = [line for line in start.splitlines() if line.startswith("getfattr")]
    trovetest.run(shlex.split(getfattr[0]))
    return unit


def test_many_containers_one_mount(server, closure, installed, tmp_path):
    host = Host(tmp_path, server)
    unit = start_host_mount(host, installed)
    try:
        mnt = host.mnt
        before = stats(mnt)
        assert before["chunksFetched"] == 0, before
        rootfs = make_rootfs(tmp_path / "rootfs")
        barrier = tmp_path / "barrier"
        barrier.mkdir()
        volume = podman_volume_from_docs(host)
        assert volume == f"{mnt}:/nix/store:ro"
        job = doc_block("job-run").strip()
        # Each container waits at a barrier until all are running, then
        # runs the job: all read the cold mount at the same time.
        script = (f'touch /barrier/$ID; n=0; while [ "$(ls /barrier | wc -l)" -lt {CONTAINERS} ]; do '
                  'n=$((n+1)); [ $n -lt 1200 ] || exit 99; sleep 0.1; done; ' + job)
        procs = []
        for i in range(CONTAINERS):
            procs.append(subprocess.Popen(
                PODMAN + ["--network", "none", "-e", f"ID=c{i}", "-e", f"ROOT={closure['app']}",
                          "-v", volume, "-v", f"{barrier}:/barrier",
                          "--rootfs", rootfs, "/bin/sh", "-ec", script],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = [p.communicate(timeout=600) for p in procs]
        for p, (out, err) in zip(procs, results):
            assert p.returncode == 0, (p.returncode, out, err)
            assert out == closure["expected"], (out, err)
        assert len(os.listdir(barrier)) == CONTAINERS
        # Each chunk of the closure crossed the network once: every file
        # was read to its end by every container, and the mount fetched
        # each distinct chunk exactly once.
        chunks = closure_chunks(server, closure["paths"])
        s = stats(mnt)
        assert s["chunksFetched"] == len(chunks), (s, len(chunks))
        assert s["bytesFetched"] == sum(chunks.values()), (s, sum(chunks.values()))
        assert s["manifestsFetched"] == len(closure["paths"]), s
        assert s["errors"] == 0 and s["verifyFailures"] == 0, s
        print(f"\n{CONTAINERS} containers at once through one mount; "
              f"{s['chunksFetched']} chunks ({s['bytesFetched']} bytes) fetched once each; "
              f"{s['readBytes']} bytes read from the mount")
        # Nothing is written through the mount.
        r = subprocess.run(PODMAN + ["--network", "none", "-v", volume, "--rootfs", rootfs,
                                     "/bin/sh", "-c", "touch /nix/store/x"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "Read-only" in r.stderr, r
    finally:
        status = unit.stop()
    check_clean_stop(unit, status)


# ---- a container without the mount ----

def test_fallback_substituter_in_container(server, closure, tmp_path):
    """A job container without the mount substitutes the closure from
    troved as an ordinary Nix binary cache, configured by `trove use`.
    Nix cannot run from a static busybox root, so the container gets the
    host's /usr read-only (nix-store, and trove's shared libraries); its
    /nix is its own and empty."""
    host = Host(tmp_path, server)
    (host.etc / "pull-token").write_text(server.token(CACHE, "pull") + "\n")
    root = tmp_path / "rootfs"
    for d in ("usr", "proc", "sys", "dev", "etc", "tmp", "nix", "root", "opt/trove/bin"):
        (root / d).mkdir(parents=True)
    for link in ("bin", "lib", "lib64", "sbin"):
        (root / link).symlink_to(f"usr/{link}")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    os.chmod(root, 0o755)
    script = host.localize(doc_block("fallback")).replace(str(host.etc), "/etc/trove")
    r = trovetest.run(PODMAN + [
        "--network", "host", "-e", f"ROOT={closure['app']}",
        "-e", "PATH=/opt/trove/bin:/usr/bin:/bin",
        "-v", "/usr:/usr:ro", "-v", f"{host.etc}:/etc/trove:ro",
        "-v", f"{trovetest.binary('trove')}:/opt/trove/bin/trove:ro",
        "--rootfs", root, "/bin/sh", "-ec", script], text=True, timeout=900)
    assert "copying path" in r.stderr, r.stderr
    conf = (root / "etc" / "nix" / "nix.conf").read_text()
    assert f"{server.url}/{CACHE}" in conf and "main-1:" in conf, conf
    token = (host.etc / "pull-token").read_text().strip()
    assert token not in conf and token in (root / "etc" / "nix" / "netrc").read_text()
    # The container's own store holds the closure, byte for byte.
    for p in closure["paths"]:
        trovetest.run(["diff", "-r", "--no-dereference", p, f"{root}{p}"])
    assert not os.path.ismount(root / "nix" / "store")


# ---- the shell executor ----

def test_shell_executor_config(server, tmp_path):
    """docs/runners.md's shell executor config.toml parses and names the
    shell executor (its job commands are the other blocks, run above and
    below)."""
    cfg = tomllib.loads(doc_block("shell-config"))
    (runner,) = cfg["runners"]
    assert runner["executor"] == "shell" and runner["shell"] == "bash"
    assert cfg["concurrent"] >= 1


# ---- jobs that build: overlay on the mount ----

def tree_size(path):
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def test_overlay_build_and_push(server, closure, installed, tmp_path):
    host = Host(tmp_path, server)
    unit = start_host_mount(host, installed)
    try:
        # The job pushes: a token with push permission for the same login.
        trovetest.trove("login", "ci", server.url, server.token(CACHE, "pull,push"),
                        env=host.env(), text=True)
        (tmp_path / "job.nix").write_text(JOB_NIX.replace("@APP@", closure["app"])
                                          .replace("@TOOLS@", closure["tools"]))
        received = server.metrics()["trove_bytes_received_total"]
        r = host.run_block("overlay-job", extra_env={"ROOT": closure["app"]})
        out = r.stdout + r.stderr
        size_line = r.stdout.strip().splitlines()[-1]
        upper_bytes, upper = size_line.split("\t")
        upper = Path(upper)
        assert upper.parent.parent == host.tmp, upper
        job_out = re.search(r"^pushed (/nix/store/\S+-trove-runner-job) ", out, re.M)
        assert job_out, out
        job_out = job_out.group(1)
        # Only the new path was pushed; its dependencies (tools, whose path
        # the output names, and tools' libc) were in the cache.
        assert re.search(r"^1 path\(s\) pushed, 2 already in the cache", out, re.M), out
        sent = server.metrics()["trove_bytes_received_total"] - received
        # The upper directory holds only what the job made: its derivation
        # and its output, none of the closure.
        names = sorted(os.listdir(upper))
        # Nix makes its (empty) hard-link directory .links when it opens
        # a store it may optimise.
        assert os.listdir(upper / ".links") == [], names
        names.remove(".links")
        assert [n for n in names if not n.endswith(".drv")] == [Path(job_out).name], names
        assert all(n.endswith("-trove-runner-job.drv") for n in names if n.endswith(".drv"))
        closure_bytes = tree_size(closure["tools"]) + tree_size(closure["libc"])
        assert int(upper_bytes) < 64 * 1024 and tree_size(upper) < 64 * 1024, (upper_bytes, names)
        # The output the job built is right and in the cache now.
        report = (upper / Path(job_out).name / "report").read_text()
        assert report == closure["expected"]
        ni = server.narinfo(CACHE, job_out)
        assert ni and ni["References"].split() == [Path(closure["tools"]).name], ni
        assert 0 < sent < 64 * 1024, sent
        print(f"\nupper directory after the build: {upper_bytes} bytes ({names}); "
              f"closure below it: {closure_bytes} bytes; push sent {int(sent)} bytes")
        # The host's own store and database never saw the job's output.
        assert not os.path.exists(job_out)
    finally:
        status = unit.stop()
    check_clean_stop(unit, status)


def test_unit_stop_while_in_use(server, closure, installed, tmp_path):
    """Stopping the unit while a job still has a file of the mount open:
    the plain unmount is refused (busy), the mount is detached lazily, and
    trovefs, signalled after ExecStop's 10 s, exits 0 with its counters;
    the job's open file then fails instead of hanging."""
    host = Host(tmp_path, server)
    unit = start_host_mount(host, installed)
    data = host.mnt / Path(closure["tools"]).name / "share" / "data.bin"
    with open(data, "rb") as held:
        assert len(held.read(4096)) == 4096
        t0 = time.monotonic()
        status = unit.stop()
        assert time.monotonic() - t0 >= 9, "ExecStop did not wait for trovefs"
        assert not unit.stopped_before_signal
        assert status == 0, unit.journal()
        assert "unmounted; counters: {" in unit.journal()
        assert not os.path.ismount(host.mnt)
        with pytest.raises(OSError):
            held.seek(5 << 20)
            held.read(4096)
