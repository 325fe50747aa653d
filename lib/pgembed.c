/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "trove/buf.h"
#include "trove/hash.h"
#include "trove/pgembed.h"

#define PG_SYSTEM_USER "trove"
#define PG_BASE "/usr/lib/postgresql"
/* How much tool output / log text is kept for error messages. */
#define OUTPUT_TAIL_MAX 8192
#define MSG_TAIL 160
#define START_ATTEMPTS 20
/* 32 random bytes, hex: no quoting needed in SQL, conninfo or a pwfile. */
#define PASSWORD_BYTES 32
#define PASSWORD_LEN (2 * PASSWORD_BYTES)
#define PASSWORD_FILE "pg-password"
/* pg_hba.conf, rewritten when it differs (clusters made before password
 * authentication trusted every local connection of the OS user). */
#define HBA_TEXT                                                                             \
        "# Written by trove: the embedded cluster listens on a private Unix socket only,\n" \
        "# and every connection authenticates with the password in <state>/" PASSWORD_FILE ".\n" \
        "local all all scram-sha-256\n"

struct pgembed {
        char *state_dir;
        char *data_dir;
        char *run_dir;
        char *log_path;
        char *bindir;
        char *conninfo;
        char *password_path;
        char password[PASSWORD_LEN + 1];
        char *user_name;
        uid_t uid;
        gid_t gid;
        bool drop; /* run tools as uid/gid (we are root) */
        int lock_fd;
        pid_t pid;
};

static void pgembed_free(struct pgembed *pg) {
        if (!pg)
                return;
        if (pg->lock_fd >= 0)
                close(pg->lock_fd);
        free(pg->state_dir);
        free(pg->data_dir);
        free(pg->run_dir);
        free(pg->log_path);
        free(pg->bindir);
        free(pg->conninfo);
        free(pg->password_path);
        free(pg->user_name);
        explicit_bzero(pg->password, sizeof pg->password);
        free(pg);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct pgembed *, pgembed_free);

const char *pgembed_conninfo(const struct pgembed *pg) {
        return pg->conninfo;
}

const char *pgembed_bindir(const struct pgembed *pg) {
        return pg->bindir;
}

pid_t pgembed_pid(const struct pgembed *pg) {
        return pg->pid;
}

static char *path_join(const char *a, const char *b) {
        char *s;
        if (asprintf(&s, "%s/%s", a, b) < 0)
                return NULL;
        return s;
}

static bool is_executable(const char *dir, const char *name) {
        _cleanup_free_ char *p = path_join(dir, name);
        struct stat st;

        return p && stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0;
}

static bool has_tools(const char *dir) {
        return is_executable(dir, "initdb") && is_executable(dir, "pg_ctl") &&
               is_executable(dir, "postgres");
}

/* "15" -> 150000, "9.6" -> 90600; -1 if the name is not a version. */
static long parse_version(const char *s) {
        long major = 0, minor = 0;
        const char *p = s;

        if (!*p)
                return -1;
        for (; *p >= '0' && *p <= '9'; p++) {
                major = major * 10 + (*p - '0');
                if (major > 1000)
                        return -1;
        }
        if (p == s)
                return -1;
        if (*p == '.') {
                const char *q = ++p;
                for (; *p >= '0' && *p <= '9'; p++) {
                        minor = minor * 10 + (*p - '0');
                        if (minor > 99)
                                return -1;
                }
                if (p == q)
                        return -1;
        }
        if (*p)
                return -1;
        return major * 10000 + minor * 100;
}

static int find_bindir(const char *prefer_version, char **ret, struct trove_error *err) {
        const char *env = getenv("TROVE_PG_BINDIR");
        _cleanup_free_ char *best = NULL;
        long best_version = -1;
        DIR *d;

        if (env && *env) {
                if (!has_tools(env))
                        return trove_error_set(err, ENOENT,
                                               "TROVE_PG_BINDIR=%s does not hold initdb, pg_ctl and postgres",
                                               env);
                *ret = strdup(env);
                return *ret ? 0 : -ENOMEM;
        }

        d = opendir(PG_BASE);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d))) {
                        long v = parse_version(de->d_name);
                        _cleanup_free_ char *bin = NULL;

                        if (v < 0)
                                continue;
                        if (asprintf(&bin, "%s/%s/bin", PG_BASE, de->d_name) < 0) {
                                closedir(d);
                                return -ENOMEM;
                        }
                        if (!has_tools(bin))
                                continue;
                        /* An existing cluster keeps the major version it was made with. */
                        if (prefer_version && streq(prefer_version, de->d_name))
                                v = LONG_MAX;
                        if (v > best_version) {
                                free(best);
                                best = TAKE_PTR(bin);
                                best_version = v;
                        }
                }
                closedir(d);
        }
        if (best) {
                *ret = TAKE_PTR(best);
                return 0;
        }

        env = getenv("PATH");
        if (env) {
                _cleanup_free_ char *copy = strdup(env);
                char *save = NULL;

                if (!copy)
                        return -ENOMEM;
                for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save))
                        if (*dir == '/' && has_tools(dir)) {
                                *ret = strdup(dir);
                                return *ret ? 0 : -ENOMEM;
                        }
        }
        return trove_error_set(err, ENOENT,
                               "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in $TROVE_PG_BINDIR, "
                               PG_BASE "/*/bin or PATH; install postgresql or set TROVE_PG_BINDIR");
}

