/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Nix's base32. The string is read from its end: character k from the end
 * holds bits 5k..5k+4 of the little-endian bit string of the input, so the
 * first character carries the most significant (possibly partial) group.
 */
#include "trove/nix32.h"

static const char nix32_chars[32] = "0123456789abcdfghijklmnpqrsvwxyz";

/* 1 + the digit value for alphabet characters, 0 for everything else. */
static const uint8_t nix32_values[256] = {
        ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
        ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
        ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['f'] = 15,
        ['g'] = 16, ['h'] = 17, ['i'] = 18, ['j'] = 19, ['k'] = 20,
        ['l'] = 21, ['m'] = 22, ['n'] = 23, ['p'] = 24, ['q'] = 25,
        ['r'] = 26, ['s'] = 27, ['v'] = 28, ['w'] = 29, ['x'] = 30,
        ['y'] = 31, ['z'] = 32,
};

bool nix32_is_char(char c) {
        return nix32_values[(uint8_t) c] != 0;
}

void nix32_encode(const uint8_t *in, size_t n, char *out) {
        size_t len = nix32_encoded_len(n);

        for (size_t k = 0; k < len; k++) {
                /* k-th 5-bit group, counted from the least significant end */
                size_t b = k * 5, i = b / 8;
                unsigned j = b % 8;
                unsigned c = in[i] >> j;

                if (i + 1 < n)
                        c |= (unsigned) in[i + 1] << (8 - j);
                out[len - 1 - k] = nix32_chars[c & 0x1f];
        }
        out[len] = 0;
}

int nix32_decode(const char *s, size_t slen, uint8_t *out, size_t n) {
        if (n > (SIZE_MAX - 4) / 8 || slen != nix32_encoded_len(n))
                return -EINVAL;

        /* Validate everything first: out is written only on success. */
        for (size_t k = 0; k < slen; k++) {
                unsigned v = nix32_values[(uint8_t) s[slen - 1 - k]];
                size_t b = k * 5, i = b / 8;
                unsigned j = b % 8;

                if (v == 0)
                        return -EINVAL;
                /* bits that would land beyond the last byte */
                if (i + 1 >= n && ((v - 1) >> (8 - j)) != 0)
                        return -EINVAL;
        }

        memset(out, 0, n);
        for (size_t k = 0; k < slen; k++) {
                unsigned d = nix32_values[(uint8_t) s[slen - 1 - k]] - 1u;
                size_t b = k * 5, i = b / 8;
                unsigned j = b % 8;

                out[i] |= (uint8_t) (d << j);
                if (i + 1 < n)
                        out[i + 1] |= (uint8_t) (d >> (8 - j));
        }
        return 0;
}
