/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd-nixdb.c - `trove nix-db`: the registration of a closure, from the
 * cache's narinfo, in the form `nix-store --load-db` reads. A runner that
 * mounts the cache at the store directory pipes it into the job's Nix
 * database, and Nix treats the mounted paths as valid: it neither copies
 * nor rebuilds them.
 */
#include <getopt.h>
#include <limits.h>
#include <search.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "trove.h"
#include "trove/nixdb.h"
#include "trove/narinfo.h"
#include "trove/signing.h"
#include "trove/storepath.h"

#define NIXDB_PATHS_MAX (1u << 20)
#define NIXDB_KEYS_MAX 16
#define NIXDB_OUTPUT_MAX (1024u * 1024 * 1024)
#define HTTP_ATTEMPTS 4

static void usage(FILE *f) {
        fprintf(f,
                "usage: trove nix-db [OPTIONS] [SERVER:]CACHE PATH...\n"
                "\n"
                "Prints the registration of the closure of each PATH (store paths, their base\n"
                "names, or symlinks to them such as ./result), read from the cache's narinfo,\n"
                "in the form nix-store --load-db reads: path, NAR hash, NAR size, deriver,\n"
                "references. On a runner that mounts the cache at the store directory:\n"
                "  trove nix-db ci:main /nix/store/...-app | nix-store --load-db\n"
                "makes the closure valid without copying it. Nothing is printed unless the\n"
                "whole closure is in the cache.\n"
                "\n"
                "  --trusted-key KEY  every narinfo must be signed by KEY (Nix's name:base64\n"
                "                     form; repeatable)\n"
                "  -h, --help         this text\n"
                "\n"
                "Exit status: 0 printed, 1 a path is not in the cache or the server failed,\n"
                "2 usage.\n");
}

struct closure {
        struct http_client *hc;
        const struct remote *rm;
        const char *cache;
        char store_dir[STOREDIR_MAX + 1];
        struct signing_public keys[NIXDB_KEYS_MAX];
        size_t n_keys;
        void *seen;              /* tsearch tree of base names (owned by queue) */
        char **queue;            /* base names, in discovery order */
        size_t n_queue, cap_queue;
        struct narinfo *infos;   /* infos[i] belongs to queue[i] */
};

static int strcmp_void(const void *a, const void *b) {
        return strcmp(a, b);
}

/* Queues a base name unless it was seen; takes name. */
static int closure_add(struct closure *c, char *name) {
        void *node;

        node = tsearch(name, &c->seen, strcmp_void);
        if (!node) {
                free(name);
                return -ENOMEM;
        }
        if (*(char **) node != name) {
                free(name); /* already queued */
                return 0;
        }
        if (c->n_queue == c->cap_queue) {
                size_t cap = c->cap_queue ? 2 * c->cap_queue : 64;
                char **q;
                struct narinfo *ni;

                if (cap > NIXDB_PATHS_MAX) {
                        tdelete(name, &c->seen, strcmp_void);
                        free(name);
                        return -E2BIG;
                }
                q = reallocarray(c->queue, cap, sizeof *q);
                if (q)
                        c->queue = q;
                ni = q ? reallocarray(c->infos, cap, sizeof *ni) : NULL;
                if (!ni) {
                        tdelete(name, &c->seen, strcmp_void);
                        free(name);
                        return -ENOMEM;
                }
                c->infos = ni;
                c->cap_queue = cap;
        }
        c->infos[c->n_queue] = (struct narinfo){};
        c->queue[c->n_queue++] = name;
        return 0;
}

static void free_nothing(void *p) {
        (void) p;
}

static void closure_done(struct closure *c) {
        tdestroy(c->seen, free_nothing);
        for (size_t i = 0; i < c->n_queue; i++) {
                narinfo_free(&c->infos[i]);
                free(c->queue[i]);
        }
        free(c->infos);
        free(c->queue);
        *c = (struct closure){};
}

/* The store directory the cache declares in nix-cache-info ("StoreDir:"),
 * STORE_DIR_DEFAULT if it declares none. */
