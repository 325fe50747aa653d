/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cmd-login.c - `trove login` (servers and tokens in the client config) and
 * `trove use` (nix.conf substituter, trusted key and netrc for a cache).
 */
#include <getopt.h>
#include <stdio.h>
#include <sys/stat.h>

#include "client.h"
#include "trove.h"

#define TOKEN_INPUT_MAX 16384
#define NIX_CONF_MAX (4u << 20)

static void login_usage(FILE *f) {
        fprintf(f,
                "usage: trove login [OPTIONS] NAME URL [TOKEN|-]\n"
                "       trove login [OPTIONS] NAME URL --token-file FILE\n"
                "       trove login [OPTIONS] --oidc-token-file FILE [NAME [URL]]\n"
                "\n"
                "Saves server NAME (base URL of a troved, e.g. https://cache.example.org) with an\n"
                "access token in $XDG_CONFIG_HOME/trove/config.json (~/.config/trove/config.json),\n"
                "after checking with the server that it accepts the token. TOKEN '-' reads it from\n"
                "standard input; without a token the server is used anonymously. The first server\n"
                "saved becomes the default one, used where a command takes [SERVER:]CACHE.\n"
                "\n"
                "  --token-file FILE  store a reference to FILE instead of the token itself\n"
                "  --oidc-token-file FILE  exchange the CI job's OpenID Connect ID token in FILE\n"
                "                     ('-': standard input) for a trove token (POST /_api/v1/token-exchange)\n"
                "                     and save that; without URL, NAME (or the default server) must be\n"
                "                     saved already\n"
                "  --default          make NAME the default server\n"
                "  --no-check         save without asking the server\n"
                "  -h, --help         this text\n"
                "\n"
                "Exit status: 0 saved, 1 the server refused the token or could not be reached\n"
                "(nothing saved), 2 usage.\n");
}

/* 0: the server accepts the token (or there is none and it answers);
 * -EACCES with a message when it refuses it. */
static int check_token(const char *url, const char *token, struct trove_error *err) {
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        struct http_client_options ho = { .connect_timeout_ms = 10000, .total_timeout_ms = 30000 };
        struct remote rm = { .url = (char *) url, .token = (char *) token };
        long status;
        int r;

        r = http_client_new(&ho, &hc);
        if (r < 0)
                return trove_error_set(err, r, "cannot make an HTTP client");
        r = api_call(hc, &rm, "GET", "/health", NULL, NULL, 0, 2, &status, NULL, err);
        if (r < 0)
                return r;
        if (status != 200)
                return trove_error_set(err, EIO, "%s/health answered HTTP %ld: is this a troved?", url, status);
        if (!token)
                return 0;
        /* An authenticated call on a cache name nobody uses: a token the
         * server does not accept gets 401; a valid one 404 or 403. */
        memset(err, 0, sizeof *err);
        r = api_call(hc, &rm, "GET", "/_api/v1/caches/trove-login-check", NULL, NULL, 0, 2, &status, NULL, err);
        if (r < 0)
                return r;
        if (status == 401 || status >= 500) {
                char msg[TROVE_ERRMSG_MAX];
                memcpy(msg, err->msg, sizeof msg); /* not formatted into itself */
                if (status == 401)
                        return trove_error_set(err, EACCES, "the server refused the token (%s)", msg);
                return trove_error_set(err, EIO, "the server could not check the token (%s)", msg);
        }
        return 0;
}

