/* SPDX-License-Identifier: Apache-2.0 */
/*
 * narinfo documents written and signed by Nix 2.8 (`nix copy --to
 * file://…?secret-key=…`, `nix store sign`, `nix store add-file`): parse,
 * render byte for byte, fingerprint, sign to the same bytes, verify, and
 * refuse tampering and malformed input.
 */
#include "test.h"
#include "trove/buf.h"
#include "trove/narinfo.h"

static const char PUB1[] = "test-key-1:1XpFbYn0rRXVW+jN8Ls4xloxQBHMHQEAiGT3Mfp24wI=";
static const char SEC1[] =
        "test-key-1:8ZY61nqumqEbWyCXzHQNZYDBbf8k1WMgKIBUka5MkYvVekVtifStFdVb6M3wuzjGWjFAEcwdAQCIZPcx+nbjAg==";
static const char PUB2[] = "cache.example.org-1:7DT91Nhiwm/sjlAHR+nGmUaRO50nAUmxytt7ruVKmzw=";

/* nix copy --to 'file://…?secret-key=sec1&compression=none' */
static const char NI_TOP[] =
        "StorePath: /nix/store/kkfb6hhfhms083phnag9p71n200krgrf-trove-sig-test\n"
        "URL: nar/1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0.nar\n"
        "Compression: none\n"
        "FileHash: sha256:1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0\n"
        "FileSize: 176\n"
        "NarHash: sha256:1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0\n"
        "NarSize: 176\n"
        "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep\n"
        "Deriver: zk2f9g21l5dlx9wrxz1md0rn5hmyglvn-trove-sig-test.drv\n"
        "Sig: test-key-1:p2fr2QPKlgqUJOLxgh4DLNk4MK8zs3AjlRxDhAC9N2rmwLWyssz1GgYvV9gYYQlYYFJR29VtgL7i7CH03zhZDg==\n";
static const char FP_TOP[] =
        "1;/nix/store/kkfb6hhfhms083phnag9p71n200krgrf-trove-sig-test;"
        "sha256:1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0;176;"
        "/nix/store/ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep";

static const char NI_DEP[] =
        "StorePath: /nix/store/ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep\n"
        "URL: nar/00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv.nar\n"
        "Compression: none\n"
        "FileHash: sha256:00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv\n"
        "FileSize: 120\n"
        "NarHash: sha256:00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv\n"
        "NarSize: 120\n"
        "References: \n"
        "Deriver: cww9xdlrcgiap8hxjrjkd910nmmm79jk-trove-sig-dep.drv\n"
        "Sig: test-key-1:autLZaLgXz0v0PtgtrojRgESqQeg6PqHI/YBT7VTI7NWUmwkhSQwmyPmP7SSmBj+2I+3VqWsAY7K3D9QnWw4BA==\n";
static const char FP_DEP[] =
        "1;/nix/store/ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep;"
        "sha256:00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv;120;";

/* `nix store sign --key-file sec2` on the path, then nix copy with sec1 and
 * xz: two signatures, written sorted. */
static const char NI_TWO_SIGS[] =
        "StorePath: /nix/store/kkfb6hhfhms083phnag9p71n200krgrf-trove-sig-test\n"
        "URL: nar/09kbgybb7985p8d5pykakp8syaaglad1hx503hklmir202zn4v03.nar.xz\n"
        "Compression: xz\n"
        "FileHash: sha256:09kbgybb7985p8d5pykakp8syaaglad1hx503hklmir202zn4v03\n"
        "FileSize: 180\n"
        "NarHash: sha256:1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0\n"
        "NarSize: 176\n"
        "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep\n"
        "Deriver: zk2f9g21l5dlx9wrxz1md0rn5hmyglvn-trove-sig-test.drv\n"
        "Sig: cache.example.org-1:dU/khg/aj5zvvSZZMqcR8gaVbLbs+P6K6TBpb+SLr3kL+ONBS3znfiNHzZq4cdjLAxdsEOhFge5XAmXFbDuHAA==\n"
        "Sig: test-key-1:p2fr2QPKlgqUJOLxgh4DLNk4MK8zs3AjlRxDhAC9N2rmwLWyssz1GgYvV9gYYQlYYFJR29VtgL7i7CH03zhZDg==\n";

