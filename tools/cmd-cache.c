/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd-cache.c - `trove cache create|info|configure|destroy|pin|unpin|pins|
 * delete-path|rotate-key` and `trove gc`: cache administration and its
 * lifecycle through the server's API.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "client.h"
#include "trove.h"
#include "trove/storepath.h"
#include "trove/util.h"

static void usage(FILE *f) {
        fprintf(f,
                "usage: trove cache create [OPTIONS] [SERVER:]CACHE\n"
                "       trove cache info [--json] [SERVER:]CACHE\n"
                "       trove cache configure [OPTIONS] [SERVER:]CACHE\n"
                "       trove cache destroy --yes [SERVER:]CACHE\n"
                "       trove cache pin [--keep-closure] [SERVER:]CACHE PATH...\n"
                "       trove cache unpin [--keep-closure] [SERVER:]CACHE PATH...\n"
                "       trove cache pins [SERVER:]CACHE\n"
                "       trove cache delete-path [--force] [SERVER:]CACHE PATH...\n"
                "       trove cache rotate-key [--key-name NAME | --retire] [SERVER:]CACHE\n"
                "\n"
                "create     makes a cache with its own signing key (token needs 'create')\n"
                "info       shows its settings, public key and usage: paths, NAR bytes, stored\n"
                "           bytes, dedup ratio (needs 'pull')\n"
                "configure  changes settings (needs 'configure')\n"
                "destroy    removes the cache and its paths; chunks other caches use stay, the\n"
                "           rest is left to garbage collection (needs 'destroy')\n"
                "pin        keeps paths (and what they reference) whatever the retention and quota;\n"
                "           --keep-closure pins every path of their closures too, so they stay\n"
                "           even if the pinned path goes (needs 'push')\n"
                "unpin      lets pinned paths go again; --keep-closure unpins their closures\n"
                "           (needs 'delete')\n"
                "pins       lists the pinned paths (needs 'pull')\n"
                "delete-path  removes paths; refused while other paths of the cache reference\n"
                "           them (the referrers are named) or they are pinned, unless --force;\n"
                "           paths given together may reference each other (needs 'delete')\n"
                "rotate-key starts a key rotation: a new key (--key-name, default the current\n"
                "           name with its number raised) signs, and the current one keeps signing\n"
                "           until '--retire' ends the transition (needs 'configure')\n"
                "\n"
                "PATH is a store path, its base name or its hash part.\n"
                "\n"
                "options of create and configure:\n"
                "  --public / --private     anonymous pull allowed or not (default: private)\n"
                "  --priority N             Nix substituter priority (0..10000; lower is preferred)\n"
                "  --upstream-keys \"K...\"   space-separated key names or public keys whose\n"
                "                           signatures mark paths 'trove push' need not upload;\n"
                "                           with --upstream: the public keys (name:base64) an\n"
                "                           upstream's narinfos must be signed with\n"
                "  --upstream URL           an upstream binary cache (http/https) that paths the\n"
                "                           cache lacks are pulled from; repeat for several, asked\n"
                "                           in order (at most 8); '--upstream none' clears the list\n"
                "  --retention DURATION     keep paths this long after their last use (a read\n"
                "                           by Nix or trovefs, or a push), and whatever the kept\n"
                "                           paths reference (30d, 12h, 0 = forever)\n"
                "  --quota SIZE             stored-bytes budget (e.g. 50G; 0 = none): garbage\n"
                "                           collection drops the least recently used unpinned\n"
                "                           paths nothing references (pulled ones first) until\n"
                "                           the cache is within it\n"
                "  --store-dir DIR          (create only) store directory (/nix/store)\n"
                "  --key-name NAME          (create only) signing key name (CACHE-1)\n"
                "\n"
                "SERVER is a name from 'trove login' (default: the default server).\n");
}