int pgembed_find_bindir(char **ret, struct trove_error *err) {
        return find_bindir(NULL, ret, err);
}

/* Keeps the last part of a stream: when full, the older half is dropped. */
static int tail_append(struct buf *b, const char *p, size_t n) {
        if (n >= b->max) {
                p += n - b->max / 2;
                n = b->max / 2;
        }
        if (b->len + n > b->max) {
                size_t drop = b->len + n - b->max / 2;
                if (drop > b->len)
                        drop = b->len;
                memmove(b->data, b->data + drop, b->len - drop);
                b->len -= drop;
        }
        return buf_append(b, p, n);
}

/* The last, at most MSG_TAIL, bytes of text, on one line, for a message. */
static const char *msg_tail(struct buf *b) {
        size_t start;

        if (!b->data || b->len == 0)
                return "(no output)";
        while (b->len > 0 && (b->data[b->len - 1] == '\n' || b->data[b->len - 1] == ' '))
                b->data[--b->len] = 0;
        start = b->len > MSG_TAIL ? b->len - MSG_TAIL : 0;
        for (size_t i = start; i < b->len; i++)
                if (b->data[i] == '\n' || b->data[i] == '\t')
                        b->data[i] = ' ';
        return (const char *) b->data + start;
}

static void write_all_raw(int fd, const char *s) {
        size_t n = strlen(s);
        while (n > 0) {
                ssize_t k = write(fd, s, n);
                if (k <= 0) {
                        if (k < 0 && errno == EINTR)
                                continue;
                        return;
                }
                s += k;
                n -= (size_t) k;
        }
}

#define EXIT_CHDIR 126
#define EXIT_EXEC 127

/* Runs argv[0] (absolute path) with a clean environment, stdin from input
 * (or /dev/null), stdout+stderr collected into out (tail), as the cluster's
 * user when pg->drop, with cwd = the state directory. Returns the exit
 * status (>= 0) or -errno if it could not run or was killed. Between fork
 * and exec only async-signal-safe calls are made. */
static int run_tool(const struct pgembed *pg, bool drop, char *const argv[], const char *input,
                    struct buf *out) {
        _cleanup_free_ char *env_path = NULL, *env_home = NULL, *env_tz = NULL, *chdir_msg = NULL;
        const char *tz = getenv("TZ");
        char *envp[6];
        size_t ne = 0;
        int in_pipe[2] = { -1, -1 }, out_pipe[2] = { -1, -1 };
        int devnull = -1, status, r;
        pid_t pid;

        /* After troved itself dropped to the cluster's user (see troved.c),
         * the tools simply run as that user. */
        if (geteuid() != 0)
                drop = false;
        if (asprintf(&env_path, "PATH=%s%s/usr/sbin:/usr/bin:/sbin:/bin", pg->bindir ? pg->bindir : "",
                     pg->bindir ? ":" : "") < 0 ||
            asprintf(&env_home, "HOME=%s", pg->state_dir) < 0 ||
            asprintf(&chdir_msg, "trove: cannot enter %s as user %s (uid %u): ", pg->state_dir,
                     pg->user_name, (unsigned) pg->uid) < 0)
                return -ENOMEM;
        envp[ne++] = env_path;
        envp[ne++] = env_home;
        envp[ne++] = (char *) "LC_ALL=C";
        envp[ne++] = (char *) "LANG=C";
        if (tz && strlen(tz) < 256) {
                if (asprintf(&env_tz, "TZ=%s", tz) < 0)
                        return -ENOMEM;
                envp[ne++] = env_tz;
        }
        envp[ne] = NULL;

        if (pipe2(out_pipe, O_CLOEXEC) < 0)
                return -errno;
        if (input) {
                if (pipe2(in_pipe, O_CLOEXEC) < 0) {
                        r = -errno;
                        goto fail;
                }
        } else {
                devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (devnull < 0) {
                        r = -errno;
                        goto fail;
                }
        }

        pid = fork();
        if (pid < 0) {
                r = -errno;
                goto fail;
        }
        if (pid == 0) {
                struct sigaction sa = { .sa_handler = SIG_DFL };
                sigset_t all;

                /* troved may ignore or block signals; the server must not
                 * inherit that (pg_ctl stop signals it). */
                for (int s = 1; s < NSIG; s++)
                        (void) sigaction(s, &sa, NULL);
                sigemptyset(&all);
                (void) sigprocmask(SIG_SETMASK, &all, NULL);

                if (dup2(input ? in_pipe[0] : devnull, 0) < 0 || dup2(out_pipe[1], 1) < 0 ||
                    dup2(out_pipe[1], 2) < 0)
                        _exit(EXIT_EXEC);
                /* No descriptor of troved (listening sockets, database
                 * connections) may leak into the long-lived postmaster. */
                if (close_range(3, ~0U, 0) < 0)
                        for (int fd = 3; fd < 65536; fd++)
                                (void) close(fd);
                if (drop) {
                        if (setgroups(1, &pg->gid) < 0 || setgid(pg->gid) < 0 ||
                            setuid(pg->uid) < 0 || setuid(0) == 0) {
                                write_all_raw(2, "trove: cannot switch to the PostgreSQL user\n");
                                _exit(EXIT_EXEC);
                        }
                }
                umask(077);
                if (chdir(pg->state_dir) < 0) {
                        const char *e = strerrorname_np(errno);
                        write_all_raw(2, chdir_msg);
                        write_all_raw(2, e ? e : "error");
                        write_all_raw(2, " (the state directory and its parents must be searchable by that user)\n");
                        _exit(EXIT_CHDIR);
                }
                execve(argv[0], argv, envp);
                write_all_raw(2, "trove: cannot execute ");
                write_all_raw(2, argv[0]);
                write_all_raw(2, "\n");
                _exit(EXIT_EXEC);
        }

        close(out_pipe[1]);
        out_pipe[1] = -1;
        if (input) {
                close(in_pipe[0]);
                in_pipe[0] = -1;
                /* Small (a statement): fits the pipe buffer, cannot deadlock. */
                write_all_raw(in_pipe[1], input);
                close(in_pipe[1]);
                in_pipe[1] = -1;
        }
        for (;;) {
                char chunk[4096];
                ssize_t k = read(out_pipe[0], chunk, sizeof chunk);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                if (out)
                        (void) tail_append(out, chunk, (size_t) k);
        }
        close(out_pipe[0]);
        out_pipe[0] = -1;
        if (devnull >= 0)
                close(devnull);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (WIFEXITED(status)) {
                if (WEXITSTATUS(status) == EXIT_CHDIR)
                        return -EACCES;
                return WEXITSTATUS(status);
        }
        return -ECHILD;

fail:
        for (int i = 0; i < 2; i++) {
                if (in_pipe[i] >= 0)
                        close(in_pipe[i]);
                if (out_pipe[i] >= 0)
                        close(out_pipe[i]);
        }
        if (devnull >= 0)
                close(devnull);
        return r;
}