static int fetch_store_dir(struct closure *c, struct trove_error *err) {
        _cleanup_free_ char *path = NULL;
        struct buf body = BUF_INIT(64 * 1024);
        long status;
        int r;

        if (asprintf(&path, "/%s/nix-cache-info", c->cache) < 0)
                return -ENOMEM;
        r = api_call_raw(c->hc, c->rm, "GET", path, NULL, NULL, 0, HTTP_ATTEMPTS, &status, &body, err);
        if (r >= 0 && (status < 200 || status >= 300))
                r = api_check(status, err);
        if (r < 0)
                goto out;
        snprintf(c->store_dir, sizeof c->store_dir, "%s", STORE_DIR_DEFAULT);
        for (size_t i = 0; i < body.len;) {
                const char *line = (const char *) body.data + i;
                const uint8_t *nl = memchr(body.data + i, '\n', body.len - i);
                size_t n = nl ? (size_t) (nl - body.data) - i : body.len - i;

                if (n > 10 && memcmp(line, "StoreDir: ", 10) == 0) {
                        if (n - 10 > STOREDIR_MAX) {
                                r = trove_error_set(err, EINVAL, "the cache's StoreDir is too long");
                                goto out;
                        }
                        memcpy(c->store_dir, line + 10, n - 10);
                        c->store_dir[n - 10] = 0;
                        if (!storepath_dir_valid(c->store_dir)) {
                                r = trove_error_set(err, EINVAL, "the cache declares a bad StoreDir");
                                goto out;
                        }
                }
                i += n + 1;
        }
        r = 0;
out:
        buf_free(&body);
        return r;
}

/* Fetches, checks and keeps the narinfo of queue[i]; queues its references. */
static int closure_fetch(struct closure *c, size_t i, struct trove_error *err) {
        _cleanup_free_ char *path = NULL, *want = NULL;
        struct buf body = BUF_INIT(NARINFO_MAX_SIZE);
        struct narinfo ni = {};
        const char *name = c->queue[i];
        long status;
        int r;

        if (asprintf(&path, "/%s/%.*s.narinfo", c->cache, STOREPATH_HASH_LEN, name) < 0 ||
            asprintf(&want, "%s/%s", c->store_dir, name) < 0)
                return -ENOMEM;
        r = api_call_raw(c->hc, c->rm, "GET", path, NULL, NULL, 0, HTTP_ATTEMPTS, &status, &body, err);
        if (r < 0)
                goto out;
        if (status == 404) {
                r = trove_error_set(err, ENOENT, "%s is not in cache %s", want, c->cache);
                goto out;
        }
        if (status < 200 || status >= 300) {
                r = api_check(status, err);
                goto out;
        }
        r = narinfo_parse((const char *) body.data, body.len, c->store_dir, &ni, err);
        if (r < 0) {
                char msg[TROVE_ERRMSG_MAX];
                memcpy(msg, err->msg, sizeof msg);
                r = trove_error_set(err, -r, "narinfo of %s: %s", want, msg);
                goto out;
        }
        /* Same hash, other name: not the path asked for. */
        if (!streq(ni.store_path, want)) {
                r = trove_error_set(err, EBADMSG, "the server answered for %s with the narinfo of %s", want,
                                    ni.store_path);
                goto out;
        }
        if (c->n_keys > 0 && narinfo_verify(&ni, c->store_dir, c->keys, c->n_keys) <= 0) {
                r = trove_error_set(err, EBADMSG, "the narinfo of %s has no signature by a trusted key", want);
                goto out;
        }
        for (size_t k = 0; k < ni.n_references; k++) {
                char *ref = strdup(ni.references[k]);
                if (!ref) {
                        r = -ENOMEM;
                        goto out;
                }
                r = closure_add(c, ref);
                if (r == -E2BIG)
                        r = trove_error_set(err, E2BIG, "the closure has more than %u paths", NIXDB_PATHS_MAX);
                if (r < 0)
                        goto out;
        }
        c->infos[i] = ni; /* after closure_add: it may move infos */
        ni = (struct narinfo){};
        r = 0;
out:
        narinfo_free(&ni);
        buf_free(&body);
        return r;
}

/* The base name of the store path that arg names: a path in the store
 * directory (a file inside a store path names the store path), a base
 * name, or a symlink to one of those (./result). */
