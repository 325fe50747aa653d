/* SPDX-License-Identifier: Apache-2.0 */
/*
 * trovefs - mounts a trove cache as a read-only, lazily fetched store
 * directory:
 *
 *   trovefs --server https://cache.example.org --cache main \
 *           --trusted-key main-1:<base64 public key> MOUNTPOINT
 *
 * Option parsing and session setup; the filesystem is in ops.c.
 */
#define FUSE_USE_VERSION 35
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <arpa/inet.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>

#include "trove/util.h"
#include "trove/buf.h"
#include "trove/storepath.h"
#include "trovefs.h"

#define CACHE_SIZE_DEFAULT ((uint64_t) 10 << 30)
#define TOKEN_MAX 8192
/* Several keys allow rotation; more than this is a mistake. */
#define TRUSTED_KEYS_MAX 64
#define KEY_FILE_MAX (TRUSTED_KEYS_MAX * SIGNING_PUBLIC_TEXT_MAX)

struct options {
        const char *servers[FETCHER_SERVERS_MAX]; /* failover order */
        size_t n_servers;
        const char *cache;
        const char *token_file;
        const char *cache_dir;
        uint64_t cache_size;
        const char *store_dir;
        const char *mountpoint;
        unsigned workers;
        long timeout_ms;
        double negative_timeout;
        unsigned readahead;
        bool prefetch;
        bool record;
        unsigned record_window_s;
        uint64_t prefetch_budget;
        uint64_t memory_cache;
        struct signing_public trusted_keys[TRUSTED_KEYS_MAX];
        size_t n_trusted_keys;
        bool foreground;
        bool debug;
        struct buf fuse_opts; /* comma-separated -o options */
};

static void help(void) {
        printf("Usage: trovefs [OPTIONS] MOUNTPOINT\n"
               "\n"
               "Mounts a trove cache read-only: store paths are looked up by name on\n"
               "first use and file contents are fetched chunk by chunk when read.\n"
               "\n"
               "  --server URL        troved's base URL, e.g. http://cache:8080 (required);\n"
               "                      repeat it for failover between servers of one cache\n"
               "  --cache NAME        the cache to mount (required)\n"
               "  --token-file FILE   file holding an access token (default: $TROVE_TOKEN;\n"
               "                      none: anonymous pull of a public cache)\n"
               "  --cache-dir DIR     local chunk cache (default: /var/cache/trovefs as\n"
               "                      root, else $XDG_CACHE_HOME/trovefs or ~/.cache/trovefs)\n"
               "  --cache-size SIZE   bound of the local chunk cache, e.g. 500M, 10G\n"
               "                      (default 10G; 0: unbounded)\n"
               "  --trusted-key KEY   public key (name:base64, `trove cache info`) that must\n"
               "                      have signed every manifest; repeatable. Without one,\n"
               "                      manifests are not verified (a warning says so)\n"
               "  --trusted-key-file FILE\n"
               "                      file of such keys, separated by whitespace\n"
               "  --store-dir DIR     store directory manifests must name (default %s)\n"
               "  --workers N         parallel chunk downloads (default 16)\n"
               "  --timeout SECONDS   give up on the server after this long (default 30);\n"
               "                      reads then fail with EIO\n"
               "  --negative-timeout SECONDS\n"
               "                      how long an unknown store path stays unknown (default 2)\n"
               "  --readahead N       chunks fetched ahead of sequential reads (default 4)\n"
               "  --prefetch on|off   fetch the chunks other mounts read first of a store\n"
               "                      path when it is looked up (learned profile; default on)\n"
               "  --record on|off     report to the server which chunks of a store path are\n"
               "                      read soon after its first lookup (default on)\n"
               "  --record-window SECONDS\n"
               "                      how long after a path's first lookup reads are\n"
               "                      recorded (default 30)\n"
               "  --prefetch-budget SIZE\n"
               "                      bytes prefetched per store path at most (default 256M)\n"
               "  --memory-cache SIZE decoded chunks kept in memory (default 4M)\n"
               "  -f                  stay in the foreground\n"
               "  -d                  debug: FUSE requests and trove's debug log (implies -f)\n"
               "  -o OPT[,OPT...]     FUSE mount options (allow_other, ...)\n"
               "  -h, --help          this help\n"
               "  --version           print the version\n"
               "\n"
               "Counters: getfattr -n user.trove.stats MOUNTPOINT (JSON); logged at unmount.\n",
               STORE_DIR_DEFAULT);
}

