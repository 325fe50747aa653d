/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd-cache.c - `trove cache create|info|configure|destroy`: cache
 * administration through the server's API.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "client.h"
#include "trove.h"

static void usage(FILE *f) {
        fprintf(f,
                "usage: trove cache create [OPTIONS] [SERVER:]CACHE\n"
                "       trove cache info [--json] [SERVER:]CACHE\n"
                "       trove cache configure [OPTIONS] [SERVER:]CACHE\n"
                "       trove cache destroy --yes [SERVER:]CACHE\n"
                "\n"
                "create     makes a cache with its own signing key (token needs 'create')\n"
                "info       shows its settings, public key and usage: paths, NAR bytes, stored\n"
                "           bytes, dedup ratio (needs 'pull')\n"
                "configure  changes settings (needs 'configure')\n"
                "destroy    removes the cache and its paths; chunks other caches use stay, the\n"
                "           rest is left to garbage collection (needs 'destroy')\n"
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
                "  --retention DURATION     keep paths this long after their last push (30d, 12h,\n"
                "                           0 = forever)\n"
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
                printf("retention:      %" PRId64 " s (%.1f days)\n", ret, (double) ret / 86400.0);
        else
                printf("retention:      forever\n");
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
                bool setting = strchr("pPrutskU", c) != NULL;
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