static int lookup_user(const char *name, uid_t *ret_uid, gid_t *ret_gid) {
        struct passwd pw, *res = NULL;
        char buf[4096];
        int r;

        r = getpwnam_r(name, &pw, buf, sizeof buf, &res);
        if (r != 0)
                return -r;
        if (!res)
                return -ENOENT;
        *ret_uid = res->pw_uid;
        *ret_gid = res->pw_gid;
        return 0;
}

static int resolve_user(struct pgembed *pg, const char *want, struct trove_error *err) {
        const char *env = getenv("TROVE_PG_USER");
        const char *name = want && *want ? want : env && *env ? env : PG_SYSTEM_USER;
        bool named = (want && *want) || (env && *env);
        int r;

        if (geteuid() != 0) {
                struct passwd *pw = getpwuid(geteuid());
                pg->drop = false;
                pg->uid = geteuid();
                pg->gid = getegid();
                pg->user_name = strdup(pw ? pw->pw_name : "(unnamed)");
                return pg->user_name ? 0 : -ENOMEM;
        }

        pg->drop = true;
        pg->user_name = strdup(name);
        if (!pg->user_name)
                return -ENOMEM;
        r = lookup_user(name, &pg->uid, &pg->gid);
        if (r == -ENOENT && (!named || streq(name, PG_SYSTEM_USER))) {
                _cleanup_(buf_free) struct buf out = BUF_INIT(OUTPUT_TAIL_MAX);
                const char *useradd = access("/usr/sbin/useradd", X_OK) == 0 ? "/usr/sbin/useradd"
                                                                              : "/sbin/useradd";
                char *argv[] = { (char *) useradd, (char *) "--system", (char *) "--user-group",
                                 (char *) "--no-create-home", (char *) "--home-dir",
                                 (char *) "/nonexistent", (char *) "--shell",
                                 (char *) "/usr/sbin/nologin", (char *) "--comment",
                                 (char *) "trove embedded PostgreSQL", (char *) name, NULL };

                log_info("creating system user %s for the embedded PostgreSQL", name);
                /* useradd runs as root, from / (the state dir may not exist yet
                 * in a form the new user can enter; root can). */
                r = run_tool(pg, false, argv, NULL, &out);
                /* 9: the name is taken (a concurrent start created it). */
                if (r != 0 && r != 9)
                        return trove_error_set(err, r < 0 ? r : EPERM,
                                               "cannot create system user %s with %s (exit %d): %s; create it or set TROVE_PG_USER",
                                               name, useradd, r, msg_tail(&out));
                r = lookup_user(name, &pg->uid, &pg->gid);
        }
        if (r < 0)
                return trove_error_set(err, r, "user %s for the embedded PostgreSQL: %s%s", name,
                                       r == -ENOENT ? "does not exist" : strerror(-r),
                                       !(want && *want) && env && *env ? " (from TROVE_PG_USER)" : "");
        if (pg->uid == 0)
                return trove_error_set(err, EPERM,
                                       "user %s is root; PostgreSQL refuses to run as root", name);
        return 0;
}

