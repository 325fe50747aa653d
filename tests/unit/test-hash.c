/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "trove/hash.h"
#include "trove/nix32.h"
#include "test.h"

enum input_kind { INPUT_TEXT, INPUT_MILLION_A, INPUT_PATTERN };

/* Recorded with the real Nix 2.8 on files holding these bytes:
 *   nix-hash --type sha256 --flat FILE
 *   nix-hash --type sha256 --flat --base32 FILE
 *   nix hash to-sri --type sha256 HASH      (nix hash to-base64 for base64)
 * "pattern" is the 1000003 bytes i*7 % 251. */
static const struct {
        enum input_kind kind;
        const char *text;
        const char *base16, *nix32, *base64;
} vectors[] = {
        { INPUT_TEXT, "",
          "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
          "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
          "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" },
        { INPUT_TEXT, "abc",
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
          "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
          "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=" },
        { INPUT_TEXT, "hello\n",
          "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
          "00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq",
          "WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=" },
        { INPUT_MILLION_A, NULL,
          "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
          "1l1c273wqfbd0h7215x492d81wb77vbq9qn7l60r5yqlk5f6xiyd",
          "zcduXJkU+5KBocfihNc+Z/GAmkiklyAOBG05zMcRLNA=" },
        { INPUT_PATTERN, NULL,
          "6e0aa3a3e4afdd717e6af8d151be7c532fce9607f2086e89d0136acffec3f3ae",
          "1bpkqgzcyshks24nw27j0ybcwbskgjz53lgqd9z73pdgwjis62kf",
          "bgqjo+Sv3XF+avjRUb58Uy/OlgfyCG6J0BNqz/7D864=" },
};

static uint8_t *make_input(enum input_kind kind, const char *text, size_t *ret_len) {
        uint8_t *p;
        size_t n;

        switch (kind) {
        case INPUT_MILLION_A:
                n = 1000000;
                p = malloc(n);
                CHECK(p);
                memset(p, 'a', n);
                break;
        case INPUT_PATTERN:
                n = 1000003;
                p = malloc(n);
                CHECK(p);
                for (size_t i = 0; i < n; i++)
                        p[i] = (uint8_t) (i * 7 % 251);
                break;
        default:
                n = strlen(text);
                p = malloc(n + 1);
                CHECK(p);
                memcpy(p, text, n + 1);
                break;
        }
        *ret_len = n;
        return p;
}

static void check_string(const char *got, const char *prefix, const char *body) {
        size_t plen = strlen(prefix);

        if (strncmp(got, prefix, plen) != 0 || strcmp(got + plen, body) != 0)
                TEST_FAIL("got \"%s\", want \"%s%s\"", got, prefix, body);
}

static void test_known_answers(void) {
        struct sha256 h = {};

        CHECK_OK(sha256_init(&h));
        for (size_t v = 0; v < ELEMENTSOF(vectors); v++) {
                _cleanup_free_ uint8_t *data = NULL;
                uint8_t one[SHA256_DIGEST_LEN], streamed[SHA256_DIGEST_LEN], want[SHA256_DIGEST_LEN];
                uint8_t parsed[SHA256_DIGEST_LEN];
                char s[HASH_STRING_MAX], in[128];
                uint64_t seed = v + 1;
                size_t n, off = 0;

                data = make_input(vectors[v].kind, vectors[v].text, &n);
                CHECK_OK(hex_decode(vectors[v].base16, 64, want, sizeof want));

                CHECK_OK(sha256_buf(data, n, one));
                CHECK_MEMEQ(one, want, sizeof want);

                /* the same context reused (final resets it), fed in uneven
                 * slices: empty, 1 byte, across block edges, large */
                while (off < n) {
                        size_t step = (size_t) (test_rand(&seed) % 200000);
                        if (step % 3 == 0)
                                step %= 70;
                        step = MIN(step, n - off);
                        CHECK_OK(sha256_update(&h, data + off, step));
                        off += step;
                }
                CHECK_OK(sha256_final(&h, streamed));
                CHECK_MEMEQ(streamed, want, sizeof want);

                hash_format(want, HASH_BASE16, s);
                check_string(s, "sha256:", vectors[v].base16);
                hash_format(want, HASH_NIX32, s);
                check_string(s, "sha256:", vectors[v].nix32);
                hash_format(want, HASH_BASE64, s);
                check_string(s, "sha256:", vectors[v].base64);
                hash_format(want, HASH_SRI, s);
                check_string(s, "sha256-", vectors[v].base64);

                /* every accepted spelling parses back to the same digest */
                const char *forms[][2] = {
                        { "sha256:", vectors[v].base16 },
                        { "sha256:", vectors[v].nix32 },
                        { "sha256:", vectors[v].base64 },
                        { "sha256-", vectors[v].base64 },
                };
                for (size_t f = 0; f < ELEMENTSOF(forms); f++) {
                        snprintf(in, sizeof in, "%s%s", forms[f][0], forms[f][1]);
                        memset(parsed, 0, sizeof parsed);
                        CHECK_OK(hash_parse(in, parsed));
                        CHECK_MEMEQ(parsed, want, sizeof want);
                }
        }
        /* final with nothing fed after a reset is the empty hash */
        {
                uint8_t d[SHA256_DIGEST_LEN];
                char s[HASH_STRING_MAX];

                CHECK_OK(sha256_final(&h, d));
                hash_format(d, HASH_NIX32, s);
                CHECK_STREQ(s, "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
        }
        sha256_done(&h);
        CHECK(h.ctx == NULL);
        sha256_done(&h); /* twice is harmless */
        sha256_done(NULL);
}

/* Two contexts interleaved do not disturb each other. */
static void test_independent_contexts(void) {
        struct sha256 a = {}, b = {};
        uint8_t da[SHA256_DIGEST_LEN], db[SHA256_DIGEST_LEN], want[SHA256_DIGEST_LEN];

        CHECK_OK(sha256_init(&a));
        CHECK_OK(sha256_init(&b));
        CHECK_OK(sha256_update(&a, "ab", 2));
        CHECK_OK(sha256_update(&b, "hello", 5));
        CHECK_OK(sha256_update(&a, "c", 1));
        CHECK_OK(sha256_update(&b, "\n", 1));
        CHECK_OK(sha256_final(&a, da));
        CHECK_OK(sha256_final(&b, db));
        CHECK_OK(hex_decode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", 64,
                            want, sizeof want));
        CHECK_MEMEQ(da, want, sizeof want);
        CHECK_OK(hash_parse("sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq", want));
        CHECK_MEMEQ(db, want, sizeof want);
        sha256_done(&a);
        sha256_done(&b);
}