/* nix store add-file: content-addressed, no deriver, signed with sec2. */
static const char NI_CA[] =
        "StorePath: /nix/store/2z5wbmh11z2p3k0hn602bbdkc9iwkanl-f.txt\n"
        "URL: nar/17w2rbdjsh196dbaqna91gyssizrazrigc60rlfvr2rlyy8pfhhj.nar.xz\n"
        "Compression: xz\n"
        "FileHash: sha256:17w2rbdjsh196dbaqna91gyssizrazrigc60rlfvr2rlyy8pfhhj\n"
        "FileSize: 136\n"
        "NarHash: sha256:0n8k8mf0qxwff6k3sz0j55n5wr0rykcmvr3hbibf34s79xf2qr1r\n"
        "NarSize: 128\n"
        "References: \n"
        "Sig: cache.example.org-1:jutXbUJzlw6GmxiqeYgdFB0VhXLKPY0sa2dSIMqeM3vBx+5Z6RBbxAXcZ3unGA7p840G16FcJqBUzR7JGCLfDA==\n"
        "CA: fixed:sha256:0b73fgpv2h83zxsy6nj1jh0kc6r1ispbvkhjhrlv0v1vz5n478ak\n";

static struct signing_public KEYS[2];

static void parse_ok(const char *text, struct narinfo *ni) {
        struct trove_error err = {};
        int r = narinfo_parse(text, strlen(text), "/nix/store", ni, &err);
        if (r != 0)
                TEST_FAIL("parse failed (%d): %s\n%s", r, err.msg, text);
}

static void check_roundtrip(const char *text) {
        _cleanup_(narinfo_free) struct narinfo ni = {};
        _cleanup_free_ char *out = NULL;

        parse_ok(text, &ni);
        CHECK_OK(narinfo_render(&ni, &out));
        CHECK_STREQ(out, text);
}

static int verify_text(const char *text) {
        _cleanup_(narinfo_free) struct narinfo ni = {};
        parse_ok(text, &ni);
        return narinfo_verify(&ni, "/nix/store", KEYS, 2);
}

/* Replaces the first occurrence of from by to; returns a heap string. */
static char *replace(const char *text, const char *from, const char *to) {
        const char *p = strstr(text, from);
        CHECK(p);
        size_t n = strlen(text) - strlen(from) + strlen(to) + 1;
        char *s = malloc(n);
        CHECK(s);
        snprintf(s, n, "%.*s%s%s", (int) (p - text), text, to, p + strlen(from));
        return s;
}

static void test_nix_documents(void) {
        _cleanup_(narinfo_free) struct narinfo ni = {};
        _cleanup_free_ char *fp = NULL;

        check_roundtrip(NI_TOP);
        check_roundtrip(NI_DEP);
        check_roundtrip(NI_TWO_SIGS);
        check_roundtrip(NI_CA);

        parse_ok(NI_TOP, &ni);
        CHECK_STREQ(ni.store_path, "/nix/store/kkfb6hhfhms083phnag9p71n200krgrf-trove-sig-test");
        CHECK_STREQ(ni.url, "nar/1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0.nar");
        CHECK_STREQ(ni.compression, "none");
        CHECK_EQ_U64(ni.file_size, 176);
        CHECK_EQ_U64(ni.nar_size, 176);
        CHECK(ni.n_references == 1);
        CHECK_STREQ(ni.references[0], "ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep");
        CHECK_STREQ(ni.deriver, "zk2f9g21l5dlx9wrxz1md0rn5hmyglvn-trove-sig-test.drv");
        CHECK(ni.system == NULL && ni.ca == NULL);
        CHECK(ni.n_sigs == 1);
        uint8_t want[SHA256_DIGEST_LEN];
        CHECK_OK(hex_decode("c01287b29d0ac98585bb61701b96df00aa404b2813e3bfcf1ad66b1decbdf6b3", 64, want,
                            sizeof want));
        CHECK_MEMEQ(ni.nar_hash, want, sizeof want);

        CHECK_OK(narinfo_fingerprint(&ni, "/nix/store", &fp));
        CHECK_STREQ(fp, FP_TOP);
        free(fp);
        fp = NULL;
        narinfo_free(&ni);
        parse_ok(NI_DEP, &ni);
        CHECK(ni.n_references == 0);
        CHECK_OK(narinfo_fingerprint(&ni, "/nix/store", &fp));
        CHECK_STREQ(fp, FP_DEP);

        CHECK_RC(verify_text(NI_TOP), 1);
        CHECK_RC(verify_text(NI_DEP), 1);
        CHECK_RC(verify_text(NI_TWO_SIGS), 2);
        CHECK_RC(verify_text(NI_CA), 1);
}