/* Creates dir (mode) if missing and makes it the cluster user's. */
static int make_owned_dir(const struct pgembed *pg, const char *dir, mode_t mode,
                          struct trove_error *err) {
        struct stat st;

        if (mkdir(dir, mode) < 0 && errno != EEXIST)
                return trove_error_set(err, errno, "cannot create %s: %m", dir);
        if (lstat(dir, &st) < 0)
                return trove_error_set(err, errno, "cannot stat %s: %m", dir);
        if (!S_ISDIR(st.st_mode))
                return trove_error_set(err, ENOTDIR, "%s is not a directory", dir);
        if (pg->drop && (st.st_uid != pg->uid || st.st_gid != pg->gid) &&
            lchown(dir, pg->uid, pg->gid) < 0)
                return trove_error_set(err, errno, "cannot chown %s to %s: %m", dir, pg->user_name);
        if ((st.st_mode & 07777) != mode && chmod(dir, mode) < 0)
                return trove_error_set(err, errno, "cannot chmod %s: %m", dir);
        return 0;
}

static uid_t walk_uid;
static gid_t walk_gid;

static int chown_one(const char *path, const struct stat *st, int type, struct FTW *f) {
        if (st->st_uid == walk_uid && st->st_gid == walk_gid)
                return 0;
        return lchown(path, walk_uid, walk_gid) < 0 ? -1 : 0;
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *f) {
        return remove(path) < 0 ? -1 : 0;
}

/* Not thread-safe (nftw callbacks carry no context); troved starts the
 * cluster once, before its threads. */
static int chown_tree(const char *dir, uid_t uid, gid_t gid) {
        walk_uid = uid;
        walk_gid = gid;
        return nftw(dir, chown_one, 16, FTW_PHYS | FTW_MOUNT) < 0 ? -errno : 0;
}

static int remove_tree(const char *dir) {
        if (nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
                return errno == ENOENT ? 0 : -errno;
        return 0;
}

/* Writes a file owned by the cluster user, atomically. */
static int write_owned_file(const struct pgembed *pg, const char *path, const char *text,
                            struct trove_error *err) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -1;
        size_t n = strlen(text);

        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return -ENOMEM;
        (void) unlink(tmp);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return trove_error_set(err, errno, "cannot create %s: %m", tmp);
        if ((pg->drop && fchown(fd, pg->uid, pg->gid) < 0) || write(fd, text, n) != (ssize_t) n ||
            fsync(fd) < 0) {
                int e = errno ? errno : EIO;
                (void) unlink(tmp);
                return trove_error_set(err, e, "cannot write %s: %s", tmp, strerror(e));
        }
        if (rename(tmp, path) < 0) {
                int e = errno;
                (void) unlink(tmp);
                return trove_error_set(err, e, "cannot rename %s: %s", tmp, strerror(e));
        }
        return 0;
}

/* A postgresql.conf single-quoted string. */
static int conf_quote(struct buf *b, const char *s) {
        int r = buf_append(b, "'", 1);
        for (; r >= 0 && *s; s++)
                r = *s == '\'' ? buf_append(b, "''", 2)
                    : *s == '\\' ? buf_append(b, "\\\\", 2)
                                : buf_append(b, s, 1);
        return r < 0 ? r : buf_append(b, "'", 1);
}

static int write_trove_conf(const struct pgembed *pg, const char *data_dir, struct trove_error *err) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(16384);
        _cleanup_free_ char *path = path_join(data_dir, "trove.conf");
        int r;

        if (!path)
                return -ENOMEM;
        r = buf_printf(&b,
                       "# Written by trove at every start of the embedded cluster; put your own\n"
                       "# settings in postgresql.conf (included before this file).\n"
                       "listen_addresses = ''\n"
                       "port = %d\n"
                       "unix_socket_permissions = 0700\n"
                       "# after a crash, one syncfs() instead of an fsync() per file\n"
                       "recovery_init_sync_method = syncfs\n"
                       "unix_socket_directories = ",
                       PGEMBED_PORT);
        if (r >= 0)
                r = conf_quote(&b, pg->run_dir);
        if (r >= 0)
                r = buf_append_str(&b, "\n");
        if (r < 0)
                return r;
        return write_owned_file(pg, path, (const char *) b.data, err);
}

static int append_file(const char *path, const char *text, struct trove_error *err) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
        size_t n = strlen(text);

        if (fd < 0 || write(fd, text, n) != (ssize_t) n || fsync(fd) < 0)
                return trove_error_set(err, errno ? errno : EIO, "cannot append to %s: %m", path);
        return 0;
}

/* A fresh password in pg->password, written (0600, the cluster user's) to
 * the password file before anything uses it. */
static int new_password(struct pgembed *pg, struct trove_error *err) {
        uint8_t raw[PASSWORD_BYTES];
        char text[PASSWORD_LEN + 2];
        int r;

        if (getrandom(raw, sizeof raw, 0) != (ssize_t) sizeof raw)
                return trove_error_set(err, EIO, "cannot get random bytes for the database password");
        hex_encode(raw, sizeof raw, pg->password);
        explicit_bzero(raw, sizeof raw);
        memcpy(text, pg->password, PASSWORD_LEN);
        text[PASSWORD_LEN] = '\n';
        text[PASSWORD_LEN + 1] = 0;
        r = write_owned_file(pg, pg->password_path, text, err);
        explicit_bzero(text, sizeof text);
        return r;
}

/* Reads the password file into pg->password: 1 if it holds a valid
 * password, 0 if it is missing or not one (then a new one is set). */
