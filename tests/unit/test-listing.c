/* SPDX-License-Identifier: Apache-2.0 */
/*
 * NAR listings: the builder driven by reader events, lookups, the .ls JSON
 * (byte-compared with what Nix 2.8 writes, recorded here and produced at
 * test time by `nix copy --to file://…?write-nar-listing=1`), and
 * refusal of malformed .ls documents.
 */
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "test.h"
#include "trove/listing.h"

static const struct nar_reader_callbacks *cb = &listing_builder_callbacks;

static void check_same_listing(const struct listing *a, const struct listing *b) {
        CHECK_EQ_U64(a->n_nodes, b->n_nodes);
        CHECK_EQ_U64(a->pool_len, b->pool_len);
        CHECK_MEMEQ(a->nodes, b->nodes, a->n_nodes * sizeof *a->nodes);
        CHECK_MEMEQ(a->pool, b->pool, a->pool_len);
        size_t nchild = 0;
        for (uint32_t i = 0; i < a->n_nodes; i++)
                nchild += a->nodes[i].child_count;
        CHECK_MEMEQ(a->child_index, b->child_index, nchild * sizeof *a->child_index);
}

static uint32_t lookup(const struct listing *l, const char *path) {
        uint32_t idx = UINT32_MAX;
        CHECK_OK(listing_lookup_path(l, path, &idx));
        return idx;
}

/* The tree: / {a/ {x (exec, 3 bytes)}, b -> a/x, c (5 bytes), d/ {}} */
static void build_sample(struct listing *ret) {
        _cleanup_(listing_builder_freep) struct listing_builder *b = NULL;

        CHECK_OK(listing_builder_new(&b));
        CHECK_OK(cb->directory(b, "", 8));
        CHECK_OK(cb->directory(b, "a", 100));
        CHECK_OK(cb->regular(b, "a/x", 3, true, 200));
        CHECK_OK(cb->directory_end(b, "a"));
        CHECK_OK(cb->symlink(b, "b", "a/x", 3));
        CHECK_OK(cb->regular(b, "c", 5, false, 400));
        CHECK_OK(cb->directory(b, "d", 500));
        CHECK_OK(cb->directory_end(b, "d"));
        CHECK_RC(listing_builder_take(b, ret), -EBADMSG); /* root still open */
        CHECK(listing_builder_error(b));
}

