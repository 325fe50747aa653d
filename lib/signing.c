/* SPDX-License-Identifier: Apache-2.0 */
/*
 * signing.c - ed25519 keys and signatures in Nix's text form. The only file
 * of trove that talks to libsodium's signature API.
 */
#include <pthread.h>
#include <sodium.h>

#include "trove/signing.h"

#define SECRET_B64_LEN 88
#define PUBLIC_B64_LEN 44
#define SIG_B64_LEN 88

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_init_result = -1;

static void sodium_init_once(void) {
        /* 0: initialised now, 1: already initialised, -1: failure. */
        sodium_init_result = sodium_init();
}

static int ensure_sodium(void) {
        int r = pthread_once(&sodium_once, sodium_init_once);
        if (r != 0)
                return -r;
        return sodium_init_result < 0 ? -EIO : 0;
}

int signing_check_name(const char *name, size_t len) {
        if (len == 0 || len > SIGNING_NAME_MAX)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) name[i];
                /* Printable ASCII, no space, no ':'. */
                if (c <= 0x20 || c >= 0x7f || c == ':')
                        return -EINVAL;
        }
        return 0;
}

/* Decodes exactly base64_len characters of canonical, padded base64 into
 * exactly n bytes. */
static int b64_decode_exact(const char *s, size_t slen, size_t base64_len, uint8_t *out, size_t n) {
        size_t got = 0;

        if (slen != base64_len)
                return -EINVAL;
        if (sodium_base642bin(out, n, s, slen, NULL, &got, NULL, sodium_base64_VARIANT_ORIGINAL) != 0)
                return -EINVAL;
        if (got != n)
                return -EINVAL;
        return 0;
}

/* Splits "<name>:<rest>" at the first ':' and checks the name. */
static int split_name(const char *text, size_t len, size_t *ret_name_len) {
        const char *colon = memchr(text, ':', len);
        int r;

        if (!colon)
                return -EINVAL;
        r = signing_check_name(text, (size_t) (colon - text));
        if (r < 0)
                return r;
        *ret_name_len = (size_t) (colon - text);
        return 0;
}

int signing_generate(const char *name, struct signing_secret *ret) {
        struct signing_secret s;
        uint8_t pk[crypto_sign_PUBLICKEYBYTES];
        size_t nlen = strlen(name);
        int r;

        r = signing_check_name(name, nlen);
        if (r < 0)
                return r;
        r = ensure_sodium();
        if (r < 0)
                return r;
        memcpy(s.name, name, nlen);
        s.name[nlen] = 0;
        if (crypto_sign_keypair(pk, s.key) != 0) {
                sodium_memzero(&s, sizeof s);
                return -EIO;
        }
        *ret = s;
        sodium_memzero(&s, sizeof s);
        return 0;
}

void signing_secret_to_public(const struct signing_secret *s, struct signing_public *ret) {
        struct signing_public p;

        memcpy(p.name, s->name, sizeof p.name);
        /* libsodium's secret key is seed || public key. */
        memcpy(p.key, s->key + crypto_sign_SEEDBYTES, SIGNING_PUBLIC_LEN);
        *ret = p;
}

int signing_secret_parse(const char *text, struct signing_secret *ret) {
        struct signing_secret s;
        uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
        size_t len = strlen(text), nlen;
        int r;

        r = split_name(text, len, &nlen);
        if (r < 0)
                return r;
        r = ensure_sodium();
        if (r < 0)
                return r;
        r = b64_decode_exact(text + nlen + 1, len - nlen - 1, SECRET_B64_LEN, s.key, sizeof s.key);
        if (r < 0)
                goto out;
        /* The public half must be the one the seed derives: a mismatched key
         * would sign with one key and advertise another. */
        if (crypto_sign_seed_keypair(pk, sk, s.key) != 0) {
                r = -EIO;
                goto out;
        }
        if (sodium_memcmp(sk, s.key, sizeof sk) != 0) {
                r = -EINVAL;
                goto out;
        }
        memcpy(s.name, text, nlen);
        s.name[nlen] = 0;
        *ret = s;
        r = 0;
out:
        sodium_memzero(&s, sizeof s);
        sodium_memzero(sk, sizeof sk);
        return r;
}

