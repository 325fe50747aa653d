/* SPDX-License-Identifier: Apache-2.0 */
/*
 * buf.h - a growable byte buffer with a hard maximum.
 *
 * Every buffer that grows with input states how large it may get; an append
 * past the maximum fails with -E2BIG and leaves the buffer as it was. The
 * data is always NUL-terminated one past len (not counted), so text can be
 * used as a C string. The buffer owns data; buf_free() releases it.
 */
#pragma once

#include "trove/common.h"

struct buf {
        uint8_t *data;
        size_t len;
        size_t cap;
        size_t max;
};

#define BUF_INIT(maximum) ((struct buf){ .max = (maximum) })

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) _printf_(2, 3);
/* Hands the data over as a NUL-terminated heap string (never NULL on
 * success) and leaves the buffer empty. */
int buf_steal(struct buf *b, char **ret, size_t *ret_len);