static void test_builder(void) {
        _cleanup_(listing_builder_freep) struct listing_builder *b = NULL;
        struct listing l = {};
        uint32_t idx;

        CHECK_OK(listing_builder_new(&b));
        CHECK_OK(cb->directory(b, "", 8));
        CHECK_OK(cb->directory(b, "a", 100));
        CHECK_OK(cb->regular(b, "a/x", 3, true, 200));
        CHECK_OK(cb->directory_end(b, "a"));
        CHECK_OK(cb->symlink(b, "b", "a/x", 3));
        CHECK_OK(cb->regular(b, "c", 5, false, 400));
        CHECK_OK(cb->directory(b, "d", 500));
        CHECK_OK(cb->directory_end(b, "d"));
        CHECK_OK(cb->directory_end(b, ""));
        CHECK_OK(listing_builder_take(b, &l));

        /* Numbering in NAR order. */
        CHECK_EQ_U64(l.n_nodes, 6);
        CHECK_EQ_U64(lookup(&l, ""), 0);
        CHECK_EQ_U64(lookup(&l, "a"), 1);
        CHECK_EQ_U64(lookup(&l, "a/x"), 2);
        CHECK_EQ_U64(lookup(&l, "b"), 3);
        CHECK_EQ_U64(lookup(&l, "c"), 4);
        CHECK_EQ_U64(lookup(&l, "d"), 5);
        CHECK_EQ_U64(lookup(&l, "/a//x/"), 2);

        const struct listing_node *root = &l.nodes[0], *x = &l.nodes[2], *s = &l.nodes[3];
        CHECK_EQ_U64(root->type, NAR_DIRECTORY);
        CHECK_EQ_U64(root->child_count, 4);
        CHECK_STREQ(listing_name(&l, root), "");
        for (uint32_t i = 0; i < root->child_count; i++)
                CHECK_EQ_U64(l.nodes[l.child_index[root->child_start + i]].parent, 0);
        CHECK_EQ_U64(x->type, NAR_REGULAR);
        CHECK(x->executable);
        CHECK_EQ_U64(x->size, 3);
        CHECK_EQ_U64(x->nar_offset, 200);
        CHECK_EQ_U64(x->parent, 1);
        CHECK_STREQ(listing_name(&l, x), "x");
        CHECK_EQ_U64(s->type, NAR_SYMLINK);
        CHECK_STREQ(listing_target(&l, s), "a/x");
        CHECK_EQ_U64(s->target_len, 3);
        CHECK(!l.nodes[4].executable);
        CHECK_EQ_U64(l.nodes[5].child_count, 0);

        CHECK_RC(listing_lookup_path(&l, "zz", &idx), -ENOENT);
        CHECK_RC(listing_lookup_path(&l, "a/y", &idx), -ENOENT);
        CHECK_RC(listing_lookup_path(&l, "a/x/y", &idx), -ENOTDIR);
        CHECK_RC(listing_lookup_path(&l, "b/x", &idx), -ENOTDIR); /* symlinks not followed */
        CHECK_RC(listing_lookup_path(&l, "..", &idx), -ENOENT);
        CHECK_RC(listing_lookup(&l, 2, "q", 1, &idx), -ENOTDIR);
        CHECK_RC(listing_lookup(&l, 99, "q", 1, &idx), -EINVAL);
        CHECK_OK(listing_lookup(&l, 0, "cxyz", 1, &idx)); /* length-bounded name */
        CHECK_EQ_U64(idx, 4);
        CHECK_RC(listing_lookup(&l, 0, "", 0, &idx), -ENOENT);

        /* JSON as Nix writes it, and back to an identical structure. */
        _cleanup_free_ char *json = NULL;
        size_t json_len;
        CHECK_OK(listing_to_json(&l, &json, &json_len));
        CHECK_STREQ(json, "{\"version\":1,\"root\":{\"type\":\"directory\",\"entries\":{"
                          "\"a\":{\"type\":\"directory\",\"entries\":{\"x\":{\"type\":\"regular\","
                          "\"size\":3,\"executable\":true,\"narOffset\":200}}},"
                          "\"b\":{\"type\":\"symlink\",\"target\":\"a/x\"},"
                          "\"c\":{\"type\":\"regular\",\"size\":5,\"narOffset\":400},"
                          "\"d\":{\"type\":\"directory\",\"entries\":{}}}}}");
        CHECK_EQ_U64(json_len, strlen(json));
        struct listing l2 = {};
        CHECK_OK(listing_from_json(json, json_len, 0, &l2, NULL));
        check_same_listing(&l, &l2);
        listing_free(&l2);

        /* The same tree in another key order gives the same structure. */
        const char *shuffled =
                "{\"root\":{\"entries\":{\"d\":{\"entries\":{},\"type\":\"directory\"},"
                "\"c\":{\"narOffset\":400,\"size\":5,\"type\":\"regular\",\"executable\":false},"
                "\"b\":{\"target\":\"a/x\",\"type\":\"symlink\"},"
                "\"a\":{\"type\":\"directory\",\"entries\":{\"x\":{\"executable\":true,"
                "\"narOffset\":200,\"type\":\"regular\",\"size\":3}}}},\"type\":\"directory\"},"
                "\"version\":1}";
        CHECK_OK(listing_from_json(shuffled, strlen(shuffled), 0, &l2, NULL));
        check_same_listing(&l, &l2);
        listing_free(&l2);

        listing_free(&l);
        listing_free(&l); /* idempotent */

        build_sample(&l); /* take before the end is refused */
}

static void test_builder_single_nodes(void) {
        _cleanup_(listing_builder_freep) struct listing_builder *b = NULL;
        struct listing l = {};
        _cleanup_free_ char *json = NULL;

        CHECK_OK(listing_builder_new(&b));
        CHECK_OK(cb->regular(b, "", 11, false, 96));
        CHECK_RC(cb->regular(b, "", 11, false, 96), -EBADMSG); /* after the end */
        listing_builder_free(TAKE_PTR(b));

        CHECK_OK(listing_builder_new(&b));
        CHECK_OK(cb->symlink(b, "", "/x", 2));
        CHECK_OK(listing_builder_take(b, &l));
        CHECK_EQ_U64(l.n_nodes, 1);
        CHECK_OK(listing_to_json(&l, &json, NULL));
        CHECK_STREQ(json, "{\"version\":1,\"root\":{\"type\":\"symlink\",\"target\":\"/x\"}}");
        listing_free(&l);
}

