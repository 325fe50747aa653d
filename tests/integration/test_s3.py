# SPDX-License-Identifier: Apache-2.0
"""The S3 chunk store (lib/chunkstore.c + lib/s3.c) against a real Ceph
radosgw on loopback, started by ceph-s3.sh, driven through the
chunkstore-tool test program. The bucket is checked independently with
curl's own SigV4 signing."""

import hashlib
import os
import subprocess
import time
import urllib.parse
import xml.etree.ElementTree as ET


import trovetest


def tool_env(radosgw):
    return dict(os.environ, AWS_ACCESS_KEY_ID=radosgw["S3_ACCESS_KEY"],
                AWS_SECRET_ACCESS_KEY=radosgw["S3_SECRET_KEY"])


def spec(radosgw, bucket, prefix="", create=True, endpoint=None, attempts=None):
    q = {"endpoint": endpoint or radosgw["S3_ENDPOINT"], "region": radosgw["S3_REGION"]}
    if attempts:
        q["attempts"] = str(attempts)
    if prefix:
        q["prefix"] = prefix
    if create:
        q["create"] = "1"
    return f"s3://{bucket}?" + urllib.parse.urlencode(q)


def tool(radosgw, store, *args, expect=0, timeout=120):
    return trovetest.run([trovetest.binary("tests/integration/chunkstore-tool"), store,
                          *[str(a) for a in args]],
                         env=tool_env(radosgw), expect=expect, timeout=timeout)


def curl_s3(radosgw, path, *extra, payload_sha=None, expect_status=200):
    """An independent S3 request: curl's own SigV4 signing."""
    sha = payload_sha or hashlib.sha256(b"").hexdigest()
    proc = trovetest.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}",
         "--aws-sigv4", f"aws:amz:{radosgw['S3_REGION']}:s3",
         "--user", f"{radosgw['S3_ACCESS_KEY']}:{radosgw['S3_SECRET_KEY']}",
         "-H", f"x-amz-content-sha256: {sha}", *extra,
         radosgw["S3_ENDPOINT"] + path])
    body, _, status = proc.stdout.rpartition(b"\n")
    assert int(status) == expect_status, body.decode(errors="replace")
    return body


def bucket_keys(radosgw, bucket):
    """{key: size} of everything in the bucket, listed with curl (one page
    is enough for these tests)."""
    body = curl_s3(radosgw, f"/{bucket}?list-type=2")
    ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
    root = ET.fromstring(body)
    assert root.findtext("s3:IsTruncated", namespaces=ns) == "false"
    return {c.findtext("s3:Key", namespaces=ns): int(c.findtext("s3:Size", namespaces=ns))
            for c in root.findall("s3:Contents", ns)}


