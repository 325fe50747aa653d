/* SPDX-License-Identifier: Apache-2.0 */
/*
 * client.h - what the trove subcommands that talk to a server share: the
 * client configuration file, "[SERVER:]CACHE" resolution, JSON API calls with
 * the server's error message, running Nix and reading small files.
 *
 * Configuration: $XDG_CONFIG_HOME/trove/config.json (or ~/.config/trove/),
 * mode 0600:
 *   {"default":"NAME","servers":{"NAME":{"url":"http://…","token":"…"}}}
 * A server may name a "tokenFile" instead of an inline "token". The
 * environment variable TROVE_TOKEN, if set, overrides the token.
 */
#pragma once

#include <jansson.h>

#include "trove/buf.h"
#include "trove/common.h"
#include "trove/util.h"
#include "trove/http.h"

#define CLIENT_JSON_MAX (64u * 1024 * 1024)
#define CLIENT_NAME_MAX 64

struct remote {
        char name[CLIENT_NAME_MAX + 1];  /* server name in the config */
        char *url;                       /* without trailing '/' */
        char *token;                     /* may be NULL (anonymous) */
};

void remote_done(struct remote *r);

/* Path of the config file (heap string), or of a file next to it. */
int client_config_dir(char **ret);
/* Loads the config (an empty object if the file does not exist). */
int client_config_load(json_t **ret, struct trove_error *err);
/* Writes it atomically with mode 0600. */
int client_config_save(json_t *cfg, struct trove_error *err);

/* Splits "[SERVER:]CACHE", looks the server up (the default one when
 * absent) and checks the cache name. ret_cache is a heap string. */
int remote_resolve(const char *spec, struct remote *ret, char **ret_cache, struct trove_error *err);
/* Same for a server name alone (NULL: the default). */
int remote_lookup(const char *name, struct remote *ret, struct trove_error *err);

bool cache_name_is_valid(const char *s);

/* One API call. body may be NULL (content_type: NULL means JSON). Returns 0 with *ret_status set whenever a
 * response came back (json parsed into *ret_json if it is 2xx JSON and
 * ret_json is non-NULL); for non-2xx the server's message is put into err.
 * Transport failures are retried up to attempts times (with backoff), as
 * are 429/502/503/504. */
int api_call(struct http_client *c, const struct remote *r, const char *method, const char *path,
             const char *content_type, const void *body, size_t body_len, int attempts, long *ret_status, json_t **ret_json,
             struct trove_error *err);
/* Same, with the response body (of any status) in resp, bounded by its
 * max; for a non-JSON document such as a narinfo. */
int api_call_raw(struct http_client *c, const struct remote *r, const char *method, const char *path,
                 const char *content_type, const void *body, size_t body_len, int attempts, long *ret_status,
                 struct buf *resp, struct trove_error *err);
/* The usual "status → errno" plus the message, as one error. */
int api_check(long status, struct trove_error *err);

/* Runs argv (PATH lookup), collecting stdout into out (bounded by its max);
 * stderr passes through unless quiet. Returns the exit status (>=0) or a
 * negative errno if it could not run. */
int run_capture(char *const argv[], struct buf *out, bool quiet);

/* Reads a small file ("-": stdin) and strips trailing whitespace. */
int read_small_file(const char *path, size_t max, char **ret);
/* Writes text to path atomically (tmp + rename), with mode. */
int write_file_atomic(const char *path, const char *text, size_t n, mode_t mode);
/* "1.5 MiB" style. */
void format_bytes(uint64_t n, char out[32]);