static int parse_uint(const char *s, unsigned long max, unsigned long *ret) {
        char *end;
        unsigned long v;

        if (!*s || *s == '-')
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno || *end || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int read_token(const char *path, char **ret) {
        char buf[TOKEN_MAX + 1];
        size_t n;
        int r = read_text_file(path, buf, sizeof buf, &n);

        if (r == -EFBIG)
                return -E2BIG;
        if (r < 0)
                return r;
        if (n == 0 || memchr(buf, '\n', n))
                return -EINVAL;
        *ret = strndup(buf, n);
        explicit_bzero(buf, sizeof buf);
        return *ret ? 0 : -ENOMEM;
}

static int add_trusted_key(struct options *o, const char *text, size_t len) {
        char k[SIGNING_PUBLIC_TEXT_MAX];
        int r;

        if (len >= sizeof k)
                return log_error_errno(EINVAL, "not a public key (name:base64): %.*s",
                                       (int) MIN(len, (size_t) 64), text);
        if (o->n_trusted_keys >= TRUSTED_KEYS_MAX)
                return log_error_errno(E2BIG, "more than %d trusted keys", TRUSTED_KEYS_MAX);
        memcpy(k, text, len);
        k[len] = 0;
        r = signing_public_parse(k, &o->trusted_keys[o->n_trusted_keys]);
        if (r < 0)
                return log_error_errno(r, "not a public key (name:base64): %s", k);
        o->n_trusted_keys++;
        return 0;
}

/* Keys separated by whitespace, as in nix.conf's trusted-public-keys. */
static int add_trusted_key_file(struct options *o, const char *path) {
        char buf[KEY_FILE_MAX];
        size_t n, i = 0;
        int r = read_text_file(path, buf, sizeof buf, &n);

        if (r < 0)
                return log_error_errno(r, "--trusted-key-file: cannot read %s: %s", path,
                                       strerror(-r));
        while (i < n) {
                size_t k;
                while (i < n && strchr(" \t\r\n", buf[i]))
                        i++;
                for (k = i; k < n && !strchr(" \t\r\n", buf[k]); k++)
                        ;
                if (k > i) {
                        r = add_trusted_key(o, buf + i, k - i);
                        if (r < 0)
                                return r;
                }
                i = k;
        }
        return 0;
}

/* Whether the host of url (http[s]://[user@]host[:port][/...]) is this
 * machine: 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) or "localhost". */
static bool url_is_loopback(const char *url) {
        const char *h = strstr(url, "://"), *end, *at;
        char host[256];
        struct in_addr a4;
        struct in6_addr a6;
        size_t n;

        if (!h)
                return false;
        h += 3;
        end = h + strcspn(h, "/?#");
        at = memchr(h, '@', (size_t) (end - h));
        while (at) { /* the last '@' ends the user info */
                h = at + 1;
                at = memchr(h, '@', (size_t) (end - h));
        }
        if (*h == '[') {
                const char *close = memchr(h, ']', (size_t) (end - h));
                if (!close)
                        return false;
                n = (size_t) (close - h - 1);
                h++;
        } else
                n = strcspn(h, ":/?#");
        if (n == 0 || n >= sizeof host || h + n > end)
                return false;
        memcpy(host, h, n);
        host[n] = 0;
        if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0)
                return true;
        if (inet_pton(AF_INET, host, &a4) == 1)
                return (ntohl(a4.s_addr) >> 24) == 127;
        if (inet_pton(AF_INET6, host, &a6) == 1)
                return IN6_IS_ADDR_LOOPBACK(&a6) ||
                       (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
        return false;
}

static char *default_cache_dir(void) {
        const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        char *s = NULL;

        if (geteuid() == 0)
                return strdup("/var/cache/trovefs");
        if (x && x[0] == '/') {
                if (asprintf(&s, "%s/trovefs", x) < 0)
                        return NULL;
        } else if (home && home[0] == '/') {
                if (asprintf(&s, "%s/.cache/trovefs", home) < 0)
                        return NULL;
        }
        return s;
}

enum {
        OPT_SERVER = 1000,
        OPT_CACHE,
        OPT_TOKEN_FILE,
        OPT_CACHE_DIR,
        OPT_CACHE_SIZE,
        OPT_STORE_DIR,
        OPT_TRUSTED_KEY,
        OPT_TRUSTED_KEY_FILE,
        OPT_WORKERS,
        OPT_TIMEOUT,
        OPT_NEGATIVE_TIMEOUT,
        OPT_READAHEAD,
        OPT_PREFETCH,
        OPT_RECORD,
        OPT_RECORD_WINDOW,
        OPT_PREFETCH_BUDGET,
        OPT_MEMORY_CACHE,
        OPT_VERSION,
};

static int parse_args(int argc, char **argv, struct options *o) {
        static const struct option longopts[] = {
                { "server", required_argument, NULL, OPT_SERVER },
                { "cache", required_argument, NULL, OPT_CACHE },
                { "token-file", required_argument, NULL, OPT_TOKEN_FILE },
                { "cache-dir", required_argument, NULL, OPT_CACHE_DIR },
                { "cache-size", required_argument, NULL, OPT_CACHE_SIZE },
                { "store-dir", required_argument, NULL, OPT_STORE_DIR },
                { "trusted-key", required_argument, NULL, OPT_TRUSTED_KEY },
                { "trusted-key-file", required_argument, NULL, OPT_TRUSTED_KEY_FILE },
                { "workers", required_argument, NULL, OPT_WORKERS },
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "negative-timeout", required_argument, NULL, OPT_NEGATIVE_TIMEOUT },
                { "readahead", required_argument, NULL, OPT_READAHEAD },
                { "prefetch", required_argument, NULL, OPT_PREFETCH },
                { "record", required_argument, NULL, OPT_RECORD },
                { "record-window", required_argument, NULL, OPT_RECORD_WINDOW },
                { "prefetch-budget", required_argument, NULL, OPT_PREFETCH_BUDGET },
                { "memory-cache", required_argument, NULL, OPT_MEMORY_CACHE },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, OPT_VERSION },
                {}
        };
        unsigned long v;
        int c;

        while ((c = getopt_long(argc, argv, "hfdo:", longopts, NULL)) >= 0) {
                switch (c) {
                case OPT_SERVER:
                        if (o->n_servers >= FETCHER_SERVERS_MAX) {
                                log_error("--server: at most %d servers", FETCHER_SERVERS_MAX);
                                return -EINVAL;
                        }
                        o->servers[o->n_servers++] = optarg;
                        break;
                case OPT_CACHE: o->cache = optarg; break;
                case OPT_TOKEN_FILE: o->token_file = optarg; break;
                case OPT_CACHE_DIR: o->cache_dir = optarg; break;
                case OPT_CACHE_SIZE:
                        if (parse_size(optarg, &o->cache_size) < 0) {
                                log_error("--cache-size: not a size: %s", optarg);
                                return -EINVAL;
                        }
                        break;
                case OPT_STORE_DIR: o->store_dir = optarg; break;
                case OPT_TRUSTED_KEY:
                        if (add_trusted_key(o, optarg, strlen(optarg)) < 0)
                                return -EINVAL;
                        break;
                case OPT_TRUSTED_KEY_FILE:
                        if (add_trusted_key_file(o, optarg) < 0)
                                return -EINVAL;
                        break;
                case OPT_WORKERS:
                        if (parse_uint(optarg, 64, &v) < 0 || v == 0) {
                                log_error("--workers: expected 1..64: %s", optarg);
                                return -EINVAL;
                        }
                        o->workers = (unsigned) v;
                        break;
                case OPT_TIMEOUT:
                        if (parse_uint(optarg, 86400, &v) < 0 || v == 0) {
                                log_error("--timeout: expected 1..86400 seconds: %s", optarg);
                                return -EINVAL;
                        }
                        o->timeout_ms = (long) v * 1000;
                        break;
                case OPT_NEGATIVE_TIMEOUT:
                        if (parse_uint(optarg, 86400, &v) < 0) {
                                log_error("--negative-timeout: expected 0..86400: %s", optarg);
                                return -EINVAL;
                        }
                        o->negative_timeout = (double) v;
                        break;
                case OPT_READAHEAD:
                        if (parse_uint(optarg, 64, &v) < 0) {
                                log_error("--readahead: expected 0..64: %s", optarg);
                                return -EINVAL;
                        }
                        o->readahead = (unsigned) v;
                        break;
                case OPT_PREFETCH:
                case OPT_RECORD:
                        if (!streq(optarg, "on") && !streq(optarg, "off")) {
                                log_error("--%s: expected on or off: %s",
                                          c == OPT_PREFETCH ? "prefetch" : "record", optarg);
                                return -EINVAL;
                        }
                        *(c == OPT_PREFETCH ? &o->prefetch : &o->record) = streq(optarg, "on");
                        break;
                case OPT_RECORD_WINDOW:
                        if (parse_uint(optarg, 3600, &v) < 0 || v == 0) {
                                log_error("--record-window: expected 1..3600 seconds: %s", optarg);
                                return -EINVAL;
                        }
                        o->record_window_s = (unsigned) v;
                        break;
                case OPT_PREFETCH_BUDGET:
                case OPT_MEMORY_CACHE:
                        if (parse_size(optarg, c == OPT_PREFETCH_BUDGET ? &o->prefetch_budget
                                                                        : &o->memory_cache) < 0 ||
                            (c == OPT_MEMORY_CACHE && o->memory_cache < ((uint64_t) 1 << 20))) {
                                log_error("--%s: not a size%s: %s",
                                          c == OPT_PREFETCH_BUDGET ? "prefetch-budget"
                                                                   : "memory-cache",
                                          c == OPT_MEMORY_CACHE ? " of at least 1M" : "", optarg);
                                return -EINVAL;
                        }
                        break;
                case 'f': o->foreground = true; break;
                case 'd': o->debug = o->foreground = true; break;
                case 'o':
                        if ((o->fuse_opts.len > 0 && buf_append_str(&o->fuse_opts, ",") < 0) ||
                            buf_append_str(&o->fuse_opts, optarg) < 0)
                                return -E2BIG;
                        break;
                case 'h': help(); return 0;
                case OPT_VERSION: printf("trovefs %s\n", TROVE_VERSION); return 0;
                default: return -EINVAL;
                }
        }
        if (optind != argc - 1) {
                log_error("expected exactly one MOUNTPOINT (see --help)");
                return -EINVAL;
        }
        o->mountpoint = argv[optind];
        if (o->n_servers == 0 || !o->cache) {
                log_error("--server and --cache are required (see --help)");
                return -EINVAL;
        }
        for (size_t i = 0; i < o->n_servers; i++)
                if (!startswith(o->servers[i], "http://") &&
                    !startswith(o->servers[i], "https://")) {
                        log_error("--server: expected an http:// or https:// URL: %s",
                                  o->servers[i]);
                        return -EINVAL;
                }
        if (o->cache[0] == '\0' || strpbrk(o->cache, "/?#% ")) {
                log_error("--cache: not a cache name: %s", o->cache);
                return -EINVAL;
        }
        if (o->store_dir[0] != '/' ||
            (strlen(o->store_dir) > 1 && o->store_dir[strlen(o->store_dir) - 1] == '/')) {
                log_error("--store-dir: expected an absolute path without trailing '/': %s",
                          o->store_dir);
                return -EINVAL;
        }
        return 1;
}

