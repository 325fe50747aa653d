/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util.h - small parsers and file-system helpers the three programs share:
 * sizes and durations as users write them on command lines and in config
 * files, cache names, and directory creation.
 */
#pragma once

#include <sys/types.h>

#include "trove/common.h"

/* "65536", "64K", "64KiB", "1M", "10G", "2TB": bytes, suffixes are powers of
 * 1024 (K, M, G, T, optionally followed by "iB" or "B"). -EINVAL for bad
 * text, -ERANGE on overflow. */
int parse_size(const char *s, uint64_t *ret);

/* "3600", "3600s", "15m", "12h", "30d", "2w", "1y": seconds. */
int parse_duration(const char *s, int64_t *ret);

/* Cache names: 1..64 characters of [A-Za-z0-9._-], not starting with '.'
 * or '-' (so never "." or ".." or anything a path could be built from). */
#define CACHE_NAME_MAX 64
bool cache_name_valid(const char *s, size_t n);

/* Reads a small text file (path NULL or "-": standard input) into out
 * (capacity cap, NUL-terminated), without trailing whitespace. -EFBIG if it
 * does not fit, -EINVAL if it holds a NUL byte. For keys and tokens: the
 * read buffer is wiped. */
int read_text_file(const char *path, char *out, size_t cap, size_t *ret_len);

/* How many values a JSON text holds at most (arrays, objects and their
 * elements, counted from '[', '{' and ',' outside strings): checked before
 * parsing untrusted JSON, so that a small text of "[[],[],...]" cannot make
 * the parser allocate many times its size. */
size_t json_value_count(const char *p, size_t n);

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t monotonic_ms(void);

/* mkdir -p: creates path and its missing parents with mode. */
int mkdir_parents(const char *path, mode_t mode);
