# SPDX-License-Identifier: Apache-2.0
"""Per-job credentials: POST /_api/v1/token-exchange and `trove login
--oidc-token-file`, against a local OpenID issuer.

The issuer is nginx on 127.0.0.1 serving two issuers' documents: "gitlab"
(an RSA key, found by discovery through
<issuer>/.well-known/openid-configuration) and "github" (a P-256 key at an
explicitly configured jwksUri). Keys are made with `openssl genpkey` and
tokens signed with `openssl dgst` (oidctest.py). troved runs with an
oidc-config mapping gitlab's project_path team/* to caches team-* and
github's repository org/repo to caches gh-*, pull and push.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import oidctest as o
import trovetest
from trovetest import run, trove

AUD = "https://trove.test"


class Issuer:
    def __init__(self, root, base_url):
        self.root = Path(root)
        self.base = base_url
        self.keys = {}

    def url(self, name):
        return f"{self.base}/{name}"

    def add_key(self, name, kind, kid):
        d = self.root / name
        d.mkdir(exist_ok=True)
        path = self.root.parent / f"{name}-{kid}.pem"  # private keys stay outside the served tree
        (o.gen_rsa if kind == "RSA" else o.gen_p256)(path)
        jwk = (o.jwk_rsa if kind == "RSA" else o.jwk_p256)(path, kid)
        self.keys.setdefault(name, []).append((kid, path, jwk))
        self.publish(name)
        return path

    def publish(self, name):
        d = self.root / name
        keys = {"keys": [jwk for _, _, jwk in self.keys[name]]}
        (d / "keys.json").write_text(json.dumps(keys))
        wk = d / ".well-known"
        wk.mkdir(exist_ok=True)
        (wk / "openid-configuration").write_text(json.dumps({
            "issuer": self.url(name), "jwks_uri": self.url(name) + "/keys.json",
            "id_token_signing_alg_values_supported": ["RS256", "ES256"]}))

    def key(self, name, kid):
        for k, path, _ in self.keys[name]:
            if k == kid:
                return path
        raise KeyError(kid)


@pytest.fixture(scope="module")
def env(make_troved_module):
    base = Path(tempfile.mkdtemp(prefix="trove-oidc-"))
    os.chmod(base, 0o755)
    (base / "www").mkdir()
    nginx = trovetest.Nginx(base / "nginx", base / "www", default_type="application/json").start()
    try:
        iss = Issuer(base / "www", nginx.url)
        iss.add_key("gitlab", "RSA", "rsa1")
        iss.add_key("github", "EC", "ec1")
        policy = {
            "maxValidSeconds": 3600,
            "issuers": [
                {"issuer": iss.url("gitlab"), "audiences": [AUD], "jwksRefetchSeconds": 0},
                {"issuer": iss.url("github"), "audiences": ["other", AUD],
                 "jwksUri": iss.url("github") + "/keys.json"},
                # Nobody listens there.
                {"issuer": iss.url("down"), "audiences": [AUD],
                 "jwksUri": f"http://127.0.0.1:{trovetest.free_tcp_port()}/keys.json"},
            ],
            "rules": [
                {"issuer": iss.url("gitlab"), "claims": {"project_path": "team/*"},
                 "caches": ["team-*"], "perms": ["pull", "push"]},
                {"issuer": iss.url("github"), "claims": {"repository": "org/repo", "ref": "refs/heads/*"},
                 "caches": ["gh-*"], "perms": ["pull", "push"]},
            ],
        }
        (base / "oidc.json").write_text(json.dumps(policy, indent=1))
        os.chmod(base / "oidc.json", 0o644)
        server = make_troved_module(args=["--oidc-config", str(base / "oidc.json")])
        for cache in ("team-app", "gh-app", "other"):
            server.create_cache(cache)
        yield server, iss, base
    finally:
        nginx.stop()
        shutil.rmtree(base, ignore_errors=True)


def gitlab_claims(issuer, **over):
    now = int(time.time())
    c = {"iss": issuer.url("gitlab"), "aud": AUD, "sub": "project_path:team/app:ref_type:branch:ref:main",
         "project_path": "team/app", "ref": "main", "iat": now, "nbf": now, "exp": now + 600}
    c.update(over)
    return c


def gitlab_token(issuer, kid="rsa1", signer="rsa1", **over):
    """An RS256 token naming key kid, signed with gitlab's key signer."""
    return o.jwt({"alg": "RS256", "kid": kid, "typ": "JWT"}, gitlab_claims(issuer, **over),
                 issuer.key("gitlab", signer), "RS256")


