/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manifests: encode/decode round trip with the exact text of docs/manifest.md,
 * every structural rule of manifest_validate() refused with a message, text
 * that manifest_decode() must refuse, and chunk lookup by NAR offset.
 */
#include <stdarg.h>
#include <stdio.h>

#include "test.h"
#include "trove/chunkcodec.h"
#include "trove/manifest.h"

#define H1 "ybm7kw4n7xbzzi8b9j8hbdjsp646lg66"
#define H2 "0c2nyaqhy8b4n7bnr0k6zzfmzwfvi0a4"
#define H3 "7ccrq5dbynkd4b4zya2wfamaa4i9n4xx"

static const char listing_json[] =
        "{\"type\":\"directory\",\"entries\":{\"bin\":{\"type\":\"directory\",\"entries\":{\"hi\":"
        "{\"type\":\"regular\",\"size\":18,\"executable\":true,\"narOffset\":400}}},"
        "\"f\":{\"type\":\"regular\",\"size\":1000,\"narOffset\":1000},"
        "\"l\":{\"type\":\"symlink\",\"target\":\"bin/hi\"}}}";

static const char expected_text[] =
        "{\"version\":1,\"storePath\":\"/nix/store/" H1 "-hello-2.12\","
        "\"narHash\":\"sha256:0000000000000000000000000000000000000000000000000000\","
        "\"narSize\":3000,\"references\":[\"" H2 "-glibc-2.37\",\"" H1 "-hello-2.12\"],"
        "\"deriver\":\"" H3 "-hello-2.12.drv\",\"sigs\":[\"cache.example.org-1:c2lnbmF0dXJl\"],"
        "\"chunks\":[[0,1024,\"0101010101010101010101010101010101010101010101010101010101010101\",500],"
        "[1024,1976,\"0202020202020202020202020202020202020202020202020202020202020202\",900]],"
        "\"root\":{\"type\":\"directory\",\"entries\":{\"bin\":{\"type\":\"directory\",\"entries\":"
        "{\"hi\":{\"type\":\"regular\",\"size\":18,\"executable\":true,\"narOffset\":400}}},"
        "\"f\":{\"type\":\"regular\",\"size\":1000,\"narOffset\":1000},"
        "\"l\":{\"type\":\"symlink\",\"target\":\"bin/hi\"}}}}";

static char **strv(size_t n, ...) {
        va_list ap;
        char **v = calloc(n + 1, sizeof *v);
        CHECK(v);
        va_start(ap, n);
        for (size_t i = 0; i < n; i++) {
                v[i] = strdup(va_arg(ap, const char *));
                CHECK(v[i]);
        }
        va_end(ap);
        return v;
}

static void make_valid(struct manifest *m) {
        *m = (struct manifest){};
        m->info.store_path = strdup("/nix/store/" H1 "-hello-2.12");
        m->info.nar_size = 3000;
        m->info.references = strv(2, H2 "-glibc-2.37", H1 "-hello-2.12");
        m->info.n_references = 2;
        m->info.deriver = strdup(H3 "-hello-2.12.drv");
        m->info.sigs = strv(1, "cache.example.org-1:c2lnbmF0dXJl");
        m->info.n_sigs = 1;
        CHECK_OK(listing_from_json(listing_json, strlen(listing_json), 3000, &m->listing, NULL));
        m->chunks = calloc(2, sizeof *m->chunks);
        CHECK(m->chunks);
        m->n_chunks = 2;
        m->chunks[0] = (struct manifest_chunk){ .nar_offset = 0, .length = 1024, .stored_size = 500 };
        memset(m->chunks[0].id, 1, SHA256_DIGEST_LEN);
        m->chunks[1] = (struct manifest_chunk){ .nar_offset = 1024, .length = 1976, .stored_size = 900 };
        memset(m->chunks[1].id, 2, SHA256_DIGEST_LEN);
}

static void check_same_strv(char **a, size_t na, char **b, size_t nb) {
        CHECK_EQ_U64(na, nb);
        for (size_t i = 0; i < na; i++)
                CHECK_STREQ(a[i], b[i]);
}

