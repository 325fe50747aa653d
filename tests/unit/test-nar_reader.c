/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test-nar_reader: the strict reader accepts what nix-store --dump writes,
 * reports the same events however the input is sliced, re-encodes it byte
 * for byte, and rejects every malformed NAR with -EBADMSG and a message
 * that says what and where.
 *
 *   test-nar_reader                      run the tests
 *   test-nar_reader --write-corpus DIR   (re)write DIR/reject and DIR/accept
 *                                        (tests/fuzz/corpus/nar_reader)
 */
#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>

#include "trove/buf.h"
#include "trove/nar.h"
#include "test.h"

#define U64_MAX UINT64_MAX

/* ---- a raw NAR builder, independent of the encoder ---- */

static void raw_u64(struct buf *b, uint64_t v) {
        uint8_t len[8];
        for (unsigned i = 0; i < 8; i++)
                len[i] = (uint8_t) (v >> (8 * i));
        CHECK_OK(buf_append(b, len, 8));
}

static void raw_str(struct buf *b, const void *s, size_t n) {
        static const uint8_t zero[8];
        raw_u64(b, n);
        CHECK_OK(buf_append(b, s, n));
        CHECK_OK(buf_append(b, zero, (8 - n % 8) % 8));
}

static void tok(struct buf *b, const char *s) {
        raw_str(b, s, strlen(s));
}

static void magic(struct buf *b) {
        tok(b, "nix-archive-1");
}

static void reg(struct buf *b, const char *contents, bool exec) {
        tok(b, "(");
        tok(b, "type");
        tok(b, "regular");
        if (exec) {
                tok(b, "executable");
                tok(b, "");
        }
        tok(b, "contents");
        raw_str(b, contents, strlen(contents));
        tok(b, ")");
}

static void sym(struct buf *b, const char *target, size_t n) {
        tok(b, "(");
        tok(b, "type");
        tok(b, "symlink");
        tok(b, "target");
        raw_str(b, target, n);
        tok(b, ")");
}

static void dir_open(struct buf *b) {
        tok(b, "(");
        tok(b, "type");
        tok(b, "directory");
}

static void entry_open(struct buf *b, const char *name, size_t n) {
        tok(b, "entry");
        tok(b, "(");
        tok(b, "name");
        raw_str(b, name, n);
        tok(b, "node");
}

static void close_(struct buf *b) {
        tok(b, ")");
}

/* ---- running the reader and recording what it reports ---- */

struct log {
        struct buf text;         /* events, one a line */
        const uint8_t *nar;      /* the whole input, to check offsets */
        size_t nar_len;
        uint64_t data_pos;       /* where the next data byte must be in nar */
        uint64_t data_left;
        int fail_with;           /* callbacks return this if non-zero */
};

static int ev_directory(void *ud, const char *path, uint64_t offset) {
        struct log *l = ud;
        CHECK(offset + 8 <= l->nar_len && l->nar[offset] == 1 && l->nar[offset + 8] == '(');
        CHECK_OK(buf_printf(&l->text, "dir \"%s\" @%" PRIu64 "\n", path, offset));
        return l->fail_with;
}

static int ev_directory_end(void *ud, const char *path) {
        struct log *l = ud;
        CHECK_OK(buf_printf(&l->text, "end \"%s\"\n", path));
        return 0;
}

static int ev_regular(void *ud, const char *path, uint64_t size, bool executable,
                      uint64_t contents_offset) {
        struct log *l = ud;
        /* the size field sits just before the contents */
        CHECK(contents_offset >= 8 && contents_offset <= l->nar_len);
        uint64_t sz = 0;
        for (unsigned i = 0; i < 8; i++)
                sz |= (uint64_t) l->nar[contents_offset - 8 + i] << (8 * i);
        CHECK_EQ_U64(sz, size);
        l->data_pos = contents_offset;
        l->data_left = size;
        CHECK_OK(buf_printf(&l->text, "reg \"%s\" %" PRIu64 " %s @%" PRIu64 "\n", path, size,
                            executable ? "x" : "-", contents_offset));
        return 0;
}