static int arg_basename(const char *store_dir, const char *arg, char **ret, struct trove_error *err) {
        _cleanup_free_ char *target = NULL;
        struct storepath sp;
        size_t sdl = strlen(store_dir);
        const char *p = arg;

        for (int hop = 0; hop < 2; hop++) {
                if (strncmp(p, store_dir, sdl) == 0 && p[sdl] == '/') {
                        const char *b = p + sdl + 1, *e = strchrnul(b, '/');
                        if (storepath_parse_basename(b, (size_t) (e - b), &sp) >= 0)
                                goto found;
                        break;
                }
                if (!strchr(p, '/') && storepath_parse_basename(p, strlen(p), &sp) >= 0)
                        goto found;
                if (hop > 0)
                        break;
                /* A symlink such as ./result: one hop, the target need not
                 * exist here. */
                char buf[PATH_MAX];
                ssize_t n = readlink(p, buf, sizeof buf - 1);
                if (n <= 0)
                        break;
                buf[n] = 0;
                target = strdup(buf);
                if (!target)
                        return -ENOMEM;
                p = target;
        }
        return trove_error_set(err, EINVAL, "%s is not a store path of %s", arg, store_dir);
found:
        if (asprintf(ret, "%s-%s", sp.hash, sp.name) < 0)
                return -ENOMEM;
        return 0;
}

static int cmp_info(const void *a, const void *b) {
        return strcmp(((const struct narinfo *) a)->store_path, ((const struct narinfo *) b)->store_path);
}

int cmd_nixdb(int argc, char **argv) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "trusted-key", required_argument, NULL, 'k' },
                {}
        };
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        struct http_client_options ho = { .connect_timeout_ms = 10000, .total_timeout_ms = 60000 };
        _cleanup_free_ char *cache = NULL;
        struct closure c = {};
        struct trove_error err = {};
        struct remote rm = {};
        struct buf out = BUF_INIT(NIXDB_OUTPUT_MAX);
        int ch, r, ret = 1;

        optind = 1;
        while ((ch = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (ch) {
                case 'h': usage(stdout); return 0;
                case 'k':
                        if (c.n_keys == NIXDB_KEYS_MAX) {
                                log_error("at most %d trusted keys", NIXDB_KEYS_MAX);
                                return 2;
                        }
                        if (signing_public_parse(optarg, &c.keys[c.n_keys]) < 0) {
                                log_error("bad public key '%s' (want name:base64)", optarg);
                                return 2;
                        }
                        c.n_keys++;
                        break;
                default: usage(stderr); return 2;
                }
        }
        if (argc - optind < 2) {
                usage(stderr);
                return 2;
        }
        r = remote_resolve(argv[optind], &rm, &cache, &err);
        if (r < 0) {
                log_error("%s", err.msg);
                goto out;
        }
        r = http_global_init();
        if (r >= 0)
                r = http_client_new(&ho, &hc);
        if (r < 0) {
                log_error("cannot make an HTTP client: %s", strerror(-r));
                goto out;
        }
        c.hc = hc;
        c.rm = &rm;
        c.cache = cache;
        r = fetch_store_dir(&c, &err);
        if (r < 0) {
                log_error("cache %s: %s", cache, err.msg);
                goto out;
        }
        for (int i = optind + 1; i < argc; i++) {
                char *name;
                r = arg_basename(c.store_dir, argv[i], &name, &err);
                if (r >= 0)
                        r = closure_add(&c, name);
                if (r < 0) {
                        log_error("%s", r == -ENOMEM ? "out of memory" : err.msg);
                        ret = r == -EINVAL ? 2 : 1;
                        goto out;
                }
        }
        /* Breadth first: the queue grows while it is walked. */
        for (size_t i = 0; i < c.n_queue; i++) {
                r = closure_fetch(&c, i, &err);
                if (r < 0) {
                        log_error("%s", r == -ENOMEM ? "out of memory" : err.msg);
                        goto out;
                }
        }
        /* Sorted by path: the same closure prints the same text. */
        qsort(c.infos, c.n_queue, sizeof *c.infos, cmp_info);
        for (size_t i = 0; i < c.n_queue; i++) {
                r = nixdb_render(&c.infos[i], c.store_dir, &out);
                if (r < 0) {
                        log_error("cannot render %s: %s", c.infos[i].store_path, strerror(-r));
                        goto out;
                }
        }
        if (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout) != 0) {
                log_error("writing standard output: %s", strerror(errno));
                goto out;
        }
        log_info("%zu store paths", c.n_queue);
        ret = 0;
out:
        buf_free(&out);
        closure_done(&c);
        remote_done(&rm);
        return ret;
}
