/* SPDX-License-Identifier: Apache-2.0 */
/*
 * storepath.h - store paths: <storedir>/<32 nix32 chars>-<name>.
 *
 * Name rules are Nix's: 1..211 characters from [A-Za-z0-9+-._?=], not
 * starting with '.'. The store directory is a parameter (default
 * /nix/store); it must be absolute, without trailing slash.
 */
#pragma once

#include "trove/common.h"

#define STORE_DIR_DEFAULT "/nix/store"
#define STOREPATH_HASH_LEN 32
#define STOREPATH_NAME_MAX 211
/* Longest base name: hash + '-' + name. */
#define STOREPATH_BASENAME_MAX (STOREPATH_HASH_LEN + 1 + STOREPATH_NAME_MAX)

struct storepath {
        char hash[STOREPATH_HASH_LEN + 1];
        char name[STOREPATH_NAME_MAX + 1];
};

int storepath_check_name(const char *name, size_t len);
/* True for 32 nix32 characters. */
bool storepath_is_hash_part(const char *s, size_t len);
/* Parses "<hash>-<name>" (no directory). */
int storepath_parse_basename(const char *s, size_t len, struct storepath *ret);
/* Parses a full path "<store_dir>/<hash>-<name>" (store_dir NULL means
 * STORE_DIR_DEFAULT). Trailing slashes after the base name are accepted, as
 * Nix does; anything else that is not exactly that shape ("..", ".", "//",
 * further components, another directory) is -EINVAL. */
int storepath_parse(const char *store_dir, const char *path, struct storepath *ret);

/* A store directory a cache may declare: absolute, at most STOREDIR_MAX
 * bytes of printable ASCII, no empty, "." or ".." component, no trailing
 * slash (except "/" alone, which Nix does not use and is refused too). */
#define STOREDIR_MAX 256
bool storepath_dir_valid(const char *dir);