static void test_hex(void) {
        uint8_t in[40], out[41];
        char s[81];

        test_fill(in, sizeof in, 42);
        hex_encode(in, sizeof in, s);
        CHECK_EQ_U64(strlen(s), 80);
        for (size_t i = 0; i < 80; i++)
                CHECK(strchr("0123456789abcdef", s[i]));
        CHECK_OK(hex_decode(s, 80, out, 40));
        CHECK_MEMEQ(out, in, 40);

        hex_encode((const uint8_t *) "\x00\x01\xab\xff", 4, s);
        CHECK_STREQ(s, "0001abff");
        CHECK_OK(hex_decode("0001ABFF", 8, out, 4)); /* Nix accepts upper case */
        CHECK_MEMEQ(out, "\x00\x01\xab\xff", 4);
        hex_encode(in, 0, s);
        CHECK_STREQ(s, "");
        CHECK_OK(hex_decode("", 0, out, 0));

        memset(out, 0x5a, 4);
        CHECK_RC(hex_decode("0001abf", 7, out, 4), -EINVAL);
        CHECK_RC(hex_decode("0001abff0", 9, out, 4), -EINVAL);
        CHECK_RC(hex_decode("0001abfg", 8, out, 4), -EINVAL);
        CHECK_RC(hex_decode("0001ab f", 8, out, 4), -EINVAL);
        CHECK_RC(hex_decode("0x01abff", 8, out, 4), -EINVAL);
        CHECK_RC(hex_decode("0001ab\0f", 8, out, 4), -EINVAL);
        CHECK_MEMEQ(out, "\x5a\x5a\x5a\x5a", 4);
}

