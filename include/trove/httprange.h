/* SPDX-License-Identifier: Apache-2.0 */
/*
 * httprange.h - the HTTP Range request header (RFC 9110 section 14.1.2),
 * the single-range byte forms troved serves NARs with:
 *
 *   "bytes=A-B"   bytes A..B inclusive; B past the end means to the end
 *   "bytes=A-"    from A to the end
 *   "bytes=-N"    the last N bytes (all of them when N >= size)
 *
 * A and B are decimal digits only. No whitespace anywhere, the unit is the
 * lower-case "bytes", one range only (a ',' is malformed), and the header
 * is at most HTTPRANGE_HEADER_MAX bytes.
 */
#pragma once

#include "trove/common.h"

#define HTTPRANGE_HEADER_MAX 200

/* Resolves header against a representation of size bytes into the
 * inclusive range [*ret_start, *ret_end], start <= end < size.
 *   -EINVAL  malformed (also a NULL or over-long header, or a number that
 *            does not fit in 64 bits): ignore the header or answer 400
 *   -ERANGE  well-formed but unsatisfiable: A >= size, A > B, "bytes=-0",
 *            or any range of an empty representation (answer 416) */
int httprange_parse(const char *header, uint64_t size, uint64_t *ret_start, uint64_t *ret_end);
