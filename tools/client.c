/* SPDX-License-Identifier: Apache-2.0 */
/*
 * client.c - configuration, server resolution, API calls and small process
 * and file helpers for the trove subcommands that talk to troved.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "client.h"

#define CONFIG_FILE_MAX (1u << 20)
#define TOKEN_FILE_MAX 16384

void remote_done(struct remote *r) {
        if (!r)
                return;
        free(r->url);
        if (r->token) {
                explicit_bzero(r->token, strlen(r->token));
                free(r->token);
        }
        r->url = r->token = NULL;
}


int client_config_dir(char **ret) {
        const char *x = getenv("XDG_CONFIG_HOME");
        const char *home = getenv("HOME");
        char *s;
        int r;

        if (x && x[0] == '/')
                r = asprintf(&s, "%s/trove", x);
        else if (home && home[0] == '/')
                r = asprintf(&s, "%s/.config/trove", home);
        else
                return -ENOENT;
        if (r < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int read_small_file(const char *path, size_t max, char **ret) {
        _cleanup_free_ char *text = malloc(max + 1);
        int r;

        if (!text)
                return -ENOMEM;
        r = read_text_file(path, text, max + 1, NULL);
        if (r < 0)
                return r == -EFBIG ? -E2BIG : r;
        *ret = TAKE_PTR(text);
        return 0;
}

int write_file_atomic(const char *path, const char *text, size_t n, mode_t mode) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -1;
        const char *p = text;
        int r;

        if (asprintf(&tmp, "%s.tmp.%d", path, (int) getpid()) < 0)
                return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto fail;
                }
                p += k;
                n -= (size_t) k;
        }
        if (fchmod(fd, mode) < 0 || fsync(fd) < 0 || rename(tmp, path) < 0) {
                r = -errno;
                goto fail;
        }
        return 0;
fail:
        (void) unlink(tmp);
        return r;
}

int client_config_load(json_t **ret, struct trove_error *err) {
        _cleanup_free_ char *dir = NULL, *path = NULL, *text = NULL;
        json_error_t je;
        json_t *j;
        int r;

        r = client_config_dir(&dir);
        if (r < 0)
                return trove_error_set(err, r, "neither XDG_CONFIG_HOME nor HOME is set");
        if (asprintf(&path, "%s/config.json", dir) < 0)
                return -ENOMEM;
        r = read_small_file(path, CONFIG_FILE_MAX, &text);
        if (r == -ENOENT) {
                j = json_object();
                if (!j)
                        return -ENOMEM;
                *ret = j;
                return 0;
        }
        if (r < 0)
                return trove_error_set(err, r, "cannot read %s: %s", path, strerror(-r));
        j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
        if (!j || !json_is_object(j)) {
                json_decref(j);
                return trove_error_set(err, EINVAL, "%s: not a JSON object (%s, line %d)", path,
                                       j ? "wrong type" : je.text, je.line);
        }
        *ret = j;
        return 0;
}

int client_config_save(json_t *cfg, struct trove_error *err) {
        _cleanup_free_ char *dir = NULL, *path = NULL, *text = NULL;
        int r;

        r = client_config_dir(&dir);
        if (r < 0)
                return trove_error_set(err, r, "neither XDG_CONFIG_HOME nor HOME is set");
        r = mkdir_parents(dir, 0700);
        if (r < 0)
                return trove_error_set(err, r, "cannot create %s: %s", dir, strerror(-r));
        if (asprintf(&path, "%s/config.json", dir) < 0)
                return -ENOMEM;
        text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (!text)
                return -ENOMEM;
        size_t n = strlen(text);
        char *t2 = realloc(text, n + 2);
        if (!t2)
                return -ENOMEM;
        text = t2;
        text[n] = '\n';
        text[n + 1] = 0;
        r = write_file_atomic(path, text, n + 1, 0600);
        if (r < 0)
                return trove_error_set(err, r, "cannot write %s: %s", path, strerror(-r));
        return 0;
}

bool cache_name_is_valid(const char *s) {
        return cache_name_valid(s, strlen(s));
}

int remote_lookup(const char *name, struct remote *ret, struct trove_error *err) {
        json_t *cfg = NULL, *servers, *srv, *v;
        struct remote rm = {};
        const char *url, *env;
        int r;

        r = client_config_load(&cfg, err);
        if (r < 0)
                return r;
        if (!name) {
                name = json_string_value(json_object_get(cfg, "default"));
                if (!name) {
                        r = trove_error_set(err, ENOENT, "no server given and no default server: run "
                                                         "'trove login NAME URL TOKEN' first");
                        goto out;
                }
        }
        servers = json_object_get(cfg, "servers");
        srv = json_object_get(servers, name);
        if (!json_is_object(srv)) {
                r = trove_error_set(err, ENOENT, "no server '%s' in the configuration (see 'trove login')", name);
                goto out;
        }
        url = json_string_value(json_object_get(srv, "url"));
        if (!url || !(startswith(url, "http://") || startswith(url, "https://"))) {
                r = trove_error_set(err, EINVAL, "server '%s' has no http(s) url", name);
                goto out;
        }
        if (strlen(name) > CLIENT_NAME_MAX) {
                r = trove_error_set(err, EINVAL, "server name '%s' too long", name);
                goto out;
        }
        snprintf(rm.name, sizeof rm.name, "%s", name);
        rm.url = strdup(url);
        if (!rm.url) {
                r = -ENOMEM;
                goto out;
        }
        size_t ul = strlen(rm.url);
        while (ul > 0 && rm.url[ul - 1] == '/')
                rm.url[--ul] = 0;
        env = getenv("TROVE_TOKEN");
        if (env && env[0]) {
                rm.token = strdup(env);
                if (!rm.token) {
                        r = -ENOMEM;
                        goto out;
                }
        } else if ((v = json_object_get(srv, "token")) && json_is_string(v)) {
                rm.token = strdup(json_string_value(v));
                if (!rm.token) {
                        r = -ENOMEM;
                        goto out;
                }
        } else if ((v = json_object_get(srv, "tokenFile")) && json_is_string(v)) {
                r = read_small_file(json_string_value(v), TOKEN_FILE_MAX, &rm.token);
                if (r < 0) {
                        r = trove_error_set(err, r, "cannot read token file %s: %s", json_string_value(v),
                                            strerror(-r));
                        goto out;
                }
        }
        *ret = rm;
        rm = (struct remote){};
        r = 0;
out:
        remote_done(&rm);
        json_decref(cfg);
        return r;
}

int remote_resolve(const char *spec, struct remote *ret, char **ret_cache, struct trove_error *err) {
        _cleanup_free_ char *server = NULL;
        const char *colon = strchr(spec, ':');
        const char *cache = spec;
        char *c;
        int r;

        if (colon) {
                server = strndup(spec, (size_t) (colon - spec));
                if (!server)
                        return -ENOMEM;
                cache = colon + 1;
        }
        if (!cache_name_is_valid(cache))
                return trove_error_set(err, EINVAL, "bad cache name '%s' (1..64 of A-Z a-z 0-9 . _ -)", cache);
        c = strdup(cache);
        if (!c)
                return -ENOMEM;
        r = remote_lookup(server, ret, err);
        if (r < 0) {
                free(c);
                return r;
        }
        *ret_cache = c;
        return 0;
}

int api_check(long status, struct trove_error *err) {
        if (status >= 200 && status < 300)
                return 0;
        int r = http_status_to_errno(status);
        if (err && !err->msg[0])
                trove_error_set(err, r, "HTTP %ld", status);
        return r;
}

static void sleep_ms(long ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

int api_call_raw(struct http_client *c, const struct remote *rm, const char *method, const char *path,
                 const char *content_type, const void *body, size_t body_len, int attempts, long *ret_status,
                 struct buf *resp, struct trove_error *err) {
        _cleanup_free_ char *url = NULL, *auth = NULL, *ctype = NULL;
        struct buf ebody = BUF_INIT(4096);
        const char *headers[3] = {};
        struct http_response res = {};
        size_t nh = 0;
        int r = -EIO;

        if (asprintf(&url, "%s%s", rm->url, path) < 0)
                return -ENOMEM;
        if (rm->token) {
                if (asprintf(&auth, "Authorization: Bearer %s", rm->token) < 0)
                        return -ENOMEM;
                headers[nh++] = auth;
        }
        if (body) {
                if (asprintf(&ctype, "Content-Type: %s", content_type ? content_type : "application/json") < 0)
                        return -ENOMEM;
                headers[nh++] = ctype;
        }
        if (attempts < 1)
                attempts = 1;
        for (int i = 0; i < attempts; i++) {
                if (i > 0)
                        sleep_ms(250L << MIN(i, 5));
                buf_reset(resp);
                buf_reset(&ebody);
                struct http_request req = {
                        .method = method,
                        .url = url,
                        .headers = headers,
                        .body = body,
                        .body_len = body_len,
                        .response = resp,
                        .error_body = &ebody,
                };
                r = http_request(c, &req, &res);
                if (r < 0) {
                        trove_error_set(err, r, "%s %s: %s", method, url,
                                        http_client_last_error(c)[0] ? http_client_last_error(c) : strerror(-r));
                        if (r == -E2BIG || r == -EINVAL || r == -EPROTONOSUPPORT)
                                break;
                        continue;
                }
                if (res.status == 429 || res.status == 502 || res.status == 503 || res.status == 504) {
                        r = -EAGAIN;
                        trove_error_set(err, EAGAIN, "%s %s: HTTP %ld %.*s", method, path, res.status,
                                        (int) MIN(ebody.len, 200), ebody.data ? (char *) ebody.data : "");
                        continue;
                }
                break;
        }
        if (r < 0 && r != -EAGAIN)
                goto out;
        if (r == -EAGAIN) {
                /* retries exhausted on a transient status: report it */
                *ret_status = res.status;
                r = 0;
                goto out;
        }
        *ret_status = res.status;
        if (res.status < 200 || res.status >= 300) {
                const char *m = ebody.data ? (const char *) ebody.data : "";
                size_t ml = ebody.len;
                if (startswith(m, "error: "))
                        m += 7, ml -= 7;
                while (ml > 0 && (m[ml - 1] == '\n' || m[ml - 1] == '\r'))
                        ml--;
                trove_error_set(err, http_status_to_errno(res.status), "HTTP %ld: %.*s", res.status,
                                (int) MIN(ml, 400), m);
        }
        r = 0;
