/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-nar_reader: the strict NAR reader must
 *  - never crash or allocate without bound, whatever the input;
 *  - give the same result (accept, or the same error message at the same
 *    offset) and the same events whether the input comes whole, byte by
 *    byte, or in slices whose sizes derive from the first byte;
 *  - only accept what re-encodes to exactly the input bytes;
 *  - refuse everything under reject/.
 * Each pass drives an encoder through nar_reencode_callbacks; its sink
 * compares every byte with the input as it is produced. Any violation
 * aborts.
 */
#include <stdio.h>

#include "fuzz.h"
#include "trove/nar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct pass {
        const uint8_t *input;
        size_t size;
        uint64_t produced;
        bool mismatch;
};

static int compare_sink(void *ud, const void *p, size_t n) {
        struct pass *ps = ud;
        if (ps->produced + n > ps->size || memcmp(ps->input + ps->produced, p, n) != 0) {
                ps->mismatch = true;
                return -EPROTO;
        }
        ps->produced += n;
        return 0;
}

struct outcome {
        int rc;
        uint64_t encoded; /* bytes the encoder produced (its offset) */
        uint64_t offset;  /* reader offset at the end */
        char msg[512];
};

static struct nar_encoder enc;

/* slice(i) gives the size of the i-th slice; 0 means all at once. */
static void run_pass(const uint8_t *data, size_t size, size_t a, size_t b, struct outcome *o) {
        struct nar_reader *r = NULL;
        struct pass ps = { .input = data, .size = size };
        size_t pos = 0, i = 0;
        int rc = 0;

        nar_encoder_init(&enc, compare_sink, &ps);
        if (nar_reader_new(&nar_reencode_callbacks, &enc, &r) < 0)
                abort();
        while (pos < size) {
                size_t k = a == 0 ? size : (i++ % 2 ? b : a);
                if (k > size - pos)
                        k = size - pos;
                rc = nar_reader_feed(r, data + pos, k);
                pos += k;
                if (rc < 0)
                        break;
                if (rc == 1 && pos < size) {
                        /* complete early: the rest must be refused */
                        rc = nar_reader_feed(r, data + pos, size - pos);
                        if (rc != -EBADMSG)
                                abort();
                        break;
                }
        }
        if (rc >= 0) {
                int f = nar_reader_finish(r);
                if (f == 0 && rc != 1)
                        abort();
                rc = f == 0 ? 1 : f;
        }
        if (rc == 1) {
                if (nar_encoder_finish(&enc) < 0)
                        abort(); /* accepted, yet not a complete archive */
                if (ps.mismatch || ps.produced != size)
                        abort(); /* accepted, yet re-encodes differently */
                if (nar_reader_offset(r) != size)
                        abort();
        } else if (rc != -EBADMSG) {
                /* the encoder refused an event the reader let through,
                 * or produced different bytes */
                fprintf(stderr, "rc=%d mismatch=%d: %s\n", rc, ps.mismatch, nar_reader_error(r));
                abort();
        }
        if (rc < 0 && strncmp(nar_reader_error(r), "at NAR offset ", 14) != 0)
                abort();
        o->rc = rc;
        o->encoded = enc.offset;
        o->offset = nar_reader_offset(r);
        snprintf(o->msg, sizeof o->msg, "%s", rc < 0 ? nar_reader_error(r) : "");
        nar_reader_free(r);
}

static void same(const struct outcome *x, const struct outcome *y) {
        if (x->rc != y->rc || x->encoded != y->encoded || strcmp(x->msg, y->msg) != 0) {
                fprintf(stderr, "slicing changed the result: %d \"%s\" vs %d \"%s\"\n", x->rc,
                        x->msg, y->rc, y->msg);
                abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct outcome whole, sliced;
        uint8_t first = size > 0 ? data[0] : 0;
        /* Slice sizes from the first byte (and the length, so that valid
         * archives, which all start with the same byte, vary too). */
        size_t a = 1 + first % 17;
        size_t b = 1 + ((size_t) first * 7 + size) % 251;

        run_pass(data, size, 0, 0, &whole);
        run_pass(data, size, 1, 1, &sliced);
        same(&whole, &sliced);
        run_pass(data, size, a, b, &sliced);
        same(&whole, &sliced);
        run_pass(data, size, b, a, &sliced);
        same(&whole, &sliced);
        if (whole.rc == 1 && fuzz_must_reject())
                abort();
        return 0;
}