static int print_info(json_t *j, bool as_json) {
        if (as_json) {
                char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
                if (!s)
                        return -ENOMEM;
                printf("%s\n", s);
                free(s);
                return 0;
        }
        json_t *usage = json_object_get(j, "usage"), *ch = json_object_get(j, "chunking");
        const char *up = json_string_value(json_object_get(j, "upstreamKeys"));
        int64_t ret = json_integer_value(json_object_get(j, "retentionSeconds"));
        printf("cache:          %s\n", json_string_value(json_object_get(j, "name")) ?: "?");
        printf("public:         %s\n", json_is_true(json_object_get(j, "public")) ? "yes (anonymous pull)" : "no");
        printf("priority:       %" PRId64 "\n", (int64_t) json_integer_value(json_object_get(j, "priority")));
        printf("store dir:      %s\n", json_string_value(json_object_get(j, "storeDir")) ?: "?");
        printf("public key:     %s\n", json_string_value(json_object_get(j, "publicKey")) ?: "?");
        printf("upstream keys:  %s\n", up && up[0] ? up : "(none)");
        {
                json_t *ups = json_object_get(j, "upstreams"), *e;
                size_t i;
                if (json_array_size(ups) == 0)
                        printf("upstreams:      (none)\n");
                json_array_foreach(ups, i, e)
                        printf("%s %s\n", i == 0 ? "upstreams:     " : "               ", json_string_value(e) ?: "?");
        }
        if (ret > 0)
                printf("retention:      %" PRId64 " s (%.1f days) after last use\n", ret, (double) ret / 86400.0);
        else
                printf("retention:      forever\n");
        {
                int64_t quota = json_integer_value(json_object_get(j, "quotaBytes"));
                const char *retiring = json_string_value(json_object_get(j, "retiringPublicKey"));
                char qb[32];
                format_bytes((uint64_t) quota, qb);
                printf("quota:          %s\n", quota > 0 ? qb : "none");
                if (retiring)
                        printf("retiring key:   %s (still signing)\n", retiring);
        }
        if (ch)
                printf("chunking:       min %" PRId64 ", avg %" PRId64 ", max %" PRId64 " bytes\n",
                       (int64_t) json_integer_value(json_object_get(ch, "min")),
                       (int64_t) json_integer_value(json_object_get(ch, "avg")),
                       (int64_t) json_integer_value(json_object_get(ch, "max")));
        if (usage) {
                char nb[32], sb[32];
                format_bytes((uint64_t) json_integer_value(json_object_get(usage, "narBytes")), nb);
                format_bytes((uint64_t) json_integer_value(json_object_get(usage, "storedBytes")), sb);
                printf("paths:          %" PRId64 "\n", (int64_t) json_integer_value(json_object_get(usage, "paths")));
                printf("logical bytes:  %s (NAR)\n", nb);
                printf("stored bytes:   %s (%" PRId64 " chunks)\n", sb,
                       (int64_t) json_integer_value(json_object_get(usage, "chunks")));
                json_t *kinds = json_object_get(usage, "storedBytesByKind");
                if (kinds) {
                        char pb[32], db[32], rb[32];
                        format_bytes((uint64_t) json_integer_value(json_object_get(kinds, "plain")), pb);
                        format_bytes((uint64_t) json_integer_value(json_object_get(kinds, "delta")), db);
                        format_bytes((uint64_t) json_integer_value(json_object_get(kinds, "recompressed")), rb);
                        printf("  by kind:      %s plain, %s delta, %s recompressed\n", pb, db, rb);
                }
                printf("dedup ratio:    %.2f\n", json_number_value(json_object_get(usage, "dedupRatio")));
                if (json_object_get(usage, "pulledPaths")) {
                        char pb[32];
                        format_bytes((uint64_t) json_integer_value(json_object_get(usage, "pulledNarBytes")), pb);
                        printf("pushed paths:   %" PRId64 "\n",
                               (int64_t) json_integer_value(json_object_get(usage, "pushedPaths")));
                        printf("pulled paths:   %" PRId64 " (%s NAR, from upstreams)\n",
                               (int64_t) json_integer_value(json_object_get(usage, "pulledPaths")), pb);
                }
        }
        return 0;
}

/* Connects to the server of spec ("[SERVER:]CACHE", or a server name
 * alone when ret_cache is NULL). */
static int connect_remote(const char *spec, struct remote *rm, char **ret_cache, struct http_client **ret_hc) {
        struct http_client_options ho = {};
        struct trove_error err = {};
        int r;

        r = ret_cache ? remote_resolve(spec, rm, ret_cache, &err) : remote_lookup(spec, rm, &err);
        if (r < 0) {
                log_error("%s", err.msg);
                return r;
        }
        r = http_global_init();
        if (r >= 0)
                r = http_client_new(&ho, ret_hc);
        if (r < 0)
                log_error("cannot set up HTTP: %s", strerror(-r));
        return r;
}

/* The hash part of a store path, its base name or the hash part itself. */
static const char *path_hash_part(const char *arg, char out[STOREPATH_HASH_LEN + 1]) {
        const char *base = strrchr(arg, '/');
        base = base ? base + 1 : arg;
        if (strlen(base) < STOREPATH_HASH_LEN || !storepath_is_hash_part(base, STOREPATH_HASH_LEN) ||
            (base[STOREPATH_HASH_LEN] && base[STOREPATH_HASH_LEN] != '-'))
                return NULL;
        memcpy(out, base, STOREPATH_HASH_LEN);
        out[STOREPATH_HASH_LEN] = 0;
        return out;
}