static int ev_data(void *ud, const void *p, size_t n) {
        struct log *l = ud;
        CHECK(n > 0 && n <= l->data_left);
        CHECK(l->data_pos + n <= l->nar_len);
        /* contents_offset is where the bytes really are */
        CHECK_MEMEQ(l->nar + l->data_pos, p, n);
        l->data_pos += n;
        l->data_left -= n;
        return 0;
}

static int ev_regular_end(void *ud, const char *path) {
        struct log *l = ud;
        CHECK_EQ_U64(l->data_left, 0);
        CHECK_OK(buf_printf(&l->text, "rend \"%s\"\n", path));
        return 0;
}

static int ev_symlink(void *ud, const char *path, const char *target, size_t n) {
        struct log *l = ud;
        CHECK_OK(buf_printf(&l->text, "sym \"%s\" -> \"%.*s\"\n", path, (int) n, target));
        return 0;
}

static int ev_entry(void *ud, const char *name, size_t n) {
        struct log *l = ud;
        CHECK_OK(buf_printf(&l->text, "entry \"%.*s\"\n", (int) n, name));
        return 0;
}

static int ev_entry_end(void *ud) {
        struct log *l = ud;
        CHECK_OK(buf_printf(&l->text, "entry_end\n"));
        return 0;
}

static const struct nar_reader_callbacks log_callbacks = {
        .directory = ev_directory,
        .directory_end = ev_directory_end,
        .regular = ev_regular,
        .data = ev_data,
        .regular_end = ev_regular_end,
        .symlink = ev_symlink,
        .entry = ev_entry,
        .entry_end = ev_entry_end,
};

enum slicing {
        WHOLE,
        BYTES,  /* one byte at a time */
        RANDOM, /* random slice sizes from 1 to 64 */
        RANDOM_LARGE,
};

struct result {
        int rc;        /* 1: complete archive; <0: the error */
        char msg[512];
        struct buf log;
        uint64_t offset;
};

static void result_free(struct result *res) {
        buf_free(&res->log);
}

/* Feeds nar in the given slicing, then finish(). */
static void run(const uint8_t *nar, size_t n, enum slicing how, uint64_t seed,
                struct result *res) {
        _cleanup_(nar_reader_freep) struct nar_reader *r = NULL;
        struct log l = { .text = BUF_INIT((size_t) 16 << 20), .nar = nar, .nar_len = n };
        uint64_t s = seed ? seed : 1;
        size_t pos = 0;
        int rc = 0;

        CHECK_OK(nar_reader_new(&log_callbacks, &l, &r));
        while (pos < n) {
                size_t k;
                switch (how) {
                case WHOLE:
                        k = n;
                        break;
                case BYTES:
                        k = 1;
                        break;
                case RANDOM:
                        k = 1 + test_rand(&s) % 64;
                        break;
                default:
                        k = 1 + test_rand(&s) % 70000;
                        break;
                }
                k = MIN(k, n - pos);
                rc = nar_reader_feed(r, nar + pos, k);
                pos += k;
                if (rc < 0)
                        break;
                /* complete before the end of input: the rest must be refused */
                if (rc == 1 && pos < n) {
                        CHECK_RC(nar_reader_feed(r, nar + pos, n - pos), -EBADMSG);
                        rc = -EBADMSG;
                        break;
                }
        }
        if (rc >= 0) {
                int f = nar_reader_finish(r);
                CHECK(f == 0 || f == -EBADMSG);
                CHECK((f == 0) == (rc == 1));
                rc = f == 0 ? 1 : f;
        }
        /* after completion or failure, more input is refused */
        CHECK_RC(nar_reader_feed(r, "\0", 1), rc == 1 ? -EBADMSG : rc);
        res->rc = rc;
        snprintf(res->msg, sizeof res->msg, "%s", rc < 0 ? nar_reader_error(r) : "");
        res->log = l.text;
        res->offset = nar_reader_offset(r);
}