/* Each sequence must be refused by the builder itself. */
static void test_builder_rejects(void) {
        struct listing_builder *b;

#define FRESH()                                                 \
        do {                                                    \
                CHECK_OK(listing_builder_new(&b));              \
                CHECK_OK(cb->directory(b, "", 8));              \
        } while (0)
#define REFUSED(expr)                                           \
        do {                                                    \
                CHECK_RC(expr, -EBADMSG);                       \
                CHECK(listing_builder_error(b));                \
                listing_builder_free(b);                        \
        } while (0)

        FRESH();
        CHECK_OK(cb->regular(b, "b", 1, false, 16));
        REFUSED(cb->regular(b, "a", 1, false, 32)); /* unsorted */
        FRESH();
        CHECK_OK(cb->regular(b, "a", 1, false, 16));
        REFUSED(cb->symlink(b, "a", "t", 1)); /* duplicate */
        FRESH();
        REFUSED(cb->regular(b, ".", 1, false, 16));
        FRESH();
        REFUSED(cb->directory(b, "..", 16));
        FRESH();
        REFUSED(cb->regular(b, "a/b", 1, false, 16)); /* nesting mismatch */
        FRESH();
        REFUSED(cb->symlink(b, "s", "", 0));
        FRESH();
        REFUSED(cb->symlink(b, "s", "a\0b", 3));
        FRESH();
        REFUSED(cb->regular(b, "f", 1, false, 17)); /* NAR contents are 8-aligned */
        CHECK_OK(listing_builder_new(&b));
        REFUSED(cb->directory_end(b, "")); /* nothing open */
        CHECK_OK(listing_builder_new(&b));
        REFUSED(cb->regular(b, "a", 1, false, 16)); /* entry before the root */

        char name[NAR_NAME_MAX + 2];
        memset(name, 'n', sizeof name - 1);
        name[sizeof name - 1] = 0;
        FRESH();
        REFUSED(cb->regular(b, name, 1, false, 16));
        name[NAR_NAME_MAX] = 0;
        FRESH();
        CHECK_OK(cb->regular(b, name, 1, false, 16)); /* exactly the limit */
        listing_builder_free(b);

        /* Nesting deeper than NAR_DEPTH_MAX. */
        char path[2 * NAR_DEPTH_MAX + 4] = "";
        size_t plen = 0;
        FRESH();
        for (int d = 1; d < NAR_DEPTH_MAX; d++) {
                if (plen)
                        path[plen++] = '/';
                path[plen++] = 'd';
                path[plen] = 0;
                CHECK_OK(cb->directory(b, path, 16));
        }
        /* With NAR_DEPTH_MAX directories open, one more entry is fine
         * (nar_reader counts the same way), but nothing inside it. */
        path[plen++] = '/';
        path[plen++] = 'd';
        path[plen] = 0;
        CHECK_OK(cb->directory(b, path, 16));
        path[plen++] = '/';
        path[plen++] = 'f';
        path[plen] = 0;
        REFUSED(cb->regular(b, path, 0, false, 16));

        /* A failed builder stays failed. */
        FRESH();
        CHECK_RC(cb->regular(b, ".", 1, false, 16), -EBADMSG);
        CHECK_RC(cb->directory_end(b, ""), -EBADMSG);
        struct listing l;
        CHECK_RC(listing_builder_take(b, &l), -EBADMSG);
        listing_builder_free(b);
#undef FRESH
#undef REFUSED
}

/* Written by Nix 2.8 (`nix copy --to 'file://…?write-nar-listing=1'`) for a
 * small tree; NAR offsets refer to its NAR. */
