/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Range header parsing. The whole header is checked for syntax before
 * anything is compared with the size, so a malformed header is -EINVAL
 * whatever the size, and only a well-formed one can be -ERANGE.
 */
#include "trove/httprange.h"

/* Reads a run of decimal digits at *p. 1 with the value, 0 if there are no
 * digits, -EINVAL if the value does not fit in 64 bits. */
static int httprange_number(const char **p, uint64_t *ret) {
        const char *s = *p;
        uint64_t v = 0;

        if (*s < '0' || *s > '9')
                return 0;
        for (; *s >= '0' && *s <= '9'; s++)
                if (MUL_OVERFLOW(v, 10, &v) || ADD_OVERFLOW(v, (uint64_t) (*s - '0'), &v))
                        return -EINVAL;
        *p = s;
        *ret = v;
        return 1;
}

int httprange_parse(const char *header, uint64_t size, uint64_t *ret_start, uint64_t *ret_end) {
        uint64_t a = 0, b = 0;
        const char *p;
        int has_a, has_b;

        if (!header || strnlen(header, HTTPRANGE_HEADER_MAX + 1) > HTTPRANGE_HEADER_MAX)
                return -EINVAL;
        if (!startswith(header, "bytes="))
                return -EINVAL;
        p = header + 6;
        has_a = httprange_number(&p, &a);
        if (has_a < 0)
                return has_a;
        if (*p != '-')
                return -EINVAL;
        p++;
        has_b = httprange_number(&p, &b);
        if (has_b < 0)
                return has_b;
        if (*p != 0) /* trailing bytes, whitespace, or a second range */
                return -EINVAL;
        if (!has_a && !has_b)
                return -EINVAL;

        if (!has_a) {
                /* Suffix: the last b bytes. */
                if (b == 0 || size == 0)
                        return -ERANGE;
                a = b >= size ? 0 : size - b;
                b = size - 1;
        } else {
                if (a >= size || (has_b && a > b))
                        return -ERANGE;
                if (!has_b || b >= size)
                        b = size - 1;
        }
        *ret_start = a;
        *ret_end = b;
        return 0;
}