/* pin, unpin, pins, delete-path, rotate-key. */
static int cache_lifecycle(int argc, char **argv) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "keep-closure", no_argument, NULL, 'c' },
                { "force", no_argument, NULL, 'f' },
                { "key-name", required_argument, NULL, 'k' },
                { "retire", no_argument, NULL, 'r' },
                {}
        };
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        _cleanup_free_ char *cache = NULL, *path = NULL, *body = NULL;
        const char *verb = argv[0], *key_name = NULL;
        bool closure = false, force = false, retire = false, takes_paths;
        struct trove_error err = {};
        struct remote rm = {};
        json_t *req = NULL, *resp = NULL, *paths;
        long status;
        int c, r, ret = 1;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'h': usage(stdout); return 0;
                case 'c': closure = true; break;
                case 'f': force = true; break;
                case 'k': key_name = optarg; break;
                case 'r': retire = true; break;
                default: usage(stderr); return 2;
                }
        }
        takes_paths = !streq(verb, "pins") && !streq(verb, "rotate-key");
        if ((closure && !streq(verb, "pin") && !streq(verb, "unpin")) || (force && !streq(verb, "delete-path")) ||
            ((key_name || retire) && !streq(verb, "rotate-key")) || (key_name && retire)) {
                log_error("option not valid for trove cache %s", verb);
                usage(stderr);
                return 2;
        }
        if (argc - optind < 1 || (takes_paths ? argc - optind < 2 : argc - optind != 1)) {
                usage(stderr);
                return 2;
        }
        req = json_object();
        paths = json_array();
        if (!req || !paths || json_object_set_new(req, "paths", paths) < 0) {
                json_decref(req);
                return 1;
        }
        for (int i = optind + 1; takes_paths && i < argc; i++) {
                char h[STOREPATH_HASH_LEN + 1];
                if (!path_hash_part(argv[i], h)) {
                        log_error("'%s' is not a store path, its base name or its hash part", argv[i]);
                        json_decref(req);
                        return 2;
                }
                json_array_append_new(paths, json_string(h));
        }
        if (streq(verb, "pin") || streq(verb, "unpin"))
                json_object_set_new(req, "keepClosure", json_boolean(closure));
        else if (streq(verb, "delete-path"))
                json_object_set_new(req, "force", json_boolean(force));
        else {
                json_object_del(req, "paths");
                if (key_name)
                        json_object_set_new(req, "keyName", json_string(key_name));
                if (retire)
                        json_object_set_new(req, "retire", json_true());
        }
        if (connect_remote(argv[optind], &rm, &cache, &hc) < 0)
                goto out;
        body = streq(verb, "pins") ? NULL : json_dumps(req, JSON_COMPACT);
        if (asprintf(&path, "/_api/v1/caches/%s/%s", cache,
                     streq(verb, "delete-path") ? "delete-paths" : verb) < 0 ||
            (!streq(verb, "pins") && !body)) {
                log_error("out of memory");
                goto out;
        }
        r = api_call(hc, &rm, body ? "POST" : "GET", path, NULL, body, body ? strlen(body) : 0, body ? 1 : 3, &status,
                     &resp, &err);
        if (r >= 0)
                r = api_check(status, &err);
        if (r < 0) {
                log_error("cache %s %s on %s failed: %s", verb, cache, rm.url, err.msg);
                goto out;
        }
        if (streq(verb, "pins")) {
                json_t *e;
                size_t i;
                json_array_foreach(json_object_get(resp, "pins"), i, e)
                        printf("%s\n", json_string_value(e) ?: "?");
        } else if (streq(verb, "rotate-key")) {
                const char *retiring = json_string_value(json_object_get(resp, "retiringPublicKey"));
                printf("cache %s signs with %s%s%s\n", cache,
                       json_string_value(json_object_get(resp, "publicKey")) ?: "?", retiring ? " and, until retired, " : "",
                       retiring ? retiring : "");
        } else if (streq(verb, "delete-path"))
                printf("deleted %zu paths from cache %s\n", json_array_size(paths), cache);
        else
                printf("%s %" PRId64 " paths in cache %s\n", verb[0] == 'p' ? "pinned" : "unpinned",
                       (int64_t) json_integer_value(json_object_get(resp, verb[0] == 'p' ? "pinned" : "unpinned")),
                       cache);
        ret = 0;
out:
        json_decref(req);
        json_decref(resp);
        remote_done(&rm);
        return ret;
}

