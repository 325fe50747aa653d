/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test-nar_encoder: the encoder writes what `nix-store --dump` writes, and
 * refuses every event sequence that would not be a valid NAR.
 */
#include <stdio.h>
#include <sys/stat.h>

#include "trove/buf.h"
#include "trove/hash.h"
#include "trove/nar.h"
#include "test.h"

/* printf 'hello\n' > f; chmod +x f; nix-hash --type sha256 --base32 f */
#define KNOWN_EXEC_HELLO_NIX32 "1yhh619m3cy1mird7f0l7zsmiv9rayqn075zinda2g7rscwn0hv5"

struct sink {
        struct buf out;
        unsigned calls;
        size_t largest;
        int fail_after; /* fail the call with this number (1-based); 0 = never */
};

static int sink_fn(void *ud, const void *p, size_t n) {
        struct sink *s = ud;
        s->calls++;
        if (s->fail_after && (int) s->calls >= s->fail_after)
                return -ENOSPC;
        if (n > s->largest)
                s->largest = n;
        return buf_append(&s->out, p, n);
}

static void sink_init(struct sink *s) {
        memset(s, 0, sizeof *s);
        s->out = BUF_INIT((size_t) 64 << 20);
}

/* Builds the little-endian NAR framing by hand, independently of the
 * encoder, for known answers. */
static void raw_str(struct buf *b, const void *s, size_t n) {
        uint8_t len[8];
        static const uint8_t zero[8];
        for (unsigned i = 0; i < 8; i++)
                len[i] = (uint8_t) ((uint64_t) n >> (8 * i));
        CHECK_OK(buf_append(b, len, 8));
        CHECK_OK(buf_append(b, s, n));
        CHECK_OK(buf_append(b, zero, (8 - n % 8) % 8));
}

static void raw_tok(struct buf *b, const char *s) {
        raw_str(b, s, strlen(s));
}

static struct nar_encoder enc; /* 21 KiB: keep it off the stack */

static void test_known_answer_regular(void) {
        struct sink s;
        struct buf want = BUF_INIT(4096);

        sink_init(&s);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_regular(&enc, 6, true));
        CHECK_OK(nar_encoder_data(&enc, "hel", 3));
        CHECK_OK(nar_encoder_data(&enc, "lo\n", 3));
        CHECK_OK(nar_encoder_finish(&enc));

        raw_tok(&want, "nix-archive-1");
        raw_tok(&want, "(");
        raw_tok(&want, "type");
        raw_tok(&want, "regular");
        raw_tok(&want, "executable");
        raw_tok(&want, "");
        raw_tok(&want, "contents");
        raw_str(&want, "hello\n", 6);
        raw_tok(&want, ")");
        CHECK_EQ_U64(s.out.len, want.len);
        CHECK_MEMEQ(s.out.data, want.data, want.len);
        CHECK_EQ_U64(enc.offset, want.len);
        /* all of it staged, one write at finish */
        CHECK_EQ_U64(s.calls, 1);

        /* The NAR hash Nix reports for an executable file "hello\n":
         * printf 'hello\n' > f; chmod +x f; nix-hash --type sha256 --base32 f */
        uint8_t h[SHA256_DIGEST_LEN];
        char str[HASH_STRING_MAX];
        CHECK_OK(sha256_buf(s.out.data, s.out.len, h));
        hash_format(h, HASH_NIX32, str);
        CHECK_STREQ(str, "sha256:" KNOWN_EXEC_HELLO_NIX32);
        buf_free(&s.out);
        buf_free(&want);
}

/* Encodes a tree with every node type and compares it with what the real
 * nix-store --dump writes for the same tree on disk. */
static void test_matches_nix(void) {
        char dir[] = "/tmp/test-nar_encoder.XXXXXX";
        char cmd[256], path[512];
        struct sink s;
        struct buf nix = BUF_INIT((size_t) 1 << 20);
        FILE *f;

        CHECK(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/t", dir);
        CHECK_OK(mkdir(path, 0755));
        snprintf(path, sizeof path, "%s/t/a", dir);
        f = fopen(path, "w");
        CHECK(f);
        fputs("0123456789", f);
        fclose(f);
        snprintf(path, sizeof path, "%s/t/b", dir);
        CHECK_OK(mkdir(path, 0755));
        snprintf(path, sizeof path, "%s/t/b/empty", dir);
        f = fopen(path, "w");
        CHECK(f);
        fclose(f);
        CHECK_OK(chmod(path, 0755));
        snprintf(path, sizeof path, "%s/t/c", dir);
        CHECK_OK(symlink("b/empty", path));

        sink_init(&s);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "a", 1));
        CHECK_OK(nar_encoder_regular(&enc, 10, false));
        CHECK_OK(nar_encoder_data(&enc, "0123456789", 10));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "b", 1));
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "empty", 5));
        CHECK_OK(nar_encoder_regular(&enc, 0, true));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_OK(nar_encoder_directory_end(&enc));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "c", 1));
        CHECK_OK(nar_encoder_symlink(&enc, "b/empty", 7));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_OK(nar_encoder_directory_end(&enc));
        CHECK_OK(nar_encoder_finish(&enc));

        snprintf(cmd, sizeof cmd, "nix-store --dump %s/t", dir);
        f = popen(cmd, "r");
        CHECK(f);
        for (;;) {
                uint8_t tmp[4096];
                size_t k = fread(tmp, 1, sizeof tmp, f);
                if (k == 0)
                        break;
                CHECK_OK(buf_append(&nix, tmp, k));
        }
        CHECK_OK(pclose(f));
        CHECK(nix.len > 0);
        CHECK_EQ_U64(s.out.len, nix.len);
        CHECK_MEMEQ(s.out.data, nix.data, nix.len);

        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        CHECK_OK(system(cmd));
        buf_free(&s.out);
        buf_free(&nix);
}

