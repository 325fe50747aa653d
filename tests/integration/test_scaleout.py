# SPDX-License-Identifier: Apache-2.0
"""Several troved instances on one PostgreSQL and one S3 bucket (radosgw)
behind a load balancer (nginx on 127.0.0.1) behave as one server.

- Overlapping closures pushed at the same time through different instances
  (trove push, nix copy --to, and through the balancer) all land once, and
  every instance, and the balancer, serves them so that Nix substitutes
  and verifies them.
- What one instance keeps in memory (narinfo answers found or not, cache
  settings) is at most --cache-ttl seconds old: a path pushed through one
  instance, after another has answered "not found" for it, is visible
  there once that bound has passed; a cache made public through one is
  public on the other within it. An instance with --cache-ttl 0 sees every
  change at once.
"""

import json
import os
import threading
import time

import pytest

import trovetest
from trovetest import run, store_hash_part, trove
from test_push import MK, nix_env_for

TTL = 2


@pytest.fixture
def fleet(postgres, radosgw, bucket, make_troved, tmp_path):
    """Instances a, b (--cache-ttl TTL) and c (--cache-ttl 0) on one database
    and one bucket, sharing one token secret, and a balancer over a and b."""
    cluster, db = postgres
    common = dict(database_url=cluster.dsn(db), storage=radosgw.spec(bucket, prefix="fleet/"),
                  extra_env=radosgw.credentials_env(), log_level="info")
    # Behind the balancer every connection comes from its address.
    limits = ["--max-connections-per-client", "1024"]
    a = make_troved(name="a", args=limits + ["--cache-ttl", str(TTL)], **common)
    secret = ["--token-secret-file", str(a.state_dir / "token-secret")]
    b = make_troved(name="b", args=limits + ["--cache-ttl", str(TTL)] + secret, **common)
    c = make_troved(name="c", args=limits + ["--cache-ttl", "0"] + secret, **common)
    for t in (b, c):
        t._admin = a.admin
    lb = trovetest.balancer(tmp_path / "lb", [a.port, b.port])
    lb.admin = a.admin
    lb.http = trovetest.HttpClient("127.0.0.1", lb.port)
    lb.get = lambda path, **kw: lb.http.request("GET", path, **kw)
    a.sql = lambda q: cluster.psql(q, db).split()
    yield a, b, c, lb
    lb.http.close()
    lb.stop()


def build_closures(tmp_path):
    """Two closures that share a library and a data path, each with paths of
    its own; fresh contents on every run."""
    tag = os.urandom(6).hex()
    expr = MK + f"""
rec {{
  shared = mk "fleet-shared-{tag}" ''mkdir $out; head -c 3000000 /dev/urandom > $out/lib.so; echo {tag} > $out/v'';
  data = mk "fleet-data-{tag}" ''head -c 700000 /dev/urandom > $out'';
  x = mk "fleet-x-{tag}" ''mkdir $out; echo ${{shared}} ${{data}} > $out/deps; head -c 400000 /dev/urandom > $out/x'';
  y = mk "fleet-y-{tag}" ''mkdir $out; echo ${{shared}} ${{data}} > $out/deps; head -c 500000 /dev/urandom > $out/y'';
  z = mk "fleet-z-{tag}" ''echo ${{x}} ${{y}} > $out'';
}}
"""
    f = tmp_path / "fleet.nix"
    f.write_text(expr)
    out = {}
    for attr in ("x", "y", "z"):
        (p,) = trovetest.nix_build(f, tmp_path / f"result-{attr}", attr=attr)
        out[attr] = p
    return out


def substitute(server_url, cache, top, key, token, tmp_path, tag):
    root = tmp_path / f"root-{tag}"
    netrc = trovetest.write_netrc(tmp_path / f"netrc-{tag}", token)
    run(["nix", "copy", "--from", f"{server_url}/{cache}", "--to", f"local?root={root}",
         "--option", "trusted-public-keys", key, "--option", "netrc-file", netrc, top],
        env=nix_env_for(tmp_path, tag), timeout=900)
    run(["nix", "store", "verify", "--store", f"local?root={root}", "-r",
         "--option", "trusted-public-keys", key, top], env=nix_env_for(tmp_path, tag + "v"), timeout=900)
    for p in trovetest.nix_closure(top):
        assert trovetest.stream_sha256(["nix-store", "--dump", f"{root}{p}"]) == \
            trovetest.nix_dump_sha256(p), p