static void gc_usage(FILE *f) {
        fprintf(f,
                "usage: trove gc [--min-age DURATION] [SERVER]\n"
                "\n"
                "Runs garbage collection on the server now (troved also runs it on its own\n"
                "schedule) and prints what it deleted: paths past their cache's retention or\n"
                "over its quota, then NARs, chunks and objects nothing uses any more. Chunks and\n"
                "NARs younger than --min-age (default 1h) stay: a push in flight may use them.\n"
                "Waits while another instance is collecting. The token needs 'destroy' on all\n"
                "caches.\n");
}

int cmd_gc(int argc, char **argv) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "min-age", required_argument, NULL, 'm' },
                {}
        };
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        _cleanup_free_ char *path = NULL;
        struct trove_error err = {};
        struct remote rm = {};
        json_t *resp = NULL;
        int64_t min_age = 3600;
        long status;
        int c, r, ret = 1;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'h': gc_usage(stdout); return 0;
                case 'm':
                        if (parse_duration(optarg, &min_age) < 0 || min_age < 0) {
                                log_error("bad --min-age '%s' (e.g. 1h, 10m, 0)", optarg);
                                gc_usage(stderr);
                                return 2;
                        }
                        break;
                default: gc_usage(stderr); return 2;
                }
        }
        if (argc - optind > 1) {
                gc_usage(stderr);
                return 2;
        }
        if (connect_remote(argc > optind ? argv[optind] : NULL, &rm, NULL, &hc) < 0)
                goto out;
        if (asprintf(&path, "/_api/v1/gc?min-age=%" PRId64, min_age) < 0)
                goto out;
        r = api_call(hc, &rm, "POST", path, NULL, NULL, 0, 1, &status, &resp, &err);
        if (r >= 0)
                r = api_check(status, &err);
        if (r < 0) {
                log_error("garbage collection on %s failed: %s", rm.url, err.msg);
                goto out;
        }
        printf("deleted %" PRId64 " paths, %" PRId64 " NARs, %" PRId64 " chunks, %" PRId64 " objects in %.1f s\n",
               (int64_t) json_integer_value(json_object_get(resp, "pathsDeleted")),
               (int64_t) json_integer_value(json_object_get(resp, "narsDeleted")),
               (int64_t) json_integer_value(json_object_get(resp, "chunksDeleted")),
               (int64_t) json_integer_value(json_object_get(resp, "objectsDeleted")),
               json_number_value(json_object_get(resp, "seconds")));
        ret = 0;
out:
        json_decref(resp);
        remote_done(&rm);
        return ret;
}

