# SPDX-License-Identifier: Apache-2.0
"""A test OpenID issuer made with the openssl command line only (python's
`cryptography` module is not assumed): RSA and P-256 keys, their JWK form,
and JWTs signed by hand (RS256, ES256, and the forgeries the server must
refuse). Used by test_oidc.py and by tests/unit/data/oidc/regen."""

import base64
import hashlib
import hmac
import json
import re
import subprocess
from pathlib import Path


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _openssl(*args, input=None):
    return subprocess.run(["openssl", *map(str, args)], input=input, check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout


def gen_rsa(path, bits=2048):
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", path)
    return Path(path)


def gen_p256(path):
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    return Path(path)


def public_pem(path):
    return _openssl("pkey", "-in", path, "-pubout")


def jwk_rsa(path, kid):
    text = _openssl("pkey", "-in", path, "-noout", "-text").decode()
    mod = _openssl("rsa", "-in", path, "-noout", "-modulus").decode().strip().split("=", 1)[1]
    e = int(re.search(r"publicExponent: (\d+)", text).group(1))
    n = bytes.fromhex(mod).lstrip(b"\0")
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b64url(n), "e": b64url(e.to_bytes((e.bit_length() + 7) // 8, "big"))}


def jwk_p256(path, kid):
    der = _openssl("pkey", "-in", path, "-pubout", "-outform", "DER")
    point = der[-65:]  # SubjectPublicKeyInfo ends with the uncompressed point
    assert point[0] == 4
    return {"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
            "x": b64url(point[1:33]), "y": b64url(point[33:])}


def _der_ecdsa_to_raw(der):
    """DER SEQUENCE { INTEGER r, INTEGER s } -> 32-byte r || 32-byte s."""
    assert der[0] == 0x30
    pos = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[pos] == 0x02
        n = der[pos + 1]
        v = der[pos + 2:pos + 2 + n].lstrip(b"\0")
        out += v.rjust(32, b"\0")
        pos += 2 + n
    return out


def sign(alg, key_path, signing_input):
    sig = _openssl("dgst", "-sha256", "-sign", key_path, input=signing_input.encode())
    return _der_ecdsa_to_raw(sig) if alg == "ES256" else sig


def jwt(header, claims, key_path=None, alg=None, *, hmac_secret=None, signature=None):
    """header.payload.signature: signed with key_path (RS256/ES256), with
    an HMAC secret (HS256), or with the given raw signature bytes."""
    signing_input = b64url(json.dumps(header, separators=(",", ":"))) + "." + \
        b64url(json.dumps(claims, separators=(",", ":")))
    if signature is None:
        if hmac_secret is not None:
            signature = hmac.new(hmac_secret, signing_input.encode(), hashlib.sha256).digest()
        elif key_path is not None:
            signature = sign(alg or header["alg"], key_path, signing_input)
        else:
            signature = b""
    return signing_input + "." + b64url(signature)