static void check_same(const struct manifest *a, const struct manifest *b) {
        CHECK_STREQ(a->info.store_path, b->info.store_path);
        CHECK_MEMEQ(a->info.nar_hash, b->info.nar_hash, SHA256_DIGEST_LEN);
        CHECK_EQ_U64(a->info.nar_size, b->info.nar_size);
        check_same_strv(a->info.references, a->info.n_references, b->info.references,
                        b->info.n_references);
        check_same_strv(a->info.sigs, a->info.n_sigs, b->info.sigs, b->info.n_sigs);
        CHECK(!a->info.deriver == !b->info.deriver);
        if (a->info.deriver)
                CHECK_STREQ(a->info.deriver, b->info.deriver);
        CHECK(!a->info.ca == !b->info.ca);
        if (a->info.ca)
                CHECK_STREQ(a->info.ca, b->info.ca);
        CHECK_EQ_U64(a->n_chunks, b->n_chunks);
        CHECK_MEMEQ(a->chunks, b->chunks, a->n_chunks * sizeof *a->chunks);
        CHECK_EQ_U64(a->listing.n_nodes, b->listing.n_nodes);
        CHECK_MEMEQ(a->listing.nodes, b->listing.nodes, a->listing.n_nodes * sizeof *a->listing.nodes);
        CHECK_EQ_U64(a->listing.pool_len, b->listing.pool_len);
        CHECK_MEMEQ(a->listing.pool, b->listing.pool, a->listing.pool_len);
}

static void test_round_trip(void) {
        _cleanup_(manifest_free) struct manifest m = {}, d = {}, d2 = {};
        _cleanup_free_ char *text = NULL, *text2 = NULL;
        struct trove_error err = {};
        size_t len, len2;

        make_valid(&m);
        CHECK_OK(manifest_validate(&m, &err));
        CHECK_OK(manifest_encode(&m, &text, &len));
        CHECK_STREQ(text, expected_text);
        CHECK_EQ_U64(len, strlen(expected_text));

        CHECK_OK(manifest_decode(text, len, "/nix/store", &d, &err));
        check_same(&m, &d);
        uint32_t idx;
        CHECK_OK(listing_lookup_path(&d.listing, "bin/hi", &idx));
        CHECK(d.listing.nodes[idx].executable);
        CHECK_EQ_U64(d.listing.nodes[idx].nar_offset, 400);

        CHECK_OK(manifest_encode(&d, &text2, &len2));
        CHECK_STREQ(text2, text);
        manifest_free(&d);
        free(TAKE_PTR(text2));

        /* Optional fields absent or present, other key order, unknown
         * top-level keys ignored, whitespace. */
        const char *other =
                "{ \"root\": {\"type\":\"regular\",\"size\":5,\"narOffset\":96},\n"
                "  \"chunks\": [[0, 104, \"abababababababababababababababababababababababababababababababab\", 60]],\n"
                "  \"ca\": \"fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\",\n"
                "  \"sigs\": [], \"references\": [], \"narSize\": 104, \"futureField\": {\"x\": [1]},\n"
                "  \"narHash\": \"sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\",\n"
                "  \"storePath\": \"/gnu/store/" H2 "-file\", \"version\": 1 }";
        CHECK_RC(manifest_decode(other, strlen(other), "/nix/store", &d, &err), -EBADMSG);
        CHECK(strstr(err.msg, "storePath"));
        CHECK_OK(manifest_decode(other, strlen(other), "/gnu/store", &d, &err));
        CHECK(!d.info.deriver);
        CHECK_STREQ(d.info.ca, "fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s");
        CHECK_EQ_U64(d.info.n_references, 0);
        CHECK_EQ_U64(d.listing.n_nodes, 1);
        CHECK_OK(manifest_encode(&d, &text2, &len2));
        CHECK(!strstr(text2, "deriver"));
        CHECK(!strstr(text2, "futureField"));
        CHECK(strstr(text2, "\"sigs\":[],\"ca\":\"fixed:r:sha256:"));
        CHECK_OK(manifest_decode(text2, len2, "/gnu/store", &d2, &err));
        check_same(&d, &d2);
}