/* Trades a CI job's ID token for a trove token at url. */
static int exchange_id_token(const char *url, const char *id_token, char **ret, struct trove_error *err) {
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        struct http_client_options ho = { .connect_timeout_ms = 10000, .total_timeout_ms = 30000 };
        struct remote rm = { .url = (char *) url };
        _cleanup_free_ char *body = NULL;
        json_t *req, *resp = NULL;
        const char *tok;
        long status;
        int r;

        req = json_pack("{s:s}", "token", id_token);
        body = req ? json_dumps(req, JSON_COMPACT) : NULL;
        json_decref(req);
        if (!body)
                return trove_error_set(err, ENOMEM, "out of memory");
        r = http_client_new(&ho, &hc);
        if (r < 0)
                return trove_error_set(err, r, "cannot make an HTTP client");
        r = api_call(hc, &rm, "POST", "/_api/v1/token-exchange", NULL, body, strlen(body), 2, &status, &resp, err);
        explicit_bzero(body, strlen(body));
        if (r < 0)
                return r;
        if (status != 200) {
                char msg[TROVE_ERRMSG_MAX];
                memcpy(msg, err->msg, sizeof msg);
                json_decref(resp);
                return trove_error_set(err, EACCES, "the server refused the ID token (HTTP %ld: %s)", status, msg);
        }
        tok = json_string_value(json_object_get(resp, "token"));
        if (!tok || !tok[0] || strpbrk(tok, " \t\r\n")) {
                json_decref(resp);
                return trove_error_set(err, EPROTO, "the server's answer holds no token");
        }
        *ret = strdup(tok);
        json_decref(resp);
        return *ret ? 0 : trove_error_set(err, ENOMEM, "out of memory");
}