static const char nix_ls[] =
        "{\"version\":1,\"root\":{\"type\":\"directory\",\"entries\":{\"bin\":{\"type\":\"directory\","
        "\"entries\":{\"hi\":{\"type\":\"regular\",\"size\":18,\"executable\":true,\"narOffset\":400},"
        "\"hi-link\":{\"type\":\"symlink\",\"target\":\"hi\"}}},\"dangling\":{\"type\":\"symlink\","
        "\"target\":\"/nonexistent/target\"},\"lib\":{\"type\":\"directory\",\"entries\":{\"doclink\":"
        "{\"type\":\"symlink\",\"target\":\"../share/doc\"}}},\"share\":{\"type\":\"directory\","
        "\"entries\":{\"Zupper\":{\"type\":\"regular\",\"size\":1,\"narOffset\":1544},\"doc\":{\"type\":"
        "\"directory\",\"entries\":{\"README\":{\"type\":\"regular\",\"size\":6,\"narOffset\":1872},"
        "\"empty\":{\"type\":\"directory\",\"entries\":{}},\"quote\":{\"type\":\"regular\",\"size\":6,"
        "\"narOffset\":2232}}},\"empty-file\":{\"type\":\"regular\",\"size\":0,\"narOffset\":2464},"
        "\"sp ace\":{\"type\":\"regular\",\"size\":9,\"narOffset\":2648},\"\xc3\xbctf8-\xc3\xa9\":{\"type\":"
        "\"regular\",\"size\":1,\"narOffset\":2848}}}}}}";

static void test_recorded_nix_ls(void) {
        struct listing l = {};
        _cleanup_free_ char *json = NULL;
        struct trove_error err = {};

        CHECK_OK(listing_from_json(nix_ls, strlen(nix_ls), 2936, &l, &err));
        CHECK_OK(listing_to_json(&l, &json, NULL));
        CHECK_STREQ(json, nix_ls);

        const struct listing_node *hi = &l.nodes[lookup(&l, "bin/hi")];
        CHECK(hi->executable);
        CHECK_EQ_U64(hi->size, 18);
        CHECK_EQ_U64(hi->nar_offset, 400);
        CHECK_STREQ(listing_target(&l, &l.nodes[lookup(&l, "lib/doclink")]), "../share/doc");
        CHECK_EQ_U64(l.nodes[lookup(&l, "share/\xc3\xbctf8-\xc3\xa9")].nar_offset, 2848);
        /* Byte order: upper case sorts first. */
        const struct listing_node *share = &l.nodes[lookup(&l, "share")];
        CHECK_STREQ(listing_name(&l, &l.nodes[l.child_index[share->child_start]]), "Zupper");
        listing_free(&l);

        /* The same listing against a NAR too small for its offsets. */
        CHECK_RC(listing_from_json(nix_ls, strlen(nix_ls), 2848, &l, &err), -EBADMSG);
        CHECK(strstr(err.msg, "beyond"));
}

/* ---- real Nix at test time ---- */

static char *read_all(FILE *f, size_t *ret_len) {
        size_t n = 0, cap = 1 << 16;
        char *p = malloc(cap + 1);
        CHECK(p);
        for (;;) {
                if (n == cap) {
                        cap *= 2;
                        p = realloc(p, cap + 1);
                        CHECK(p);
                }
                size_t k = fread(p + n, 1, cap - n, f);
                if (k == 0)
                        break;
                n += k;
        }
        p[n] = 0;
        *ret_len = n;
        return p;
}

static char *run(const char *cmd, size_t *ret_len) {
        FILE *f = popen(cmd, "r");
        CHECK(f);
        char *out = read_all(f, ret_len);
        int st = pclose(f);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                TEST_FAIL("command failed: %s", cmd);
        return out;
}

static void write_file(const char *path, const char *text) {
        FILE *f = fopen(path, "w");
        CHECK(f);
        CHECK(fputs(text, f) >= 0);
        CHECK(fclose(f) == 0);
}

/* Builds a store path with the builder script, copies it to a file:// cache
 * with a NAR listing, and checks our listing of `nix-store --dump` against
 * the .ls Nix wrote. Returns whether the .ls parsed. */
