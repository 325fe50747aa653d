/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SHA-256 through OpenSSL's EVP (the only file that includes OpenSSL), and
 * the text forms Nix uses for hashes.
 */
#include <pthread.h>

#include <openssl/evp.h>

#include "trove/hash.h"
#include "trove/nix32.h"

/* OpenSSL 3 looks the algorithm up in its provider tables on every
 * EVP_sha256()-based init; fetching it once keeps that off the per-chunk
 * path. The fetched object lives for the process. */
static const EVP_MD *sha256_md;
static pthread_once_t sha256_md_once = PTHREAD_ONCE_INIT;

static void sha256_md_fetch(void) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
#endif
        if (!sha256_md)
                sha256_md = EVP_sha256();
}

static const EVP_MD *sha256_get_md(void) {
        pthread_once(&sha256_md_once, sha256_md_fetch);
        return sha256_md;
}

int sha256_init(struct sha256 *h) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();

        if (!ctx)
                return -ENOMEM;
        if (EVP_DigestInit_ex(ctx, sha256_get_md(), NULL) != 1) {
                EVP_MD_CTX_free(ctx);
                return -EIO;
        }
        h->ctx = ctx;
        return 0;
}

int sha256_update(struct sha256 *h, const void *p, size_t n) {
        /* One call for the whole buffer: OpenSSL runs its block function
         * (SHA-NI / AVX2 where present) over all full blocks at once. */
        if (n == 0)
                return 0;
        if (!h->ctx)
                return -EINVAL;
        if (EVP_DigestUpdate(h->ctx, p, n) != 1)
                return -EIO;
        return 0;
}

int sha256_final(struct sha256 *h, uint8_t out[SHA256_DIGEST_LEN]) {
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned len = 0;

        if (!h->ctx)
                return -EINVAL;
        if (EVP_DigestFinal_ex(h->ctx, md, &len) != 1 || len != SHA256_DIGEST_LEN)
                return -EIO;
        if (EVP_DigestInit_ex(h->ctx, sha256_get_md(), NULL) != 1)
                return -EIO;
        memcpy(out, md, SHA256_DIGEST_LEN);
        return 0;
}

void sha256_done(struct sha256 *h) {
        if (!h)
                return;
        EVP_MD_CTX_free(h->ctx);
        h->ctx = NULL;
}

int sha256_buf(const void *p, size_t n, uint8_t out[SHA256_DIGEST_LEN]) {
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned len = 0;

        if (EVP_Digest(p, n, md, &len, sha256_get_md(), NULL) != 1 || len != SHA256_DIGEST_LEN)
                return -EIO;
        memcpy(out, md, SHA256_DIGEST_LEN);
        return 0;
}

/* ---- hex ---- */

static int hex_value(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        /* Nix accepts upper-case base16 too */
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

void hex_encode(const uint8_t *in, size_t n, char *out) {
        static const char digits[16] = "0123456789abcdef";

        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[in[i] >> 4];
                out[2 * i + 1] = digits[in[i] & 0xf];
        }
        out[2 * n] = 0;
}

int hex_decode(const char *s, size_t slen, uint8_t *out, size_t n) {
        if (n > SIZE_MAX / 2 || slen != 2 * n)
                return -EINVAL;
        for (size_t i = 0; i < slen; i++)
                if (hex_value(s[i]) < 0)
                        return -EINVAL;
        for (size_t i = 0; i < n; i++)
                out[i] = (uint8_t) (hex_value(s[2 * i]) << 4 | hex_value(s[2 * i + 1]));
        return 0;
}

/* ---- base64 (RFC 4648, standard alphabet, padded) ---- */

static const char base64_chars[64] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int base64_value(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

void base64_encode(const uint8_t *in, size_t n, char *out) {
        size_t i = 0, o = 0;

        for (; i + 3 <= n; i += 3) {
                uint32_t v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];
                out[o++] = base64_chars[v >> 18];
                out[o++] = base64_chars[(v >> 12) & 63];
                out[o++] = base64_chars[(v >> 6) & 63];
                out[o++] = base64_chars[v & 63];
        }
        if (n - i == 1) {
                uint32_t v = (uint32_t) in[i] << 16;
                out[o++] = base64_chars[v >> 18];
                out[o++] = base64_chars[(v >> 12) & 63];
                out[o++] = '=';
                out[o++] = '=';
        } else if (n - i == 2) {
                uint32_t v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8;
                out[o++] = base64_chars[v >> 18];
                out[o++] = base64_chars[(v >> 12) & 63];
                out[o++] = base64_chars[(v >> 6) & 63];
                out[o++] = '=';
        }
        out[o] = 0;
}