static int load_password(struct pgembed *pg, struct trove_error *err) {
        _cleanup_close_ int fd = open(pg->password_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        char text[PASSWORD_LEN + 8];
        struct stat st;
        ssize_t n;

        if (fd < 0) {
                if (errno == ENOENT)
                        return 0;
                return trove_error_set(err, errno, "cannot open %s: %m", pg->password_path);
        }
        if (fstat(fd, &st) < 0)
                return trove_error_set(err, errno, "cannot stat %s: %m", pg->password_path);
        if (!S_ISREG(st.st_mode))
                return 0;
        /* Someone loosened it: the password guards every signing key. */
        if ((st.st_mode & 077) && fchmod(fd, 0600) < 0)
                return trove_error_set(err, errno, "cannot chmod %s: %m", pg->password_path);
        n = read(fd, text, sizeof text);
        if (n < 0)
                return trove_error_set(err, errno, "cannot read %s: %m", pg->password_path);
        if (n > PASSWORD_LEN && text[PASSWORD_LEN] == '\n')
                n--;
        if (n != PASSWORD_LEN) {
                explicit_bzero(text, sizeof text);
                return 0;
        }
        for (int i = 0; i < PASSWORD_LEN; i++)
                if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f'))) {
                        explicit_bzero(text, sizeof text);
                        return 0;
                }
        memcpy(pg->password, text, PASSWORD_LEN);
        pg->password[PASSWORD_LEN] = 0;
        explicit_bzero(text, sizeof text);
        return 1;
}

static int init_cluster(struct pgembed *pg, struct trove_error *err) {
        _cleanup_(buf_free) struct buf out = BUF_INIT(OUTPUT_TAIL_MAX);
        _cleanup_free_ char *tmp = path_join(pg->state_dir, "pg.init"), *initdb = NULL,
                            *postgres = NULL, *hba = NULL, *conf = NULL, *pwfile_arg = NULL;
        int r;

        if (!tmp)
                return -ENOMEM;
        initdb = path_join(pg->bindir, "initdb");
        postgres = path_join(pg->bindir, "postgres");
        hba = path_join(tmp, "pg_hba.conf");
        conf = path_join(tmp, "postgresql.conf");
        if (!initdb || !postgres || !hba || !conf)
                return -ENOMEM;

        r = remove_tree(tmp);
        if (r < 0)
                return trove_error_set(err, r, "cannot remove the leftover %s: %s", tmp, strerror(-r));
        r = make_owned_dir(pg, tmp, 0700, err);
        if (r < 0)
                return r;
        /* Written before the cluster exists: a cluster is never without
         * the file that holds its password. */
        r = new_password(pg, err);
        if (r < 0)
                return r;
        if (asprintf(&pwfile_arg, "--pwfile=%s", pg->password_path) < 0) {
                pwfile_arg = NULL;
                return -ENOMEM;
        }

        log_debug("initialising the embedded PostgreSQL cluster in %s", pg->data_dir);
        {
                char *argv[] = { initdb, (char *) "-D", tmp, (char *) "-U", (char *) PGEMBED_DB_USER,
                                 (char *) "-E", (char *) "UTF8", (char *) "--locale=C",
                                 (char *) "--auth-local=scram-sha-256", (char *) "--auth-host=reject",
                                 pwfile_arg, NULL };
                r = run_tool(pg, pg->drop, argv, NULL, &out);
        }
        if (r != 0)
                return trove_error_set(err, r < 0 ? r : EIO, "initdb %s failed (%s%d): %s", tmp,
                                       r < 0 ? "error " : "exit ", r, msg_tail(&out));

        /* Only the Unix socket, and a password there: the socket
         * directory's mode keeps other users out, the password keeps out
         * anything else that runs as the cluster's user. */
        r = write_owned_file(pg, hba, HBA_TEXT, err);
        if (r < 0)
                return r;
        r = append_file(conf, "\n# trove: socket settings, rewritten at every start\ninclude_if_exists = 'trove.conf'\n",
                        err);
        if (r < 0)
                return r;
        r = write_trove_conf(pg, tmp, err);
        if (r < 0)
                return r;

        /* The database is made here, before the cluster is published by
         * the rename below, with the single-user backend: no server, no
         * socket and no client tool involved. */
        buf_reset(&out);
        {
                char *argv[] = { postgres, (char *) "--single", (char *) "-D", tmp, (char *) "-F",
                                 (char *) "-c", (char *) "exit_on_error=true", (char *) "postgres", NULL };
                r = run_tool(pg, pg->drop, argv, "CREATE DATABASE " PGEMBED_DB_NAME ";\n", &out);
        }
        if (r != 0 || (out.data && strstr((const char *) out.data, "ERROR")))
                return trove_error_set(err, r < 0 ? r : EIO,
                                       "creating database " PGEMBED_DB_NAME " failed (%d): %s", r,
                                       msg_tail(&out));

        if (rename(tmp, pg->data_dir) < 0)
                return trove_error_set(err, errno, "cannot rename %s to %s: %m", tmp, pg->data_dir);
        {
                _cleanup_close_ int dfd = open(pg->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd >= 0)
                        (void) fsync(dfd);
        }
        return 0;
}

static int read_small_file(const char *path, char *buf, size_t size) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        if (n < 0)
                return -errno;
        buf[n] = 0;
        return (int) n;
}