static bool compare_with_nix(const char *dir, const char *tag, const char *script) {
        char path[512], cmd[2048];
        size_t len, nar_len, ls_len;
        struct trove_error err = {};
        struct listing from_nar = {}, from_ls = {};
        bool parsed;

        snprintf(path, sizeof path, "%s/%s.sh", dir, tag);
        write_file(path, script);
        snprintf(path, sizeof path, "%s/%s.nix", dir, tag);
        char expr[1024];
        snprintf(expr, sizeof expr,
                 "derivation { name = \"trove-listing-%s\"; system = builtins.currentSystem;\n"
                 "  builder = \"/bin/sh\"; args = [ \"-e\" ./%s.sh ]; }\n",
                 tag, tag);
        write_file(path, expr);

        snprintf(cmd, sizeof cmd, "nix-build --no-out-link '%s' 2>/dev/null", path);
        _cleanup_free_ char *out = run(cmd, &len);
        while (len > 0 && out[len - 1] == '\n')
                out[--len] = 0;
        CHECK(startswith(out, "/nix/store/") && len > 11 + 32);

        snprintf(cmd, sizeof cmd,
                 "nix copy --to 'file://%s/cache?write-nar-listing=1&compression=none' '%s' 2>/dev/null"
                 " && cat '%s/cache/%.32s.ls'",
                 dir, out, dir, out + 11);
        _cleanup_free_ char *ls = run(cmd, &ls_len);
        snprintf(cmd, sizeof cmd, "nix-store --dump '%s'", out);
        _cleanup_free_ char *nar = run(cmd, &nar_len);

        CHECK_OK(listing_from_nar(nar, nar_len, &from_nar, &err));
        _cleanup_free_ char *json = NULL;
        CHECK_OK(listing_to_json(&from_nar, &json, NULL));
        if (strcmp(json, ls) != 0)
                TEST_FAIL("%s: listing differs from Nix's .ls:\n ours: %s\n  nix: %s", tag, json, ls);

        parsed = listing_from_json(ls, ls_len, nar_len, &from_ls, &err) == 0;
        if (parsed)
                check_same_listing(&from_nar, &from_ls);
        else
                fprintf(stderr, "%s: .ls refused: %s\n", tag, err.msg);
        listing_free(&from_nar);
        listing_free(&from_ls);
        return parsed;
}

static void test_against_nix(void) {
        char dir[] = "/tmp/trove-test-listing-XXXXXX";
        char cmd[256];

        setenv("NIX_CONFIG",
               "build-users-group =\nsubstituters =\nsandbox = false\n"
               "experimental-features = nix-command",
               1);
        CHECK(mkdtemp(dir));
        chmod(dir, 0755);

        /* Escapes, non-ASCII, exec bits, empty files and directories. */
        CHECK(compare_with_nix(
                dir, "names",
                "export PATH=/usr/bin:/bin\n"
                "mkdir -p $out/bin $out/share/doc/empty $out/lib\n"
                "printf '#!/bin/sh\\necho hi\\n' > $out/bin/hi; chmod +x $out/bin/hi\n"
                "ln -s hi $out/bin/hi-link\n"
                "ln -s ../share/doc $out/lib/doclink\n"
                "ln -s '/weird \"target\\\\' $out/dangling\n"
                ": > $out/share/empty-file\n"
                "echo hello > $out/share/doc/README\n"
                "printf x > \"$out/share/q\\\"uote\"\n"
                "printf x > \"$out/share/back\\\\slash\"\n"
                "printf x > \"$out/share/$(printf 'tab\\tname')\"\n"
                "printf x > \"$out/share/$(printf 'nl\\nname')\"\n"
                "printf x > \"$out/share/$(printf 'ctl\\001\\037x')\"\n"
                "printf x > \"$out/share/$(printf 'del\\177x')\"\n"
                "printf x > \"$out/share/\xc3\xbctf8-\xc3\xa9\"\n"
                "printf x > $out/share/Zupper\n"
                "head -c 100000 /dev/zero > $out/share/zeros\n"));

        /* A single executable file as the whole store path. */
        CHECK(compare_with_nix(dir, "file", "printf '#!/bin/sh\\n' > $out\n/bin/chmod +x $out\n"));

        /* Names that are not UTF-8: Nix writes the bytes raw, which is not
         * JSON a strict parser accepts; we write the same and refuse to
         * read it back. */
        CHECK(!compare_with_nix(dir, "latin1",
                                "/bin/mkdir $out\nprintf x > \"$out/$(printf 'caf\\351')\"\n"));

        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        CHECK(system(cmd) == 0);
}

/* ---- refusal of malformed .ls ---- */