static void test_validate_rules(void) {
        static const char *const expect[] = {
                "store path",  "store path",   "store path",  "narSize",     "reference",
                "not sorted",  "not sorted",   "deriver",     "signature",   "signature",
                "signature",   "signatures",   "ca",          "no chunks",   "starts at",
                "starts at",   "length 0",     "length",      "stored size", "stored size",
                "cover",       "beyond",       "narOffset",   "narOffset",   "beyond the NAR",
                "overlaps",    "empty listing", "chunks",     "references",
        };

        for (size_t i = 0; i < ELEMENTSOF(expect); i++) {
                struct manifest m;
                struct trove_error err = { .msg = "" };
                char *saved = NULL;
                char *text = NULL;
                size_t saved_n = 0;
                struct listing_node *hi, *f;

                make_valid(&m);
                hi = &m.listing.nodes[2];
                f = &m.listing.nodes[3];
                CHECK(hi->type == NAR_REGULAR && f->type == NAR_REGULAR);
                switch (i) {
                case 0: free(m.info.store_path); m.info.store_path = NULL; break;
                case 1: m.info.store_path[0] = 'x'; break;
                case 2: strcpy(m.info.store_path + strlen(m.info.store_path) - 4, "/abc"); break;
                case 3: m.info.nar_size = 0; break;
                case 4: m.info.references[0][5] = 'e'; break; /* not nix32 */
                case 5: saved = m.info.references[0]; m.info.references[0] = m.info.references[1];
                        m.info.references[1] = saved; saved = NULL; break;
                case 6: free(m.info.references[0]); m.info.references[0] = strdup(m.info.references[1]); break;
                case 7: m.info.deriver[0] = '-'; break;
                case 8: strcpy(m.info.sigs[0], "nocolon"); break;
                case 9: strcpy(m.info.sigs[0], "key: spaced"); break;
                case 10: strcpy(m.info.sigs[0], ":nokey"); break;
                case 11: saved_n = m.info.n_sigs; m.info.n_sigs = NARINFO_SIGS_MAX + 1; break;
                case 12: m.info.ca = strdup("text:sha256:x y"); break;
                case 13: m.n_chunks = 0; break;
                case 14: m.chunks[0].nar_offset = 8; break;
                case 15: m.chunks[1].nar_offset = 1032; break;
                case 16: m.chunks[0].length = 0; break;
                case 17: m.chunks[0].length = CHUNK_SIZE_MAX + 1; m.chunks[1].nar_offset = CHUNK_SIZE_MAX + 1;
                        break;
                case 18: m.chunks[1].stored_size = 0; break;
                case 19: m.chunks[1].stored_size = 1976 + 1976 / 128 + 1025; break;
                case 20: m.chunks[1].length = 1000; break;
                case 21: m.chunks[1].length = 2000; break;
                case 22: f->nar_offset = 0; break;
                case 23: f->nar_offset = 1004; break;
                case 24: f->size = 2001; break;
                case 25: f->nar_offset = 416; break; /* hi covers 400..418 */
                case 26: saved_n = m.listing.n_nodes; m.listing.n_nodes = 0; break;
                case 27: saved_n = m.n_chunks; m.n_chunks = MANIFEST_CHUNKS_MAX + 1; break;
                case 28: saved_n = m.info.n_references; m.info.n_references = NARINFO_REFS_MAX + 1; break;
                }
                int r = manifest_validate(&m, &err);
                if (r != -EBADMSG || !strstr(err.msg, expect[i]))
                        TEST_FAIL("rule #%zu: got %d \"%s\", want -EBADMSG mentioning \"%s\"", i, r, err.msg,
                                  expect[i]);
                CHECK_RC(manifest_encode(&m, &text, NULL), -EBADMSG);
                CHECK(!text);
                if (i == 11)
                        m.info.n_sigs = saved_n;
                if (i == 26)
                        m.listing.n_nodes = (uint32_t) saved_n;
                if (i == 27)
                        m.n_chunks = saved_n;
                if (i == 28)
                        m.info.n_references = saved_n;
                manifest_free(&m);
        }
}