def make_chunks(workdir, n, size=40000):
    out = []
    for i in range(n):
        data = (f"chunk {i} ".encode() * (size // 8))[:size] + os.urandom(256)
        p = workdir / f"chunk{i}"
        p.write_bytes(data)
        out.append((p, data, hashlib.sha256(data).hexdigest()))
    return out


def test_roundtrip(radosgw, bucket, workdir):
    store = spec(radosgw, bucket, prefix="cache1/")
    chunks = make_chunks(workdir, 5)
    for path, data, digest in chunks:
        out = tool(radosgw, store, "put", path).stdout.decode().strip()
        assert out == digest
    # Write-once: putting again is refused (exit 4, -EEXIST), nothing changes.
    r = tool(radosgw, store, "put", chunks[0][0], expect=4)
    assert b"File exists" in r.stderr

    for path, data, digest in chunks:
        assert tool(radosgw, store, "get", digest).stdout == data
        size = int(tool(radosgw, store, "exists", digest).stdout)
        frame = tool(radosgw, store, "get-frame", digest).stdout
        assert size == len(frame) and frame[:4] == b"\x28\xb5\x2f\xfd"  # zstd magic

    # Visible in the bucket under the documented keys, seen by another client.
    keys = bucket_keys(radosgw, bucket)
    want = {f"cache1/chunks/{d[:2]}/{d}" for _, _, d in chunks}
    assert set(keys) == want
    listed = dict(line.split() for line in
                  tool(radosgw, store, "list").stdout.decode().splitlines())
    assert set(listed) == {d for _, _, d in chunks}
    for _, _, d in chunks:
        assert int(listed[d]) == keys[f"cache1/chunks/{d[:2]}/{d}"]

    # Delete, and it is gone for both clients; a second delete is fine.
    gone = chunks[1][2]
    tool(radosgw, store, "delete", gone)
    tool(radosgw, store, "delete", gone)
    tool(radosgw, store, "exists", gone, expect=1)
    r = tool(radosgw, store, "get", gone, expect=3)
    assert b"No such file" in r.stderr
    assert f"cache1/chunks/{gone[:2]}/{gone}" not in bucket_keys(radosgw, bucket)


def test_list_pages(radosgw, bucket, workdir):
    """More objects than one ListObjectsV2 page (1000) are all listed, and
    foreign keys in the bucket are skipped."""
    store = spec(radosgw, bucket)
    tool(radosgw, store, "list")  # creates the bucket
    ids = set()
    # Upload 1100 tiny valid frames directly (fast, keep-alive in curl).
    frame = trovetest.run(["zstd", "-q", "-c", "--content-size"], input=b"").stdout
    body = workdir / "frame"
    body.write_bytes(frame)
    digest = hashlib.sha256(frame).hexdigest()
    urls = []
    for i in range(1100):
        fake = hashlib.sha256(f"id{i}".encode()).hexdigest()
        ids.add(fake)
        urls += ["-T", str(body), radosgw["S3_ENDPOINT"] + f"/{bucket}/chunks/{fake[:2]}/{fake}"]
    trovetest.run(["curl", "-sS", "-f", "--aws-sigv4", f"aws:amz:{radosgw['S3_REGION']}:s3",
                   "--user", f"{radosgw['S3_ACCESS_KEY']}:{radosgw['S3_SECRET_KEY']}",
                   "-H", f"x-amz-content-sha256: {digest}", *urls], timeout=600)
    for junk in ["chunks/zz/notachunk", "other/file", f"chunks/00/{digest}"]:
        curl_s3(radosgw, f"/{bucket}/{junk}", "-T", str(body), payload_sha=digest)
    lines = tool(radosgw, store, "list").stdout.decode().splitlines()
    got = {line.split()[0] for line in lines}
    assert len(lines) == 1100
    assert got == ids


def test_write_once(radosgw, bucket, workdir):
    """A chunk stored as frame A (zstd level 1) is not replaced by frame B
    (level 19) of the same content: the second put is refused with -EEXIST
    (radosgw answers If-None-Match: * with 412) and the object is still A,
    as seen by another client."""
    store = spec(radosgw, bucket, prefix="wo/")
    ((path, data, digest),) = make_chunks(workdir, 1, size=200000)
    key = f"/{bucket}/wo/chunks/{digest[:2]}/{digest}"

    assert tool(radosgw, store, "put", path, 1).stdout.decode().strip() == digest
    frame_a = curl_s3(radosgw, key)
    r = tool(radosgw, store, "put", path, 19, expect=4)
    assert b"File exists" in r.stderr
    assert curl_s3(radosgw, key) == frame_a
    assert tool(radosgw, store, "get-frame", digest).stdout == frame_a
    assert tool(radosgw, store, "get", digest).stdout == data

    # The level-19 frame really is another frame: stored under a fresh id
    # space it differs from A, so the check above could have failed.
    other = spec(radosgw, bucket, prefix="wo-b/")
    tool(radosgw, other, "put", path, 19)
    assert tool(radosgw, other, "get-frame", digest).stdout != frame_a

    # Racing puts of different frames: exactly one stores, the rest get -EEXIST.
    race = spec(radosgw, bucket, prefix="wo-race/")
    procs = [subprocess.Popen([str(trovetest.binary("tests/integration/chunkstore-tool")),
                               race, "put", str(path), str(level)], env=tool_env(radosgw),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for level in (1, 3, 9, 19, 1, 3, 9, 19)]
    codes = [p.wait(timeout=120) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(codes) == [0] + [4] * 7, codes
    assert tool(radosgw, race, "get", digest).stdout == data


def test_presigned_url(radosgw, bucket, workdir):
    store = spec(radosgw, bucket)
    ((path, data, digest),) = make_chunks(workdir, 1)
    tool(radosgw, store, "put", path)
    frame = tool(radosgw, store, "get-frame", digest).stdout
    url = tool(radosgw, store, "presign", digest, 300).stdout.decode().strip()

    # Without any credentials, curl fetches exactly the stored frame.
    ok = trovetest.run(["curl", "-sS", "-f", url])
    assert ok.stdout == frame

    def status(u):
        p = trovetest.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", u])
        return int(p.stdout)

    # Tampering with anything signed is refused.
    other = hashlib.sha256(b"other").hexdigest()
    assert status(url.replace(digest, other)) == 403
    sig = url.rsplit("X-Amz-Signature=", 1)[1]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    assert status(url.replace(sig, flipped)) == 403
    assert status(url.replace("X-Amz-Expires=300", "X-Amz-Expires=3000")) == 403

    # An expired URL is refused too.
    short = tool(radosgw, store, "presign", digest, 1).stdout.decode().strip()
    time.sleep(2.5)
    assert status(short) == 403


def test_wrong_credentials(radosgw, bucket, workdir):
    store = spec(radosgw, bucket)
    tool(radosgw, store, "list")
    env = dict(tool_env(radosgw), AWS_SECRET_ACCESS_KEY="wrong" * 8)
    t0 = time.monotonic()
    r = trovetest.run([trovetest.binary("tests/integration/chunkstore-tool"),
                       spec(radosgw, bucket, create=False), "list"], env=env, expect=3)
    assert b"Permission denied" in r.stderr
    assert time.monotonic() - t0 < 5  # a 403 is not retried


def test_dead_endpoint(radosgw, bucket, workdir):
    """Nobody listens: the store gives up after its bounded retries, quickly,
    saying why."""
    port = trovetest.free_tcp_port()
    store = spec(radosgw, bucket, create=False, endpoint=f"http://127.0.0.1:{port}")
    ((path, _, digest),) = make_chunks(workdir, 1)
    for args in (["put", path], ["get", digest], ["exists", digest], ["list"]):
        t0 = time.monotonic()
        r = tool(radosgw, store, *args, expect=3, timeout=60)
        elapsed = time.monotonic() - t0
        assert b"Connection refused" in r.stderr, r.stderr
        assert elapsed < 20, f"{args}: took {elapsed:.1f}s"



def test_retry_through_outage(radosgw, bucket, workdir):
    """radosgw goes away and comes back while a read is retrying: the read
    succeeds once it is back (connection refused is retried with backoff),
    and the store's pooled connections recover."""
    store = spec(radosgw, bucket, attempts=30)
    ((path, data, digest),) = make_chunks(workdir, 1)
    tool(radosgw, store, "put", path)
    radosgw.ctl("stop-rgw", timeout=60)
    try:
        reader = subprocess.Popen(
            [str(trovetest.binary("tests/integration/chunkstore-tool")), store, "get", digest],
            env=tool_env(radosgw), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0)
        assert reader.poll() is None, "gave up while the endpoint was down"
    finally:
        radosgw.ctl("start-rgw", timeout=180)
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err.decode(errors="replace")
    assert out == data