static void test_sign_like_nix(void) {
        _cleanup_(narinfo_free) struct narinfo ni = {};
        _cleanup_free_ char *unsigned_text = NULL, *out = NULL, *out2 = NULL;
        struct signing_secret s;

        /* Remove Nix's Sig line, sign it ourselves: byte-identical. */
        const char *sig = strstr(NI_TOP, "Sig: ");
        CHECK(sig);
        unsigned_text = strndup(NI_TOP, (size_t) (sig - NI_TOP));
        parse_ok(unsigned_text, &ni);
        CHECK_RC(narinfo_verify(&ni, "/nix/store", KEYS, 2), 0);
        CHECK_OK(signing_secret_parse(SEC1, &s));
        CHECK_OK(narinfo_sign(&ni, "/nix/store", &s));
        CHECK_OK(narinfo_render(&ni, &out));
        CHECK_STREQ(out, NI_TOP);
        /* Signing again replaces, never duplicates. */
        CHECK_OK(narinfo_sign(&ni, "/nix/store", &s));
        CHECK(ni.n_sigs == 1);
        CHECK_OK(narinfo_render(&ni, &out2));
        CHECK_STREQ(out2, NI_TOP);
        narinfo_free(&ni);

        /* Adding a second key's signature keeps the first, written sorted. */
        free(out);
        out = NULL;
        parse_ok(NI_TWO_SIGS, &ni);
        CHECK_OK(narinfo_sign(&ni, "/nix/store", &s));
        CHECK(ni.n_sigs == 2);
        CHECK_OK(narinfo_render(&ni, &out));
        CHECK_STREQ(out, NI_TWO_SIGS);
        signing_secret_wipe(&s);
}

static void test_tampering(void) {
        static const struct {
                const char *from, *to;
        } edits[] = {
                /* NarHash, one character */
                { "NarHash: sha256:1cznppn1", "NarHash: sha256:1cznppn2" },
                { "NarSize: 176", "NarSize: 177" },
                /* another reference, and no reference */
                { "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep",
                  "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b9-trove-sig-dep" },
                { "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep", "References: " },
                { "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep",
                  "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep "
                  "2z5wbmh11z2p3k0hn602bbdkc9iwkanl-f.txt" },
                { "StorePath: /nix/store/kkfb6hhfhms083phnag9p71n200krgrf-trove-sig-test",
                  "StorePath: /nix/store/kkfb6hhfhms083phnag9p71n200krgrf-trove-sig-tesu" },
                /* the signature itself */
                { "Sig: test-key-1:p2fr2QPK", "Sig: test-key-1:p2fr2QPL" },
                /* a signature under a name with no key */
                { "Sig: test-key-1:", "Sig: test-key-2:" },
        };
        for (size_t i = 0; i < ELEMENTSOF(edits); i++) {
                _cleanup_free_ char *t = replace(NI_TOP, edits[i].from, edits[i].to);
                int r = verify_text(t);
                if (r != 0)
                        TEST_FAIL("edit %zu (%s) still verifies (%d)", i, edits[i].to, r);
        }
        /* What the signature does not cover may change. */
        _cleanup_free_ char *t = replace(NI_TOP, "Compression: none", "Compression: xz");
        CHECK_RC(verify_text(t), 1);
        /* A different store directory changes the fingerprint. */
        _cleanup_(narinfo_free) struct narinfo ni = {};
        parse_ok(NI_TOP, &ni);
        CHECK_RC(narinfo_verify(&ni, "/nix/storf", KEYS, 2), 0);
}

