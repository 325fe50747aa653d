/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>

#include "trove/buf.h"

void buf_init(struct buf *b, size_t max) {
        *b = BUF_INIT(max);
}

void buf_free(struct buf *b) {
        if (!b)
                return;
        free(b->data);
        b->data = NULL;
        b->len = b->cap = 0;
}

void buf_reset(struct buf *b) {
        b->len = 0;
        if (b->data)
                b->data[0] = 0;
}

int buf_reserve(struct buf *b, size_t extra) {
        size_t need, ncap;
        uint8_t *p;

        /* need + 1 (the NUL) must not wrap either: a maximum of SIZE_MAX
         * means "no limit" and must not make the capacity wrap to 0. */
        if (ADD_OVERFLOW(b->len, extra, &need) || need > b->max || need == SIZE_MAX)
                return -E2BIG;
        if (need + 1 <= b->cap)
                return 0;
        ncap = b->cap ? b->cap : 256;
        while (ncap < need + 1) {
                if (ncap > SIZE_MAX / 2)
                        return -E2BIG;
                ncap *= 2;
        }
        if (ncap - 1 > b->max)
                ncap = b->max + 1;
        p = realloc(b->data, ncap);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->cap = ncap;
        return 0;
}

int buf_append(struct buf *b, const void *p, size_t n) {
        int r = buf_reserve(b, n);
        if (r < 0)
                return r;
        if (n > 0)
                memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = 0;
        return 0;
}

int buf_append_str(struct buf *b, const char *s) {
        return buf_append(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...) {
        va_list ap;
        int n, r;

        va_start(ap, fmt);
        n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        r = buf_reserve(b, (size_t) n);
        if (r < 0)
                return r;
        va_start(ap, fmt);
        vsnprintf((char *) b->data + b->len, (size_t) n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t) n;
        return 0;
}

int buf_steal(struct buf *b, char **ret, size_t *ret_len) {
        int r = buf_reserve(b, 0);
        if (r < 0)
                return r;
        b->data[b->len] = 0;
        if (ret_len)
                *ret_len = b->len;
        *ret = (char *) b->data;
        b->data = NULL;
        b->len = b->cap = 0;
        return 0;
}