def github_token(issuer, **over):
    now = int(time.time())
    c = {"iss": issuer.url("github"), "aud": AUD, "sub": "repo:org/repo:ref:refs/heads/main",
         "repository": "org/repo", "ref": "refs/heads/main", "iat": now, "nbf": now, "exp": now + 300}
    c.update(over)
    return o.jwt({"alg": "ES256", "kid": "ec1", "typ": "JWT"}, c, issuer.key("github", "ec1"), "ES256")


def exchange(server, token):
    return server.request("POST", "/_api/v1/token-exchange", json.dumps({"token": token}),
                          headers={"Content-Type": "application/json"})


def can_push(server, token, cache):
    """A push-permission request: the list of missing chunks of an empty set."""
    r = server.request("POST", f"/_api/v1/caches/{cache}/missing-chunks", '{"chunks": []}', token=token)
    assert r.status in (200, 403), r
    return r.status == 200


def expect_refused(server, token, status, words, mark=None):
    r = exchange(server, token)
    assert r.status == status, f"expected {status}, got {r}\n{server.log_since(mark or 0)[-2000:]}"
    text = r.text
    assert text.startswith("error: ") and "eyJ" not in text and '"token"' not in text, text
    assert words.lower() in text.lower(), text
    return text


def test_rs256_discovery_token_pushes_to_mapped_cache_only(env):
    server, iss, base = env
    before = int(time.time())
    r = exchange(server, gitlab_token(iss))
    assert r.status == 200, r
    out = r.json()
    assert out["perms"] == {"team-*": ["pull", "push"]}
    assert out["sub"] == "oidc:project_path:team/app:ref_type:branch:ref:main"
    # At most the job token's remaining lifetime (600 s).
    assert before < out["expiresAt"] <= before + 601
    tok = out["token"]
    assert can_push(server, tok, "team-app")
    assert not can_push(server, tok, "gh-app")
    assert not can_push(server, tok, "other")
    assert server.get("/_api/v1/caches/team-app", token=tok).status == 200
    assert server.get("/_api/v1/caches/other", token=tok).status == 403
    # No destroy, no admin.
    assert server.request("DELETE", "/_api/v1/caches/team-app", token=tok).status == 403
    assert server.request("POST", "/_api/v1/gc", token=tok).status == 403
    # gitlab's keys were found through its discovery document.
    assert fetches(base, "/gitlab/.well-known/openid-configuration") >= 1


def test_es256_explicit_jwks_uri(env):
    server, iss, base = env
    r = exchange(server, github_token(iss))
    assert r.status == 200, r
    tok = r.json()["token"]
    assert can_push(server, tok, "gh-app")
    assert not can_push(server, tok, "team-app")
    assert not can_push(server, tok, "other")
    assert fetches(base, "/github/keys.json") >= 1
    assert fetches(base, "/github/.well-known/openid-configuration") == 0


def test_lifetime_capped_by_policy(env):
    server, iss, _ = env
    now = int(time.time())
    r = exchange(server, gitlab_token(iss, exp=now + 7 * 86400))
    assert r.status == 200, r
    assert r.json()["expiresAt"] <= now + 3600 + 1


def test_refusals(env):
    server, iss, _ = env
    mark = server.log_mark()
    now = int(time.time())
    pem = o.public_pem(iss.key("gitlab", "rsa1"))
    cases = [
        ("expired", gitlab_token(iss, iat=now - 900, nbf=now - 900, exp=now - 300), 401, "expired"),
        ("not yet valid", gitlab_token(iss, nbf=now + 900), 401, "not valid"),
        ("wrong audience", gitlab_token(iss, aud="https://elsewhere.test"), 401, "audience"),
        ("audience list without ours", gitlab_token(iss, aud=["a", "b"]), 401, "audience"),
        ("untrusted issuer", gitlab_token(iss, iss=iss.url("evil")), 401, "issuer"),
        ("other trusted issuer's name", gitlab_token(iss, iss=iss.url("github")), 401, "key"),
        ("unknown kid", gitlab_token(iss, kid="nope"), 401, "no key"),
        ("alg none", o.jwt({"alg": "none", "typ": "JWT"}, gitlab_claims(iss)), 401, "not accepted"),
        ("HS256 with the public key as secret",
         o.jwt({"alg": "HS256", "kid": "rsa1", "typ": "JWT"}, gitlab_claims(iss), hmac_secret=pem), 401,
         "not accepted"),
        ("RS256 naming the EC key of github",
         o.jwt({"alg": "RS256", "kid": "ec1"}, gitlab_claims(iss, iss=iss.url("github")),
               iss.key("gitlab", "rsa1"), "RS256"), 401, "key"),
        ("no rule matches", gitlab_token(iss, project_path="elsewhere/app"), 403, "no rule"),
        ("rule needs every claim", github_token(iss, ref="refs/tags/v1"), 403, "no rule"),
        ("not a JWT", "abc", 401, "invalid"),
        ("padding", gitlab_token(iss) + "=", 401, "invalid"),
    ]
    # Tampered payload: the signature of one token on another's payload.
    good = gitlab_token(iss).split(".")
    other = gitlab_token(iss, project_path="team/admin").split(".")
    cases.append(("tampered payload", ".".join([good[0], other[1], good[2]]), 401, "signature"))
    for what, tok, status, words in cases:
        try:
            expect_refused(server, tok, status, words, mark)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None
    # Bodies that are not the expected JSON; a body past the cap.
    r = server.request("POST", "/_api/v1/token-exchange", "eyJ", headers={"Content-Type": "application/json"})
    assert r.status == 400, r
    r = server.request("POST", "/_api/v1/token-exchange", json.dumps({"token": "x" * 20000}))
    assert r.status == 413, r
    r = server.request("GET", "/_api/v1/token-exchange")
    assert r.status == 405, r