/* Text the decoder must refuse; each is the valid document with one edit. */
static void test_decode_rejects(void) {
        static const struct {
                const char *from, *to, *expect;
        } edits[] = {
                { "\"version\":1", "\"version\":3", "version" },
                /* version 1 has no bases */
                { "\"0101010101010101010101010101010101010101010101010101010101010101\",500]",
                  "\"0101010101010101010101010101010101010101010101010101010101010101\",500,"
                  "\"0202020202020202020202020202020202020202020202020202020202020202\",1024]",
                  "storedSize]" },
                { "\"version\":1,", "", "version" },
                { "/nix/store/" H1, "/nix/stor/" H1, "storePath" },
                { "\"storePath\"", "\"storepath\"", "storePath" },
                { "sha256:0000000000000000000000000000000000000000000000000000",
                  "sha256:0000000000000000000000000000000000000000000000000000000000000000", "narHash" },
                { "sha256:0000000000000000000000000000000000000000000000000000",
                  "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "narHash" },
                { "sha256:0000000000000000000000000000000000000000000000000000",
                  "md5:00000000000000000000000000000000000000000000000000000", "narHash" },
                { "\"narSize\":3000", "\"narSize\":\"3000\"", "narSize" },
                { "\"narSize\":3000", "\"narSize\":-3000", "narSize" },
                { "\"narSize\":3000", "\"narSize\":3000.0", "narSize" },
                { "\"narSize\":3000", "\"narSize\":2999", "beyond" }, /* chunks end at 3000 */
                { "\"references\":[", "\"references\":[5,", "references" },
                { "\"references\":[\"" H2, "\"references\":[\"" H1 "-hello-2.12\",\"" H2, "not sorted" },
                { "\"deriver\":\"", "\"deriver\":\"bad-", "deriver" },
                { "\"sigs\":[", "\"sigs\":[null,", "sigs" },
                { "[0,1024,", "[0,1024,1,", "chunk #0" },
                { "[0,1024,\"01", "[0,1024,\"0G", "chunk #0" },
                { "[0,1024,\"01", "[0,1024,\"0A", "lower-case" },
                { "[0,1024,\"01", "[0,1024,\"1", "chunk #0" },
                { ",500]", ",500,1]", "chunk #0" },
                { ",500]", ",4294967296]", "chunk #0" },
                { "[1024,1976,", "[1024,1977,", "beyond" },
                { "\"root\":{", "\"root\":{\"version\":1,", "document" },
                { "\"root\":", "\"rooot\":", "root" },
                { "\"narOffset\":1000", "\"narOffset\":2008", "beyond" },
                { "\"target\":\"bin/hi\"", "\"target\":\"\"", "target" },
                { "\"bin\":{", "\"b/n\":{", "name" },
                { "\"l\":{", "\"f\":{", "JSON" }, /* duplicate key */
                { "}}}}", "}}}}x", "JSON" },
                { "{\"version\"", "[{\"version\"", "JSON" },
        };

        for (size_t i = 0; i < ELEMENTSOF(edits); i++) {
                struct manifest m;
                struct trove_error err = { .msg = "" };
                char text[4096];
                const char *at = strstr(expected_text, edits[i].from);

                if (!at)
                        TEST_FAIL("edit #%zu: \"%s\" not in the document", i, edits[i].from);
                snprintf(text, sizeof text, "%.*s%s%s", (int) (at - expected_text), expected_text,
                         edits[i].to, at + strlen(edits[i].from));
                if (i == ELEMENTSOF(edits) - 1)
                        strcat(text, "]");
                int r = manifest_decode(text, strlen(text), "/nix/store", &m, &err);
                if (r != -EBADMSG || !strstr(err.msg, edits[i].expect))
                        TEST_FAIL("edit #%zu: got %d \"%s\", want -EBADMSG mentioning \"%s\"\n%s", i, r,
                                  err.msg, edits[i].expect, text);
        }

        /* Size is checked before anything is read. */
        struct manifest m;
        CHECK_RC(manifest_decode("{}", (size_t) MANIFEST_MAX_SIZE + 1, "/nix/store", &m, NULL), -E2BIG);
        CHECK_RC(manifest_decode("", 0, "/nix/store", &m, NULL), -EBADMSG);
}

static void test_find_chunk(void) {
        _cleanup_(manifest_free) struct manifest m = {};
        size_t i = 99;

        make_valid(&m);
        CHECK_OK(manifest_find_chunk(&m, 0, &i));
        CHECK_EQ_U64(i, 0);
        CHECK_OK(manifest_find_chunk(&m, 1023, &i));
        CHECK_EQ_U64(i, 0);
        CHECK_OK(manifest_find_chunk(&m, 1024, &i));
        CHECK_EQ_U64(i, 1);
        CHECK_OK(manifest_find_chunk(&m, 2999, &i));
        CHECK_EQ_U64(i, 1);
        i = 99;
        CHECK_RC(manifest_find_chunk(&m, 3000, &i), -ERANGE);
        CHECK_RC(manifest_find_chunk(&m, UINT64_MAX, &i), -ERANGE);
        CHECK_EQ_U64(i, 99);

        /* Many chunks: every offset maps to the chunk that holds it. */
        struct manifest_chunk *c = calloc(1000, sizeof *c);
        uint64_t off = 0, s = 7;
        CHECK(c);
        for (size_t k = 0; k < 1000; k++) {
                c[k].nar_offset = off;
                c[k].length = (uint32_t) (1 + test_rand(&s) % 5000);
                off += c[k].length;
        }
        free(m.chunks);
        m.chunks = c;
        m.n_chunks = 1000;
        for (size_t k = 0; k < 1000; k++) {
                CHECK_OK(manifest_find_chunk(&m, c[k].nar_offset, &i));
                CHECK_EQ_U64(i, k);
                CHECK_OK(manifest_find_chunk(&m, c[k].nar_offset + c[k].length - 1, &i));
                CHECK_EQ_U64(i, k);
        }
        CHECK_RC(manifest_find_chunk(&m, off, &i), -ERANGE);
}

/* Signs expected_text as troved does and checks what a client must refuse. */
static void test_sign_verify(void) {
        struct signing_secret sk, other_sk, same_name_sk;
        struct signing_public keys[2], other_pk, same_name_pk;
        char sig[MANIFEST_SIG_TEXT_MAX], other_sig[MANIFEST_SIG_TEXT_MAX];
        char body[sizeof expected_text];
        size_t len = strlen(expected_text);

        CHECK_OK(signing_generate("cache-1", &sk));
        CHECK_OK(signing_generate("other-1", &other_sk));
        CHECK_OK(signing_generate("cache-1", &same_name_sk));
        signing_secret_to_public(&sk, &keys[0]);
        signing_secret_to_public(&other_sk, &other_pk);
        signing_secret_to_public(&same_name_sk, &same_name_pk);
        keys[1] = other_pk;

        CHECK_OK(manifest_sign(expected_text, len, &sk, sig));
        CHECK(strncmp(sig, "cache-1:", 8) == 0);
        CHECK_EQ_U64(strlen(sig), 8 + 88);
        /* Deterministic (ed25519). */
        CHECK_OK(manifest_sign(expected_text, len, &sk, other_sig));
        CHECK_STREQ(sig, other_sig);

        /* Good: the right key, alone or among others. */
        CHECK_OK(manifest_verify(expected_text, len, sig, keys, 1));
        CHECK_OK(manifest_verify(expected_text, len, sig, keys, 2));
        CHECK_OK(manifest_verify(expected_text, len, sig, (struct signing_public[]){ other_pk, keys[0] }, 2));

        /* Tampered body: one byte changed, one byte cut, one byte added. */
        memcpy(body, expected_text, sizeof body);
        body[strlen("{\"version\":1,\"storePath\":\"/nix/store/")] ^= 1;
        CHECK_RC(manifest_verify(body, len, sig, keys, 1), -EKEYREJECTED);
        CHECK_RC(manifest_verify(expected_text, len - 1, sig, keys, 1), -EKEYREJECTED);
        memcpy(body, expected_text, sizeof body);
        CHECK_RC(manifest_verify(body, len + 1, sig, keys, 1), -EKEYREJECTED); /* the NUL */

        /* Wrong key: another name, or the same name with another key. */
        CHECK_RC(manifest_verify(expected_text, len, sig, &other_pk, 1), -EKEYREJECTED);
        CHECK_RC(manifest_verify(expected_text, len, sig, &same_name_pk, 1), -EKEYREJECTED);
        CHECK_RC(manifest_verify(expected_text, len, sig, keys, 0), -EKEYREJECTED);
        /* A signature by another key that claims the trusted key's name. */
        CHECK_OK(manifest_sign(expected_text, len, &same_name_sk, other_sig));
        CHECK_RC(manifest_verify(expected_text, len, other_sig, keys, 2), -EKEYREJECTED);

        /* Not the bare body: a signature of the body without the domain
         * prefix (what a signer of other documents might produce) fails. */
        CHECK_OK(signing_sign(&sk, expected_text, len, other_sig));
        CHECK_RC(manifest_verify(expected_text, len, other_sig, keys, 1), -EKEYREJECTED);

        /* Garbage signature text. */
        CHECK_RC(manifest_verify(expected_text, len, NULL, keys, 1), -EBADMSG);
        CHECK_RC(manifest_verify(expected_text, len, "", keys, 1), -EBADMSG);
        CHECK_RC(manifest_verify(expected_text, len, "cache-1", keys, 1), -EBADMSG);
        CHECK_RC(manifest_verify(expected_text, len, "cache-1:", keys, 1), -EBADMSG);
        CHECK_RC(manifest_verify(expected_text, len, "cache-1:c2lnbmF0dXJl", keys, 1), -EBADMSG);
        CHECK_RC(manifest_verify(expected_text, len, ":c2lnbmF0dXJl", keys, 1), -EBADMSG);
        snprintf(other_sig, sizeof other_sig, "%s ", sig);
        CHECK_RC(manifest_verify(expected_text, len, other_sig, keys, 1), -EBADMSG);
        memcpy(other_sig, sig, sizeof other_sig);
        other_sig[strlen(other_sig) - 3] = '!';
        CHECK_RC(manifest_verify(expected_text, len, other_sig, keys, 1), -EBADMSG);
        {
                char longsig[MANIFEST_SIG_TEXT_MAX + 16];
                memset(longsig, 'a', sizeof longsig - 1);
                longsig[sizeof longsig - 1] = 0;
                CHECK_RC(manifest_verify(expected_text, len, longsig, keys, 1), -EBADMSG);
        }
        /* A flipped bit inside the signature itself. */
        memcpy(other_sig, sig, sizeof other_sig);
        other_sig[10] = other_sig[10] == 'A' ? 'B' : 'A';
        CHECK_RC(manifest_verify(expected_text, len, other_sig, keys, 1), -EKEYREJECTED);

        /* Empty body: signable, and verifies only as itself. */
        CHECK_OK(manifest_sign("", 0, &sk, other_sig));
        CHECK_OK(manifest_verify("", 0, other_sig, keys, 1));
        CHECK_RC(manifest_verify(expected_text, len, other_sig, keys, 1), -EKEYREJECTED);

        signing_secret_wipe(&sk);
        signing_secret_wipe(&other_sk);
        signing_secret_wipe(&same_name_sk);
}

/* During a key rotation the header carries two signatures: a client that
 * trusts either key accepts it; malformed lists are refused before any
 * signature is tried. */
static void test_two_signatures(void) {
        struct signing_secret new_sk, old_sk, stranger_sk;
        struct signing_public new_pk, old_pk, stranger_pk;
        char a[MANIFEST_SIG_TEXT_MAX], b[MANIFEST_SIG_TEXT_MAX], both[MANIFEST_SIG_HEADER_MAX];
        char three[3 * MANIFEST_SIG_TEXT_MAX];
        size_t len = strlen(expected_text);

        CHECK_OK(signing_generate("cache-2", &new_sk));
        CHECK_OK(signing_generate("cache-1", &old_sk));
        CHECK_OK(signing_generate("stranger-1", &stranger_sk));
        signing_secret_to_public(&new_sk, &new_pk);
        signing_secret_to_public(&old_sk, &old_pk);
        signing_secret_to_public(&stranger_sk, &stranger_pk);
        CHECK_OK(manifest_sign(expected_text, len, &new_sk, a));
        CHECK_OK(manifest_sign(expected_text, len, &old_sk, b));
        snprintf(both, sizeof both, "%s %s", a, b);

        CHECK_OK(manifest_verify(expected_text, len, both, &new_pk, 1));
        CHECK_OK(manifest_verify(expected_text, len, both, &old_pk, 1));
        CHECK_RC(manifest_verify(expected_text, len, both, &stranger_pk, 1), -EKEYREJECTED);
        CHECK_RC(manifest_verify("{}", 2, both, &old_pk, 1), -EKEYREJECTED);

        snprintf(three, sizeof three, "%s %s %s", a, b, a);
        CHECK_RC(manifest_verify(expected_text, len, three, &old_pk, 1), -EBADMSG);
        snprintf(three, sizeof three, "%s  %s", a, b);
        CHECK_RC(manifest_verify(expected_text, len, three, &old_pk, 1), -EBADMSG);
        snprintf(three, sizeof three, " %s", b);
        CHECK_RC(manifest_verify(expected_text, len, three, &old_pk, 1), -EBADMSG);
        snprintf(three, sizeof three, "%s junk", b);
        CHECK_RC(manifest_verify(expected_text, len, three, &old_pk, 1), -EBADMSG);
        signing_secret_wipe(&new_sk);
        signing_secret_wipe(&old_sk);
        signing_secret_wipe(&stranger_sk);
}

/* Version 2: a chunk stored as a delta names its base; a manifest without
 * bases is still written as version 1, byte for byte. */
static void test_version2(void) {
        _cleanup_(manifest_free) struct manifest m = {}, d = {};
        _cleanup_free_ char *text = NULL;
        struct trove_error err = {};
        size_t len;

        make_valid(&m);
        m.chunks[1].has_base = true;
        m.chunks[1].base_length = 1024;
        memset(m.chunks[1].base, 1, SHA256_DIGEST_LEN);
        CHECK_OK(manifest_encode(&m, &text, &len));
        CHECK(strncmp(text, "{\"version\":2,", 12) == 0);
        CHECK(strstr(text, ",900,\"0101010101010101010101010101010101010101010101010101010101010101\",1024]"));
        CHECK_OK(manifest_decode(text, len, "/nix/store", &d, &err));
        check_same(&m, &d);
        CHECK(d.chunks[1].has_base && !d.chunks[0].has_base);

        /* its own base, a base of length 0 */
        memset(m.chunks[1].base, 2, SHA256_DIGEST_LEN);
        CHECK_RC(manifest_validate(&m, &err), -EBADMSG);
        CHECK(strstr(err.msg, "base"));
        memset(m.chunks[1].base, 1, SHA256_DIGEST_LEN);
        m.chunks[1].base_length = 0;
        CHECK_RC(manifest_validate(&m, &err), -EBADMSG);
        m.chunks[1].base_length = 1024;
        /* a delta object may be a header longer than a frame's bound */
        m.chunks[1].stored_size = 1976 + 1976 / 128 + 1024 + CHUNKCODEC_DELTA_HEADER;
        CHECK_OK(manifest_validate(&m, &err));
        m.chunks[1].stored_size++;
        CHECK_RC(manifest_validate(&m, &err), -EBADMSG);

        /* 5 elements, a bad base id, in version 2 */
        const char *bad[] = { ",900,\"01\"]", ",900,\"X101010101010101010101010101010101010101010101010101010101010101\",1024]",
                              ",900,\"0101010101010101010101010101010101010101010101010101010101010101\",-1]" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *t = NULL;
                const char *at = strstr(text, ",900,");
                const char *rest = strchr(at, ']') + 1;
                struct manifest x = {};
                CHECK(asprintf(&t, "%.*s%s%s", (int) (at - text), text, bad[i], rest) > 0);
                CHECK_RC(manifest_decode(t, strlen(t), "/nix/store", &x, &err), -EBADMSG);
                manifest_free(&x);
        }
}

int main(void) {
        test_round_trip();
        test_version2();
        test_sign_verify();
        test_two_signatures();
        test_validate_rules();
        test_decode_rejects();
        test_find_chunk();
        return 0;
}