static void test_normalisation(void) {
        /* base16 and SRI NarHash are accepted and written as nix32. */
        static const char *forms[] = {
                "NarHash: sha256:c01287b29d0ac98585bb61701b96df00aa404b2813e3bfcf1ad66b1decbdf6b3",
                "NarHash: sha256-wBKHsp0KyYWFu2FwG5bfAKpASygT47/PGtZrHey99rM=",
        };
        for (size_t i = 0; i < ELEMENTSOF(forms); i++) {
                _cleanup_free_ char *t =
                        replace(NI_TOP, "NarHash: sha256:1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0",
                                forms[i]);
                _cleanup_free_ char *t2 =
                        replace(t, "FileHash: sha256:1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0",
                                "FileHash: sha256:c01287b29d0ac98585bb61701b96df00aa404b2813e3bfcf1ad66b1decbdf6b3");
                check_roundtrip(NI_TOP);
                _cleanup_(narinfo_free) struct narinfo ni = {};
                _cleanup_free_ char *out = NULL;
                parse_ok(t2, &ni);
                CHECK_OK(narinfo_render(&ni, &out));
                CHECK_STREQ(out, NI_TOP);
                CHECK_RC(narinfo_verify(&ni, "/nix/store", KEYS, 2), 1);
        }

        /* unknown-deriver means none; unknown keys are ignored; System is
         * kept; unsorted references are written sorted. */
        _cleanup_free_ char *t = replace(NI_TOP, "Deriver: zk2f9g21l5dlx9wrxz1md0rn5hmyglvn-trove-sig-test.drv",
                                         "Deriver: unknown-deriver\nSystem: x86_64-linux\nFutureField: a b c");
        _cleanup_(narinfo_free) struct narinfo ni = {};
        _cleanup_free_ char *out = NULL;
        parse_ok(t, &ni);
        CHECK(ni.deriver == NULL);
        CHECK_STREQ(ni.system, "x86_64-linux");
        CHECK_OK(narinfo_render(&ni, &out));
        CHECK(strstr(out, "Deriver") == NULL && strstr(out, "FutureField") == NULL);
        CHECK(strstr(out, "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep\nSystem: x86_64-linux\nSig: "));

        _cleanup_free_ char *u = replace(NI_TOP, "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep",
                                         "References: zzfb6hhfhms083phnag9p71n200krgrf-b "
                                         "ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep");
        _cleanup_(narinfo_free) struct narinfo ni2 = {};
        _cleanup_free_ char *out2 = NULL, *fp = NULL;
        parse_ok(u, &ni2);
        CHECK_STREQ(ni2.references[0], "zzfb6hhfhms083phnag9p71n200krgrf-b");
        CHECK_OK(narinfo_render(&ni2, &out2));
        CHECK(strstr(out2, "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep "
                           "zzfb6hhfhms083phnag9p71n200krgrf-b\n"));
        CHECK_OK(narinfo_fingerprint(&ni2, "/nix/store", &fp));
        CHECK(strstr(fp, ";176;/nix/store/ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep,"
                         "/nix/store/zzfb6hhfhms083phnag9p71n200krgrf-b"));

        /* Another store directory. */
        _cleanup_free_ char *v = replace(NI_DEP, "StorePath: /nix/store/", "StorePath: /tmp/other/store/");
        _cleanup_(narinfo_free) struct narinfo ni3 = {};
        struct trove_error err = {};
        CHECK_OK(narinfo_parse(v, strlen(v), "/tmp/other/store", &ni3, &err));
        CHECK_RC(narinfo_parse(v, strlen(v), "/nix/store", &ni3, &err), -EINVAL);
        CHECK(strstr(err.msg, "line 1") && strstr(err.msg, "StorePath"));

        /* Largest 64-bit sizes. */
        _cleanup_free_ char *w = replace(NI_DEP, "FileSize: 120", "FileSize: 18446744073709551615");
        _cleanup_(narinfo_free) struct narinfo ni4 = {};
        parse_ok(w, &ni4);
        CHECK(ni4.file_size == UINT64_MAX);
}

/* Each case: edit of NI_TOP (or whole text), expected errno, and a piece of
 * the expected message. */