int signing_public_parse(const char *text, struct signing_public *ret) {
        struct signing_public p;
        size_t len = strlen(text), nlen;
        int r;

        r = split_name(text, len, &nlen);
        if (r < 0)
                return r;
        r = ensure_sodium();
        if (r < 0)
                return r;
        r = b64_decode_exact(text + nlen + 1, len - nlen - 1, PUBLIC_B64_LEN, p.key, sizeof p.key);
        if (r < 0)
                return r;
        if (!crypto_core_ed25519_is_valid_point(p.key))
                return -EINVAL;
        memcpy(p.name, text, nlen);
        p.name[nlen] = 0;
        *ret = p;
        return 0;
}

static void format_key(const char *name, const uint8_t *key, size_t n, char *out, size_t out_size) {
        size_t nlen = strnlen(name, SIGNING_NAME_MAX);

        memcpy(out, name, nlen);
        out[nlen] = ':';
        sodium_bin2base64(out + nlen + 1, out_size - nlen - 1, key, n, sodium_base64_VARIANT_ORIGINAL);
}

void signing_secret_format(const struct signing_secret *s, char out[SIGNING_SECRET_TEXT_MAX]) {
        format_key(s->name, s->key, sizeof s->key, out, SIGNING_SECRET_TEXT_MAX);
}

void signing_public_format(const struct signing_public *p, char out[SIGNING_PUBLIC_TEXT_MAX]) {
        format_key(p->name, p->key, sizeof p->key, out, SIGNING_PUBLIC_TEXT_MAX);
}

void signing_secret_wipe(struct signing_secret *s) {
        if (s)
                sodium_memzero(s, sizeof *s);
}

int signing_sign(const struct signing_secret *s, const void *msg, size_t n,
                 char out[SIGNING_SIG_TEXT_MAX]) {
        uint8_t sig[crypto_sign_BYTES];
        int r;

        r = ensure_sodium();
        if (r < 0)
                return r;
        if (crypto_sign_detached(sig, NULL, msg, n, s->key) != 0)
                return -EIO;
        format_key(s->name, sig, sizeof sig, out, SIGNING_SIG_TEXT_MAX);
        return 0;
}

static int sig_decode(const char *sig_text, size_t len, size_t *ret_name_len,
                      uint8_t sig[SIGNING_SIG_LEN]) {
        size_t nlen;
        int r;

        r = split_name(sig_text, len, &nlen);
        if (r < 0)
                return r;
        r = ensure_sodium();
        if (r < 0)
                return r;
        r = b64_decode_exact(sig_text + nlen + 1, len - nlen - 1, SIG_B64_LEN, sig, SIGNING_SIG_LEN);
        if (r < 0)
                return r;
        *ret_name_len = nlen;
        return 0;
}

int signing_sig_check(const char *sig_text, size_t len, size_t *ret_name_len) {
        uint8_t sig[SIGNING_SIG_LEN];
        size_t nlen;
        int r;

        r = sig_decode(sig_text, len, &nlen, sig);
        if (r < 0)
                return r;
        if (ret_name_len)
                *ret_name_len = nlen;
        return 0;
}

int signing_verify(const struct signing_public *keys, size_t n_keys, const char *sig_text,
                   const void *msg, size_t n) {
        uint8_t sig[SIGNING_SIG_LEN];
        size_t nlen;
        int r;

        r = sig_decode(sig_text, strlen(sig_text), &nlen, sig);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_keys; i++) {
                if (strlen(keys[i].name) != nlen || memcmp(keys[i].name, sig_text, nlen) != 0)
                        continue;
                /* Several keys may share a name (rotation): any may match. */
                if (crypto_sign_verify_detached(sig, msg, n, keys[i].key) == 0)
                        return 1;
        }
        return 0;
}
