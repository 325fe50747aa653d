/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include "trove/storepath.h"
#include "test.h"

/* Paths printed by `nix-store --print-fixed-path sha256 <hash> <name>`
 * (Nix 2.8), so Nix itself considers them valid. */
static const struct {
        const char *path, *hash, *name;
} nix_paths[] = {
        { "/nix/store/467mxjn776qs58j748809359zrra1zdi-hello-2.12",
          "467mxjn776qs58j748809359zrra1zdi", "hello-2.12" },
        { "/nix/store/jm28njj99bbgqdc2zi1xad12fcwswqsx-a+b-c.d_e?f=g",
          "jm28njj99bbgqdc2zi1xad12fcwswqsx", "a+b-c.d_e?f=g" },
};

static void check_name_ok(const char *name) {
        int r = storepath_check_name(name, strlen(name));
        if (r != 0)
                TEST_FAIL("name \"%s\" refused (%d)", name, r);
}

static void check_name_bad(const char *name, size_t len) {
        int r = storepath_check_name(name, len);
        if (r != -EINVAL)
                TEST_FAIL("name \"%.*s\" (len %zu) gave %d, want -EINVAL", (int) len, name, len, r);
}

static void test_names(void) {
        char name[300];

        check_name_ok("hello-2.12");
        check_name_ok("a");
        check_name_ok("A-Z_a-z.0-9+?=");
        check_name_ok("source");
        check_name_ok("foo.drv");
        check_name_ok("hello-2.12.1.tar.gz");
        check_name_ok("-leading-dash");
        check_name_ok("trailing.");
        check_name_ok("a..b");

        memset(name, 'x', sizeof name);
        name[STOREPATH_NAME_MAX] = 0;
        check_name_ok(name);                          /* 211: longest */
        check_name_bad(name, STOREPATH_NAME_MAX + 1); /* 212 */
        check_name_bad("", 0);

        /* a leading dot (covers "." and "..", which Nix >= 2.20 refuses too) */
        check_name_bad(".", 1);
        check_name_bad("..", 2);
        check_name_bad(".hidden", 7);
        check_name_bad("..-foo", 6);

        static const char *bad_chars = " /\\@%!\"#$&'()*,:;<>[]^`{|}~\t\n";
        for (const char *c = bad_chars; *c; c++) {
                snprintf(name, sizeof name, "foo%cbar", *c);
                check_name_bad(name, strlen(name));
        }
        check_name_bad("foo\0bar", 7);
        check_name_bad("caf\xc3\xa9", 5);
        check_name_bad("\x80", 1);
}

static void test_hash_part(void) {
        CHECK(storepath_is_hash_part("467mxjn776qs58j748809359zrra1zdi", 32));
        CHECK(storepath_is_hash_part("00000000000000000000000000000000", 32));
        CHECK(storepath_is_hash_part("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", 32));
        CHECK(!storepath_is_hash_part("467mxjn776qs58j748809359zrra1zd", 31));
        CHECK(!storepath_is_hash_part("467mxjn776qs58j748809359zrra1zdii", 33));
        CHECK(!storepath_is_hash_part("", 0));
        /* e, o, u, t are not in Nix's alphabet; neither is upper case */
        CHECK(!storepath_is_hash_part("467mxjn776qs58j748809359zrra1zde", 32));
        CHECK(!storepath_is_hash_part("467mxjn776qs58j748809359zrra1zdo", 32));
        CHECK(!storepath_is_hash_part("467mxjn776qs58j748809359zrra1zdu", 32));
        CHECK(!storepath_is_hash_part("467mxjn776qs58j748809359zrra1zdt", 32));
        CHECK(!storepath_is_hash_part("467MXJN776QS58J748809359ZRRA1ZDI", 32));
        CHECK(!storepath_is_hash_part("467mxjn776qs58j748809359zrra1zd-", 32));
}