/* Each sequence must fail with -EINVAL at its last step. */
static void test_order_violations(void) {
        struct sink s;

        sink_init(&s);

        /* data beyond the declared size */
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_regular(&enc, 3, false));
        CHECK_RC(nar_encoder_data(&enc, "abcd", 4), -EINVAL);
        /* the failure sticks */
        CHECK_RC(nar_encoder_data(&enc, "abc", 3), -EINVAL);
        CHECK_RC(nar_encoder_finish(&enc), -EINVAL);

        /* data after the file is complete */
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_regular(&enc, 3, false));
        CHECK_OK(nar_encoder_data(&enc, "abc", 3));
        CHECK_RC(nar_encoder_data(&enc, "d", 1), -EINVAL);

        /* entry outside a directory */
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_RC(nar_encoder_entry(&enc, "a", 1), -EINVAL);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_regular(&enc, 0, false));
        CHECK_RC(nar_encoder_entry(&enc, "a", 1), -EINVAL);

        /* unsorted and duplicate names */
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "b", 1));
        CHECK_OK(nar_encoder_symlink(&enc, "x", 1));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_RC(nar_encoder_entry(&enc, "a", 1), -EINVAL);

        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "ab", 2));
        CHECK_OK(nar_encoder_symlink(&enc, "x", 1));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_RC(nar_encoder_entry(&enc, "ab", 2), -EINVAL);

        /* a prefix sorts first; byte order, not signed char order */
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "ab", 2));
        CHECK_OK(nar_encoder_symlink(&enc, "x", 1));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_RC(nar_encoder_entry(&enc, "a", 1), -EINVAL);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "z", 1));
        CHECK_OK(nar_encoder_symlink(&enc, "x", 1));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "\xc3\xa9", 2));

        /* sorting is per directory: a child may sort before its parent's
         * earlier siblings */
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "m", 1));
        CHECK_OK(nar_encoder_symlink(&enc, "x", 1));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "n", 1));
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "a", 1));
        CHECK_OK(nar_encoder_symlink(&enc, "x", 1));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_OK(nar_encoder_directory_end(&enc));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "o", 1));
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_directory_end(&enc));
        CHECK_OK(nar_encoder_entry_end(&enc));
        CHECK_OK(nar_encoder_directory_end(&enc));
        CHECK_OK(nar_encoder_finish(&enc));

        /* invalid names */
        static const struct {
                const char *s;
                size_t n;
        } bad[] = { { "", 0 }, { ".", 1 }, { "..", 2 }, { "a/b", 3 }, { "a\0b", 3 } };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                nar_encoder_init(&enc, sink_fn, &s);
                CHECK_OK(nar_encoder_directory(&enc));
                CHECK_RC(nar_encoder_entry(&enc, bad[i].s, bad[i].n), -EINVAL);
        }
        {
                char name[NAR_NAME_MAX + 1];
                memset(name, 'n', sizeof name);
                nar_encoder_init(&enc, sink_fn, &s);
                CHECK_OK(nar_encoder_directory(&enc));
                CHECK_OK(nar_encoder_entry(&enc, name, NAR_NAME_MAX));
                CHECK_OK(nar_encoder_regular(&enc, 0, false));
                CHECK_OK(nar_encoder_entry_end(&enc));
                CHECK_RC(nar_encoder_entry(&enc, name, NAR_NAME_MAX + 1), -EINVAL);
        }

        /* bad symlink targets */
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_RC(nar_encoder_symlink(&enc, "", 0), -EINVAL);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_RC(nar_encoder_symlink(&enc, "a\0b", 3), -EINVAL);
        {
                static char target[NAR_TARGET_MAX + 1];
                memset(target, 't', sizeof target);
                nar_encoder_init(&enc, sink_fn, &s);
                CHECK_OK(nar_encoder_symlink(&enc, target, NAR_TARGET_MAX));
                CHECK_OK(nar_encoder_finish(&enc));
                nar_encoder_init(&enc, sink_fn, &s);
                CHECK_RC(nar_encoder_symlink(&enc, target, NAR_TARGET_MAX + 1), -EINVAL);
        }

        /* finish before complete, at every stage */
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_RC(nar_encoder_finish(&enc), -EINVAL);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_regular(&enc, 2, false));
        CHECK_OK(nar_encoder_data(&enc, "a", 1));
        CHECK_RC(nar_encoder_finish(&enc), -EINVAL);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_RC(nar_encoder_finish(&enc), -EINVAL);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "a", 1));
        CHECK_OK(nar_encoder_symlink(&enc, "x", 1));
        CHECK_RC(nar_encoder_finish(&enc), -EINVAL);

        /* mismatched ends, second root, events after finish */
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_RC(nar_encoder_directory_end(&enc), -EINVAL);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_RC(nar_encoder_entry_end(&enc), -EINVAL);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_entry(&enc, "a", 1));
        CHECK_RC(nar_encoder_directory_end(&enc), -EINVAL);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_symlink(&enc, "x", 1));
        CHECK_RC(nar_encoder_symlink(&enc, "x", 1), -EINVAL);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        CHECK_OK(nar_encoder_directory_end(&enc));
        CHECK_OK(nar_encoder_finish(&enc));
        CHECK_RC(nar_encoder_directory(&enc), -EINVAL);
        CHECK_RC(nar_encoder_finish(&enc), -EINVAL);

        buf_free(&s.out);
}

