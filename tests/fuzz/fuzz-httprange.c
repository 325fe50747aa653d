/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-httprange.c - httprange_parse on arbitrary header text. The first
 * eight bytes are the representation size (little-endian), the rest the
 * header. A refusal is -EINVAL or -ERANGE and writes nothing; a range that
 * is granted lies inside the representation; whether a header is malformed
 * does not depend on the size. Inputs under reject/ must be refused
 * (-EINVAL or -ERANGE).
 */
#include "fuzz.h"
#include "trove/httprange.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint64_t rep = 0, s = 17, e = 23;
        char *h;
        int r;

        if (size < 8)
                return 0;
        for (int i = 0; i < 8; i++)
                rep |= (uint64_t) data[i] << (8 * i);
        /* Small sizes are the interesting ones: fold most inputs there. */
        if (!(rep >> 63))
                rep &= 0xffff;
        data += 8;
        size -= 8;
        h = malloc(size + 1);
        if (!h)
                abort();
        memcpy(h, data, size);
        h[size] = 0;

        r = httprange_parse(h, rep, &s, &e);
        if (r < 0) {
                if ((r != -EINVAL && r != -ERANGE) || s != 17 || e != 23)
                        abort();
        } else {
                if (r != 0 || s > e || e >= rep || fuzz_must_reject())
                        abort();
                /* Only headers that fit and start with the unit are granted. */
                if (strlen(h) > HTTPRANGE_HEADER_MAX || !startswith(h, "bytes="))
                        abort();
        }
        /* Malformed does not depend on the size; well-formed is never -EINVAL
         * for one size and granted or -ERANGE for another. */
        uint64_t s2, e2;
        int r2 = httprange_parse(h, rep ^ 1, &s2, &e2);
        if ((r == -EINVAL) != (r2 == -EINVAL))
                abort();
        free(h);
        return 0;
}