/* Every slicing gives the same events, result and message. */
static void run_all(const uint8_t *nar, size_t n, struct result *res) {
        run(nar, n, WHOLE, 0, res);
        for (int how = BYTES; how <= RANDOM_LARGE; how++) {
                for (uint64_t seed = 1; seed <= (how == BYTES ? 1u : 3u); seed++) {
                        struct result other;
                        run(nar, n, how, seed, &other);
                        if (other.rc != res->rc || !streq(other.msg, res->msg) ||
                            other.log.len != res->log.len ||
                            (res->log.len > 0 &&
                             memcmp(other.log.data, res->log.data, res->log.len) != 0))
                                TEST_FAIL("slicing %d/%" PRIu64 " differs: rc %d vs %d, \"%s\" vs \"%s\"",
                                          how, seed, other.rc, res->rc, other.msg, res->msg);
                        result_free(&other);
                }
        }
}

static int sink_buf(void *ud, const void *p, size_t n) {
        return buf_append(ud, p, n);
}

static struct nar_encoder enc;

/* Reader → encoder reproduces the input exactly. */
static void check_roundtrip(const uint8_t *nar, size_t n) {
        _cleanup_(nar_reader_freep) struct nar_reader *r = NULL;
        struct buf out = BUF_INIT((size_t) 64 << 20);

        nar_encoder_init(&enc, sink_buf, &out);
        CHECK_OK(nar_reader_new(&nar_reencode_callbacks, &enc, &r));
        CHECK_RC(nar_reader_feed(r, nar, n), 1);
        CHECK_OK(nar_reader_finish(r));
        CHECK_OK(nar_encoder_finish(&enc));
        CHECK_EQ_U64(out.len, n);
        CHECK_MEMEQ(out.data, nar, n);
        buf_free(&out);
}

static void check_accept(const char *what, const uint8_t *nar, size_t n) {
        struct result res;
        run_all(nar, n, &res);
        if (res.rc != 1)
                TEST_FAIL("%s: rejected: %s", what, res.msg);
        CHECK_EQ_U64(res.offset, n);
        check_roundtrip(nar, n);
        result_free(&res);
}

static void check_reject(const char *what, const uint8_t *nar, size_t n, const char *want_msg) {
        struct result res;
        run_all(nar, n, &res);
        if (res.rc != -EBADMSG)
                TEST_FAIL("%s: returned %d, want -EBADMSG", what, res.rc);
        if (!startswith(res.msg, "at NAR offset "))
                TEST_FAIL("%s: message \"%s\" does not say where", what, res.msg);
        if (want_msg && !strstr(res.msg, want_msg))
                TEST_FAIL("%s: message \"%s\" lacks \"%s\"", what, res.msg, want_msg);
        result_free(&res);
}

/* ---- the malformed corpus ---- */

struct nar_case {
        char name[64];
        struct buf b;
        const char *want; /* part of the message, or NULL */
};

#define CASES_MAX 128
static struct nar_case cases[CASES_MAX];
static unsigned n_cases;

static struct buf *new_case(const char *name, const char *want) {
        CHECK(n_cases < CASES_MAX);
        struct nar_case *c = &cases[n_cases++];
        snprintf(c->name, sizeof c->name, "%s", name);
        c->b = BUF_INIT((size_t) 1 << 20);
        c->want = want;
        return &c->b;
}

/* A small valid tree used as a base for several cases. */
static void valid_tree(struct buf *b) {
        magic(b);
        dir_open(b);
        entry_open(b, "bin", 3);
        dir_open(b);
        entry_open(b, "sh", 2);
        reg(b, "#!/bin/sh\necho hi\n", true);
        close_(b);
        close_(b);
        close_(b);
        entry_open(b, "lib", 3);
        sym(b, "bin", 3);
        close_(b);
        entry_open(b, "readme", 6);
        reg(b, "hello", false);
        close_(b);
        close_(b);
}