/* The PID in postmaster.pid, 0 if there is none, -EINVAL if unreadable. */
static pid_t read_postmaster_pid(const char *data_dir) {
        _cleanup_free_ char *path = path_join(data_dir, "postmaster.pid");
        char text[64];
        long v = 0;
        int n;

        if (!path)
                return -ENOMEM;
        n = read_small_file(path, text, sizeof text);
        if (n == -ENOENT)
                return 0;
        if (n < 0)
                return n;
        for (int i = 0; i < n && text[i] != '\n'; i++) {
                if (text[i] < '0' || text[i] > '9' || v > 100000000)
                        return -EINVAL;
                v = v * 10 + (text[i] - '0');
        }
        return v > 0 ? (pid_t) v : -EINVAL;
}

/* true if pid is a live process of the cluster's user whose cwd is
 * data_dir: a postmaster of this cluster (the postmaster chdirs into its
 * data directory). A PID reused by anything else is not. */
static bool is_our_postmaster(pid_t pid, uid_t uid, const char *data_dir) {
        char link[64], target[PATH_MAX], real[PATH_MAX];
        struct stat st;
        ssize_t n;

        if (pid <= 0)
                return false;
        snprintf(link, sizeof link, "/proc/%d", (int) pid);
        if (stat(link, &st) < 0 || st.st_uid != uid)
                return false;
        snprintf(link, sizeof link, "/proc/%d/cwd", (int) pid);
        n = readlink(link, target, sizeof target - 1);
        if (n < 0)
                return false;
        target[n] = 0;
        if (!realpath(data_dir, real))
                return false;
        return streq(target, real);
}

static void clear_stale_files(const struct pgembed *pg) {
        static const char *const names[] = { ".s.PGSQL.5432", ".s.PGSQL.5432.lock" };
        _cleanup_free_ char *pidfile = path_join(pg->data_dir, "postmaster.pid");

        if (pidfile)
                (void) unlink(pidfile);
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                _cleanup_free_ char *p = path_join(pg->run_dir, names[i]);
                if (p)
                        (void) unlink(p);
        }
}

static void log_tail(const char *path, struct buf *out) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        char chunk[4096];
        off_t size;
        ssize_t k;

        if (fd < 0)
                return;
        size = lseek(fd, 0, SEEK_END);
        if (size < 0 || lseek(fd, size > 2048 ? size - 2048 : 0, SEEK_SET) < 0)
                return;
        while ((k = read(fd, chunk, sizeof chunk)) > 0)
                (void) tail_append(out, chunk, (size_t) k);
}

static int pg_ctl_stop(const struct pgembed *pg, struct buf *out) {
        _cleanup_free_ char *pg_ctl = path_join(pg->bindir, "pg_ctl");

        if (!pg_ctl)
                return -ENOMEM;
        char *argv[] = { pg_ctl, (char *) "stop", (char *) "-D", pg->data_dir, (char *) "-m",
                         (char *) "fast", (char *) "-w", (char *) "-t", (char *) "60", (char *) "-s", NULL };
        return run_tool(pg, pg->drop, argv, NULL, out);
}

/* Makes sure the cluster asks for the password in the password file.
 * Clusters made by older versions trusted every local connection and have
 * no password: they are upgraded in place, as is a cluster whose password
 * file was lost. The order makes a crash at any point harmless: the
 * password file is written first, the role's password set next (the
 * single-user backend, no server running), and pg_hba.conf, whose content
 * decides whether this is needed, last. */
static int secure_cluster(struct pgembed *pg, struct trove_error *err) {
        _cleanup_(buf_free) struct buf out = BUF_INIT(OUTPUT_TAIL_MAX);
        _cleanup_free_ char *hba = path_join(pg->data_dir, "pg_hba.conf"),
                            *postgres = path_join(pg->bindir, "postgres");
        char current[sizeof(HBA_TEXT) + 1];
        char sql[128 + PASSWORD_LEN];
        bool hba_ok;
        pid_t pid;
        int r;

        if (!hba || !postgres)
                return -ENOMEM;
        r = read_small_file(hba, current, sizeof current);
        if (r < 0 && r != -ENOENT)
                return trove_error_set(err, -r, "cannot read %s: %s", hba, strerror(-r));
        hba_ok = r >= 0 && streq(current, HBA_TEXT);
        r = load_password(pg, err);
        if (r < 0)
                return r;
        if (hba_ok && r > 0)
                return 0;

        log_info("setting up password authentication for the embedded PostgreSQL in %s",
                 pg->data_dir);
        if (r == 0) {
                r = new_password(pg, err);
                if (r < 0)
                        return r;
        }
        /* A server left running by a killed troved still trusts everyone. */
        pid = read_postmaster_pid(pg->data_dir);
        if (pid > 0 && is_our_postmaster(pid, pg->uid, pg->data_dir)) {
                r = pg_ctl_stop(pg, &out);
                if (r != 0)
                        return trove_error_set(err, r < 0 ? r : EIO,
                                               "stopping the running embedded PostgreSQL in %s failed (%d): %s",
                                               pg->data_dir, r, msg_tail(&out));
                buf_reset(&out);
        }
        snprintf(sql, sizeof sql, "ALTER ROLE " PGEMBED_DB_USER " PASSWORD '%s';\n", pg->password);
        {
                char *argv[] = { postgres, (char *) "--single", (char *) "-D", pg->data_dir, (char *) "-F",
                                 (char *) "-c", (char *) "exit_on_error=true", (char *) "-c",
                                 (char *) "password_encryption=scram-sha-256", (char *) PGEMBED_DB_NAME,
                                 NULL };
                r = run_tool(pg, pg->drop, argv, sql, &out);
        }
        explicit_bzero(sql, sizeof sql);
        if (r != 0 || (out.data && strstr((const char *) out.data, "ERROR")))
                return trove_error_set(err, r < 0 ? r : EIO,
                                       "setting the password of role " PGEMBED_DB_USER " failed (%d): %s", r,
                                       msg_tail(&out));
        return write_owned_file(pg, hba, HBA_TEXT, err);
}

