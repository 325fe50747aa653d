/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <sys/wait.h>

#include "test.h"
#include "trove/buf.h"
#include "trove/decompress.h"

static int sink(void *ud, const void *p, size_t n) {
        return buf_append(ud, p, n);
}

/* Compresses data with the real CLI (xz, zstd, bzip2) into a temp file. */
static void compress_with(const char *cmd, const uint8_t *data, size_t n, struct buf *out) {
        char path[] = "/tmp/trove-test-decompress-XXXXXX";
        char line[512];
        int fd = mkstemp(path);
        FILE *f;

        CHECK(fd >= 0);
        close(fd);
        snprintf(line, sizeof line, "%s > %s", cmd, path);
        f = popen(line, "w");
        CHECK(f);
        CHECK(fwrite(data, 1, n, f) == n);
        CHECK(pclose(f) == 0);
        f = fopen(path, "rb");
        CHECK(f);
        for (;;) {
                uint8_t tmp[65536];
                size_t k = fread(tmp, 1, sizeof tmp, f);
                if (!k)
                        break;
                CHECK_OK(buf_append(out, tmp, k));
        }
        fclose(f);
        unlink(path);
}

static void roundtrip(enum compression c, const char *cmd, const uint8_t *data, size_t n, size_t slice) {
        struct buf comp = BUF_INIT(64u << 20), out = BUF_INIT(64u << 20);
        struct decompressor *d;

        compress_with(cmd, data, n, &comp);
        CHECK_OK(decompressor_new(c, sink, &out, &d));
        for (size_t i = 0; i < comp.len; i += slice)
                CHECK_OK(decompressor_feed(d, comp.data + i, MIN(slice, comp.len - i)));
        CHECK_OK(decompressor_finish(d));
        CHECK_EQ_U64(out.len, n);
        CHECK_MEMEQ(out.data, data, n);
        decompressor_free(d);

        /* Truncated: must not finish cleanly. */
        buf_reset(&out);
        CHECK_OK(decompressor_new(c, sink, &out, &d));
        int r = decompressor_feed(d, comp.data, comp.len - 1);
        if (r == 0)
                r = decompressor_finish(d);
        CHECK_RC(r, -EBADMSG);
        decompressor_free(d);

        /* Corrupt: a flipped byte in the middle is refused or finishes wrong. */
        comp.data[comp.len / 2] ^= 0x55;
        buf_reset(&out);
        CHECK_OK(decompressor_new(c, sink, &out, &d));
        r = decompressor_feed(d, comp.data, comp.len);
        if (r == 0)
                r = decompressor_finish(d);
        CHECK(r < 0 || out.len != n || memcmp(out.data, data, n) != 0);
        decompressor_free(d);

        buf_free(&comp);
        buf_free(&out);
}

/* Our compressor's output must decompress, with our decompressor, to the input. */
static void compress_roundtrip(enum compression c, const uint8_t *data, size_t n) {
        struct buf comp = BUF_INIT(64u << 20), out = BUF_INIT(64u << 20);
        struct compressor *z;
        struct decompressor *d;

        CHECK_OK(compressor_new(c, 1, sink, &comp, &z));
        for (size_t i = 0; i < n; i += 100000)
                CHECK_OK(compressor_feed(z, data + i, MIN((size_t) 100000, n - i)));
        CHECK_OK(compressor_finish(z));
        compressor_free(z);
        CHECK_OK(decompressor_new(c, sink, &out, &d));
        CHECK_OK(decompressor_feed(d, comp.data, comp.len));
        CHECK_OK(decompressor_finish(d));
        decompressor_free(d);
        CHECK_EQ_U64(out.len, n);
        CHECK_MEMEQ(out.data, data, n);
        buf_free(&comp);
        buf_free(&out);
}

int main(void) {
        size_t n = 3u << 20;
        uint8_t *data = malloc(n);
        enum compression c;

        CHECK(data);
        test_fill(data, n / 2, 7);
        memset(data + n / 2, 'a', n - n / 2); /* compressible half */

        CHECK_OK(compression_from_string("xz", &c));
        CHECK(c == COMPRESSION_XZ);
        CHECK_OK(compression_from_string("", &c));
        CHECK(c == COMPRESSION_NONE);
        CHECK_RC(compression_from_string("lz4", &c), -EOPNOTSUPP);
        CHECK_STREQ(compression_extension(COMPRESSION_ZSTD), ".zst");

        roundtrip(COMPRESSION_XZ, "xz -1 -T1", data, n, 4096);
        roundtrip(COMPRESSION_XZ, "xz -1 -T1", data, n, 1u << 20);
        roundtrip(COMPRESSION_ZSTD, "zstd -q -3", data, n, 777);
        roundtrip(COMPRESSION_BZIP2, "bzip2 -1", data, n, 100000);
        compress_roundtrip(COMPRESSION_XZ, data, n);
        compress_roundtrip(COMPRESSION_ZSTD, data, n);
        compress_roundtrip(COMPRESSION_BZIP2, data, n);
        compress_roundtrip(COMPRESSION_NONE, data, n);
        free(data);
        return 0;
}