static void build_reject_cases(void) {
        struct buf *b;
        char big[NAR_TARGET_MAX + 2];

        b = new_case("empty", "truncated");
        (void) b;

        b = new_case("wrong-magic", "bad magic");
        tok(b, "nix-archive-2");
        reg(b, "x", false);

        b = new_case("magic-huge-length", "of 9223372036854775808 bytes");
        raw_u64(b, (uint64_t) 1 << 63);

        b = new_case("wrong-open-token", "expected \"(\"");
        magic(b);
        tok(b, "[");

        b = new_case("wrong-type-keyword", "expected \"type\"");
        magic(b);
        tok(b, "(");
        tok(b, "typ");

        b = new_case("unknown-type", "unknown node type \"fifo\"");
        magic(b);
        tok(b, "(");
        tok(b, "type");
        tok(b, "fifo");
        tok(b, ")");

        b = new_case("wrong-contents-token", "expected \"executable\" or \"contents\"");
        magic(b);
        tok(b, "(");
        tok(b, "type");
        tok(b, "regular");
        tok(b, "content");

        b = new_case("executable-with-value", "expected \"\" after \"executable\"");
        magic(b);
        tok(b, "(");
        tok(b, "type");
        tok(b, "regular");
        tok(b, "executable");
        tok(b, "1");
        tok(b, "contents");
        raw_str(b, "", 0);
        tok(b, ")");

        b = new_case("executable-twice", "expected \"contents\"");
        magic(b);
        tok(b, "(");
        tok(b, "type");
        tok(b, "regular");
        tok(b, "executable");
        tok(b, "");
        tok(b, "executable");
        tok(b, "");

        b = new_case("regular-missing-close", "expected \")\" after file contents");
        magic(b);
        tok(b, "(");
        tok(b, "type");
        tok(b, "regular");
        tok(b, "contents");
        raw_str(b, "abc", 3);
        tok(b, "entry");

        b = new_case("missing-node-token", "expected \"node\"");
        magic(b);
        dir_open(b);
        tok(b, "entry");
        tok(b, "(");
        tok(b, "name");
        tok(b, "a");
        reg(b, "", false);

        b = new_case("wrong-entry-token", "expected \"entry\" or \")\"");
        magic(b);
        dir_open(b);
        tok(b, "entri");

        b = new_case("symlink-extra-attr", "expected \")\" after symlink target");
        magic(b);
        tok(b, "(");
        tok(b, "type");
        tok(b, "symlink");
        tok(b, "target");
        tok(b, "x");
        tok(b, "target");

        b = new_case("unsorted", "names not sorted: \"b\" after \"c\"");
        magic(b);
        dir_open(b);
        entry_open(b, "c", 1);
        reg(b, "", false);
        close_(b);
        entry_open(b, "b", 1);
        reg(b, "", false);
        close_(b);
        close_(b);

        b = new_case("unsorted-nested", "(entry \"usr/lib\"): names not sorted: \"a\" after \"ab\"");
        magic(b);
        dir_open(b);
        entry_open(b, "usr", 3);
        dir_open(b);
        entry_open(b, "lib", 3);
        dir_open(b);
        entry_open(b, "ab", 2);
        reg(b, "", false);
        close_(b);
        entry_open(b, "a", 1);
        reg(b, "", false);
        close_(b);
        close_(b);
        close_(b);
        close_(b);
        close_(b);
        close_(b);

        b = new_case("unsorted-high-byte", "names not sorted");
        magic(b);
        dir_open(b);
        entry_open(b, "\xc3\xa9", 2);
        reg(b, "", false);
        close_(b);
        entry_open(b, "z", 1);
        reg(b, "", false);
        close_(b);
        close_(b);

        b = new_case("duplicate", "duplicate entry name \"a\"");
        magic(b);
        dir_open(b);
        entry_open(b, "a", 1);
        reg(b, "", false);
        close_(b);
        entry_open(b, "a", 1);
        sym(b, "x", 1);
        close_(b);
        close_(b);

        static const struct {
                const char *case_name, *name;
                size_t len;
                const char *want;
        } bad_names[] = {
                { "name-dotdot", "..", 2, "invalid entry name \"..\"" },
                { "name-dot", ".", 1, "invalid entry name \".\"" },
                { "name-slash", "a/b", 3, "invalid entry name \"a/b\"" },
                { "name-nul", "a\0b", 3, "invalid entry name \"a\\x00b\"" },
                { "name-empty", "", 0, "empty entry name" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
                b = new_case(bad_names[i].case_name, bad_names[i].want);
                magic(b);
                dir_open(b);
                entry_open(b, bad_names[i].name, bad_names[i].len);
                reg(b, "", false);
                close_(b);
                close_(b);
        }

        b = new_case("name-too-long", "entry name of 256 bytes");
        memset(big, 'n', sizeof big);
        magic(b);
        dir_open(b);
        entry_open(b, big, NAR_NAME_MAX + 1);

        b = new_case("name-huge-length", "entry name of 18446744073709551615 bytes");
        magic(b);
        dir_open(b);
        tok(b, "entry");
        tok(b, "(");
        tok(b, "name");
        raw_u64(b, U64_MAX);

        b = new_case("contents-2^63", "file size 9223372036854775808 is too large");
        magic(b);
        tok(b, "(");
        tok(b, "type");
        tok(b, "regular");
        tok(b, "contents");
        raw_u64(b, (uint64_t) 1 << 63);
        /* not the whole 2^63: a reader that trusted the size would wait */

        b = new_case("contents-2^64-1", "file size 18446744073709551615 is too large");
        magic(b);
        tok(b, "(");
        tok(b, "type");
        tok(b, "regular");
        tok(b, "contents");
        raw_u64(b, U64_MAX);
        raw_u64(b, 0);

        b = new_case("token-huge-length", "got a string of 9223372036854775808 bytes");
        magic(b);
        tok(b, "(");
        raw_u64(b, (uint64_t) 1 << 63);

        b = new_case("target-huge-length", "symlink target of 18446744073709551615 bytes");
        magic(b);
        tok(b, "(");
        tok(b, "type");
        tok(b, "symlink");
        tok(b, "target");
        raw_u64(b, U64_MAX);

        b = new_case("target-too-long", "symlink target of 4096 bytes");
        magic(b);
        memset(big, 't', sizeof big);
        sym(b, big, NAR_TARGET_MAX + 1);

        b = new_case("target-empty", "empty symlink target");
        magic(b);
        sym(b, "", 0);

        b = new_case("target-nul", "NUL byte in symlink target");
        magic(b);
        sym(b, "a\0b", 3);

        b = new_case("bad-padding-magic", "non-zero padding byte");
        magic(b);
        reg(b, "", false);
        b->data[8 + 13] = 1;

        b = new_case("bad-padding-token", "non-zero padding byte 0x20");
        magic(b);
        reg(b, "", false);
        b->data[24 + 8 + 1] = ' ';

        b = new_case("bad-padding-contents", "at NAR offset 99: non-zero padding byte 0xff");
        magic(b);
        reg(b, "abc", false);
        CHECK_EQ_U64(b->data[96], (uint8_t) 'a');
        b->data[99] = 0xff;

        b = new_case("trailing-byte", "data after the end of the archive");
        valid_tree(b);
        CHECK_OK(buf_append(b, "\0", 1));

        b = new_case("trailing-nar", "data after the end of the archive");
        magic(b);
        reg(b, "a", false);
        magic(b);
        reg(b, "a", false);

        b = new_case("too-deep", "nested deeper than 256");
        magic(b);
        dir_open(b);
        for (unsigned i = 0; i <= NAR_DEPTH_MAX; i++) {
                entry_open(b, "d", 1);
                dir_open(b);
        }

        b = new_case("path-too-long", "path longer than 4096 bytes");
        magic(b);
        dir_open(b);
        memset(big, 'p', sizeof big);
        /* 16 components of 255 bytes plus separators: 4095; one more byte
         * of a 17th component passes the limit */
        for (unsigned i = 0; i < 16; i++) {
                entry_open(b, big, 255);
                dir_open(b);
        }
        entry_open(b, big, 1);
        reg(b, "", false);

        b = new_case("entry-in-regular", "expected \")\" after file contents");
        magic(b);
        reg(b, "x", false);
        b->len -= 16;
        entry_open(b, "a", 1);

        b = new_case("second-root-node", "data after the end of the archive");
        magic(b);
        sym(b, "x", 1);
        sym(b, "y", 1);
}

/* Truncations of valid archives at many offsets: all refused by finish. */
static void check_truncations(const uint8_t *nar, size_t n) {
        for (size_t cut = 0; cut < n; cut++) {
                char what[64];
                snprintf(what, sizeof what, "truncated at %zu", cut);
                /* run_all at every cut is slow for large inputs; the byte-wise
                 * slicing is exercised at a sample of cuts */
                if (cut % 13 == 0 || cut < 40) {
                        check_reject(what, nar, cut, "truncated archive");
                } else {
                        struct result res;
                        run(nar, cut, WHOLE, 0, &res);
                        if (res.rc != -EBADMSG || !strstr(res.msg, "truncated archive"))
                                TEST_FAIL("%s: rc %d \"%s\"", what, res.rc, res.msg);
                        result_free(&res);
                }
        }
}

static void build_accept_seeds(void) {
        struct buf *b;
        char big[NAR_TARGET_MAX];

        b = new_case("regular", NULL);
        magic(b);
        reg(b, "hello\n", false);

        b = new_case("regular-exec-empty", NULL);
        magic(b);
        reg(b, "", true);

        b = new_case("regular-8", NULL);
        magic(b);
        reg(b, "01234567", false);

        b = new_case("symlink-root", NULL);
        magic(b);
        sym(b, "/nix/store/x", 12);

        b = new_case("empty-dir", NULL);
        magic(b);
        dir_open(b);
        close_(b);

        b = new_case("tree", NULL);
        valid_tree(b);

        b = new_case("byte-order-names", NULL);
        magic(b);
        dir_open(b);
        static const char *names[] = { "A", "a", "a-b", "a.b", "ab", "z", "\xc3\xa9" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                entry_open(b, names[i], strlen(names[i]));
                reg(b, names[i], i % 2);
                close_(b);
        }
        close_(b);

        b = new_case("long-name-and-target", NULL);
        memset(big, 'L', sizeof big);
        magic(b);
        dir_open(b);
        entry_open(b, big, NAR_NAME_MAX);
        sym(b, big, NAR_TARGET_MAX);
        close_(b);
        close_(b);

        b = new_case("depth-256", NULL);
        magic(b);
        dir_open(b);
        for (unsigned i = 0; i < NAR_DEPTH_MAX; i++) {
                entry_open(b, "d", 1);
                dir_open(b);
        }
        for (unsigned i = 0; i < NAR_DEPTH_MAX; i++) {
                close_(b);
                close_(b);
        }
        close_(b);

        b = new_case("path-4096", NULL);
        memset(big, 'p', sizeof big);
        magic(b);
        dir_open(b);
        for (unsigned i = 0; i < 16; i++) {
                entry_open(b, big, 255);
                dir_open(b);
        }
        for (unsigned i = 0; i < 16; i++) {
                close_(b);
                close_(b);
        }
        close_(b);
}

static void free_cases(void) {
        for (unsigned i = 0; i < n_cases; i++)
                buf_free(&cases[i].b);
        n_cases = 0;
}

static void write_file(const char *dir, const char *name, const void *p, size_t n) {
        char path[4096];
        FILE *f;

        snprintf(path, sizeof path, "%s/%s", dir, name);
        f = fopen(path, "wb");
        CHECK(f);
        if (n > 0)
                CHECK(fwrite(p, 1, n, f) == n);
        CHECK(fclose(f) == 0);
}

static int write_corpus(const char *root) {
        char dir[4096];
        struct buf tree = BUF_INIT(1 << 20);

        (void) mkdir(root, 0755);
        snprintf(dir, sizeof dir, "%s/reject", root);
        (void) mkdir(dir, 0755);
        build_reject_cases();
        for (unsigned i = 0; i < n_cases; i++)
                write_file(dir, cases[i].name, cases[i].b.data, cases[i].b.len);
        free_cases();
        valid_tree(&tree);
        for (size_t cut = 1; cut < tree.len; cut += tree.len / 9) {
                char name[64];
                snprintf(name, sizeof name, "truncated-%zu", cut);
                write_file(dir, name, tree.data, cut);
        }
        buf_free(&tree);

        snprintf(dir, sizeof dir, "%s/accept", root);
        (void) mkdir(dir, 0755);
        build_accept_seeds();
        for (unsigned i = 0; i < n_cases; i++)
                write_file(dir, cases[i].name, cases[i].b.data, cases[i].b.len);
        free_cases();
        return 0;
}

/* ---- tests ---- */

static void test_reject_cases(void) {
        build_reject_cases();
        for (unsigned i = 0; i < n_cases; i++)
                check_reject(cases[i].name, cases[i].b.data, cases[i].b.len, cases[i].want);
        free_cases();
}

static void test_accept_seeds(void) {
        struct buf tree = BUF_INIT(1 << 20);

        build_accept_seeds();
        for (unsigned i = 0; i < n_cases; i++)
                check_accept(cases[i].name, cases[i].b.data, cases[i].b.len);
        free_cases();

        valid_tree(&tree);
        check_truncations(tree.data, tree.len);
        buf_free(&tree);
}

static void test_events_and_offsets(void) {
        struct buf tree = BUF_INIT(1 << 20);
        struct result res;

        valid_tree(&tree);
        run_all(tree.data, tree.len, &res);
        CHECK_EQ_U64(res.rc, 1);
        CHECK_STREQ((const char *) res.log.data,
                    "dir \"\" @24\n"
                    "entry \"bin\"\n"
                    "dir \"bin\" @160\n"
                    "entry \"sh\"\n"
                    "reg \"bin/sh\" 18 x @400\n"
                    "rend \"bin/sh\"\n"
                    "entry_end\n"
                    "end \"bin\"\n"
                    "entry_end\n"
                    "entry \"lib\"\n"
                    "sym \"lib\" -> \"bin\"\n"
                    "entry_end\n"
                    "entry \"readme\"\n"
                    "reg \"readme\" 5 - @832\n"
                    "rend \"readme\"\n"
                    "entry_end\n"
                    "end \"\"\n");
        result_free(&res);
        buf_free(&tree);
}

static int fail_cb(void *ud, const char *path, uint64_t offset) {
        return -ENOSPC;
}

static void test_callback_error(void) {
        _cleanup_(nar_reader_freep) struct nar_reader *r = NULL;
        struct nar_reader_callbacks cb = { .directory = fail_cb };
        struct buf tree = BUF_INIT(1 << 20);

        valid_tree(&tree);
        CHECK_OK(nar_reader_new(&cb, NULL, &r));
        CHECK_RC(nar_reader_feed(r, tree.data, tree.len), -ENOSPC);
        CHECK_RC(nar_reader_feed(r, tree.data, 1), -ENOSPC);
        CHECK_RC(nar_reader_finish(r), -ENOSPC);
        CHECK(strlen(nar_reader_error(r)) > 0);
        buf_free(&tree);
}

/* Real archives from nix-store --dump of a tree made here. */
static void test_nix_dumps(void) {
        char dir[] = "/tmp/test-nar_reader.XXXXXX";
        char cmd[512];
        static uint8_t data[300000];
        struct buf nar = BUF_INIT((size_t) 8 << 20);
        FILE *f;

        CHECK(mkdtemp(dir));
        test_fill(data, sizeof data, 42);
        snprintf(cmd, sizeof cmd,
                 "set -e; cd %s; mkdir -p t/bin t/share/empty t/x; printf 'hi' > t/bin/hi; "
                 "chmod 755 t/bin/hi; ln -s ../bin/hi t/x/link; ln -s /nonexistent t/dangling; "
                 "printf '1234567' > t/seven; printf '12345678' > t/eight; : > t/zero; "
                 "printf 'x' > 't/with space'; printf y > t/Upper",
                 dir);
        CHECK_OK(system(cmd));
        snprintf(cmd, sizeof cmd, "%s/t/big", dir);
        f = fopen(cmd, "wb");
        CHECK(f);
        CHECK(fwrite(data, 1, sizeof data, f) == sizeof data);
        fclose(f);

        snprintf(cmd, sizeof cmd, "nix-store --dump %s/t", dir);
        f = popen(cmd, "r");
        CHECK(f);
        for (;;) {
                uint8_t tmp[65536];
                size_t k = fread(tmp, 1, sizeof tmp, f);
                if (k == 0)
                        break;
                CHECK_OK(buf_append(&nar, tmp, k));
        }
        CHECK_OK(pclose(f));
        CHECK(nar.len > sizeof data);
        check_accept("nix-store --dump", nar.data, nar.len);

        /* every bit flip in the header region is either refused cleanly or
         * (e.g. inside file data) still re-encodes to the same bytes */
        for (size_t i = 0; i < 600 && i < nar.len; i++) {
                _cleanup_(nar_reader_freep) struct nar_reader *r = NULL;
                struct buf out = BUF_INIT((size_t) 8 << 20);
                int rc;

                nar.data[i] ^= 0x10;
                nar_encoder_init(&enc, sink_buf, &out);
                CHECK_OK(nar_reader_new(&nar_reencode_callbacks, &enc, &r));
                rc = nar_reader_feed(r, nar.data, nar.len);
                if (rc == 1) {
                        CHECK_OK(nar_reader_finish(r));
                        CHECK_OK(nar_encoder_finish(&enc));
                        CHECK_EQ_U64(out.len, nar.len);
                        CHECK_MEMEQ(out.data, nar.data, nar.len);
                } else {
                        if (rc == 0)
                                rc = nar_reader_finish(r);
                        CHECK_RC(rc, -EBADMSG);
                        CHECK(startswith(nar_reader_error(r), "at NAR offset "));
                }
                nar.data[i] ^= 0x10;
                buf_free(&out);
        }

        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        CHECK_OK(system(cmd));
        buf_free(&nar);
}

static int read_file(const char *path, struct buf *b) {
        FILE *f = fopen(path, "rb");
        if (!f)
                return -errno;
        for (;;) {
                uint8_t tmp[65536];
                size_t k = fread(tmp, 1, sizeof tmp, f);
                if (k == 0)
                        break;
                CHECK_OK(buf_append(b, tmp, k));
        }
        fclose(f);
        return 0;
}

/* The saved corpus: every file under reject/ is refused, every file under
 * accept/ accepted and re-encoded exactly. */
static void test_saved_corpus(void) {
        const char *data_dir = getenv("TROVE_TEST_DATA");
        char root[4096];
        unsigned counts[2] = { 0, 0 };

        CHECK(data_dir);
        snprintf(root, sizeof root, "%s/../../fuzz/corpus/nar_reader", data_dir);
        for (int accept = 0; accept <= 1; accept++) {
                char dir[4200];
                DIR *d;
                struct dirent *de;

                snprintf(dir, sizeof dir, "%s/%s", root, accept ? "accept" : "reject");
                d = opendir(dir);
                if (!d)
                        TEST_FAIL("cannot open %s", dir);
                while ((de = readdir(d))) {
                        char path[8400];
                        struct buf b = BUF_INIT((size_t) 1 << 24);
                        if (de->d_name[0] == '.')
                                continue;
                        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                        CHECK_OK(read_file(path, &b));
                        if (accept)
                                check_accept(path, b.data, b.len);
                        else
                                check_reject(path, b.data, b.len, NULL);
                        counts[accept]++;
                        buf_free(&b);
                }
                closedir(d);
        }
        /* the corpus exists and is not trivially small */
        CHECK(counts[0] >= 30);
        CHECK(counts[1] >= 5);
}

int main(int argc, char **argv) {
        if (argc == 3 && streq(argv[1], "--write-corpus"))
                return write_corpus(argv[2]);
        test_events_and_offsets();
        test_reject_cases();
        test_accept_seeds();
        test_callback_error();
        test_nix_dumps();
        test_saved_corpus();
        return 0;
}