static int start_server(struct pgembed *pg, struct trove_error *err) {
        _cleanup_free_ char *pg_ctl = path_join(pg->bindir, "pg_ctl");
        int r = 0;

        if (!pg_ctl)
                return -ENOMEM;
        for (int attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
                _cleanup_(buf_free) struct buf out = BUF_INIT(OUTPUT_TAIL_MAX);
                pid_t pid = read_postmaster_pid(pg->data_dir);

                if (pid > 0 && is_our_postmaster(pid, pg->uid, pg->data_dir)) {
                        /* A server left running by a troved that was killed:
                         * adopt it (its socket settings are ours). */
                        log_debug("adopting the running embedded PostgreSQL (pid %d)", (int) pid);
                        pg->pid = pid;
                        return 0;
                }
                if (pid != 0)
                        clear_stale_files(pg);

                char *argv[] = { pg_ctl, (char *) "start", (char *) "-D", pg->data_dir, (char *) "-w",
                                 (char *) "-t", (char *) "60", (char *) "-s", (char *) "-l",
                                 pg->log_path, NULL };
                r = run_tool(pg, pg->drop, argv, NULL, &out);
                if (r == 0) {
                        pid = read_postmaster_pid(pg->data_dir);
                        pg->pid = pid > 0 ? pid : 0;
                        return 0;
                }
                if (r == -EACCES)
                        return trove_error_set(err, r, "%s", msg_tail(&out));

                /* After a SIGKILL of the postmaster its children may hold the
                 * old shared memory for a moment: the new postmaster refuses
                 * until they are gone. Retry only that. */
                _cleanup_(buf_free) struct buf lt = BUF_INIT(OUTPUT_TAIL_MAX);
                log_tail(pg->log_path, &lt);
                if (!lt.data || !strstr((const char *) lt.data, "is still in use") ||
                    attempt == START_ATTEMPTS) {
                        (void) tail_append(&out, " ", 1);
                        if (lt.data)
                                (void) tail_append(&out, (const char *) lt.data, lt.len);
                        return trove_error_set(err, r < 0 ? r : EIO,
                                               "starting the embedded PostgreSQL in %s failed (see %s): %s",
                                               pg->data_dir, pg->log_path, msg_tail(&out));
                }
                log_debug("old server processes still hold shared memory, retrying");
                (void) nanosleep(&(struct timespec){ .tv_nsec = 500 * 1000 * 1000 }, NULL);
        }
        return r;
}

int pgembed_resolve_user(const char *name, uid_t *ret_uid, gid_t *ret_gid, struct trove_error *err) {
        _cleanup_(pgembed_freep) struct pgembed *pg = calloc(1, sizeof *pg);
        int r;

        if (!pg)
                return -ENOMEM;
        if (geteuid() != 0) {
                const char *env = getenv("TROVE_PG_USER");
                r = lookup_user(name && *name ? name : env && *env ? env : PG_SYSTEM_USER, ret_uid,
                                ret_gid);
                return r < 0 ? trove_error_set(err, -r, "user %s: %s", name ? name : PG_SYSTEM_USER,
                                               r == -ENOENT ? "does not exist" : strerror(-r))
                             : 0;
        }
        pg->lock_fd = -1;
        pg->state_dir = strdup("/");
        if (!pg->state_dir)
                return -ENOMEM;
        r = resolve_user(pg, name, err);
        if (r < 0)
                return r;
        *ret_uid = pg->uid;
        *ret_gid = pg->gid;
        return 0;
}