out:
        buf_free(&ebody);
        return r;
}

int api_call(struct http_client *c, const struct remote *rm, const char *method, const char *path,
             const char *content_type, const void *body, size_t body_len, int attempts, long *ret_status, json_t **ret_json,
             struct trove_error *err) {
        struct buf resp = BUF_INIT(CLIENT_JSON_MAX);
        long status;
        int r;

        r = api_call_raw(c, rm, method, path, content_type, body, body_len, attempts, &status, &resp, err);
        if (r < 0)
                goto out;
        *ret_status = status;
        if (ret_json && status >= 200 && status < 300) {
                json_error_t je;
                json_t *j = NULL;
                if (resp.len > 0)
                        j = json_loadb((const char *) resp.data, resp.len, 0, &je);
                if (!j) {
                        r = trove_error_set(err, EBADMSG, "%s %s: response is not JSON", method, path);
                        goto out;
                }
                *ret_json = j;
        }
out:
        buf_free(&resp);
        return r;
}

int run_capture(char *const argv[], struct buf *out, bool quiet) {
        int pfd[2], status;
        pid_t pid;
        int r = 0;

        if (pipe2(pfd, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                r = -errno;
                close(pfd[0]);
                close(pfd[1]);
                return r;
        }
        if (pid == 0) {
                dup2(pfd[1], STDOUT_FILENO);
                if (quiet) {
                        int nul = open("/dev/null", O_WRONLY);
                        if (nul >= 0)
                                dup2(nul, STDERR_FILENO);
                }
                int in = open("/dev/null", O_RDONLY);
                if (in >= 0)
                        dup2(in, STDIN_FILENO);
                execvp(argv[0], argv);
                _exit(127);
        }
        close(pfd[1]);
        for (;;) {
                char tmp[65536];
                ssize_t k = read(pfd[0], tmp, sizeof tmp);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                if (k == 0)
                        break;
                if (out && r == 0)
                        r = buf_append(out, tmp, (size_t) k); /* keep draining on overflow */
        }
        close(pfd[0]);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (r < 0)
                return r;
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}


void format_bytes(uint64_t n, char out[32]) {
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
        double d = (double) n;
        size_t u = 0;
        while (d >= 1024 && u + 1 < ELEMENTSOF(units)) {
                d /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(out, 32, "%" PRIu64 " B", n);
        else
                snprintf(out, 32, "%.1f %s", d, units[u]);
}
