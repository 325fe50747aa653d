/* SPDX-License-Identifier: Apache-2.0 */
/*
 * manifest.h - the per-store-path document trovefs fetches in one request:
 * the narinfo fields, the NAR listing, and the chunk table. Format in
 * docs/manifest.md.
 *
 * The chunk table covers the NAR exactly: chunk i starts at the end of chunk
 * i-1, the first at 0, the last ends at nar_size. A decoded manifest has
 * passed manifest_validate(). A struct manifest owns everything in it.
 *
 * Signatures. troved signs the encoded bytes of a manifest with the cache's
 * ed25519 key and sends the signature in the MANIFEST_SIG_HEADER response
 * header, so a client that knows the cache's public key can refuse a
 * manifest that anything between it and the server has changed. The
 * signature is detached: it covers MANIFEST_SIG_DOMAIN followed by the
 * exact body bytes (not a re-encoding), so verification needs no parsing
 * of untrusted JSON. Keys and signature text are in Nix's "name:base64"
 * form (include/trove/signing.h).
 */
#pragma once

#include "trove/common.h"
#include "trove/hash.h"
#include "trove/listing.h"
#include "trove/narinfo.h"
#include "trove/signing.h"

#define MANIFEST_MAX_SIZE (256u * 1024 * 1024)
#define MANIFEST_CHUNKS_MAX (4u * 1024 * 1024)

#define MANIFEST_SIG_HEADER "Trove-Manifest-Signature"
/* What is signed: this prefix, then the body bytes. The prefix keeps a
 * manifest signature from ever being valid as a signature of anything else
 * the same key signs (narinfo fingerprints start with "1;"). */
#define MANIFEST_SIG_DOMAIN "trove-manifest-1\n"
/* Longest signature text, with NUL. */
#define MANIFEST_SIG_TEXT_MAX SIGNING_SIG_TEXT_MAX
/* The header holds one signature, or, while the cache rotates its signing
 * key, two (the new key's first), separated by one space. Longest header
 * value, with NUL. */
#define MANIFEST_SIGS_MAX 2
#define MANIFEST_SIG_HEADER_MAX (MANIFEST_SIGS_MAX * MANIFEST_SIG_TEXT_MAX)

struct manifest_chunk {
        uint64_t nar_offset;
        uint32_t length;        /* uncompressed */
        uint32_t stored_size;   /* bytes of its zstd frame (of its delta object if has_base) */
        uint8_t id[SHA256_DIGEST_LEN];
        /* Version 2: the chunk is stored as a delta against this chunk
         * (include/trove/chunkcodec.h), which is never itself a delta. */
        bool has_base;
        uint32_t base_length;
        uint8_t base[SHA256_DIGEST_LEN];
};

/* The manifest versions this library reads; it writes 1 unless a chunk
 * has a base. */
#define MANIFEST_VERSION_MAX 2

struct manifest {
        struct narinfo info;    /* StorePath, NarHash, NarSize, References, Deriver, Sigs, CA */
        struct listing listing;
        struct manifest_chunk *chunks;
        size_t n_chunks;
};

void manifest_free(struct manifest *m); /* members only */
/* Structural checks: chunk table contiguous and covering nar_size, lengths
 * in 1..CHUNK_SIZE_MAX, listing offsets inside the NAR. */
int manifest_validate(const struct manifest *m, struct trove_error *err);
int manifest_encode(const struct manifest *m, char **ret, size_t *ret_len);
int manifest_decode(const char *text, size_t len, const char *store_dir, struct manifest *ret,
                    struct trove_error *err);
/* Index of the chunk holding NAR offset off (binary search), or -ERANGE. */
int manifest_find_chunk(const struct manifest *m, uint64_t off, size_t *ret);

/* Signs body[0..len) with key: writes "<key name>:<base64 signature>" to
 * out. -ENOMEM, or -EIO if libsodium cannot be initialised. */
int manifest_sign(const char *body, size_t len, const struct signing_secret *key,
                  char out[MANIFEST_SIG_TEXT_MAX]);
/* 0 if sig (the header's value: 1..MANIFEST_SIGS_MAX signature texts
 * separated by single spaces, NUL-terminated) holds a valid signature of
 * body[0..len) by one of keys[0..n_keys) with the same name; -EKEYREJECTED
 * if it is well-formed but no key verifies any of them (unknown key name,
 * wrong key, changed body, or n_keys == 0); -EBADMSG if sig is NULL, empty,
 * has too many signatures or one that is not signature text; -ENOMEM. */
int manifest_verify(const char *body, size_t len, const char *sig,
                    const struct signing_public *keys, size_t n_keys);
