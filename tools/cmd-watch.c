/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd-watch.c - `trove watch-store`: pushes store paths as they appear, for
 * CI jobs that build and want every result in the cache without a
 * post-build hook. The store directory is polled (entries are never
 * modified, only added, so a listing diff is exact); a new entry is pushed
 * once Nix registered it as valid, in batches, with retries, until SIGINT
 * or SIGTERM, which flush what is pending and exit.
 */
#include <dirent.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>

#include "client.h"
#include "push.h"
#include "trove.h"
#include "trove/storepath.h"

#define WATCH_ENTRIES_MAX (16u * 1024 * 1024)

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
        (void) sig;
        stop_requested = 1;
}

static void usage(FILE *f) {
        fprintf(f,
                "usage: trove watch-store [OPTIONS] [SERVER:]CACHE\n"
                "\n"
                "Watches the Nix store for new paths and pushes each (with its closure) to the\n"
                "cache once Nix has registered it as valid, in batches, until SIGINT or SIGTERM;\n"
                "then pushes what is pending and exits. Paths present when it starts are not\n"
                "pushed. Meant to run in the background of a CI job:\n"
                "  trove watch-store ci-cache & W=$!; nix build ...; kill $W; wait $W\n"
                "\n"
                "  --store-dir DIR      store to watch (/nix/store)\n"
                "  --interval SECONDS   polling interval (1)\n"
                "  --batch-delay SECS   wait this long without new valid paths before pushing (2)\n"
                "  --settle-timeout S   forget entries that are not valid after S seconds (3600)\n"
                "  --retries N          attempts per batch before its failures are reported (3)\n"
                "  --include-drv        also push .drv files\n"
                "  --no-closure         push only the new paths, not their closures\n"
                "  -j, --jobs N         paths processed in parallel (2)\n"
                "  --json               JSON lines (see trove push --json)\n"
                "  -h, --help           this text\n"
                "\n"
                "Exit status: 0 if every batch was pushed, 1 if some paths failed for good.\n");
}

struct entry {
        char *name;
        time_t seen;
};

struct names {
        char **v;
        size_t n;
};

static void names_free(struct names *s) {
        for (size_t i = 0; i < s->n; i++)
                free(s->v[i]);
        free(s->v);
        *s = (struct names){};
}

static int strp_cmp(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int scan_store(const char *dir, struct names *ret) {
        DIR *d = opendir(dir);
        struct names s = {};
        size_t cap = 0;
        struct dirent *de;

        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                if (s.n == cap) {
                        size_t nc = cap ? cap * 2 : 1024;
                        if (nc > WATCH_ENTRIES_MAX)
                                break;
                        char **nv = reallocarray(s.v, nc, sizeof *nv);
                        if (!nv)
                                goto oom;
                        s.v = nv;
                        cap = nc;
                }
                s.v[s.n] = strdup(de->d_name);
                if (!s.v[s.n])
                        goto oom;
                s.n++;
        }
        closedir(d);
        qsort(s.v, s.n, sizeof *s.v, strp_cmp);
        *ret = s;
        return 0;
oom:
        closedir(d);
        names_free(&s);
        return -ENOMEM;
}

static bool names_has(const struct names *s, const char *name) {
        return bsearch(&name, s->v, s->n, sizeof *s->v, strp_cmp) != NULL;
}

static bool ends_with(const char *s, const char *suffix) {
        size_t n = strlen(s), m = strlen(suffix);
        return n >= m && streq(s + n - m, suffix);
}