static void test_rejects(void) {
        static const struct {
                const char *from, *to;
                int err;
                const char *msg;
        } cases[] = {
                { "NarSize: 176\n", "NarSize: 176\nNarSize: 176\n", -EINVAL, "line 8: duplicate NarSize" },
                { "URL: ", "URL: a\nURL: ", -EINVAL, "line 3: duplicate URL" },
                { "References: ", "References: \nReferences: ", -EINVAL, "duplicate References" },
                { "Deriver: ", "CA: text:x\nCA: text:y\nDeriver: ", -EINVAL, "line 10: duplicate CA" },
                { "NarSize: 176", "NarSize: 18446744073709551616", -EINVAL, "line 7: NarSize: number too large" },
                { "NarSize: 176", "NarSize: 99999999999999999999", -EINVAL, "number too large" },
                { "NarSize: 176", "NarSize: -1", -EINVAL, "line 7: NarSize: not a decimal number" },
                { "NarSize: 176", "NarSize: +176", -EINVAL, "not a decimal" },
                { "NarSize: 176", "NarSize:  176", -EINVAL, "not a decimal" },
                { "NarSize: 176", "NarSize: 176 ", -EINVAL, "not a decimal" },
                { "NarSize: 176", "NarSize: 0x10", -EINVAL, "not a decimal" },
                { "NarSize: 176", "NarSize: ", -EINVAL, "not a decimal" },
                { "NarSize: 176", "NarSize: 0", -EINVAL, "NarSize missing or zero" },
                { "NarSize: 176\n", "", -EINVAL, "NarSize missing or zero" },
                { "FileSize: 176", "FileSize: 1e3", -EINVAL, "line 5: FileSize" },
                { "NarHash: sha256:1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0\n", "", -EINVAL,
                  "NarHash missing" },
                { "NarHash: sha256:1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0",
                  "NarHash: sha256:1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n", -EINVAL,
                  "line 6: NarHash: malformed hash" },
                { "NarHash: sha256:1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0",
                  "NarHash: md5:d41d8cd98f00b204e9800998ecf8427e", -EOPNOTSUPP, "line 6: NarHash: only SHA-256" },
                { "NarHash: sha256:1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0",
                  "NarHash: 1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0", -EINVAL, "NarHash" },
                { "FileHash: sha256:1czn", "FileHash: sha256:1czo", -EINVAL, "line 4: FileHash" },
                { "URL: nar/1cznppn1ssyn3b7vzqqk515l1ah0vyb1nw31pf2qbj8aknr8f4n0.nar\n", "", -EINVAL,
                  "URL missing" },
                { "StorePath: /nix/store/kkfb6hhfhms083phnag9p71n200krgrf-trove-sig-test\n", "", -EINVAL,
                  "StorePath missing" },
                { "StorePath: /nix/store/kkfb6", "StorePath: /nix/store/../kkfb6", -EINVAL, "line 1: StorePath" },
                { "-trove-sig-test\n", "-trove-sig-test/bin\n", -EINVAL, "line 1: StorePath" },
                { "kkfb6hhfhms083phnag9p71n200krgrf", "kkfb6hhfhms083phnag9p71n200krgre", -EINVAL, "StorePath" },
                { "References: ny0h", "References:  ny0h", -EINVAL, "line 8: References: empty entry" },
                { "trove-sig-dep\n", "trove-sig-dep \n", -EINVAL, "References: empty entry" },
                { "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep",
                  "References: ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep "
                  "ny0hx4g0bbbnqzx8lk694gw9iya6d8b8-trove-sig-dep", -EINVAL, "listed twice" },
                { "References: ny0h", "References: /nix/store/ny0h", -EINVAL, "References: invalid store path" },
                { "Deriver: zk2f", "Deriver: ../zk2f", -EINVAL, "line 9: Deriver" },
                { "Sig: test-key-1:p2fr2QPK", "Sig: test-key-1:p2fr2QP", -EINVAL, "line 10: Sig" },
                { "Sig: test-key-1:", "Sig: ", -EINVAL, "line 10: Sig" },
                { "Compression: none", "Compression: no ne", -EINVAL, "line 3: Compression" },
                { "Deriver: ", "CA: sha256:abc\nDeriver: ", -EINVAL, "line 9: CA" },
                { "Deriver: ", "System: \nDeriver: ", -EINVAL, "line 9: System" },
                /* line structure */
                { "Compression: none\n", "Compression: none\r\n", -EINVAL, "line 3: byte 0x0d is not printable ASCII" },
                { "Compression: none\n", "Compression: none\n\n", -EINVAL, "line 4: expected 'Key: value'" },
                { "Compression: none", "Compression:none", -EINVAL, "line 3: expected 'Key: value'" },
                { "Compression: none", "Compression", -EINVAL, "line 3: expected" },
                { "Compression: none", "Compre ssion: none", -EINVAL, "line 3: invalid key" },
                { "Compression: none", ": none", -EINVAL, "line 3: invalid key" },
                { "Compression: none", "Compression: no\tne", -EINVAL, "byte 0x09 is not printable" },
                { "Compression: none", "Compression: n\x7f", -EINVAL, "byte 0x7f is not printable" },
                { "URL: nar/", "URL: n\xc3\xa4r/", -EINVAL, "line 2: byte 0xc3 is not printable ASCII" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *t = replace(NI_TOP, cases[i].from, cases[i].to);
                struct narinfo ni = { .url = (char *) "untouched" };
                struct trove_error err = {};
                int r = narinfo_parse(t, strlen(t), "/nix/store", &ni, &err);
                if (r != cases[i].err)
                        TEST_FAIL("case %zu (%s): got %d, want %d (%s)", i, cases[i].to, r, cases[i].err, err.msg);
                if (!strstr(err.msg, cases[i].msg))
                        TEST_FAIL("case %zu: message \"%s\" lacks \"%s\"", i, err.msg, cases[i].msg);
                /* ret is written only on success */
                CHECK_STREQ(ni.url, "untouched");
        }

        struct narinfo ni;
        struct trove_error err = {};
        /* No newline at the end. */
        CHECK_RC(narinfo_parse(NI_TOP, strlen(NI_TOP) - 1, "/nix/store", &ni, &err), -EINVAL);
        CHECK(strstr(err.msg, "line 10: missing newline"));
        /* A NUL byte inside. */
        char withnul[sizeof NI_TOP];
        memcpy(withnul, NI_TOP, sizeof NI_TOP);
        withnul[30] = 0;
        CHECK_RC(narinfo_parse(withnul, strlen(NI_TOP), "/nix/store", &ni, &err), -EINVAL);
        CHECK(strstr(err.msg, "line 1: byte 0x00 is not printable"));
        CHECK_RC(narinfo_parse("", 0, "/nix/store", &ni, &err), -EINVAL);

        /* Too large. */
        size_t big = NARINFO_MAX_SIZE + 1;
        char *huge = malloc(big);
        CHECK(huge);
        memset(huge, 'a', big);
        CHECK_RC(narinfo_parse(huge, big, "/nix/store", &ni, &err), -E2BIG);
        free(huge);

        /* Too many signatures. */
        _cleanup_(buf_free) struct buf b = BUF_INIT(1 << 20);
        CHECK_OK(buf_append_str(&b, NI_DEP));
        for (int i = 0; i < NARINFO_SIGS_MAX; i++)
                CHECK_OK(buf_printf(&b, "Sig: k%d:autLZaLgXz0v0PtgtrojRgESqQeg6PqHI/YBT7VTI7NWUmwkhSQwmyPmP7SSmBj+2I+3VqWsAY7K3D9QnWw4BA==\n", i));
        CHECK_RC(narinfo_parse((char *) b.data, b.len, "/nix/store", &ni, &err), -E2BIG);
        CHECK(strstr(err.msg, "line 74: more than 64 signatures"));
        /* Repeated identical signatures collapse, as in Nix. */
        _cleanup_free_ char *dup = NULL;
        {
                size_t n = strlen(NI_DEP);
                const char *sig = strstr(NI_DEP, "Sig: ");
                dup = malloc(n + strlen(sig) + 1);
                CHECK(dup);
                snprintf(dup, n + strlen(sig) + 1, "%s%s", NI_DEP, sig);
                _cleanup_(narinfo_free) struct narinfo d = {};
                parse_ok(dup, &d);
                CHECK(d.n_sigs == 1);
        }
}

static void test_render_refuses_injection(void) {
        _cleanup_(narinfo_free) struct narinfo ni = {};
        char *out = NULL;

        parse_ok(NI_TOP, &ni);
        free(ni.system);
        ni.system = strdup("x86_64-linux\nSig: evil:AAAA");
        CHECK(ni.system);
        CHECK_RC(narinfo_render(&ni, &out), -EINVAL);
        CHECK(out == NULL);
        free(ni.system);
        ni.system = NULL;
        free(ni.references[0]);
        ni.references[0] = strdup("a b");
        CHECK_RC(narinfo_render(&ni, &out), -EINVAL);

        struct narinfo empty = {};
        CHECK_RC(narinfo_render(&empty, &out), -EINVAL);
        CHECK_RC(narinfo_fingerprint(&empty, "/nix/store", &out), -EINVAL);
}

int main(void) {
        CHECK_OK(signing_public_parse(PUB1, &KEYS[0]));
        CHECK_OK(signing_public_parse(PUB2, &KEYS[1]));
        test_nix_documents();
        test_sign_like_nix();
        test_tampering();
        test_normalisation();
        test_rejects();
        test_render_refuses_injection();
        return 0;
}