int pgembed_start(const char *state_dir, const char *user, struct pgembed **ret,
                  struct trove_error *err) {
        _cleanup_(pgembed_freep) struct pgembed *pg = NULL;
        char real[PATH_MAX], version[32];
        _cleanup_free_ char *version_path = NULL, *lock_path = NULL, *log_dir = NULL;
        struct sockaddr_un sa;
        struct stat st;
        int r;

        if (!state_dir || !*state_dir || !ret)
                return trove_error_set(err, EINVAL, "no state directory");
        if (mkdir(state_dir, 0711) < 0 && errno != EEXIST)
                return trove_error_set(err, errno, "cannot create state directory %s: %m", state_dir);
        if (!realpath(state_dir, real))
                return trove_error_set(err, errno, "state directory %s: %m", state_dir);

        pg = calloc(1, sizeof *pg);
        if (!pg)
                return -ENOMEM;
        pg->lock_fd = -1;
        pg->state_dir = strdup(real);
        pg->data_dir = path_join(real, "pg");
        pg->run_dir = path_join(real, "pg-run");
        pg->password_path = path_join(real, PASSWORD_FILE);
        lock_path = path_join(real, "pg.lock");
        if (!pg->state_dir || !pg->data_dir || !pg->run_dir || !pg->password_path || !lock_path)
                return -ENOMEM;
        log_dir = path_join(pg->data_dir, "log");
        if (!log_dir)
                return -ENOMEM;
        pg->log_path = path_join(log_dir, "postgresql.log");
        version_path = path_join(pg->data_dir, "PG_VERSION");
        if (!pg->log_path || !version_path)
                return -ENOMEM;

        /* "<run_dir>/.s.PGSQL.5432" must fit a sockaddr_un. */
        if (strlen(pg->run_dir) + strlen("/.s.PGSQL.5432") >= sizeof sa.sun_path)
                return trove_error_set(err, ENAMETOOLONG,
                                       "state directory %s is too long for a Unix socket path (at most %zu bytes)",
                                       real, sizeof sa.sun_path - 1 - strlen("/pg-run/.s.PGSQL.5432"));

        pg->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (pg->lock_fd < 0)
                return trove_error_set(err, errno, "cannot open %s: %m", lock_path);
        if (flock(pg->lock_fd, LOCK_EX | LOCK_NB) < 0)
                return trove_error_set(err, errno == EWOULDBLOCK ? EBUSY : errno,
                                       "the embedded PostgreSQL of %s is in use by another process (%s is locked)",
                                       real, lock_path);

        r = resolve_user(pg, user, err);
        if (r < 0)
                return r;

        r = read_small_file(version_path, version, sizeof version);
        if (r < 0 && r != -ENOENT)
                return trove_error_set(err, r, "cannot read %s: %s", version_path, strerror(-r));
        if (r > 0)
                version[strcspn(version, "\n")] = 0;
        r = find_bindir(r > 0 ? version : NULL, &pg->bindir, err);
        if (r < 0)
                return r;

        r = make_owned_dir(pg, pg->run_dir, 0700, err);
        if (r < 0)
                return r;

        if (access(version_path, F_OK) < 0) {
                if (lstat(pg->data_dir, &st) == 0)
                        return trove_error_set(err, EEXIST,
                                               "%s exists but is not a PostgreSQL cluster (no PG_VERSION); move it away",
                                               pg->data_dir);
                r = init_cluster(pg, err);
                if (r < 0)
                        return r;
        } else if (pg->drop) {
                /* Restored from a backup, or TROVE_PG_USER changed. */
                if (stat(pg->data_dir, &st) < 0)
                        return trove_error_set(err, errno, "cannot stat %s: %m", pg->data_dir);
                if (st.st_uid != pg->uid) {
                        log_debug("handing %s over to user %s", pg->data_dir, pg->user_name);
                        r = chown_tree(pg->data_dir, pg->uid, pg->gid);
                        if (r < 0)
                                return trove_error_set(err, r, "cannot chown %s to %s: %s",
                                                       pg->data_dir, pg->user_name, strerror(-r));
                }
        }

        r = write_trove_conf(pg, pg->data_dir, err);
        if (r < 0)
                return r;
        r = make_owned_dir(pg, log_dir, 0700, err);
        if (r < 0)
                return r;
        r = secure_cluster(pg, err);
        if (r < 0)
                return r;

        r = start_server(pg, err);
        if (r < 0)
                return r;

        {
                _cleanup_(buf_free) struct buf ci = BUF_INIT(PATH_MAX * 2 + 128);
                /* libpq conninfo: single-quoted, \ and ' escaped with \. */
                r = buf_append_str(&ci, "host='");
                for (const char *p = pg->run_dir; r >= 0 && *p; p++) {
                        if (*p == '\'' || *p == '\\')
                                r = buf_append(&ci, "\\", 1);
                        if (r >= 0)
                                r = buf_append(&ci, p, 1);
                }
                if (r >= 0)
                        r = buf_printf(&ci, "' port=%d dbname=%s user=%s password=%s", PGEMBED_PORT,
                                       PGEMBED_DB_NAME, PGEMBED_DB_USER, pg->password);
                if (r >= 0)
                        r = buf_steal(&ci, &pg->conninfo, NULL);
                if (r < 0)
                        return r;
        }
        log_debug("embedded PostgreSQL running, socket in %s", pg->run_dir);
        *ret = TAKE_PTR(pg);
        return 0;
}

int pgembed_stop(struct pgembed *pg, struct trove_error *err) {
        _cleanup_(pgembed_freep) _unused_ struct pgembed *owned = pg; /* frees pg on every return */
        _cleanup_(buf_free) struct buf out = BUF_INIT(OUTPUT_TAIL_MAX);
        int r;

        if (!pg)
                return 0;
        /* A killed server leaves postmaster.pid behind (and, when nothing
         * reaps it, a zombie that pg_ctl would wait for): not running. */
        pid_t pid = read_postmaster_pid(pg->data_dir);
        if (pid <= 0 || !is_our_postmaster(pid, pg->uid, pg->data_dir))
                return trove_error_set(err, ESRCH,
                                       "the embedded PostgreSQL in %s is not running (it was stopped or killed)",
                                       pg->data_dir);
        r = pg_ctl_stop(pg, &out);
        if (r != 0)
                return trove_error_set(err, r < 0 ? r : EIO,
                                       "stopping the embedded PostgreSQL in %s failed (%d): %s",
                                       pg->data_dir, r, msg_tail(&out));
        return 0;
}