static void test_basename(void) {
        struct storepath sp;
        char s[400];

        for (size_t i = 0; i < ELEMENTSOF(nix_paths); i++) {
                const char *base = strrchr(nix_paths[i].path, '/') + 1;

                memset(&sp, 0, sizeof sp);
                CHECK_OK(storepath_parse_basename(base, strlen(base), &sp));
                CHECK_STREQ(sp.hash, nix_paths[i].hash);
                CHECK_STREQ(sp.name, nix_paths[i].name);
        }

        /* len is honoured: the rest of the string is not looked at */
        CHECK_OK(storepath_parse_basename("467mxjn776qs58j748809359zrra1zdi-hello/bin/sh", 38, &sp));
        CHECK_STREQ(sp.name, "hello");

        /* longest name */
        memcpy(s, "467mxjn776qs58j748809359zrra1zdi-", 33);
        memset(s + 33, 'n', STOREPATH_NAME_MAX);
        s[33 + STOREPATH_NAME_MAX] = 0;
        CHECK_OK(storepath_parse_basename(s, strlen(s), &sp));
        CHECK_EQ_U64(strlen(sp.name), STOREPATH_NAME_MAX);
        s[33 + STOREPATH_NAME_MAX] = 'n';
        s[34 + STOREPATH_NAME_MAX] = 0;
        CHECK_RC(storepath_parse_basename(s, strlen(s), &sp), -EINVAL);

        static const char *bad[] = {
                "",
                "467mxjn776qs58j748809359zrra1zdi",          /* no name */
                "467mxjn776qs58j748809359zrra1zdi-",         /* empty name */
                "467mxjn776qs58j748809359zrra1zdihello",     /* no dash */
                "467mxjn776qs58j748809359zrra1zdi_hello",
                "467mxjn776qs58j748809359zrra1zd-hello",     /* 31-char hash */
                "467mxjn776qs58j748809359zrra1zdii-hello",   /* 33-char hash */
                "467mxjn776qs58j748809359zrra1zde-hello",    /* 'e' */
                "467MXJN776QS58J748809359ZRRA1ZDI-hello",
                "467mxjn776qs58j748809359zrra1zdi-.hello",
                "467mxjn776qs58j748809359zrra1zdi-..",
                "467mxjn776qs58j748809359zrra1zdi-a/b",
                "467mxjn776qs58j748809359zrra1zdi-hello/",
                "467mxjn776qs58j748809359zrra1zdi-hello world",
                "..",
                ".",
                "hello",
                "/nix/store/467mxjn776qs58j748809359zrra1zdi-hello",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct storepath untouched = { .hash = "X", .name = "Y" };
                int r = storepath_parse_basename(bad[i], strlen(bad[i]), &untouched);
                if (r != -EINVAL)
                        TEST_FAIL("basename \"%s\" gave %d, want -EINVAL", bad[i], r);
                CHECK_STREQ(untouched.hash, "X");
                CHECK_STREQ(untouched.name, "Y");
        }
        CHECK_RC(storepath_parse_basename("467mxjn776qs58j748809359zrra1zdi-he\0lo", 38, &sp), -EINVAL);
}

static void check_path_bad(const char *store_dir, const char *path) {
        struct storepath sp = { .hash = "X", .name = "Y" };
        int r = storepath_parse(store_dir, path, &sp);

        if (r != -EINVAL)
                TEST_FAIL("path \"%s\" under \"%s\" gave %d, want -EINVAL", path, store_dir, r);
        CHECK_STREQ(sp.hash, "X");
        CHECK_STREQ(sp.name, "Y");
}