int main(int argc, char **argv) {
        struct options o = {
                .cache_size = CACHE_SIZE_DEFAULT,
                .store_dir = STORE_DIR_DEFAULT,
                .negative_timeout = 2,
                .readahead = 4,
                .prefetch = true,
                .record = true,
                .record_window_s = 30,
                .prefetch_budget = (uint64_t) 256 << 20,
                .memory_cache = (uint64_t) 4 << 20,
                .fuse_opts = BUF_INIT(65536),
        };
        struct trovefs fs = { 0 };
        struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
        struct fuse_session *se = NULL;
        _cleanup_free_ char *token = NULL;
        _cleanup_free_ char *cache_dir = NULL;
        _cleanup_free_ char *mount_opts = NULL;
        const char *env_token;
        int r, ret = 1;

        log_set_ident("trovefs");
        /* Chunks are buffers of 16-256 KiB, allocated by one thread and
         * freed by another. Served by mmap each, they cost an unmap with a
         * TLB shootdown per chunk (half of a first read's CPU time); from
         * two heap arenas they are reused. The threshold stays fixed above
         * them (glibc would otherwise move it), and --memory-cache bounds
         * what the heap holds of them. */
        mallopt(M_MMAP_THRESHOLD, 512 * 1024);
        mallopt(M_ARENA_MAX, 2);
        r = parse_args(argc, argv, &o);
        if (r <= 0) {
                buf_free(&o.fuse_opts);
                return r < 0 ? 2 : 0;
        }
        if (o.debug)
                log_set_max_level(TROVE_LOG_DEBUG);

        if (o.token_file) {
                r = read_token(o.token_file, &token);
                if (r < 0) {
                        log_error_errno(r, "cannot read a token from %s: %s", o.token_file,
                                        strerror(-r));
                        goto out;
                }
        } else if ((env_token = getenv("TROVE_TOKEN")) && env_token[0]) {
                token = strdup(env_token);
                if (!token)
                        goto out;
        }
        cache_dir = o.cache_dir ? strdup(o.cache_dir) : default_cache_dir();
        if (!cache_dir) {
                log_error("no --cache-dir given and no default (set HOME or XDG_CACHE_HOME)");
                goto out;
        }

        /* Said before mounting, on the terminal that started the mount. */
        if (o.n_trusted_keys == 0)
                log_warning("WARNING: no --trusted-key given: manifests are NOT verified. "
                            "Whoever can change the traffic between here and %s can put any "
                            "program into %s. Pass the cache's public key (trove cache info) "
                            "with --trusted-key.", o.servers[0], o.mountpoint);
        for (size_t i = 0; i < o.n_servers; i++)
                if (startswith(o.servers[i], "http://") && !url_is_loopback(o.servers[i]))
                        log_warning("WARNING: %s is plain http to another machine: anyone on "
                                    "the path can read the token and what is fetched%s. Use "
                                    "https://.", o.servers[i],
                                    o.n_trusted_keys == 0
                                            ? ", and change it unnoticed"
                                            : " (changes are refused: manifests are signed)");

        r = trovefs_init(&fs);
        if (r < 0)
                goto out;
        fs.store_dir = strdup(o.store_dir);
        fs.uid = getuid();
        fs.gid = getgid();
        fs.root_negative_timeout = o.negative_timeout;
        fs.readahead_chunks = o.readahead;
        fs.prefetch = o.prefetch;
        fs.record = o.record;
        fs.record_window_ms = (uint64_t) o.record_window_s * 1000;
        fs.prefetch_budget = o.prefetch_budget;
        if (!fs.store_dir)
                goto out_fs;
        r = chunkcache_open(cache_dir, o.cache_size, &fs.cache);
        if (r < 0) {
                log_error_errno(r, "cannot open the chunk cache %s: %s", cache_dir, strerror(-r));
                goto out_fs;
        }

        if (asprintf(&mount_opts, "ro,default_permissions,fsname=trove:%s,subtype=trovefs%s%s",
                     o.cache, o.fuse_opts.len ? "," : "",
                     o.fuse_opts.len ? (const char *) o.fuse_opts.data : "") < 0) {
                mount_opts = NULL;
                goto out_fs;
        }
        if (fuse_opt_add_arg(&args, argv[0]) < 0 || fuse_opt_add_arg(&args, "-o") < 0 ||
            fuse_opt_add_arg(&args, mount_opts) < 0 ||
            (o.debug && fuse_opt_add_arg(&args, "-d") < 0))
                goto out_fs;

        se = fuse_session_new(&args, &trovefs_ops, sizeof trovefs_ops, &fs);
        if (!se)
                goto out_fs;
        if (fuse_set_signal_handlers(se) < 0)
                goto out_session;
        if (fuse_session_mount(se, o.mountpoint) < 0)
                goto out_signals;
        if (fuse_daemonize(o.foreground) < 0)
                goto out_unmount;

        /* Threads only after daemonizing (fork keeps only the caller). */
        {
                struct fetcher_options fo = {
                        .server_urls = o.servers,
                        .n_servers = o.n_servers,
                        .cache = o.cache,
                        .token = token,
                        .n_workers = o.workers,
                        .timeout_ms = o.timeout_ms,
                        .mem_cache_bytes = o.memory_cache,
                        .trusted_keys = o.trusted_keys,
                        .n_trusted_keys = o.n_trusted_keys,
                };
                r = fetcher_new(&fo, fs.cache, &fs.fetcher);
                if (r < 0) {
                        log_error_errno(r, "cannot set up fetching from %s: %s", o.servers[0],
                                        strerror(-r));
                        goto out_unmount;
                }
                r = learn_start(&fs);
                if (r < 0) {
                        log_error_errno(r, "cannot start prefetching: %s", strerror(-r));
                        goto out_unmount;
                }
        }
        log_info("mounted cache %s of %s%s on %s (chunk cache %s; manifests %s)", o.cache,
                 o.servers[0], o.n_servers > 1 ? " (and failover servers)" : "", o.mountpoint,
                 cache_dir, o.n_trusted_keys > 0 ? "verified" : "NOT verified");

        {
                struct fuse_loop_config cfg = { .clone_fd = 0, .max_idle_threads = 16 };
                r = fuse_session_loop_mt(se, &cfg);
        }
        /* libfuse's loop returns the number of the signal that ended it:
         * SIGTERM (systemd's stop), SIGINT and SIGHUP are clean stops. */
        ret = (r == 0 || r == SIGTERM || r == SIGINT || r == SIGHUP) ? 0 : 1;

out_unmount:
        fuse_session_unmount(se);
        /* Reports what was recorded; before the counters are logged. */
        learn_stop(&fs);
out_signals:
        fuse_remove_signal_handlers(se);
out_session:
        fuse_session_destroy(se); /* runs op_destroy: logs the counters */
out_fs:
        fs.fetcher = fetcher_free(fs.fetcher);
        fs.cache = chunkcache_free(fs.cache);
        free(fs.store_dir);
        trovefs_done(&fs);
out:
        fuse_opt_free_args(&args);
        buf_free(&o.fuse_opts);
        return ret;
}