def fetches(base, path):
    """How often nginx served path."""
    log = (base / "nginx" / "access.log").read_text()
    return sum(1 for line in log.splitlines() if f"GET {path} " in line)


def test_unknown_kid_refetch_is_bounded(env):
    server, iss, base = env
    # gitlab allows a refetch at any time: exactly one per unknown kid.
    before = fetches(base, "/gitlab/keys.json")
    for i in range(3):
        expect_refused(server, gitlab_token(iss, kid=f"made-up-{i}"), 401, "no key")
    assert fetches(base, "/gitlab/keys.json") - before == 3
    # github's keys are fetched at most every 30 s, however many unknown
    # kids arrive; the known key still works meanwhile.
    assert exchange(server, github_token(iss)).status == 200
    before = fetches(base, "/github/keys.json")
    for i in range(5):
        tok = o.jwt({"alg": "ES256", "kid": f"made-up-{i}"}, json.loads(
            o.base64.urlsafe_b64decode(github_token(iss).split(".")[1] + "==")), iss.key("github", "ec1"), "ES256")
        expect_refused(server, tok, 401, "no key")
    assert fetches(base, "/github/keys.json") - before <= 1
    assert exchange(server, github_token(iss)).status == 200


def test_unreachable_keys_are_503_without_token(env):
    server, iss, _ = env
    r = exchange(server, gitlab_token(iss, iss=iss.url("down")))
    assert r.status == 503, r
    assert r.text.startswith("error: ") and "fetched" in r.text and "eyJ" not in r.text, r


def test_key_rotation_refetches_on_unknown_kid(env):
    server, iss, _ = env
    assert exchange(server, gitlab_token(iss)).status == 200  # keys cached now
    iss.add_key("gitlab", "RSA", "rsa2")
    r = exchange(server, gitlab_token(iss, kid="rsa2", signer="rsa2"))
    assert r.status == 200, r


def test_login_with_oidc_token_file(env, tmp_path):
    server, iss, _ = env
    cfg = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    client = trovetest.nix_env(cfg)
    idtok = tmp_path / "id_token"
    idtok.write_text(gitlab_token(iss) + "\n")
    out = trove("login", "--oidc-token-file", idtok, "ci", server.url, env=client, text=True).stdout
    assert "logged in" in out
    saved = json.loads((tmp_path / "cfg" / "trove" / "config.json").read_text())
    tok = saved["servers"]["ci"]["token"]
    assert tok.count(".") == 2 and tok != idtok.read_text().strip()
    assert can_push(server, tok, "team-app") and not can_push(server, tok, "other")

    # A real push with it: a store path made from a file.
    src = tmp_path / "oidc-payload.txt"
    src.write_text("pushed with a per-job token\n")
    path = run(["nix-store", "--add", src], env=client, text=True).stdout.strip()
    trove("push", "ci:team-app", path, env=client, text=True)
    assert server.narinfo("team-app", path, token=server.admin) is not None
    r = trove("push", "ci:other", path, env=client, text=True, expect=None)
    assert r.returncode != 0

    # Refreshing the saved server, from stdin, without NAME URL.
    r = subprocess.run([trovetest.binary("trove"), "login", "--oidc-token-file", "-"],
                       input=github_token(iss), env=client, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr
    tok2 = json.loads((tmp_path / "cfg" / "trove" / "config.json").read_text())["servers"]["ci"]["token"]
    assert can_push(server, tok2, "gh-app") and not can_push(server, tok2, "team-app")

    # A refused ID token saves nothing.
    idtok.write_text(gitlab_token(iss, aud="wrong"))
    r = trove("login", "--oidc-token-file", idtok, "bad", server.url, env=client, text=True, expect=1)
    assert "audience" in r.stderr
    saved = json.loads((tmp_path / "cfg" / "trove" / "config.json").read_text())
    assert "bad" not in saved["servers"]