static void test_json_rejects(void) {
        static const struct {
                const char *json;
                uint64_t nar_size;
        } bad[] = {
                { "", 0 },
                { "nonsense", 0 },
                { "[]", 0 },
                { "{\"version\":1,\"root\":{\"type\":\"regular\",\"size\":1}", 0 }, /* truncated */
                { "{\"version\":2,\"root\":{\"type\":\"regular\",\"size\":1}}", 0 },
                { "{\"version\":\"1\",\"root\":{\"type\":\"regular\",\"size\":1}}", 0 },
                { "{\"version\":1}", 0 },
                { "{\"version\":1,\"root\":{\"type\":\"regular\",\"size\":1},\"x\":1}", 0 },
                { "{\"version\":1,\"root\":[]}", 0 },
                { "{}", 0 },
                { "{\"size\":1}", 0 },
                { "{\"type\":\"fifo\"}", 0 },
                { "{\"type\":1}", 0 },
                { "{\"type\":\"regular\"}", 0 },
                { "{\"type\":\"regular\",\"size\":-1}", 0 },
                { "{\"type\":\"regular\",\"size\":1.5}", 0 },
                { "{\"type\":\"regular\",\"size\":\"1\"}", 0 },
                { "{\"type\":\"regular\",\"size\":99999999999999999999}", 0 },
                { "{\"type\":\"regular\",\"size\":9223372036854775807,\"narOffset\":8}", 0 },
                { "{\"type\":\"regular\",\"size\":1,\"executable\":\"yes\"}", 0 },
                { "{\"type\":\"regular\",\"size\":1,\"executable\":1}", 0 },
                { "{\"type\":\"regular\",\"size\":1,\"narOffset\":0}", 0 },
                { "{\"type\":\"regular\",\"size\":1,\"narOffset\":-8}", 0 },
                { "{\"type\":\"regular\",\"size\":1,\"narOffset\":12}", 0 },
                { "{\"type\":\"regular\",\"size\":9,\"narOffset\":96}", 104 },
                { "{\"type\":\"regular\",\"size\":0,\"narOffset\":112}", 104 },
                { "{\"type\":\"regular\",\"size\":1,\"mode\":420}", 0 },
                { "{\"type\":\"regular\",\"size\":1,\"size\":2}", 0 }, /* duplicate key */
                { "{\"type\":\"symlink\"}", 0 },
                { "{\"type\":\"symlink\",\"target\":\"\"}", 0 },
                { "{\"type\":\"symlink\",\"target\":5}", 0 },
                { "{\"type\":\"symlink\",\"target\":\"a\\u0000b\"}", 0 },
                { "{\"type\":\"symlink\",\"target\":\"a\",\"size\":1}", 0 },
                { "{\"type\":\"directory\"}", 0 },
                { "{\"type\":\"directory\",\"entries\":[]}", 0 },
                { "{\"type\":\"directory\",\"entries\":{},\"size\":0}", 0 },
                { "{\"type\":\"directory\",\"entries\":{\"\":{\"type\":\"directory\",\"entries\":{}}}}", 0 },
                { "{\"type\":\"directory\",\"entries\":{\".\":{\"type\":\"directory\",\"entries\":{}}}}", 0 },
                { "{\"type\":\"directory\",\"entries\":{\"..\":{\"type\":\"directory\",\"entries\":{}}}}", 0 },
                { "{\"type\":\"directory\",\"entries\":{\"a/b\":{\"type\":\"symlink\",\"target\":\"x\"}}}", 0 },
                { "{\"type\":\"directory\",\"entries\":{\"a\\u0000\":{\"type\":\"symlink\",\"target\":\"x\"}}}", 0 },
                { "{\"type\":\"directory\",\"entries\":{\"a\":{\"type\":\"symlink\",\"target\":\"x\"},"
                  "\"a\":{\"type\":\"symlink\",\"target\":\"y\"}}}", 0 },
                { "{\"type\":\"directory\",\"entries\":{\"a\":5}}", 0 },
                { "{\"type\":\"directory\",\"entries\":{\"a\":{\"type\":\"regular\",\"size\":1,"
                  "\"narOffset\":96},\"b\":{\"type\":\"regular\",\"size\":1,\"narOffset\":200}}}", 150 },
                { "{\"type\":\"directory\",\"entries\":{\"\xff\":{\"type\":\"symlink\",\"target\":\"x\"}}}", 0 },
        };
        struct listing l;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct trove_error err = { .msg = "" };
                int r = listing_from_json(bad[i].json, strlen(bad[i].json), bad[i].nar_size, &l, &err);
                if (r >= 0)
                        TEST_FAIL("accepted bad listing #%zu: %s", i, bad[i].json);
                CHECK_RC(r, -EBADMSG);
                if (!err.msg[0])
                        TEST_FAIL("no message for bad listing #%zu", i);
        }

        /* Bounds: names, targets, depth. */
        char big[NAR_TARGET_MAX + 200];
        char name[NAR_NAME_MAX + 2];
        memset(name, 'n', sizeof name - 1);
        name[sizeof name - 1] = 0;
        snprintf(big, sizeof big, "{\"type\":\"directory\",\"entries\":{\"%s\":{\"type\":\"symlink\",\"target\":\"x\"}}}",
                 name);
        CHECK_RC(listing_from_json(big, strlen(big), 0, &l, NULL), -EBADMSG);
        name[NAR_NAME_MAX] = 0;
        snprintf(big, sizeof big, "{\"type\":\"directory\",\"entries\":{\"%s\":{\"type\":\"symlink\",\"target\":\"x\"}}}",
                 name);
        CHECK_OK(listing_from_json(big, strlen(big), 0, &l, NULL));
        listing_free(&l);

        size_t n = (size_t) snprintf(big, sizeof big, "{\"type\":\"symlink\",\"target\":\"");
        memset(big + n, 't', NAR_TARGET_MAX + 1);
        n += NAR_TARGET_MAX + 1;
        n += (size_t) snprintf(big + n, sizeof big - n, "\"}");
        CHECK_RC(listing_from_json(big, n, 0, &l, NULL), -EBADMSG);
        memmove(big + n - 3, big + n - 2, 3); /* one t fewer: exactly the limit */
        CHECK_OK(listing_from_json(big, n - 1, 0, &l, NULL));
        CHECK_EQ_U64(l.nodes[0].target_len, NAR_TARGET_MAX);
        listing_free(&l);

        for (int depth = NAR_DEPTH_MAX + 1; depth <= NAR_DEPTH_MAX + 2; depth++) {
                struct buf b = BUF_INIT(1 << 20);
                for (int d = 0; d < depth; d++)
                        CHECK_OK(buf_append_str(&b, d ? "\"d\":{\"type\":\"directory\",\"entries\":{"
                                                      : "{\"type\":\"directory\",\"entries\":{"));
                for (int d = 0; d < depth; d++)
                        CHECK_OK(buf_append_str(&b, "}}"));
                int r = listing_from_json((const char *) b.data, b.len, 0, &l, NULL);
                if (depth == NAR_DEPTH_MAX + 1) {
                        CHECK_OK(r);
                        CHECK_EQ_U64(l.n_nodes, NAR_DEPTH_MAX + 1);
                        listing_free(&l);
                } else
                        CHECK_RC(r, -EBADMSG);
                buf_free(&b);
        }

        /* Accepted: a bare node, a file without narOffset (Nix writes none
         * when it does not know it). */
        const char *bare = "{\"type\":\"regular\",\"size\":5}";
        CHECK_OK(listing_from_json(bare, strlen(bare), 0, &l, NULL));
        CHECK_EQ_U64(l.nodes[0].nar_offset, 0);
        _cleanup_free_ char *json = NULL;
        CHECK_OK(listing_to_json(&l, &json, NULL));
        CHECK_STREQ(json, "{\"version\":1,\"root\":{\"type\":\"regular\",\"size\":5}}");
        listing_free(&l);
}

static void test_from_nar_rejects(void) {
        struct listing l;
        struct trove_error err = {};
        static const char junk[] = "\x0d\0\0\0\0\0\0\0nix-archive-2\0\0\0";

        CHECK(listing_from_nar(junk, sizeof junk - 1, &l, &err) < 0);
        CHECK(err.msg[0]);
        CHECK(listing_from_nar("", 0, &l, &err) < 0);
}

int main(void) {
        test_builder();
        test_builder_single_nodes();
        test_builder_rejects();
        test_recorded_nix_ls();
        test_json_rejects();
        test_from_nar_rejects();
        test_against_nix();
        return 0;
}