int cmd_login(int argc, char **argv) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "token-file", required_argument, NULL, 'f' },
                { "oidc-token-file", required_argument, NULL, 'o' },
                { "default", no_argument, NULL, 'd' },
                { "no-check", no_argument, NULL, 'n' },
                {}
        };
        _cleanup_free_ char *token = NULL, *token_file = NULL, *oidc_url = NULL;
        const char *oidc_file = NULL;
        struct trove_error err = {};
        json_t *cfg = NULL, *servers, *srv;
        bool make_default = false, check = true;
        char oidc_name[CLIENT_NAME_MAX + 1];
        const char *name, *url;
        int c, r, ret = 1;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'h': login_usage(stdout); return 0;
                case 'f':
                        free(token_file);
                        token_file = realpath(optarg, NULL);
                        if (!token_file) {
                                log_error("token file %s: %s", optarg, strerror(errno));
                                return 1;
                        }
                        break;
                case 'o': oidc_file = optarg; break;
                case 'd': make_default = true; break;
                case 'n': check = false; break;
                default: login_usage(stderr); return 2;
                }
        }
        if (oidc_file) {
                struct remote known = {};
                if (token_file || argc - optind > 2) {
                        login_usage(stderr);
                        return 2;
                }
                if (argc - optind < 2) {
                        /* A server saved before (e.g. by the runner's set-up). */
                        r = remote_lookup(argc - optind == 1 ? argv[optind] : NULL, &known, &err);
                        if (r < 0) {
                                log_error("%s", err.msg);
                                return 1;
                        }
                        oidc_url = strdup(known.url);
                        snprintf(oidc_name, sizeof oidc_name, "%s", known.name);
                        remote_done(&known);
                        if (!oidc_url)
                                return 1;
                        name = oidc_name;
                        url = oidc_url;
                } else {
                        name = argv[optind];
                        url = argv[optind + 1];
                }
        } else {
                if (argc - optind < 2 || argc - optind > 3 || (token_file && argc - optind == 3)) {
                        login_usage(stderr);
                        return 2;
                }
                name = argv[optind];
                url = argv[optind + 1];
        }
        if (!cache_name_is_valid(name) || strlen(name) > CLIENT_NAME_MAX || strchr(name, ':')) {
                log_error("bad server name '%s' (1..64 of A-Z a-z 0-9 . _ -)", name);
                return 2;
        }
        if (!startswith(url, "http://") && !startswith(url, "https://")) {
                log_error("URL must start with http:// or https://: %s", url);
                return 2;
        }
        if (oidc_file) {
                _cleanup_free_ char *id_token = NULL, *u = strdup(url);
                size_t ul;
                if (!u)
                        return 1;
                for (ul = strlen(u); ul > 0 && u[ul - 1] == '/';)
                        u[--ul] = 0;
                r = read_small_file(oidc_file, TOKEN_INPUT_MAX, &id_token);
                if (r < 0)
                        return log_error_errno(r, "reading %s: %s", oidc_file, strerror(-r)), 1;
                if (!id_token[0] || strpbrk(id_token, " \t\r\n")) {
                        log_error("the ID token in %s is empty or contains whitespace", oidc_file);
                        return 1;
                }
                r = exchange_id_token(u, id_token, &token, &err);
                explicit_bzero(id_token, strlen(id_token));
                if (r < 0) {
                        log_error("login to %s failed: %s", u, err.msg[0] ? err.msg : strerror(-r));
                        return 1;
                }
                memset(&err, 0, sizeof err);
        } else if (argc - optind == 3) {
                if (streq(argv[optind + 2], "-")) {
                        r = read_small_file("-", TOKEN_INPUT_MAX, &token);
                        if (r < 0)
                                return log_error_errno(r, "reading the token from stdin: %s", strerror(-r)), 1;
                } else {
                        token = strdup(argv[optind + 2]);
                        if (!token)
                                return log_error_errno(ENOMEM, "out of memory"), 1;
                }
        } else if (token_file) {
                r = read_small_file(token_file, TOKEN_INPUT_MAX, &token);
                if (r < 0)
                        return log_error_errno(r, "reading %s: %s", token_file, strerror(-r)), 1;
        }
        if (token && (!token[0] || strpbrk(token, " \t\r\n"))) {
                log_error("the token is empty or contains whitespace");
                return 1;
        }
        {
                /* normalise: no trailing slash */
                _cleanup_free_ char *u = strdup(url);
                if (!u)
                        return 1;
                size_t ul = strlen(u);
                while (ul > 0 && u[ul - 1] == '/')
                        u[--ul] = 0;
                if (check) {
                        r = check_token(u, token, &err);
                        if (r < 0) {
                                log_error("login to %s failed: %s", u, err.msg[0] ? err.msg : strerror(-r));
                                return 1;
                        }
                }
                r = client_config_load(&cfg, &err);
                if (r < 0) {
                        log_error("%s", err.msg);
                        return 1;
                }
                servers = json_object_get(cfg, "servers");
                if (!json_is_object(servers)) {
                        servers = json_object();
                        json_object_set_new(cfg, "servers", servers);
                }
                srv = json_object();
                json_object_set_new(srv, "url", json_string(u));
                if (token_file)
                        json_object_set_new(srv, "tokenFile", json_string(token_file));
                else if (token)
                        json_object_set_new(srv, "token", json_string(token));
                json_object_set_new(servers, name, srv);
        }
        if (make_default || !json_is_string(json_object_get(cfg, "default")) ||
            !json_object_get(servers, json_string_value(json_object_get(cfg, "default"))))
                json_object_set_new(cfg, "default", json_string(name));
        r = client_config_save(cfg, &err);
        if (r < 0) {
                log_error("%s", err.msg);
                goto out;
        }
        printf("logged in to %s as '%s'%s%s\n", url, name,
               streq(json_string_value(json_object_get(cfg, "default")), name) ? " (default server)" : "",
               token ? "" : " without a token");
        ret = 0;
out:
        if (token)
                explicit_bzero(token, strlen(token));
        json_decref(cfg);
        return ret;
}

/* ---- trove use ---- */