static void test_depth_and_path_limits(void) {
        struct sink s;
        char name[200];

        sink_init(&s);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        for (unsigned i = 0; i < NAR_DEPTH_MAX; i++) {
                CHECK_OK(nar_encoder_entry(&enc, "d", 1));
                CHECK_OK(nar_encoder_directory(&enc));
        }
        /* a node at depth NAR_DEPTH_MAX + 1 is refused */
        CHECK_RC(nar_encoder_entry(&enc, "d", 1), -EINVAL);

        /* nesting exactly at the limit completes */
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        for (unsigned i = 0; i < NAR_DEPTH_MAX; i++) {
                CHECK_OK(nar_encoder_entry(&enc, "d", 1));
                CHECK_OK(nar_encoder_directory(&enc));
        }
        for (unsigned i = 0; i < NAR_DEPTH_MAX; i++) {
                CHECK_OK(nar_encoder_directory_end(&enc));
                CHECK_OK(nar_encoder_entry_end(&enc));
        }
        CHECK_OK(nar_encoder_directory_end(&enc));
        CHECK_OK(nar_encoder_finish(&enc));

        /* relative path longer than NAR_PATH_MAX: 20 components of 200
         * bytes plus separators pass 4096 at the 21st */
        memset(name, 'p', sizeof name);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        for (unsigned i = 0; i < 20; i++) {
                CHECK_OK(nar_encoder_entry(&enc, name, sizeof name));
                CHECK_OK(nar_encoder_directory(&enc));
        }
        CHECK_EQ_U64(20 * 201 - 1, 4019);
        CHECK_RC(nar_encoder_entry(&enc, name, sizeof name), -EINVAL);
        buf_free(&s.out);
}

static void test_batching_and_sink_errors(void) {
        struct sink s;
        static uint8_t big[1 << 20];
        char name[16];

        /* 200 small files: the sink sees a handful of large writes */
        sink_init(&s);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_directory(&enc));
        for (unsigned i = 0; i < 200; i++) {
                snprintf(name, sizeof name, "f%03u", i);
                CHECK_OK(nar_encoder_entry(&enc, name, strlen(name)));
                CHECK_OK(nar_encoder_regular(&enc, 5, false));
                CHECK_OK(nar_encoder_data(&enc, "abcde", 5));
                CHECK_OK(nar_encoder_entry_end(&enc));
        }
        CHECK_OK(nar_encoder_directory_end(&enc));
        CHECK_OK(nar_encoder_finish(&enc));
        CHECK(s.out.len > 200 * 100);
        CHECK(s.calls <= s.out.len / (NAR_ENCODER_STAGE / 2) + 1);
        CHECK_EQ_U64(enc.offset, s.out.len);
        buf_free(&s.out);

        /* a large data write is passed on whole, not copied in pieces */
        sink_init(&s);
        test_fill(big, sizeof big, 7);
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_regular(&enc, sizeof big + 3, false));
        CHECK_OK(nar_encoder_data(&enc, big, sizeof big));
        CHECK_OK(nar_encoder_data(&enc, "xyz", 3));
        CHECK_OK(nar_encoder_finish(&enc));
        CHECK_EQ_U64(s.largest, sizeof big);
        CHECK(s.calls <= 3);
        CHECK_MEMEQ(s.out.data + 96, big, sizeof big);
        CHECK_EQ_U64(s.out.len, 96 + sizeof big + 3 + 5 + 16);
        buf_free(&s.out);

        /* a sink error is returned as is and sticks */
        sink_init(&s);
        s.fail_after = 1;
        nar_encoder_init(&enc, sink_fn, &s);
        CHECK_OK(nar_encoder_regular(&enc, sizeof big, false));
        CHECK_RC(nar_encoder_data(&enc, big, sizeof big), -ENOSPC);
        CHECK_RC(nar_encoder_finish(&enc), -ENOSPC);
        buf_free(&s.out);
}

int main(void) {
        test_known_answer_regular();
        test_matches_nix();
        test_order_violations();
        test_depth_and_path_limits();
        test_batching_and_sink_errors();
        return 0;
}