static void test_paths(void) {
        struct storepath sp;

        for (size_t i = 0; i < ELEMENTSOF(nix_paths); i++) {
                memset(&sp, 0, sizeof sp);
                CHECK_OK(storepath_parse("/nix/store", nix_paths[i].path, &sp));
                CHECK_STREQ(sp.hash, nix_paths[i].hash);
                CHECK_STREQ(sp.name, nix_paths[i].name);
        }
        CHECK_OK(storepath_parse(STORE_DIR_DEFAULT, nix_paths[0].path, &sp));
        memset(&sp, 0, sizeof sp);
        CHECK_OK(storepath_parse(NULL, nix_paths[0].path, &sp)); /* NULL: the default */
        CHECK_STREQ(sp.name, nix_paths[0].name);

        /* A custom store: this one printed by
         * NIX_STORE_DIR=/tmp/h1/store nix-store --print-fixed-path sha256 <empty> hello */
        memset(&sp, 0, sizeof sp);
        CHECK_OK(storepath_parse("/tmp/h1/store", "/tmp/h1/store/ywg5wc4rvix2b5z7zsmx6v14m6rk4jdi-hello", &sp));
        CHECK_STREQ(sp.hash, "ywg5wc4rvix2b5z7zsmx6v14m6rk4jdi");
        CHECK_STREQ(sp.name, "hello");
        check_path_bad("/nix/store", "/tmp/h1/store/ywg5wc4rvix2b5z7zsmx6v14m6rk4jdi-hello");
        check_path_bad("/tmp/h1/store", nix_paths[0].path);
        /* a store dir that is a prefix of another directory's name */
        check_path_bad("/nix/sto", nix_paths[0].path);
        check_path_bad("/nix/store", "/nix/store2/467mxjn776qs58j748809359zrra1zdi-hello-2.12");

        /* Trailing slashes name the same directory, as in Nix. */
        memset(&sp, 0, sizeof sp);
        CHECK_OK(storepath_parse("/nix/store", "/nix/store/467mxjn776qs58j748809359zrra1zdi-hello-2.12/", &sp));
        CHECK_STREQ(sp.name, "hello-2.12");
        CHECK_OK(storepath_parse("/nix/store", "/nix/store/467mxjn776qs58j748809359zrra1zdi-hello-2.12//", &sp));
        CHECK_STREQ(sp.name, "hello-2.12");

        /* traversal and anything that is not exactly <dir>/<basename> */
        check_path_bad("/nix/store", "/nix/store/..");
        check_path_bad("/nix/store", "/nix/store/.");
        check_path_bad("/nix/store", "/nix/store/");
        check_path_bad("/nix/store", "/nix/store");
        check_path_bad("/nix/store", "/nix/store/../x");
        check_path_bad("/nix/store", "/nix/store/../467mxjn776qs58j748809359zrra1zdi-hello-2.12");
        check_path_bad("/nix/store", "/nix/store/../store/467mxjn776qs58j748809359zrra1zdi-hello-2.12");
        check_path_bad("/nix/store", "/nix/store/./467mxjn776qs58j748809359zrra1zdi-hello-2.12");
        check_path_bad("/nix/store", "/nix/store//467mxjn776qs58j748809359zrra1zdi-hello-2.12");
        check_path_bad("/nix/store", "/nix/store/467mxjn776qs58j748809359zrra1zdi-hello-2.12/..");
        check_path_bad("/nix/store", "/nix/store/467mxjn776qs58j748809359zrra1zdi-hello-2.12/../x");
        check_path_bad("/nix/store", "/nix/store/467mxjn776qs58j748809359zrra1zdi-hello-2.12/bin/hello");
        check_path_bad("/nix/store", "/nix/store/467mxjn776qs58j748809359zrra1zdi-hello-2.12/.");
        check_path_bad("/nix/store", "/nix/store/467mxjn776qs58j748809359zrra1zdi-..");
        check_path_bad("/nix/store", "/nix/store/467mxjn776qs58j748809359zrra1zdi-../../etc");
        check_path_bad("/nix/store", "nix/store/467mxjn776qs58j748809359zrra1zdi-hello-2.12");
        check_path_bad("/nix/store", "467mxjn776qs58j748809359zrra1zdi-hello-2.12");
        check_path_bad("/nix/store", "//nix/store/467mxjn776qs58j748809359zrra1zdi-hello-2.12");
        check_path_bad("/nix/store", "");

        /* the store directory itself must be absolute, without trailing slash */
        check_path_bad("/nix/store/", "/nix/store/467mxjn776qs58j748809359zrra1zdi-hello-2.12");
        check_path_bad("nix/store", "nix/store/467mxjn776qs58j748809359zrra1zdi-hello-2.12");
        check_path_bad("/", "/467mxjn776qs58j748809359zrra1zdi-hello-2.12");
        check_path_bad("", "/467mxjn776qs58j748809359zrra1zdi-hello-2.12");
}

static void test_store_dirs(void) {
        char longdir[STOREDIR_MAX + 2];
        const char *good[] = { "/nix/store", "/a", "/gnu/store", "/opt/nix-2.8/store" };
        const char *bad[] = { "", "/", "nix/store", "/nix/store/", "//nix", "/nix//store", "/nix/./store",
                              "/nix/../store", "/nix/.", "/nix/store\n", "/nix store", "/nix/st\x7fore" };

        for (size_t i = 0; i < sizeof good / sizeof *good; i++)
                if (!storepath_dir_valid(good[i]))
                        TEST_FAIL("store dir \"%s\" refused", good[i]);
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
                if (storepath_dir_valid(bad[i]))
                        TEST_FAIL("store dir \"%s\" accepted", bad[i]);
        longdir[0] = '/';
        memset(longdir + 1, 'a', STOREDIR_MAX - 1);
        longdir[STOREDIR_MAX] = 0;
        if (!storepath_dir_valid(longdir))
                TEST_FAIL("store dir of %d bytes refused", STOREDIR_MAX);
        longdir[STOREDIR_MAX] = 'a';
        longdir[STOREDIR_MAX + 1] = 0;
        if (storepath_dir_valid(longdir))
                TEST_FAIL("store dir of %d bytes accepted", STOREDIR_MAX + 1);
}

int main(void) {
        test_names();
        test_store_dirs();
        test_hash_part();
        test_basename();
        test_paths();
        return 0;
}
