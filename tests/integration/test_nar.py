# SPDX-License-Identifier: Apache-2.0
"""trove's NAR tools against the real Nix, on every store path of the test
closure (closure.nix): `trove nar dump` is byte-identical to `nix-store
--dump`, `trove hash` prints what `nix-store -q --hash` prints, `trove nar
ls` equals the .ls listing `nix copy` writes, and malformed NARs are
refused with exit status 1 and the offset of the fault."""

import hashlib
import json
import re

import pytest

import trovetest
from trovetest import trove

# Every store path of the closure, by short name (test_closure_is_covered
# checks this is all of `nix-store -qR`).
NAMES = ["file", "link", "empty", "big", "tree", "top"]


def test_closure_is_covered(test_closure):
    assert sorted(test_closure.by_name) == sorted(NAMES)
    assert sorted(test_closure.by_name.values()) == sorted(test_closure.paths)


@pytest.mark.parametrize("name", NAMES)
def test_dump_is_byte_identical_to_nix(test_closure, name):
    path = test_closure[name]
    nix = trovetest.nix_dump_sha256(path)
    ours = trovetest.stream_sha256([trovetest.binary("trove"), "nar", "dump", path])
    assert ours == nix, f"trove nar dump {path}: (sha256, size) {ours}, nix-store --dump {nix}"


@pytest.mark.parametrize("name", NAMES)
def test_hash_matches_nix(test_closure, nix_file_cache, name):
    path = test_closure[name]
    nar = nix_file_cache[path]["nar"]
    want = trovetest.nix_path_hash(path)
    assert want == nix_file_cache[path]["narinfo"]["NarHash"]
    # From a file, from a redirected file, and from a pipe.
    assert trove("hash", nar, text=True).stdout.strip() == want
    assert trove("hash", "-", stdin=nar, text=True).stdout.strip() == want
    piped = trovetest.pipeline(["nix-store", "--dump", path],
                               [trovetest.binary("trove"), "hash", "-"])
    assert piped.strip() == want


@pytest.mark.parametrize("name", NAMES)
def test_listing_matches_nix(test_closure, nix_file_cache, name):
    path = test_closure[name]
    nar = nix_file_cache[path]["nar"]
    want = json.loads(nix_file_cache[path]["ls"].read_bytes())
    got = trove("nar", "ls", nar).stdout
    assert json.loads(got) == want
    assert json.loads(trove("nar", "ls", "-", stdin=nar).stdout) == want


def test_dump_then_hash_through_a_pipe(test_closure):
    # What `trove push` will do: dump and hash in one stream.
    path = test_closure["tree"]
    got = trovetest.pipeline([trovetest.binary("trove"), "nar", "dump", path],
                             [trovetest.binary("trove"), "hash", "-"])
    assert got.strip() == trovetest.nix_path_hash(path)


@pytest.mark.parametrize("name", ["file", "tree", "big"])
def test_chunks_cover_the_nar(test_closure, nix_file_cache, name):
    # trove nar chunks: "<nar offset> <length> <sha256 hex> <stored size>"
    # per chunk. The chunks must tile the NAR exactly, each id must be the
    # SHA-256 of its bytes, and sizes stay within the FastCDC bounds
    # (16 KiB..256 KiB by default; only the last chunk may be shorter).
    nar = nix_file_cache[test_closure[name]]["nar"]
    size = nar.stat().st_size
    lines = trove("nar", "chunks", nar, text=True).stdout.splitlines()
    assert lines, "no chunks"
    chunks = [tuple(line.split()) for line in lines]
    pos = 0
    with open(nar, "rb") as f:
        for i, (off, length, cid, stored) in enumerate(chunks):
            off, length, stored = int(off), int(length), int(stored)
            assert off == pos, f"chunk {i} starts at {off}, previous ended at {pos}"
            assert length <= 256 * 1024
            if i < len(chunks) - 1:
                assert length >= 16 * 1024, f"chunk {i} of {length} bytes is not the last"
            assert stored > 0
            assert hashlib.sha256(f.read(length)).hexdigest() == cid, f"chunk {i} id"
            pos += length
    assert pos == size
    if size < 16 * 1024:
        assert len(chunks) == 1
    # The same cuts whether the NAR comes from a file or a pipe.
    assert trove("nar", "chunks", "-", stdin=nar, text=True).stdout.splitlines() == lines


# ---- malformed NARs ----

OFFSET_RE = re.compile(r"offset\s*[:=]?\s*(\d+)", re.IGNORECASE)


# Every malformed-NAR test runs once per command that reads NARs.
READERS = pytest.mark.parametrize("cmd", [("hash",), ("nar", "ls"), ("nar", "chunks")],
                                  ids=["hash", "nar-ls", "nar-chunks"])


def _refused_at(cmd, nar_file, check_offset, what):
    """trove CMD must exit 1 and name an offset on stderr that satisfies
    check_offset. hash and ls print nothing for a bad NAR; chunks streams
    its table and may have printed the chunks before the fault."""
    r = trove(*cmd, nar_file, expect=None, text=True)
    label = f"trove {' '.join(cmd)} on {what}"
    assert r.returncode == 1, f"{label}: exit status {r.returncode}, stderr {r.stderr!r}"
    if cmd != ("nar", "chunks"):
        assert r.stdout == "", f"{label}: printed {r.stdout[:200]!r} for a bad NAR"
    m = OFFSET_RE.search(r.stderr)
    assert m, f"{label}: message names no offset: {r.stderr!r}"
    off = int(m.group(1))
    assert check_offset(off), f"{label}: offset {off} is not where the fault is: {r.stderr!r}"


