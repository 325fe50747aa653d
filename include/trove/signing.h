/* SPDX-License-Identifier: Apache-2.0 */
/*
 * signing.h - ed25519 keys and signatures in Nix's form (libsodium).
 *
 * Secret key text: "<name>:<base64 of 64 bytes (seed||public)>", public key
 * text: "<name>:<base64 of 32 bytes>", signature text:
 * "<name>:<base64 of 64 bytes>", all as `nix-store --generate-binary-cache-key`
 * and `nix store sign` produce them. Key names: 1..128 printable ASCII
 * bytes, no ':' and no whitespace.
 *
 * Parsing is strict: exact base64 lengths with canonical padding, nothing
 * before or after (callers strip a trailing newline of a key file), a
 * public key must be a valid curve point, and a secret key whose embedded
 * public half is not the one its seed derives is refused. All of these
 * return -EINVAL on bad text. libsodium is initialised on first use (once,
 * thread-safely); -EIO if that fails.
 *
 * Structures are caller-allocated; secret keys should be wiped with
 * signing_secret_wipe() when no longer needed.
 */
#pragma once

#include "trove/common.h"

#define SIGNING_NAME_MAX 128
#define SIGNING_SECRET_LEN 64
#define SIGNING_PUBLIC_LEN 32
#define SIGNING_SIG_LEN 64
/* Longest texts, with NUL. */
#define SIGNING_SECRET_TEXT_MAX (SIGNING_NAME_MAX + 1 + 88 + 1)
#define SIGNING_PUBLIC_TEXT_MAX (SIGNING_NAME_MAX + 1 + 44 + 1)
#define SIGNING_SIG_TEXT_MAX (SIGNING_NAME_MAX + 1 + 88 + 1)

struct signing_secret {
        char name[SIGNING_NAME_MAX + 1];
        uint8_t key[SIGNING_SECRET_LEN];
};

struct signing_public {
        char name[SIGNING_NAME_MAX + 1];
        uint8_t key[SIGNING_PUBLIC_LEN];
};

/* 0 if name[0..len) is a valid key name, -EINVAL if not. */
int signing_check_name(const char *name, size_t len);

/* New random key pair. -EINVAL for a bad name. */
int signing_generate(const char *name, struct signing_secret *ret);
void signing_secret_to_public(const struct signing_secret *s, struct signing_public *ret);
int signing_secret_parse(const char *text, struct signing_secret *ret);
int signing_public_parse(const char *text, struct signing_public *ret);
void signing_secret_format(const struct signing_secret *s, char out[SIGNING_SECRET_TEXT_MAX]);
void signing_public_format(const struct signing_public *p, char out[SIGNING_PUBLIC_TEXT_MAX]);
/* Secret key material is wiped with this. */
void signing_secret_wipe(struct signing_secret *s);

/* Signs msg; writes "<name>:<base64 sig>". Fails only if libsodium cannot
 * be initialised. */
int signing_sign(const struct signing_secret *s, const void *msg, size_t n,
                 char out[SIGNING_SIG_TEXT_MAX]);
/* 0 if sig_text[0..len) has the form of a signature ("<valid name>:<base64
 * of 64 bytes>"), -EINVAL if not. Does not verify anything. On success the
 * length of the name is written to *ret_name_len (if non-NULL). */
int signing_sig_check(const char *sig_text, size_t len, size_t *ret_name_len);
/* 1 if sig_text is a valid signature of msg by a key in keys[] with the same
 * name, 0 if not (unknown name or bad signature), -EINVAL if sig_text is
 * malformed. */
int signing_verify(const struct signing_public *keys, size_t n_keys, const char *sig_text,
                   const void *msg, size_t n);