/* Marks valid[i] for the candidates Nix has registered. */
static int check_valid(const char *store_dir, struct entry *c, size_t n, bool *valid) {
        struct buf out = BUF_INIT(64u << 20);
        char **argv = calloc(n + 4, sizeof *argv);
        int r;

        if (!argv)
                return -ENOMEM;
        argv[0] = (char *) "nix-store";
        argv[1] = (char *) "--check-validity";
        argv[2] = (char *) "--print-invalid";
        for (size_t i = 0; i < n; i++) {
                if (asprintf(&argv[3 + i], "%s/%s", store_dir, c[i].name) < 0) {
                        r = -ENOMEM;
                        goto out;
                }
        }
        r = run_capture(argv, &out, true);
        if (r != 0) {
                r = r < 0 ? r : -EIO;
                goto out;
        }
        for (size_t i = 0; i < n; i++) {
                /* invalid paths are printed one per line */
                const char *p = out.data ? (const char *) out.data : "";
                size_t pl = strlen(argv[3 + i]);
                bool invalid = false;
                for (const char *q = strstr(p, argv[3 + i]); q; q = strstr(q + 1, argv[3 + i]))
                        if ((q == p || q[-1] == '\n') && (q[pl] == '\n' || q[pl] == 0)) {
                                invalid = true;
                                break;
                        }
                valid[i] = !invalid;
        }
        r = 0;
out:
        for (size_t i = 0; i < n; i++)
                free(argv[3 + i]);
        free(argv);
        buf_free(&out);
        return r;
}

static void sleep_s(double s) {
        struct timespec ts = { .tv_sec = (time_t) s, .tv_nsec = (long) ((s - (double) (time_t) s) * 1e9) };
        nanosleep(&ts, NULL); /* a signal cuts it short, as it should */
}

static int parse_seconds(const char *s, double *ret) {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (errno || end == s || *end || !(v >= 0) || v > 86400 * 365)
                return -EINVAL;
        *ret = v;
        return 0;
}