def test_concurrent_pushes_through_different_instances(fleet, tmp_path):
    a, b, c, lb = fleet
    cache = f"fleet{os.getpid()}"
    key = a.create_cache(cache)["publicKey"]
    paths = build_closures(tmp_path)

    def trove_env(server, tag):
        env = trovetest.nix_env({"XDG_CONFIG_HOME": str(tmp_path / f"cfg-{tag}"),
                                 "XDG_CACHE_HOME": str(tmp_path / f"xdg-{tag}")})
        env.pop("TROVE_TOKEN", None)
        trove("login", "srv", server.url, a.admin, env=env, text=True)
        return env

    envs = {"a": trove_env(a, "a"), "lb": trove_env(lb, "lb")}
    jobs = [
        lambda: trove("push", "--no-progress", cache, paths["x"], env=envs["a"], text=True, timeout=900),
        lambda: b.nix_copy_to(cache, [paths["y"]], a.admin, tmp_path / "xdg-b", compression="zstd"),
        lambda: trove("push", "--no-progress", cache, paths["z"], env=envs["lb"], text=True, timeout=900),
        lambda: c.nix_copy_to(cache, [paths["x"]], a.admin, tmp_path / "xdg-c", compression="zstd"),
    ]
    errors = []

    def runner(job):
        try:
            job()
        except Exception as e:  # reported below, with the others
            errors.append(e)

    threads = [threading.Thread(target=runner, args=(j,)) for j in jobs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(1800)
    assert not any(th.is_alive() for th in threads), "a push did not finish"
    assert not errors, errors

    # One row per path and one NAR per content, whichever instance took it.
    closure = trovetest.nix_closure(paths["z"])
    rows = a.sql(f"SELECT p.hash_part FROM paths p JOIN caches c ON c.id = p.cache_id "
                 f"WHERE c.name = '{cache}'")
    assert sorted(rows) == sorted(store_hash_part(p) for p in closure), rows
    assert a.sql("SELECT count(*) - count(DISTINCT nar_hash) FROM nars") == ["0"]
    # The balancer spread the requests over both instances behind it.
    assert lb.requests("/") and len(lb.requests("/")) > 10
    # Every instance and the balancer answer the same signed narinfos ...
    for p in closure:
        texts = {t.get(f"/{cache}/{store_hash_part(p)}.narinfo", token=a.admin).text
                 for t in (a, b, c, lb)}
        assert len(texts) == 1, texts
    # ... and Nix substitutes and verifies the whole closure through each.
    for t, tag in ((a, "sa"), (b, "sb"), (c, "sc"), (lb, "slb")):
        substitute(t.url, cache, paths["z"], key, a.admin, tmp_path, tag)


def test_changes_through_one_instance_show_on_another_within_the_ttl(fleet, tmp_path):
    a, b, c, lb = fleet
    cache = f"ttl{os.getpid()}"
    a.create_cache(cache)
    path = build_closures(tmp_path)["x"]
    h = store_hash_part(path)
    url = f"/{cache}/{h}.narinfo"
    # b and c answer "not found" (and b remembers that for up to TTL s).
    assert b.get(url, token=a.admin).status == 404
    assert c.get(url, token=a.admin).status == 404
    a.nix_copy_to(cache, [path], a.admin, tmp_path / "xdg-ttl", compression="zstd")
    pushed = time.monotonic()
    # The instance that took the push, and one that keeps nothing, see it at once.
    assert a.get(url, token=a.admin).status == 200
    assert c.get(url, token=a.admin).status == 200
    # b: within TTL seconds of the push, whatever it remembered.
    time.sleep(max(0.0, TTL + 1 - (time.monotonic() - pushed)))
    r = b.get(url, token=a.admin)
    assert r.status == 200, f"{TTL + 1} s after the push, b still says {r.status}"

    # Cache settings: made public through a, anonymous pulls work on b
    # within the TTL (and at once on c).
    assert b.get(url).status == 401
    r = a.request("PATCH", f"/_api/v1/caches/{cache}", json.dumps({"public": True}), token=a.admin)
    assert r.status == 200, r
    changed = time.monotonic()
    assert c.get(url).status == 200
    time.sleep(max(0.0, TTL + 1 - (time.monotonic() - changed)))
    assert b.get(url).status == 200