@pytest.fixture(scope="module")
def small_nar(test_closure, nix_file_cache):
    return nix_file_cache[test_closure["file"]]["nar"].read_bytes()


@pytest.fixture(scope="module")
def tree_nar(test_closure, nix_file_cache):
    return nix_file_cache[test_closure["tree"]]["nar"].read_bytes()


@pytest.fixture(scope="module")
def tree_listing(test_closure, nix_file_cache):
    return json.loads(nix_file_cache[test_closure["tree"]]["ls"].read_bytes())


@READERS
def test_truncated_nar_is_refused(cmd, small_nar, tree_nar, tree_listing, workdir):
    big_file = tree_listing["root"]["entries"]["sizes"]["entries"]["f70001"]
    cuts = [("file", small_nar, k) for k in
            (0, 1, 7, 8, 20, 24, 40, 72, 95, 96, 100, 108, 112, 120, len(small_nar) - 1)]
    cuts += [("tree", tree_nar, k) for k in
             (len(tree_nar) // 3, big_file["narOffset"] + 1000, len(tree_nar) - 8,
              len(tree_nar) - 1)]
    for i, (what, nar, k) in enumerate(cuts):
        f = workdir / f"cut{i}.nar"
        f.write_bytes(nar[:k])
        # The fault is the end of input: reported at or before it.
        _refused_at(cmd, f, lambda off, k=k: off <= k, f"{what} NAR cut at {k} of {len(nar)}")


@READERS
def test_trailing_bytes_are_refused(cmd, small_nar, tree_nar, workdir):
    for what, nar, extra in (("file", small_nar, b"\0"), ("tree", tree_nar, b"x"),
                             ("file", small_nar, trovetest.nar_str(b")"))):
        f = workdir / "trailing.nar"
        f.write_bytes(nar + extra)
        _refused_at(cmd, f, lambda off, n=len(nar): off == n,
                    f"{what} NAR with {len(extra)} byte(s) appended")


def _entry_offset(nar, name):
    (off,) = [o for n, o, _ in trovetest.nar_entry_names(nar) if n == name]
    return off


def _replace_name(nar, name, new):
    assert len(new) == len(name)
    off = _entry_offset(nar, name)
    assert nar[off + 8:off + 8 + len(name)] == name
    return nar[:off + 8] + new + nar[off + 8 + len(name):], off


# The entry that breaks a rule: its "entry" "(" "name" tokens (48 bytes)
# start before the name string at off; the name string (<= 16 bytes here)
# ends after it. The offset must point into that entry.
def _in_entry(off):
    return lambda got: off - 48 <= got <= off + 16


@READERS
def test_unsorted_and_bad_names_are_refused(cmd, tree_nar, workdir):
    # Swap "a-b" and "a.b" (same length): the NAR stays well-formed except
    # that the second entry now sorts before the first.
    off_dash = _entry_offset(tree_nar, b"a-b")
    off_dot = _entry_offset(tree_nar, b"a.b")
    assert off_dash < off_dot
    swapped = bytearray(tree_nar)
    swapped[off_dash + 8:off_dash + 11] = b"a.b"
    swapped[off_dot + 8:off_dot + 11] = b"a-b"
    cases = [("entries out of order (a.b before a-b)", bytes(swapped), off_dot)]

    dup, off = _replace_name(tree_nar, b"a.b", b"a-b")
    cases.append(("duplicate entry name", dup, off))
    slash, off = _replace_name(tree_nar, b"a.b", b"a/b")
    cases.append(("entry name with a slash", slash, off))
    dotdot, off = _replace_name(tree_nar, b"a0", b"..")
    cases.append(("entry name ..", dotdot, off))
    nul, off = _replace_name(tree_nar, b"a0", b"a\0")
    cases.append(("entry name with NUL", nul, off))

    for i, (what, nar, off) in enumerate(cases):
        f = workdir / f"bad{i}.nar"
        f.write_bytes(nar)
        _refused_at(cmd, f, _in_entry(off), what)


@READERS
def test_nonzero_padding_is_refused(cmd, small_nar, workdir):
    # The file's 13 content bytes start at 96 (Nix's .ls says so); bytes
    # 109..111 are padding and must be zero.
    assert small_nar[96:109] == b"hello, trove\n" and small_nar[109:112] == b"\0\0\0"
    bad = bytearray(small_nar)
    bad[110] = 1
    f = workdir / "padding.nar"
    f.write_bytes(bad)
    _refused_at(cmd, f, lambda off: 88 <= off <= 112, "nonzero padding after file contents")

    # A padding byte of a token (the "nix-archive-1" magic: 13 bytes + 3).
    bad = bytearray(small_nar)
    bad[22] = 0x20
    f.write_bytes(bad)
    _refused_at(cmd, f, lambda off: off <= 24, "nonzero padding in the magic")


@READERS
def test_wrong_magic_and_garbage_are_refused(cmd, small_nar, workdir):
    f = workdir / "magic.nar"
    f.write_bytes(small_nar.replace(b"nix-archive-1", b"nix-archive-2", 1))
    _refused_at(cmd, f, lambda off: off <= 24, "wrong magic")
    f.write_bytes(b"\xff" * 64)
    _refused_at(cmd, f, lambda off: off <= 8, "a huge length field")