int cmd_watch(int argc, char **argv) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "store-dir", required_argument, NULL, 'd' },
                { "interval", required_argument, NULL, 'i' },
                { "batch-delay", required_argument, NULL, 'b' },
                { "settle-timeout", required_argument, NULL, 's' },
                { "retries", required_argument, NULL, 'r' },
                { "include-drv", no_argument, NULL, 'D' },
                { "no-closure", no_argument, NULL, 'N' },
                { "jobs", required_argument, NULL, 'j' },
                { "json", no_argument, NULL, 'J' },
                {}
        };
        struct push_options o;
        const char *store_dir = STORE_DIR_DEFAULT, *spec;
        double interval = 1, batch_delay = 2, settle = 3600;
        unsigned retries = 3;
        bool include_drv = false, any_failed = false;
        struct names known = {};
        struct entry *cand = NULL;
        size_t n_cand = 0;
        char **ready = NULL;
        size_t n_ready = 0;
        time_t last_ready = 0;
        struct sigaction sa = { .sa_handler = on_signal };
        int c, r;

        push_options_default(&o);
        o.output = PUSH_OUTPUT_PLAIN;
        optind = 1;
        while ((c = getopt_long(argc, argv, "hj:", opts, NULL)) >= 0) {
                double v;
                switch (c) {
                case 'h': usage(stdout); return 0;
                case 'd': store_dir = optarg; break;
                case 'i':
                case 'b':
                case 's':
                        if (parse_seconds(optarg, &v) < 0) {
                                log_error("bad number of seconds '%s'", optarg);
                                return 2;
                        }
                        *(c == 'i' ? &interval : c == 'b' ? &batch_delay : &settle) = v;
                        break;
                case 'r':
                case 'j': {
                        char *end;
                        errno = 0;
                        unsigned long u = strtoul(optarg, &end, 10);
                        if (errno || end == optarg || *end || u < 1 || u > 64) {
                                log_error("bad number '%s' (1..64)", optarg);
                                return 2;
                        }
                        if (c == 'r')
                                retries = (unsigned) u;
                        else
                                o.jobs = (unsigned) u;
                        break;
                }
                case 'D': include_drv = true; break;
                case 'N': o.closure = false; break;
                case 'J': o.output = PUSH_OUTPUT_JSON; break;
                default: usage(stderr); return 2;
                }
        }
        if (optind != argc - 1) {
                usage(stderr);
                return 2;
        }
        if (interval < 0.05)
                interval = 0.05;
        spec = argv[optind];
        {
                /* fail early on a bad server or cache */
                struct remote rm = {};
                struct trove_error err = {};
                char *cache = NULL;
                r = remote_resolve(spec, &rm, &cache, &err);
                remote_done(&rm);
                free(cache);
                if (r < 0) {
                        log_error("%s", err.msg);
                        return 1;
                }
        }
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        r = scan_store(store_dir, &known);
        if (r < 0) {
                log_error("cannot list %s: %s", store_dir, strerror(-r));
                return 1;
        }
        fprintf(stderr, "trove: watching %s for new paths to push to %s (%zu entries there now)\n", store_dir, spec,
                known.n);

        for (bool last_round = false;;) {
                struct names now = {};
                time_t t = time(NULL);

                if (stop_requested)
                        last_round = true;
                r = scan_store(store_dir, &now);
                if (r < 0) {
                        log_error("cannot list %s: %s", store_dir, strerror(-r));
                        any_failed = true;
                        break;
                }
                for (size_t i = 0; i < now.n; i++) {
                        const char *nm = now.v[i];
                        if (names_has(&known, nm))
                                continue;
                        if (ends_with(nm, ".lock") || ends_with(nm, ".chroot") || ends_with(nm, ".check") ||
                            (!include_drv && ends_with(nm, ".drv")))
                                continue;
                        struct storepath sp;
                        if (storepath_parse_basename(nm, strlen(nm), &sp) < 0)
                                continue;
                        struct entry *nc = reallocarray(cand, n_cand + 1, sizeof *cand);
                        if (!nc)
                                break;
                        cand = nc;
                        cand[n_cand].name = strdup(nm);
                        if (!cand[n_cand].name)
                                break;
                        cand[n_cand++].seen = t;
                }
                names_free(&known);
                known = now;

                if (n_cand > 0) {
                        bool *valid = calloc(n_cand, sizeof *valid);
                        if (valid && check_valid(store_dir, cand, n_cand, valid) >= 0) {
                                size_t k = 0;
                                for (size_t i = 0; i < n_cand; i++) {
                                        if (valid[i]) {
                                                char **nr = reallocarray(ready, n_ready + 1, sizeof *ready);
                                                if (nr) {
                                                        ready = nr;
                                                        if (asprintf(&ready[n_ready], "%s/%s", store_dir,
                                                                     cand[i].name) >= 0) {
                                                                n_ready++;
                                                                last_ready = t;
                                                        }
                                                }
                                                free(cand[i].name);
                                        } else if (difftime(t, cand[i].seen) > settle) {
                                                free(cand[i].name); /* never became a valid path */
                                        } else
                                                cand[k++] = cand[i];
                                }
                                n_cand = k;
                        }
                        free(valid);
                }

                if (n_ready > 0 && (last_round || difftime(t, last_ready) >= batch_delay)) {
                        struct push_summary s = {};
                        for (unsigned attempt = 1;; attempt++) {
                                r = push_run(&o, spec, ready, n_ready, &s);
                                if (r == 0)
                                        break;
                                if (attempt >= retries) {
                                        log_error("giving up on a batch of %zu path(s) after %u attempts", n_ready,
                                                  attempt);
                                        any_failed = true;
                                        break;
                                }
                                log_warning("push failed (attempt %u of %u), retrying", attempt, retries);
                                sleep_s(MIN(30.0, 2.0 * attempt));
                        }
                        for (size_t i = 0; i < n_ready; i++)
                                free(ready[i]);
                        n_ready = 0;
                }
                if (last_round)
                        break;
                sleep_s(interval);
        }
        names_free(&known);
        for (size_t i = 0; i < n_cand; i++)
                free(cand[i].name);
        free(cand);
        for (size_t i = 0; i < n_ready; i++)
                free(ready[i]);
        free(ready);
        fprintf(stderr, "trove: watch-store stopped%s\n", any_failed ? "; some paths could not be pushed" : "");
        return any_failed ? 1 : 0;
}
