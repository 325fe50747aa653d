/* SPDX-License-Identifier: Apache-2.0 */
/*
 * narinfo.h - the .narinfo document of Nix binary caches: parse, render,
 * fingerprint, sign, verify.
 *
 * Fields: StorePath, URL, Compression, FileHash, FileSize, NarHash, NarSize,
 * References (base names, space-separated, may be empty), Deriver (base
 * name), System, Sig (repeatable), CA. Rendering writes them in the order
 * Nix 2.x does (nar-info.cc NarInfo::to_string), omitting absent optional
 * fields; References and Sig are written sorted, as Nix's sets are.
 *
 * Parsing is strict where Nix is lenient and never more permissive:
 * - at most NARINFO_MAX_SIZE bytes; every line is "Key: value\n" (the last
 *   one too), printable ASCII only, no empty lines;
 * - StorePath, URL, NarHash and NarSize (> 0) are required, as Nix requires
 *   them; every key but Sig appears at most once;
 * - numbers are decimal without sign and must fit in 64 bits;
 * - StorePath, References and Deriver are checked against store_dir with
 *   storepath.h ("unknown-deriver" means none); references must be distinct
 *   and single-space separated;
 * - NarHash and FileHash must be SHA-256 in any form hash_parse() takes and
 *   are normalised: nar_hash holds the digest, file_hash the text
 *   "sha256:<nix32>";
 * - each Sig must have the form "<key name>:<base64 of 64 bytes>"; an
 *   exact duplicate is dropped (Nix keeps a set);
 * - unknown keys are ignored (not kept), as Nix does.
 * Errors are -EINVAL (-E2BIG for size and count limits, -EOPNOTSUPP for a
 * non-SHA-256 hash) with err->msg saying which line and what.
 *
 * A struct narinfo owns all its strings (heap, freed by narinfo_free).
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
        char *url;             /* required by parse; render omits it if NULL */
        char *compression;     /* may be NULL (Nix then assumes bzip2) */
        char *file_hash;       /* "sha256:<nix32>" or NULL */
        uint64_t file_size;    /* 0 = absent */
        uint8_t nar_hash[SHA256_DIGEST_LEN];
        uint64_t nar_size;
        char **references;     /* base names, in the order given */
        size_t n_references;
        char *deriver;         /* base name or NULL */
        char *system;          /* may be NULL */
        char **sigs;           /* "<name>:<base64>" */
        size_t n_sigs;
        char *ca;              /* may be NULL */
};

void narinfo_free(struct narinfo *ni); /* frees members, not ni itself */
/* Parses text (need not be NUL-terminated); store_dir checks StorePath,
 * References and Deriver. */
int narinfo_parse(const char *text, size_t len, const char *store_dir, struct narinfo *ret,
                  struct trove_error *err);
/* Renders as Nix writes it; returns a heap string. -EINVAL if a field
 * would not survive a re-parse (missing StorePath, a newline or control
 * character in a value, a reference with a space). */
int narinfo_render(const struct narinfo *ni, char **ret);
/* "1;<storePath>;<narHash sha256:nix32>;<narSize>;<sorted full ref paths,
 * comma-joined>", what Nix signs. -EINVAL without StorePath or NarSize. */
int narinfo_fingerprint(const struct narinfo *ni, const char *store_dir, char **ret);
/* Adds a signature made with s, replacing one with the same key name. */
int narinfo_sign(struct narinfo *ni, const char *store_dir, const struct signing_secret *s);
/* Number of signatures that verify against keys (>=0), or negative errno. */
int narinfo_verify(const struct narinfo *ni, const char *store_dir, const struct signing_public *keys,
                   size_t n_keys);
