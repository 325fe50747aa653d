/* SPDX-License-Identifier: Apache-2.0 */
/*
 * narinfo.h - the .narinfo document of Nix binary caches: parse, render,
 * fingerprint, sign, verify.
 *
 * Fields: StorePath, URL, Compression, FileHash, FileSize, NarHash, NarSize,
 * References (base names, space-separated, may be empty), Deriver (base
 * name), System, Sig (repeatable), CA. Rendering writes them in the order Nix
 * does. Hashes are held as text as received (NarHash is normalised to
 * "sha256:<nix32>" by the parser). A struct narinfo owns all its strings.
 */
#pragma once

#include "trove/common.h"
#include "trove/hash.h"
#include "trove/signing.h"

#define NARINFO_MAX_SIZE (4u * 1024 * 1024)
#define NARINFO_REFS_MAX 65536
#define NARINFO_SIGS_MAX 64

struct narinfo {
        char *store_path;      /* full path, e.g. /nix/store/<hash>-name */
        char *url;             /* may be NULL */
        char *compression;     /* may be NULL */
        char *file_hash;       /* may be NULL */
        uint64_t file_size;    /* 0 = absent */
        uint8_t nar_hash[SHA256_DIGEST_LEN];
        uint64_t nar_size;
        char **references;     /* base names, sorted as given */
        size_t n_references;
        char *deriver;         /* base name or NULL */
        char *system;          /* may be NULL */
        char **sigs;
        size_t n_sigs;
        char *ca;              /* may be NULL */
};

void narinfo_free(struct narinfo *ni); /* frees members, not ni itself */
/* Parses text (need not be NUL-terminated); store_dir checks StorePath,
 * References and Deriver. Unknown keys are ignored, as Nix does. */
int narinfo_parse(const char *text, size_t len, const char *store_dir, struct narinfo *ret,
                  struct trove_error *err);
/* Renders as Nix writes it; returns a heap string. */
int narinfo_render(const struct narinfo *ni, char **ret);
/* "1;<storePath>;<narHash sha256:nix32>;<narSize>;<sorted full ref paths>" */
int narinfo_fingerprint(const struct narinfo *ni, const char *store_dir, char **ret);
/* Appends a signature made with s (replacing one with the same key name). */
int narinfo_sign(struct narinfo *ni, const char *store_dir, const struct signing_secret *s);
/* Number of signatures that verify against keys (>=0), or negative errno. */
int narinfo_verify(const struct narinfo *ni, const char *store_dir, const struct signing_public *keys,
                   size_t n_keys);