static void use_usage(FILE *f) {
        fprintf(f,
                "usage: trove use [OPTIONS] [SERVER:]CACHE\n"
                "\n"
                "Configures Nix to substitute from a trove cache: fetches the cache's public key\n"
                "and adds 'extra-substituters = URL/CACHE' and 'extra-trusted-public-keys = KEY'\n"
                "to the user's nix.conf ($XDG_CONFIG_HOME/nix/nix.conf), and, when the server has\n"
                "a token, 'machine HOST password TOKEN' to a netrc file that nix.conf names with\n"
                "netrc-file (a netrc-file already configured there is used as is; otherwise\n"
                "$XDG_CONFIG_HOME/trove/netrc). Running it again changes nothing.\n"
                "\n"
                "  --nix-conf FILE  edit FILE instead of the user's nix.conf\n"
                "  --system         edit /etc/nix/nix.conf (netrc /etc/nix/netrc), for daemons\n"
                "  --netrc FILE     write the token to FILE (also set as netrc-file)\n"
                "  -h, --help       this text\n");
}

/* Value of the last "key = value" line for key in conf, or NULL. */
static char *conf_get(const char *conf, const char *key) {
        const char *p = conf;
        char *found = NULL;
        size_t kl = strlen(key);

        while (p && *p) {
                const char *eol = strchr(p, '\n');
                size_t ll = eol ? (size_t) (eol - p) : strlen(p);
                const char *q = p;
                while (q < p + ll && (*q == ' ' || *q == '\t'))
                        q++;
                if ((size_t) (p + ll - q) > kl && strncmp(q, key, kl) == 0) {
                        const char *v = q + kl;
                        while (v < p + ll && (*v == ' ' || *v == '\t'))
                                v++;
                        if (v < p + ll && *v == '=') {
                                v++;
                                while (v < p + ll && (*v == ' ' || *v == '\t'))
                                        v++;
                                const char *e = p + ll;
                                while (e > v && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
                                        e--;
                                free(found);
                                found = strndup(v, (size_t) (e - v));
                        }
                }
                p = eol ? eol + 1 : NULL;
        }
        return found;
}

/* true if word appears as a whitespace-separated value of any line whose key
 * is one of keys. */
static bool conf_has_word(const char *conf, const char *const *keys, const char *word) {
        for (size_t k = 0; keys[k]; k++) {
                const char *p = conf;
                size_t kl = strlen(keys[k]), wl = strlen(word);
                while (p && *p) {
                        const char *eol = strchr(p, '\n');
                        size_t ll = eol ? (size_t) (eol - p) : strlen(p);
                        const char *q = p;
                        while (q < p + ll && (*q == ' ' || *q == '\t'))
                                q++;
                        if (strncmp(q, keys[k], kl) == 0 && (q[kl] == ' ' || q[kl] == '\t' || q[kl] == '=')) {
                                const char *v = memchr(q, '=', (size_t) (p + ll - q));
                                while (v && v < p + ll) {
                                        v++;
                                        while (v < p + ll && (*v == ' ' || *v == '\t'))
                                                v++;
                                        const char *e = v;
                                        while (e < p + ll && *e != ' ' && *e != '\t' && *e != '\r')
                                                e++;
                                        if ((size_t) (e - v) == wl && memcmp(v, word, wl) == 0)
                                                return true;
                                        v = e < p + ll ? e : NULL;
                                }
                        }
                        p = eol ? eol + 1 : NULL;
                }
        }
        return false;
}

static int read_or_empty(const char *path, size_t max, char **ret) {
        int r = read_small_file(path, max, ret);
        if (r == -ENOENT) {
                *ret = strdup("");
                return *ret ? 0 : -ENOMEM;
        }
        return r;
}

static int parent_mkdir(const char *path) {
        _cleanup_free_ char *d = strdup(path);
        if (!d)
                return -ENOMEM;
        char *s = strrchr(d, '/');
        if (!s || s == d)
                return 0;
        *s = 0;
        return mkdir_parents(d, 0755);
}

/* Host name of an http(s) URL, as curl matches netrc machines. */
static int url_host(const char *url, char *out, size_t size) {
        const char *h = strstr(url, "://");
        if (!h)
                return -EINVAL;
        h += 3;
        const char *at = strpbrk(h, "@/");
        if (at && *at == '@')
                h = at + 1;
        size_t n;
        if (*h == '[') {
                const char *e = strchr(h, ']');
                if (!e)
                        return -EINVAL;
                n = (size_t) (e - h + 1);
        } else
                n = strcspn(h, ":/");
        if (n == 0 || n >= size)
                return -EINVAL;
        memcpy(out, h, n);
        out[n] = 0;
        return 0;
}

/* Sets "machine HOST ..." in the netrc at path to the token; returns 1 if
 * the file changed. */
static int netrc_set(const char *path, const char *host, const char *token) {
        _cleanup_free_ char *old = NULL, *line = NULL;
        struct buf out = BUF_INIT(NIX_CONF_MAX);
        const char *p;
        bool same = false;
        int r;

        r = read_or_empty(path, NIX_CONF_MAX, &old);
        if (r < 0)
                return r;
        if (asprintf(&line, "machine %s login trove password %s", host, token) < 0)
                return -ENOMEM;
        for (p = old; p && *p;) {
                const char *eol = strchr(p, '\n');
                size_t ll = eol ? (size_t) (eol - p) : strlen(p);
                char mhead[300];
                snprintf(mhead, sizeof mhead, "machine %s ", host);
                if (ll >= strlen(mhead) && strncmp(p, mhead, strlen(mhead)) == 0) {
                        if (ll == strlen(line) && strncmp(p, line, ll) == 0)
                                same = true;
                } else if (ll > 0) {
                        r = buf_append(&out, p, ll);
                        if (r >= 0)
                                r = buf_append_str(&out, "\n");
                        if (r < 0)
                                goto fail;
                }
                p = eol ? eol + 1 : NULL;
        }
        if (same) {
                buf_free(&out);
                return 0;
        }
        r = buf_printf(&out, "%s\n", line);
        if (r < 0)
                goto fail;
        r = parent_mkdir(path);
        if (r >= 0)
                r = write_file_atomic(path, (const char *) out.data, out.len, 0600);
        buf_free(&out);
        return r < 0 ? r : 1;
fail:
        buf_free(&out);
        return r;
}

int cmd_use(int argc, char **argv) {
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "nix-conf", required_argument, NULL, 'c' },
                { "system", no_argument, NULL, 's' },
                { "netrc", required_argument, NULL, 'n' },
                {}
        };
        _cleanup_(http_client_freep) struct http_client *hc = NULL;
        _cleanup_free_ char *cache = NULL, *conf_path = NULL, *conf = NULL, *netrc = NULL, *subst = NULL;
        struct http_client_options ho = {};
        struct trove_error err = {};
        struct remote rm = {};
        struct buf add = BUF_INIT(1u << 20);
        const char *nc_opt = NULL, *netrc_opt = NULL, *key;
        json_t *info = NULL;
        bool system_conf = false;
        long status;
        int c, r, ret = 1;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'h': use_usage(stdout); return 0;
                case 'c': nc_opt = optarg; break;
                case 's': system_conf = true; break;
                case 'n': netrc_opt = optarg; break;
                default: use_usage(stderr); return 2;
                }
        }
        if (argc - optind != 1 || (nc_opt && system_conf)) {
                use_usage(stderr);
                return 2;
        }
        r = remote_resolve(argv[optind], &rm, &cache, &err);
        if (r < 0) {
                log_error("%s", err.msg);
                return 1;
        }
        r = http_global_init();
        if (r >= 0)
                r = http_client_new(&ho, &hc);
        if (r < 0) {
                log_error_errno(r, "cannot make an HTTP client");
                goto out;
        }
        {
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "/_api/v1/caches/%s", cache) < 0)
                        goto out;
                r = api_call(hc, &rm, "GET", path, NULL, NULL, 0, 3, &status, &info, &err);
                if (r >= 0)
                        r = api_check(status, &err);
                if (r < 0) {
                        log_error("cannot get cache '%s' from %s: %s", cache, rm.url, err.msg);
                        goto out;
                }
        }
        key = json_string_value(json_object_get(info, "publicKey"));
        if (!key || !key[0] || strpbrk(key, " \t\n")) {
                log_error("the server gave no usable public key for cache '%s'", cache);
                goto out;
        }
        if (asprintf(&subst, "%s/%s", rm.url, cache) < 0)
                goto out;

        if (nc_opt)
                conf_path = strdup(nc_opt);
        else if (system_conf)
                conf_path = strdup("/etc/nix/nix.conf");
        else {
                const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
                if (x && x[0] == '/')
                        r = asprintf(&conf_path, "%s/nix/nix.conf", x);
                else if (home && home[0] == '/')
                        r = asprintf(&conf_path, "%s/.config/nix/nix.conf", home);
                else {
                        log_error("neither XDG_CONFIG_HOME nor HOME is set; use --nix-conf");
                        goto out;
                }
                if (r < 0)
                        conf_path = NULL;
        }
        if (!conf_path)
                goto out;
        r = read_or_empty(conf_path, NIX_CONF_MAX, &conf);
        if (r < 0) {
                log_error("cannot read %s: %s", conf_path, strerror(-r));
                goto out;
        }
        static const char *const subst_keys[] = { "substituters", "extra-substituters", NULL };
        static const char *const key_keys[] = { "trusted-public-keys", "extra-trusted-public-keys", NULL };
        if (!conf_has_word(conf, subst_keys, subst))
                buf_printf(&add, "extra-substituters = %s\n", subst);
        if (!conf_has_word(conf, key_keys, key))
                buf_printf(&add, "extra-trusted-public-keys = %s\n", key);
        if (rm.token) {
                char host[256];
                if (url_host(rm.url, host, sizeof host) < 0) {
                        log_error("cannot find the host name in %s", rm.url);
                        goto out;
                }
                netrc = conf_get(conf, "netrc-file");
                if (netrc_opt) {
                        if (!netrc || !streq(netrc, netrc_opt))
                                buf_printf(&add, "netrc-file = %s\n", netrc_opt);
                        free(netrc);
                        netrc = strdup(netrc_opt);
                } else if (!netrc) {
                        if (system_conf)
                                netrc = strdup("/etc/nix/netrc");
                        else {
                                _cleanup_free_ char *dir = NULL;
                                if (client_config_dir(&dir) >= 0 && asprintf(&netrc, "%s/netrc", dir) < 0)
                                        netrc = NULL;
                        }
                        if (netrc)
                                buf_printf(&add, "netrc-file = %s\n", netrc);
                }
                if (!netrc)
                        goto out;
                r = netrc_set(netrc, host, rm.token);
                if (r < 0) {
                        log_error("cannot write %s: %s", netrc, strerror(-r));
                        goto out;
                }
                if (r > 0)
                        printf("wrote the token for %s to %s\n", host, netrc);
        }
        if (add.len > 0) {
                struct buf all = BUF_INIT(NIX_CONF_MAX + (1u << 20));
                r = buf_append_str(&all, conf);
                if (r >= 0 && all.len > 0 && all.data[all.len - 1] != '\n')
                        r = buf_append_str(&all, "\n");
                if (r >= 0)
                        r = buf_append(&all, add.data, add.len);
                if (r >= 0)
                        r = parent_mkdir(conf_path);
                if (r >= 0)
                        r = write_file_atomic(conf_path, (const char *) all.data, all.len, 0644);
                buf_free(&all);
                if (r < 0) {
                        log_error("cannot write %s: %s", conf_path, strerror(-r));
                        goto out;
                }
                printf("added to %s:\n%s", conf_path, (const char *) add.data);
        } else
                printf("%s already uses %s\n", conf_path, subst);
        ret = 0;
out:
        buf_free(&add);
        json_decref(info);
        remote_done(&rm);
        return ret;
}