int cmd_cache(int argc, char **argv) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "public", no_argument, NULL, 'p' },
                { "private", no_argument, NULL, 'P' },
                { "priority", required_argument, NULL, 'r' },
                { "upstream-keys", required_argument, NULL, 'u' },
                { "upstream", required_argument, NULL, 'U' },
                { "retention", required_argument, NULL, 't' },
                { "store-dir", required_argument, NULL, 's' },
                { "key-name", required_argument, NULL, 'k' },
                { "json", no_argument, NULL, 'j' },
                { "yes", no_argument, NULL, 'y' },
                { "quota", required_argument, NULL, 'q' },
                {}
        };
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        _cleanup_free_ char *cache = NULL, *path = NULL, *body = NULL;
        struct http_client_options ho = {};
        struct trove_error err = {};
        struct remote rm = {};
        json_t *cfg = NULL, *resp = NULL, *upstreams = NULL;
        const char *verb;
        bool as_json = false, yes = false, is_create, is_conf;
        long status;
        int c, r, ret = 1;

        if (argc < 2 || streq(argv[1], "-h") || streq(argv[1], "--help")) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        verb = argv[1];
        if (streq(verb, "pin") || streq(verb, "unpin") || streq(verb, "pins") || streq(verb, "delete-path") ||
            streq(verb, "rotate-key")) {
                json_decref(cfg);
                return cache_lifecycle(argc - 1, argv + 1);
        }
        if (!streq(verb, "create") && !streq(verb, "info") && !streq(verb, "configure") && !streq(verb, "destroy")) {
                log_error("unknown cache command '%s'", verb);
                usage(stderr);
                return 2;
        }
        is_create = streq(verb, "create");
        is_conf = streq(verb, "configure");
        cfg = json_object();
        if (!cfg)
                return 1;
        optind = 1;
        while ((c = getopt_long(argc - 1, argv + 1, "h", opts, NULL)) >= 0) {
                bool setting = strchr("pPrutskUq", c) != NULL;
                if (setting && !is_create && !is_conf) {
                        log_error("trove cache %s takes no settings", verb);
                        goto usage_err;
                }
                switch (c) {
                case 'h': usage(stdout); json_decref(cfg); return 0;
                case 'p': json_object_set_new(cfg, "public", json_true()); break;
                case 'P': json_object_set_new(cfg, "public", json_false()); break;
                case 'r': {
                        char *end;
                        errno = 0;
                        long v = strtol(optarg, &end, 10);
                        if (errno || end == optarg || *end || v < 0 || v > 10000) {
                                log_error("bad --priority '%s' (0..10000)", optarg);
                                goto usage_err;
                        }
                        json_object_set_new(cfg, "priority", json_integer(v));
                        break;
                }
                case 'u': json_object_set_new(cfg, "upstreamKeys", json_string(optarg)); break;
                case 'U':
                        if (!upstreams) {
                                upstreams = json_array();
                                if (!upstreams)
                                        goto out;
                                json_object_set_new(cfg, "upstreams", upstreams);
                        }
                        if (streq(optarg, "none"))
                                json_array_clear(upstreams);
                        else if (!startswith(optarg, "http://") && !startswith(optarg, "https://")) {
                                log_error("bad --upstream '%s' (an http:// or https:// URL, or 'none')", optarg);
                                goto usage_err;
                        } else
                                json_array_append_new(upstreams, json_string(optarg));
                        break;
                case 't': {
                        int64_t s;
                        if (parse_duration(optarg, &s) < 0) {
                                log_error("bad --retention '%s' (e.g. 30d, 12h, 0)", optarg);
                                goto usage_err;
                        }
                        json_object_set_new(cfg, "retentionSeconds", json_integer(s));
                        break;
                }
                case 's':
                case 'k':
                        if (!is_create) {
                                log_error("--%s is only for create", c == 's' ? "store-dir" : "key-name");
                                goto usage_err;
                        }
                        json_object_set_new(cfg, c == 's' ? "storeDir" : "keyName", json_string(optarg));
                        break;
                case 'q': {
                        uint64_t q;
                        if (streq(optarg, "none"))
                                q = 0;
                        else if (parse_size(optarg, &q) < 0 || q > (1ULL << 60)) {
                                log_error("bad --quota '%s' (e.g. 50G, 800M, 0 or none)", optarg);
                                goto usage_err;
                        }
                        json_object_set_new(cfg, "quotaBytes", json_integer((json_int_t) q));
                        break;
                }
                case 'j': as_json = true; break;
                case 'y': yes = true; break;
                default: goto usage_err;
                }
        }
        if (argc - 1 - optind != 1)
                goto usage_err;
        if (is_conf && json_object_size(cfg) == 0) {
                log_error("nothing to configure: give at least one setting");
                goto usage_err;
        }
        if (streq(verb, "destroy") && !yes) {
                log_error("destroying a cache removes all its paths: confirm with --yes");
                goto usage_err;
        }
        r = remote_resolve(argv[1 + optind], &rm, &cache, &err);
        if (r < 0) {
                log_error("%s", err.msg);
                goto out;
        }
        r = http_global_init();
        if (r >= 0)
                r = http_client_new(&ho, &hc);
        if (r < 0 || asprintf(&path, "/_api/v1/caches/%s", cache) < 0) {
                log_error("out of memory");
                goto out;
        }
        if (is_create || is_conf) {
                body = json_dumps(cfg, JSON_COMPACT);
                if (!body)
                        goto out;
        }
        r = api_call(hc, &rm, is_create ? "POST" : is_conf ? "PATCH" : streq(verb, "destroy") ? "DELETE" : "GET",
                     path, NULL, body, body ? strlen(body) : 0, is_create ? 1 : 3, &status,
                     streq(verb, "destroy") ? NULL : &resp, &err);
        if (r >= 0)
                r = api_check(status, &err);
        if (r < 0) {
                log_error("cache %s %s on %s failed: %s", verb, cache, rm.url, err.msg);
                goto out;
        }
        if (streq(verb, "destroy"))
                printf("destroyed cache %s on %s\n", cache, rm.url);
        else {
                if (is_create && !as_json)
                        printf("created cache %s on %s\n", cache, rm.url);
                if (is_conf && !as_json)
                        printf("configured cache %s on %s\n", cache, rm.url);
                print_info(resp, as_json);
        }
        ret = 0;
        goto out;
usage_err:
        usage(stderr);
        ret = 2;
out:
        json_decref(cfg);
        json_decref(resp);
        remote_done(&rm);
        return ret;
}