int base64_decode(const char *s, size_t slen, uint8_t *out, size_t n) {
        size_t rem, data_chars;

        if (n > SIZE_MAX / 4 * 3 - 2 || slen != base64_encoded_len(n))
                return -EINVAL;
        rem = n % 3;
        /* characters that carry data; the rest must be exactly '=' */
        data_chars = n / 3 * 4 + (rem ? rem + 1 : 0);
        for (size_t i = 0; i < slen; i++) {
                if (i < data_chars ? base64_value(s[i]) < 0 : s[i] != '=')
                        return -EINVAL;
        }
        /* The last data character's unused low bits must be zero, so that
         * every byte string has exactly one accepted spelling. */
        if (rem == 1 && (base64_value(s[data_chars - 1]) & 0x0f) != 0)
                return -EINVAL;
        if (rem == 2 && (base64_value(s[data_chars - 1]) & 0x03) != 0)
                return -EINVAL;

        for (size_t i = 0, o = 0; i < data_chars; i += 4) {
                uint32_t v = 0;
                size_t k, m = MIN((size_t) 4, data_chars - i);

                for (k = 0; k < m; k++)
                        v |= (uint32_t) base64_value(s[i + k]) << (18 - 6 * k);
                out[o++] = (uint8_t) (v >> 16);
                if (m > 2)
                        out[o++] = (uint8_t) (v >> 8);
                if (m > 3)
                        out[o++] = (uint8_t) v;
        }
        return 0;
}

/* ---- Nix hash strings ---- */

void hash_format(const uint8_t h[SHA256_DIGEST_LEN], enum hash_encoding enc,
                 char out[HASH_STRING_MAX]) {
        const size_t plen = sizeof("sha256:") - 1;

        memcpy(out, enc == HASH_SRI ? "sha256-" : "sha256:", plen);
        switch (enc) {
        case HASH_BASE16:
                hex_encode(h, SHA256_DIGEST_LEN, out + plen);
                break;
        case HASH_NIX32:
                nix32_encode(h, SHA256_DIGEST_LEN, out + plen);
                break;
        case HASH_BASE64:
        case HASH_SRI:
        default:
                base64_encode(h, SHA256_DIGEST_LEN, out + plen);
                break;
        }
}

/* An algorithm name as Nix spells them ("md5", "sha1", "sha512", "blake3"):
 * something well-formed we do not support, as opposed to garbage. */
static bool looks_like_algorithm(const char *s, size_t len) {
        if (len == 0 || len > 16)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
                        return false;
        return true;
}

int hash_parse(const char *s, uint8_t ret[SHA256_DIGEST_LEN]) {
        uint8_t h[SHA256_DIGEST_LEN];
        const char *sep, *rest;
        size_t alen, rlen;
        bool sri;
        int r;

        if (!s)
                return -EINVAL;
        /* Like Nix: "algo:hash", else SRI "algo-base64". */
        sep = strchr(s, ':');
        sri = !sep;
        if (sri)
                sep = strchr(s, '-');
        if (!sep)
                return -EINVAL;
        alen = (size_t) (sep - s);
        if (alen != 6 || memcmp(s, "sha256", 6) != 0)
                return looks_like_algorithm(s, alen) ? -EOPNOTSUPP : -EINVAL;

        rest = sep + 1;
        rlen = strlen(rest);
        if (sri)
                r = rlen == HASH_BASE64_LEN ? base64_decode(rest, rlen, h, sizeof h) : -EINVAL;
        else if (rlen == HASH_BASE16_LEN)
                r = hex_decode(rest, rlen, h, sizeof h);
        else if (rlen == HASH_NIX32_LEN)
                r = nix32_decode(rest, rlen, h, sizeof h);
        else if (rlen == HASH_BASE64_LEN)
                r = base64_decode(rest, rlen, h, sizeof h);
        else
                r = -EINVAL;
        if (r < 0)
                return r;
        memcpy(ret, h, sizeof h);
        return 0;
}
