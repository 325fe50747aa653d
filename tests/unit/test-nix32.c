/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "trove/buf.h"
#include "trove/hash.h"
#include "trove/nix32.h"
#include "test.h"

/* Recorded with `nix-hash --type <algo> --to-base32 <hex>` (Nix 2.8). */
static const struct {
        const char *hex, *nix32;
} vectors[] = {
        { "00000000000000000000000000000000", "00000000000000000000000000" },
        { "0123456789abcdeffedcba9876543210", "0h69a7d65svkzfzkdbi5kla8q1" },
        { "ffffffffffffffffffffffffffffffffffffffff", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz" },
        { "da39a3ee5e6b4b0d3255bfef95601890afd80709", "143xibwh31h9bvxzalr0sjvbbvpa6ffs" },
        { "0000000000000000000000000000000000000000000000000000000000000000",
          "0000000000000000000000000000000000000000000000000000" },
        { "0000000000000000000000000000000000000000000000000000000000000001",
          "0080000000000000000000000000000000000000000000000000" },
        { "8000000000000000000000000000000000000000000000000000000000000000",
          "0000000000000000000000000000000000000000000000000040" },
        { "00000000000000000000000000000000000000000000000000000000000000ff",
          "1zq0000000000000000000000000000000000000000000000000" },
        { "ff00000000000000000000000000000000000000000000000000000000000000",
          "000000000000000000000000000000000000000000000000007z" },
        { "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
          "1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz" },
        { "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
          "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73" },
        { "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
          "00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq" },
        { "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
          "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
          "0zdl9zrg8r3i9c1g90lgg9ip5ijzv3yhz91i0zzn3r8ap9ws784gkp9dk9j3aglhgf1amqb0pj21mh7h1nxcl18akqvvf7ggqsy30yg" },
};

static void test_vectors(void) {
        for (size_t v = 0; v < ELEMENTSOF(vectors); v++) {
                uint8_t bytes[64], back[64];
                char s[128];
                size_t n = strlen(vectors[v].hex) / 2;

                CHECK_OK(hex_decode(vectors[v].hex, 2 * n, bytes, n));
                CHECK_EQ_U64(nix32_encoded_len(n), strlen(vectors[v].nix32));
                nix32_encode(bytes, n, s);
                CHECK_STREQ(s, vectors[v].nix32);
                CHECK_OK(nix32_decode(vectors[v].nix32, strlen(vectors[v].nix32), back, n));
                CHECK_MEMEQ(back, bytes, n);
        }
}

/* Encodes random SHA-256 sized values and compares with what the real
 * nix-hash prints for them, in one nix-hash run. */
static void test_against_nix_hash(void) {
        enum { COUNT = 200 };
        static uint8_t hashes[COUNT][32];
        _cleanup_(buf_free) struct buf cmd = BUF_INIT(1 << 20);
        char line[256], mine[HASH_NIX32_LEN + 1], hex[65];
        uint64_t seed = 0x6e69783332ULL;
        size_t i;
        FILE *f;

        CHECK_OK(buf_append_str(&cmd, "nix-hash --type sha256 --to-base32"));
        for (i = 0; i < COUNT; i++) {
                /* a few with long runs of zero or one bits, the rest random */
                test_fill(hashes[i], 32, seed + i);
                if (i % 10 == 1)
                        memset(hashes[i], 0, 31);
                if (i % 10 == 2)
                        memset(hashes[i] + 1, 0xff, 31);
                hex_encode(hashes[i], 32, hex);
                CHECK_OK(buf_printf(&cmd, " %s", hex));
        }
        f = popen((const char *) cmd.data, "r");
        if (!f)
                TEST_FAIL("cannot run nix-hash: %m");
        for (i = 0; i < COUNT; i++) {
                size_t l;
                uint8_t back[32];

                if (!fgets(line, sizeof line, f))
                        TEST_FAIL("nix-hash printed only %zu of %d lines (is nix-hash on PATH?)",
                                  i, COUNT);
                l = strlen(line);
                if (l > 0 && line[l - 1] == '\n')
                        line[--l] = 0;
                nix32_encode(hashes[i], 32, mine);
                CHECK_STREQ(mine, line);
                CHECK_OK(nix32_decode(line, l, back, 32));
                CHECK_MEMEQ(back, hashes[i], 32);
        }
        CHECK(!fgets(line, sizeof line, f));
        CHECK_RC(pclose(f), 0);
}

static void test_round_trips(void) {
        for (size_t n = 0; n <= 64; n++) {
                for (uint64_t seed = 1; seed <= 4; seed++) {
                        uint8_t in[64], back[65];
                        char s[128];
                        size_t len = nix32_encoded_len(n);

                        test_fill(in, n, seed * 1000 + n);
                        if (seed == 2)
                                memset(in, 0xff, n);
                        if (seed == 3)
                                memset(in, 0, n);
                        memset(s, 'X', sizeof s);
                        nix32_encode(in, n, s);
                        CHECK_EQ_U64(strlen(s), len);
                        for (size_t k = 0; k < len; k++)
                                CHECK(nix32_is_char(s[k]));
                        back[n] = 0xa5; /* guard: nothing written past n */
                        CHECK_OK(nix32_decode(s, len, back, n));
                        CHECK_MEMEQ(back, in, n);
                        CHECK(back[n] == 0xa5);
                }
        }
        CHECK_EQ_U64(nix32_encoded_len(20), 32);
        CHECK_EQ_U64(nix32_encoded_len(32), 52);
        CHECK_EQ_U64(nix32_encoded_len(64), 103);
}

static void test_alphabet(void) {
        const char *alphabet = "0123456789abcdfghijklmnpqrsvwxyz";
        size_t count = 0;

        for (int c = 0; c < 256; c++) {
                bool in = c != 0 && strchr(alphabet, c) != NULL;
                CHECK(nix32_is_char((char) c) == in);
                count += in;
        }
        CHECK_EQ_U64(count, 32);
}

static void test_rejects(void) {
        const char *good = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
        const char bad_chars[] = { 'e', 'o', 'u', 't', 'A', 'Z', '-', ' ', '=', '/', '\n', 0, (char) 0xc3 };
        uint8_t out[64], zero[64] = { 0 };
        char s[128];

        /* a bad character anywhere, and out left untouched */
        for (size_t pos = 0; pos < 52; pos += 17) {
                for (size_t b = 0; b < sizeof bad_chars; b++) {
                        memcpy(s, good, 53);
                        s[pos] = bad_chars[b];
                        memset(out, 0, sizeof out);
                        CHECK_RC(nix32_decode(s, 52, out, 32), -EINVAL);
                        CHECK_MEMEQ(out, zero, 32);
                }
        }
        /* upper case of a valid string */
        for (size_t k = 0; k < 52; k++)
                s[k] = (char) (good[k] >= 'a' ? good[k] - 32 : good[k]);
        CHECK_RC(nix32_decode(s, 52, out, 32), -EINVAL);

        /* wrong lengths */
        CHECK_RC(nix32_decode(good, 51, out, 32), -EINVAL);
        CHECK_RC(nix32_decode(good + 1, 51, out, 32), -EINVAL);
        memcpy(s, good, 52);
        s[52] = '0';
        CHECK_RC(nix32_decode(s, 53, out, 32), -EINVAL);
        CHECK_RC(nix32_decode(good, 52, out, 31), -EINVAL);
        CHECK_RC(nix32_decode(good, 52, out, 33), -EINVAL);
        CHECK_RC(nix32_decode("", 0, out, 1), -EINVAL);
        CHECK_RC(nix32_decode("0", 1, out, 0), -EINVAL);
        CHECK_OK(nix32_decode("", 0, out, 0));

        /* Bits beyond n bytes: the first character carries 8n - 5(len-1)
         * real bits; the largest value that fits is accepted, one more is
         * refused. */
        for (size_t n = 1; n <= 64; n++) {
                size_t len = nix32_encoded_len(n);
                unsigned bits = (unsigned) (8 * n - 5 * (len - 1));
                const char *alphabet = "0123456789abcdfghijklmnpqrsvwxyz";

                CHECK(bits >= 1 && bits <= 5);
                if (bits == 5)
                        continue;
                memset(s, '0', len);
                s[0] = alphabet[(1u << bits) - 1];
                memset(out, 0, sizeof out);
                CHECK_OK(nix32_decode(s, len, out, n));
                CHECK(out[n - 1] == (uint8_t) (((1u << bits) - 1) << (8 - bits)));
                for (unsigned v = 1u << bits; v < 32; v++) {
                        s[0] = alphabet[v];
                        memset(out, 0, sizeof out);
                        CHECK_RC(nix32_decode(s, len, out, n), -EINVAL);
                        CHECK_MEMEQ(out, zero, n);
                }
        }
        /* the SHA-256 case spelled out: 52 chars hold 260 bits, 4 too many */
        memcpy(s, "1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", 53);
        CHECK_OK(nix32_decode(s, 52, out, 32));
        s[0] = '2';
        CHECK_RC(nix32_decode(s, 52, out, 32), -EINVAL);
        s[0] = 'z';
        CHECK_RC(nix32_decode(s, 52, out, 32), -EINVAL);
}

int main(void) {
        test_vectors();
        test_round_trips();
        test_alphabet();
        test_rejects();
        test_against_nix_hash();
        return 0;
}
