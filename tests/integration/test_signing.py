# SPDX-License-Identifier: Apache-2.0
"""Signing interoperability with real Nix (2.8):

- a narinfo signed by `trove narinfo sign` with a `trove key generate` key is
  accepted by `nix copy --from file://…` into a fresh store that requires
  signatures and trusts only that key; the same cache unsigned, or with one
  byte of the Sig or the NarHash flipped, is refused;
- `trove narinfo verify` accepts narinfo signed by `nix copy
  --to file://…?secret-key=…` and by `nix store sign`, and refuses other keys;
- keys cross over both ways (Nix signs with a trove key, trove derives the
  public half of a Nix key).

Self-contained: builds its own two-path closure with builder /bin/sh.
"""

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

NIX_CONFIG = "build-users-group =\nsubstituters =\nsandbox = false\nexperimental-features = nix-command\n"


def trove_binary():
    build = os.environ.get("TROVE_BUILD_DIR", "/work/main/build/release")
    path = Path(build) / "tools" / "trove"
    assert path.is_file(), f"trove not built at {path} (set TROVE_BUILD_DIR)"
    return str(path)


def run(args, env, check=True, **kw):
    p = subprocess.run(args, env=env, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def ctx():
    top = Path(tempfile.mkdtemp(prefix="trove-signing-", dir="/tmp"))
    os.chmod(top, 0o755)
    env = dict(os.environ)
    env["NIX_CONFIG"] = NIX_CONFIG
    # Nix's narinfo disk cache must not answer for our caches.
    env["XDG_CACHE_HOME"] = str(top / "xdg-cache")
    nonce = uuid.uuid4().hex[:12]
    (top / "closure.nix").write_text(f"""
let
  dep = derivation {{
    name = "trove-signing-dep-{nonce}"; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "echo dependency > $out" ];
  }};
in derivation {{
  name = "trove-signing-top-{nonce}"; system = builtins.currentSystem;
  builder = "/bin/sh"; args = [ "-c" "echo top ${{dep}} > $out" ];
}}
""")
    top_path = run(["nix-build", str(top / "closure.nix"), "--no-out-link"], env).stdout.strip()
    refs = run(["nix-store", "-q", "--references", top_path], env).stdout.split()
    assert len(refs) == 1, refs
    c = {
        "top": top, "env": env, "trove": trove_binary(),
        "path": top_path, "dep": refs[0],
    }
    yield c
    shutil.rmtree(top, ignore_errors=True)


def narinfo_of(cache, store_path):
    h = os.path.basename(store_path)[:32]
    return Path(cache) / f"{h}.narinfo"


def unsigned_cache(ctx, name):
    cache = ctx["top"] / name
    run(["nix", "copy", "--to", f"file://{cache}", ctx["path"]], ctx["env"])
    for p in (ctx["path"], ctx["dep"]):
        text = narinfo_of(cache, p).read_text()
        assert "\nSig: " not in text, text
    return cache


def trove_keypair(ctx, name):
    sk = ctx["top"] / f"{name}.sec"
    pk = ctx["top"] / f"{name}.pub"
    run([ctx["trove"], "key", "generate", name, "--secret-file", str(sk), "--public-file", str(pk)], ctx["env"])
    return sk, pk.read_text().strip()


def copy_into_fresh_root(ctx, cache, trusted_key, tag):
    """nix copy --from the cache into a new, empty root store that requires
    signatures. Returns (process, root)."""
    root = ctx["top"] / f"root-{tag}"
    assert not root.exists()
    p = run(["nix", "copy", "--from", f"file://{cache}", "--to", f"local?root={root}",
             "--option", "trusted-public-keys", trusted_key,
             "--option", "require-sigs", "true", ctx["path"]], ctx["env"], check=False)
    return p, root


def in_root(root, store_path):
    return (Path(str(root) + store_path)).exists()


def flip_char(s, i, alphabet):
    c = s[i]
    return s[:i] + (alphabet[(alphabet.index(c) + 1) % len(alphabet)]) + s[i + 1:]


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def test_nix_substitutes_trove_signed_paths(ctx):
    cache = unsigned_cache(ctx, "cache-trove")
    sk, pub = trove_keypair(ctx, f"trove-test-{uuid.uuid4().hex[:6]}")

    # Control: unsigned, the fresh store refuses the path.
    p, root = copy_into_fresh_root(ctx, cache, pub, "unsigned")
    assert p.returncode != 0
    assert "lacks a valid signature" in p.stderr, p.stderr
    assert not in_root(root, ctx["path"])

    files = [str(narinfo_of(cache, x)) for x in (ctx["path"], ctx["dep"])]
    mode_before = os.stat(files[0]).st_mode
    run([ctx["trove"], "narinfo", "sign", "--key", str(sk)] + files, ctx["env"])
    assert os.stat(files[0]).st_mode == mode_before
    assert not list(Path(cache).glob("*.tmp-*")), "temporary file left behind"
    for f in files:
        sigs = [l for l in Path(f).read_text().splitlines() if l.startswith("Sig: ")]
        assert len(sigs) == 1 and sigs[0].startswith("Sig: " + pub.split(":")[0] + ":"), sigs
    # Signing twice replaces the signature, never adds a second one.
    run([ctx["trove"], "narinfo", "sign", "--key", str(sk), files[0]], ctx["env"])
    assert Path(files[0]).read_text().count("\nSig: ") == 1

    run([ctx["trove"], "narinfo", "verify", "--key", pub] + files, ctx["env"])

    p, root = copy_into_fresh_root(ctx, cache, pub, "signed")
    assert p.returncode == 0, p.stderr
    for x in (ctx["path"], ctx["dep"]):
        assert in_root(root, x), f"{x} was not substituted into {root}"
    assert Path(str(root) + ctx["path"]).read_text() == Path(ctx["path"]).read_text()
    info = run(["nix", "path-info", "--store", f"local?root={root}", "--sigs", ctx["path"]], ctx["env"])
    assert pub.split(":")[0] + ":" in info.stdout, info.stdout

    # Trusting another key only: refused.
    _, other_pub = trove_keypair(ctx, "trove-other")
    p, root = copy_into_fresh_root(ctx, cache, other_pub, "otherkey")
    assert p.returncode != 0 and "lacks a valid signature" in p.stderr, p.stderr
    assert not in_root(root, ctx["path"])


@pytest.mark.parametrize("what", ["sig", "narhash"])
def test_nix_refuses_tampered_narinfo(ctx, what):
    cache = unsigned_cache(ctx, f"cache-tamper-{what}")
    sk, pub = trove_keypair(ctx, f"trove-tamper-{what}")
    ni = narinfo_of(cache, ctx["path"])
    run([ctx["trove"], "narinfo", "sign", "--key", str(sk), str(ni), str(narinfo_of(cache, ctx["dep"]))],
        ctx["env"])
    text = ni.read_text()
    if what == "sig":
        m = re.search(r"^Sig: [^:]+:(.*)$", text, re.M)
        i = m.start(1) + 20
        tampered = flip_char(text, i, B64)
    else:
        m = re.search(r"^NarHash: sha256:(.*)$", text, re.M)
        i = m.start(1) + 20
        tampered = flip_char(text, i, NIX32)
    assert tampered != text and len(tampered) == len(text)
    ni.write_text(tampered)

    p = run([ctx["trove"], "narinfo", "verify", "--key", pub, str(ni)], ctx["env"], check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "no valid signature" in p.stdout

    p, root = copy_into_fresh_root(ctx, cache, pub, f"tampered-{what}")
    assert p.returncode != 0, "Nix accepted a tampered narinfo"
    assert "lacks a valid signature" in p.stderr, p.stderr
    assert not in_root(root, ctx["path"])
    # The untouched dependency still verifies and was copied.
    assert in_root(root, ctx["dep"])


def test_trove_verifies_nix_signatures(ctx):
    nix_sk = ctx["top"] / "nix.sec"
    nix_pk = ctx["top"] / "nix.pub"
    run(["nix-store", "--generate-binary-cache-key", "nix-made-1", str(nix_sk), str(nix_pk)], ctx["env"])

    # trove derives the same public key from Nix's secret key.
    p = run([ctx["trove"], "key", "public", str(nix_sk)], ctx["env"])
    assert p.stdout.strip() == nix_pk.read_text().strip()

    cache = ctx["top"] / "cache-nix-signed"
    run(["nix", "copy", "--to", f"file://{cache}?secret-key={nix_sk}", ctx["path"]], ctx["env"])
    files = [str(narinfo_of(cache, x)) for x in (ctx["path"], ctx["dep"])]
    p = run([ctx["trove"], "narinfo", "verify", "--key-file", str(nix_pk)] + files, ctx["env"])
    assert p.stdout.count(": ok (1 valid signature)") == 2, p.stdout

    # The fingerprint is what Nix signed.
    p = run([ctx["trove"], "narinfo", "fingerprint", files[0]], ctx["env"])
    nar_hash = run(["nix-store", "-q", "--hash", ctx["path"]], ctx["env"]).stdout.strip()
    nar_size = run(["nix-store", "-q", "--size", ctx["path"]], ctx["env"]).stdout.strip()
    assert p.stdout.strip() == f"1;{ctx['path']};{nar_hash};{nar_size};{ctx['dep']}"

    _, other = trove_keypair(ctx, "nix-made-1")  # same name, other key
    p = run([ctx["trove"], "narinfo", "verify", "--key", other] + files, ctx["env"], check=False)
    assert p.returncode == 1 and "no valid signature" in p.stdout, p.stdout

    # nix store sign on the local path, then a plain copy carries that Sig.
    k2_sk = ctx["top"] / "nix2.sec"
    k2_pk = ctx["top"] / "nix2.pub"
    run(["nix-store", "--generate-binary-cache-key", "nix-store-sign-1", str(k2_sk), str(k2_pk)], ctx["env"])
    run(["nix", "store", "sign", "--key-file", str(k2_sk), ctx["path"]], ctx["env"])
    cache2 = ctx["top"] / "cache-store-sign"
    run(["nix", "copy", "--to", f"file://{cache2}", ctx["path"]], ctx["env"])
    f2 = str(narinfo_of(cache2, ctx["path"]))
    assert "Sig: nix-store-sign-1:" in Path(f2).read_text()
    run([ctx["trove"], "narinfo", "verify", "--key", k2_pk.read_text().strip(), f2], ctx["env"])

    # And the other way: Nix signs with a trove-generated key, trove verifies.
    t_sk, t_pub = trove_keypair(ctx, "trove-for-nix-1")
    run(["nix", "store", "sign", "--key-file", str(t_sk), ctx["dep"]], ctx["env"])
    cache3 = ctx["top"] / "cache-nix-with-trove-key"
    run(["nix", "copy", "--to", f"file://{cache3}", ctx["dep"]], ctx["env"])
    run([ctx["trove"], "narinfo", "verify", "--key", t_pub, str(narinfo_of(cache3, ctx["dep"]))], ctx["env"])


def test_cli_refuses_bad_input(ctx):
    trove, env = ctx["trove"], ctx["env"]
    bad = ctx["top"] / "bad.narinfo"
    bad.write_text("StorePath: /nix/store/x\n")
    p = run([trove, "narinfo", "fingerprint", str(bad)], env, check=False)
    assert p.returncode == 1 and "line 1: StorePath" in p.stderr, p.stderr
    p = run([trove, "narinfo", "verify", "--key", "nokey", str(bad)], env, check=False)
    assert p.returncode == 2
    p = run([trove, "key", "generate", "a:b"], env, check=False)
    assert p.returncode == 2
    # A secret key whose public half does not belong to its seed.
    sk, _ = trove_keypair(ctx, "mismatch")
    _, pub2 = trove_keypair(ctx, "mismatch2")
    import base64
    name, b = sk.read_text().split(":")
    raw = base64.b64decode(b)[:32] + base64.b64decode(pub2.split(":")[1])
    forged = ctx["top"] / "forged.sec"
    forged.write_text(name + ":" + base64.b64encode(raw).decode())
    p = run([trove, "key", "public", str(forged)], env, check=False)
    assert p.returncode == 1 and "not a valid secret key" in p.stderr, p.stderr