static void test_base64(void) {
        /* RFC 4648 section 10 */
        static const char *rfc[][2] = {
                { "", "" },          { "f", "Zg==" },         { "fo", "Zm8=" },
                { "foo", "Zm9v" },   { "foob", "Zm9vYg==" },  { "fooba", "Zm9vYmE=" },
                { "foobar", "Zm9vYmFy" },
        };
        uint8_t out[80], in[80];
        char s[120];

        for (size_t i = 0; i < ELEMENTSOF(rfc); i++) {
                size_t n = strlen(rfc[i][0]);

                base64_encode((const uint8_t *) rfc[i][0], n, s);
                CHECK_STREQ(s, rfc[i][1]);
                CHECK_EQ_U64(base64_encoded_len(n), strlen(rfc[i][1]));
                CHECK_OK(base64_decode(rfc[i][1], strlen(rfc[i][1]), out, n));
                CHECK_MEMEQ(out, rfc[i][0], n);
        }
        /* all byte values, every length */
        for (size_t n = 0; n <= 64; n++) {
                test_fill(in, n, 77 + n);
                base64_encode(in, n, s);
                CHECK_EQ_U64(strlen(s), base64_encoded_len(n));
                CHECK_OK(base64_decode(s, strlen(s), out, n));
                CHECK_MEMEQ(out, in, n);
        }
        base64_encode((const uint8_t *) "\xfb\xff\xbf", 3, s);
        CHECK_STREQ(s, "+/+/");

        /* strict: padding, length, alphabet, whitespace, non-zero spare bits */
        memset(out, 0x5a, 8);
        CHECK_RC(base64_decode("Zg", 2, out, 1), -EINVAL);
        CHECK_RC(base64_decode("Zg=", 3, out, 1), -EINVAL);
        CHECK_RC(base64_decode("Zg===", 5, out, 1), -EINVAL);
        CHECK_RC(base64_decode("Zg==", 4, out, 2), -EINVAL);
        CHECK_RC(base64_decode("Zm8=", 4, out, 1), -EINVAL);
        CHECK_RC(base64_decode("Zm9v", 4, out, 2), -EINVAL);
        CHECK_RC(base64_decode("Z===", 4, out, 1), -EINVAL);
        CHECK_RC(base64_decode("Zh==", 4, out, 1), -EINVAL); /* spare bits set */
        CHECK_RC(base64_decode("Zm9=", 4, out, 2), -EINVAL); /* spare bits set */
        CHECK_RC(base64_decode("Zm=v", 4, out, 2), -EINVAL);
        CHECK_RC(base64_decode("=m9v", 4, out, 3), -EINVAL);
        CHECK_RC(base64_decode("Zm9v\n", 5, out, 3), -EINVAL);
        CHECK_RC(base64_decode(" Zm9v", 5, out, 3), -EINVAL);
        CHECK_RC(base64_decode("Zm 9v", 5, out, 3), -EINVAL);
        CHECK_RC(base64_decode("Zm-v", 4, out, 3), -EINVAL); /* URL alphabet */
        CHECK_RC(base64_decode("Zm_v", 4, out, 3), -EINVAL);
        CHECK_RC(base64_decode("Zm9\0", 4, out, 3), -EINVAL);
        CHECK_MEMEQ(out, "\x5a\x5a\x5a\x5a\x5a\x5a\x5a\x5a", 8);
}

static void test_parse_rejects(void) {
        static const char *einval[] = {
                "",
                "sha256",
                "sha256:",
                "sha256-",
                "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73", /* no type */
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "SHA256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
                " sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
                "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73 ",
                "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73\n",
                "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c7",
                "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c733",
                "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c7e", /* 'e' */
                "sha256:2mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73", /* > 256 bits */
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
                "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
                "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV=", /* spare bits */
                "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
                "sha256-47DEQpj8HBSa-_TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
                "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "sha256-0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
                "sha256::0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
                "sha-256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
                ":0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
        };
        static const char *unsupported[] = {
                "sha512:0zdl9zrg8r3i9c1g90lgg9ip5ijzv3yhz91i0zzn3r8ap9ws784gkp9dk9j3aglhgf1amqb0pj21mh7h1nxcl18akqvvf7ggqsy30yg",
                "sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs",
                "md5:0h69a7d65svkzfzkdbi5kla8q1",
                "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==",
                "blake3:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
        };
        uint8_t d[SHA256_DIGEST_LEN], zero[SHA256_DIGEST_LEN] = { 0 };

        memset(d, 0, sizeof d);
        for (size_t i = 0; i < ELEMENTSOF(einval); i++) {
                int r = hash_parse(einval[i], d);
                if (r != -EINVAL)
                        TEST_FAIL("hash_parse(\"%s\") = %d, want -EINVAL", einval[i], r);
        }
        for (size_t i = 0; i < ELEMENTSOF(unsupported); i++) {
                int r = hash_parse(unsupported[i], d);
                if (r != -EOPNOTSUPP)
                        TEST_FAIL("hash_parse(\"%s\") = %d, want -EOPNOTSUPP", unsupported[i], r);
        }
        CHECK_MEMEQ(d, zero, sizeof d); /* never written on failure */

        /* upper-case base16 is what Nix accepts too */
        CHECK_OK(hash_parse("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", d));
        CHECK_OK(hash_parse("sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73", zero));
        CHECK_MEMEQ(d, zero, sizeof d);
}

/* Random digests survive every format and parse. */
static void test_format_round_trip(void) {
        for (uint64_t seed = 1; seed <= 500; seed++) {
                uint8_t d[SHA256_DIGEST_LEN], back[SHA256_DIGEST_LEN];
                char s[HASH_STRING_MAX];
                static const size_t lens[] = { 7 + 64, 7 + 52, 7 + 44, 7 + 44 };

                test_fill(d, sizeof d, seed);
                for (int enc = HASH_BASE16; enc <= HASH_SRI; enc++) {
                        hash_format(d, (enum hash_encoding) enc, s);
                        CHECK_EQ_U64(strlen(s), lens[enc]);
                        CHECK_OK(hash_parse(s, back));
                        CHECK_MEMEQ(back, d, sizeof d);
                }
        }
}

int main(void) {
        test_known_answers();
        test_independent_contexts();
        test_hex();
        test_base64();
        test_parse_rejects();
        test_format_round_trip();
        return 0;
}
