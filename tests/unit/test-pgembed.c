/* SPDX-License-Identifier: Apache-2.0 */
/* Starts a real PostgreSQL cluster in a temporary directory and checks it
 * with psql from the same bindir: start, restart (reuse), restart after
 * SIGKILL, adoption of a server left by a killed process, password
 * authentication and the upgrade of trusting clusters, and (as root) the
 * non-root code path. */
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "test.h"
#include "trove/buf.h"
#include "trove/pgembed.h"

static char *found_bindir;
static char tmp_base[] = "/tmp/test-pgembed-XXXXXX";
static pid_t main_pid;

static void kill_servers_in(const char *state) {
        char path[1024], text[32] = "";
        FILE *f;

        snprintf(path, sizeof path, "%s/pg/postmaster.pid", state);
        f = fopen(path, "r");
        if (!f)
                return;
        if (fgets(text, sizeof text, f)) {
                long pid = strtol(text, NULL, 10);
                if (pid > 1)
                        kill(-(pid_t) pid, SIGKILL);
        }
        fclose(f);
}

/* A failed check must not leave servers running or files behind. */
static void cleanup(void) {
        char path[1024];

        if (getpid() != main_pid || strstr(tmp_base, "XXXXXX"))
                return;
        snprintf(path, sizeof path, "%s/state", tmp_base);
        kill_servers_in(path);
        snprintf(path, sizeof path, "%s/nonroot", tmp_base);
        kill_servers_in(path);
        snprintf(path, sizeof path, "%s/auth", tmp_base);
        kill_servers_in(path);
        snprintf(path, sizeof path, "/bin/rm -rf '%s'", tmp_base);
        if (system(path) != 0)
                fprintf(stderr, "cannot remove %s\n", tmp_base);
}

/* Runs argv, returns exit status; stdout+stderr into out (trimmed). */
static int run(char *const argv[], char *out, size_t size) {
        int p[2], status;
        size_t n = 0;
        pid_t pid;

        CHECK(pipe(p) == 0);
        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
                dup2(p[1], 1);
                dup2(p[1], 2);
                close(p[0]);
                close(p[1]);
                execv(argv[0], argv);
                _exit(127);
        }
        close(p[1]);
        for (;;) {
                ssize_t k = read(p[0], out + n, size - 1 - n);
                if (k <= 0)
                        break;
                n += (size_t) k;
                if (n == size - 1)
                        break;
        }
        close(p[0]);
        out[n] = 0;
        while (n > 0 && out[n - 1] == '\n')
                out[--n] = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int psql(const struct pgembed *pg, const char *sql, char *out, size_t size) {
        char bin[4096];
        snprintf(bin, sizeof bin, "%s/psql", pgembed_bindir(pg));
        char *argv[] = { bin, (char *) "-X", (char *) "-A", (char *) "-t", (char *) "-v",
                         (char *) "ON_ERROR_STOP=1", (char *) "-d", (char *) pgembed_conninfo(pg),
                         (char *) "-c", (char *) sql, NULL };
        return run(argv, out, size);
}

static void psql_expect(const struct pgembed *pg, const char *sql, const char *want) {
        char out[4096];
        int r = psql(pg, sql, out, sizeof out);
        if (r != 0)
                TEST_FAIL("psql -c '%s' exited %d: %s", sql, r, out);
        CHECK_STREQ(out, want);
}

static void rm_rf(const char *path) {
        char out[4096];
        char *argv[] = { (char *) "/bin/rm", (char *) "-rf", (char *) path, NULL };
        CHECK_RC(run(argv, out, sizeof out), 0);
}

/* Gone or a zombie (the postmaster is not our child; it may not be reaped). */
static bool process_gone(pid_t pid) {
        char path[64], text[512];
        FILE *f;
        size_t n;
        char *p;

        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        f = fopen(path, "r");
        if (!f)
                return true;
        n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = 0;
        p = strrchr(text, ')');
        return !p || p[1] == 0 || p[2] == 'Z' || p[2] == 'X';
}

static void wait_gone(pid_t pid) {
        for (int i = 0; i < 200 && !process_gone(pid); i++)
                nanosleep(&(struct timespec){ .tv_nsec = 50 * 1000 * 1000 }, NULL);
        CHECK(process_gone(pid));
}

static struct pgembed *start(const char *dir) {
        struct pgembed *pg = NULL;
        struct trove_error e = {};
        int r = pgembed_start(dir, NULL, &pg, &e);
        if (r < 0)
                TEST_FAIL("pgembed_start(%s): %s: %s", dir, strerror(-r), e.msg);
        CHECK(pg);
        CHECK(pgembed_pid(pg) > 0);
        return pg;
}

static void stop(struct pgembed *pg) {
        struct trove_error e = {};
        int r = pgembed_stop(pg, &e);
        if (r < 0)
                TEST_FAIL("pgembed_stop: %s: %s", strerror(-r), e.msg);
}

static void make_old_style(const char *state);

/* Starts the cluster of state in a child process that exits without
 * stopping it (as a killed troved would); returns the server's pid, left
 * running. re_trust: the child then restores the old trusting pg_hba.conf
 * and makes the server reload it, as a server of the old code ran. */
static pid_t start_and_die(const char *state, bool re_trust) {
        int fds[2], status;
        pid_t child, server = 0;

        CHECK(pipe(fds) == 0);
        child = fork();
        CHECK(child >= 0);
        if (child == 0) {
                struct pgembed *cpg = NULL;
                close(fds[0]);
                if (pgembed_start(state, NULL, &cpg, NULL) < 0)
                        _exit(1);
                server = pgembed_pid(cpg);
                if (re_trust) {
                        make_old_style(state);
                        if (kill(server, SIGHUP) < 0)
                                _exit(1);
                }
                if (write(fds[1], &server, sizeof server) != sizeof server)
                        _exit(1);
                _exit(0); /* no stop: the lock goes with the process */
        }
        close(fds[1]);
        CHECK(read(fds[0], &server, sizeof server) == sizeof server);
        close(fds[0]);
        CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        return server;
}

static void test_lifecycle(const char *base) {
        char state[512], path[4096], out[4096], version[64];
        struct trove_error e = {};
        struct pgembed *pg, *other = NULL;
        struct stat st;
        pid_t pid;

        snprintf(state, sizeof state, "%s/state", base);
        pg = start(state);
        CHECK(strstr(pgembed_conninfo(pg), "dbname=trove"));
        CHECK(strstr(pgembed_conninfo(pg), "/pg-run'"));
        psql_expect(pg, "select 1", "1");
        psql_expect(pg, "select current_database()", "trove");
        psql_expect(pg, "show listen_addresses", "");
        psql_expect(pg, "select current_setting('server_encoding')", "UTF8");
        psql_expect(pg, "create table marker (v text); insert into marker values ('kept')", "CREATE TABLE\nINSERT 0 1");

        /* Socket directory is private; data belongs to the cluster user. */
        snprintf(path, sizeof path, "%s/pg-run", state);
        CHECK(stat(path, &st) == 0);
        CHECK_EQ_U64(st.st_mode & 07777, 0700);
        snprintf(path, sizeof path, "%s/pg/PG_VERSION", state);
        CHECK(stat(path, &st) == 0);
        if (geteuid() == 0)
                CHECK(st.st_uid != 0);
        snprintf(path, sizeof path, "%s/pg/log/postgresql.log", state);
        CHECK(stat(path, &st) == 0);
        snprintf(path, sizeof path, "%s/pg.init", state);
        CHECK(stat(path, &st) < 0 && errno == ENOENT);

        /* A second user of the same state directory is refused. */
        CHECK_RC(pgembed_start(state, NULL, &other, &e), -EBUSY);
        CHECK(other == NULL);
        CHECK(strstr(e.msg, "in use"));

        pid = pgembed_pid(pg);
        stop(pg);
        wait_gone(pid);
        {
                /* Connecting now fails. */
                char bin[4096], ci[4096];
                snprintf(bin, sizeof bin, "%s/psql", found_bindir);
                snprintf(ci, sizeof ci, "host=%s/pg-run dbname=trove user=trove", state);
                char *argv[] = { bin, (char *) "-X", (char *) "-At", (char *) "-d", ci, (char *) "-c",
                                 (char *) "select 1", NULL };
                CHECK(run(argv, out, sizeof out) != 0);
        }

        /* Restart: the same cluster, not a new one. */
        snprintf(path, sizeof path, "%s/pg/PG_VERSION", state);
        CHECK(stat(path, &st) == 0);
        snprintf(version, sizeof version, "%lld.%ld", (long long) st.st_mtim.tv_sec,
                 (long) st.st_mtim.tv_nsec);
        pg = start(state);
        psql_expect(pg, "select v from marker", "kept");
        CHECK(stat(path, &st) == 0);
        snprintf(out, sizeof out, "%lld.%ld", (long long) st.st_mtim.tv_sec, (long) st.st_mtim.tv_nsec);
        CHECK_STREQ(out, version);

        /* SIGKILL of the postmaster alone: its children may still hold the
         * shared memory for a moment; postmaster.pid is stale. */
        pid = pgembed_pid(pg);
        CHECK(kill(pid, SIGKILL) == 0);
        wait_gone(pid);
        /* Nothing to stop: an error, and pg is freed. */
        CHECK_RC(pgembed_stop(pg, &e), -ESRCH);
        CHECK(strstr(e.msg, "not running"));
        pg = start(state);
        CHECK(pgembed_pid(pg) != pid);
        psql_expect(pg, "select v from marker", "kept");

        /* SIGKILL of every server process (its process group). */
        pid = pgembed_pid(pg);
        CHECK(kill(-pid, SIGKILL) == 0);
        wait_gone(pid);
        CHECK_RC(pgembed_stop(pg, &e), -ESRCH);
        pg = start(state);
        psql_expect(pg, "select count(*) from marker", "1");
        stop(pg);

        /* The process running the cluster dies without stopping it: the
         * next start adopts the server that is still running. */
        pid_t server = start_and_die(state, false);
        CHECK(!process_gone(server));
        pg = start(state);
        CHECK_EQ_U64(pgembed_pid(pg), server);
        psql_expect(pg, "select v from marker", "kept");
        stop(pg);
        wait_gone(server);
}

/* As root: a state directory the cluster user cannot reach is a clear error. */
static void test_unreachable(const char *base) {
        char locked[512], state[4096];
        struct pgembed *pg = NULL;
        struct trove_error e = {};

        snprintf(locked, sizeof locked, "%s/locked", base);
        CHECK(mkdir(locked, 0700) == 0);
        snprintf(state, sizeof state, "%s/state", locked);
        CHECK_RC(pgembed_start(state, NULL, &pg, &e), -EACCES);
        CHECK(pg == NULL);
        CHECK(strstr(e.msg, "searchable"));
        rm_rf(locked);
}

/* As root: run the whole thing again as the unprivileged cluster user,
 * which takes the non-root path (no setuid, own user). */
static void test_as_non_root(const char *base) {
        char state[4096];
        const char *name = getenv("TROVE_PG_USER");
        struct passwd *pw = getpwnam(name && *name ? name : "trove");
        int status;
        pid_t child;

        CHECK(pw);
        snprintf(state, sizeof state, "%s/nonroot", base);
        CHECK(mkdir(state, 0700) == 0);
        CHECK(chown(state, pw->pw_uid, pw->pw_gid) == 0);
        child = fork();
        CHECK(child >= 0);
        if (child == 0) {
                if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
                        TEST_FAIL("cannot become %s", pw->pw_name);
                CHECK(geteuid() != 0);
                struct pgembed *pg = start(state);
                psql_expect(pg, "select current_user || ' ' || current_database()", "trove trove");
                pid_t pid = pgembed_pid(pg);
                stop(pg);
                wait_gone(pid);
                pg = start(state);
                psql_expect(pg, "select 2", "2");
                stop(pg);
                _exit(0);
        }
        CHECK(waitpid(child, &status, 0) == child);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* psql with a conninfo; exit status, output in out. */
static int psql_ci(const char *ci, const char *sql, char *out, size_t size) {
        char bin[4096];
        snprintf(bin, sizeof bin, "%s/psql", found_bindir);
        char *argv[] = { bin, (char *) "-X", (char *) "-A", (char *) "-t", (char *) "-w", (char *) "-d",
                         (char *) ci, (char *) "-c", (char *) sql, NULL };
        return run(argv, out, size);
}

/* The conninfo with its password cut off (it comes last). */
static void without_password(const struct pgembed *pg, char *out, size_t size) {
        const char *ci = pgembed_conninfo(pg), *p = strstr(ci, " password=");
        CHECK(p);
        CHECK(strlen(p) == strlen(" password=") + 64);
        snprintf(out, size, "%.*s", (int) (p - ci), ci);
}

static void read_text(const char *path, char *out, size_t size) {
        FILE *f = fopen(path, "re");
        size_t n;
        CHECK(f);
        n = fread(out, 1, size - 1, f);
        out[n] = 0;
        fclose(f);
}

static void write_as_owner_of(const char *path, const char *text, const char *like) {
        struct stat st;
        FILE *f;
        CHECK(stat(like, &st) == 0);
        f = fopen(path, "we");
        CHECK(f);
        CHECK(fputs(text, f) >= 0);
        CHECK(fclose(f) == 0);
        CHECK(chown(path, st.st_uid, st.st_gid) == 0);
}

/* What a state directory made by the old code looks like: pg_hba.conf
 * trusting local connections, no password file. */
static void make_old_style(const char *state) {
        char hba[4096], ver[4096], pw[4096];
        snprintf(hba, sizeof hba, "%s/pg/pg_hba.conf", state);
        snprintf(ver, sizeof ver, "%s/pg/PG_VERSION", state);
        snprintf(pw, sizeof pw, "%s/pg-password", state);
        write_as_owner_of(hba, "local all all trust\n", ver);
        CHECK(unlink(pw) == 0);
}

static void expect_refused(const char *ci, const char *why) {
        char out[4096];
        if (psql_ci(ci, "select 1", out, sizeof out) == 0)
                TEST_FAIL("connected with '%s' (%s)", ci, why);
        if (!strstr(out, "password"))
                TEST_FAIL("refused for another reason than the password (%s): %s", why, out);
}

/* Password authentication: a connection without the password, or with a
 * wrong one, is refused; the password file is private; state directories
 * of the old trusting kind are upgraded in place, also when their server is
 * still running from a killed process. */
static void test_auth(const char *base) {
        char state[512], path[4096], text[4096], nopw[2048], oldci[4096], wrong[4096], out[4096];
        struct pgembed *pg;
        struct stat st, ver;

        snprintf(state, sizeof state, "%s/auth", base);
        pg = start(state);
        psql_expect(pg, "create table marker (v text); insert into marker values ('kept')",
                    "CREATE TABLE\nINSERT 0 1");
        psql_expect(pg, "select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'trove'", "t");
        psql_expect(pg, "show listen_addresses", "");

        snprintf(path, sizeof path, "%s/pg/pg_hba.conf", state);
        read_text(path, text, sizeof text);
        CHECK(!strstr(text, "trust"));
        CHECK(strstr(text, "\nlocal all all scram-sha-256\n"));
        snprintf(path, sizeof path, "%s/pg/PG_VERSION", state);
        CHECK(stat(path, &ver) == 0);
        snprintf(path, sizeof path, "%s/pg-password", state);
        CHECK(stat(path, &st) == 0);
        CHECK_EQ_U64(st.st_mode & 07777, 0600);
        CHECK_EQ_U64(st.st_uid, ver.st_uid);
        read_text(path, text, sizeof text);
        CHECK_EQ_U64(strlen(text), 65);
        CHECK(text[64] == '\n');
        text[64] = 0;
        /* The conninfo carries the file's password. */
        CHECK(strstr(pgembed_conninfo(pg), text));
        snprintf(path, sizeof path, "%s/pg-run", state);
        CHECK(stat(path, &st) == 0);
        CHECK_EQ_U64(st.st_mode & 07777, 0700);
        CHECK_EQ_U64(st.st_uid, ver.st_uid);

        without_password(pg, nopw, sizeof nopw);
        expect_refused(nopw, "no password");
        snprintf(wrong, sizeof wrong, "%s password=%064d", nopw, 0);
        expect_refused(wrong, "wrong password");

        /* Restart: the same password. */
        snprintf(oldci, sizeof oldci, "%s", pgembed_conninfo(pg));
        stop(pg);
        pg = start(state);
        CHECK_STREQ(pgembed_conninfo(pg), oldci);
        stop(pg);

        /* An old-style state directory, stopped. */
        make_old_style(state);
        pg = start(state);
        CHECK(strcmp(pgembed_conninfo(pg), oldci) != 0);
        psql_expect(pg, "select v from marker", "kept");
        expect_refused(nopw, "no password after upgrade");
        expect_refused(oldci, "the old password after upgrade");
        snprintf(path, sizeof path, "%s/pg/pg_hba.conf", state);
        read_text(path, text, sizeof text);
        CHECK(!strstr(text, "trust"));
        snprintf(oldci, sizeof oldci, "%s", pgembed_conninfo(pg));
        stop(pg);

        /* An old-style state directory whose trusting server still runs,
         * left by a killed process: it is stopped, upgraded, restarted. */
        make_old_style(state);
        pid_t server = start_and_die(state, true);
        /* The running server accepts anyone now (give the reload a moment). */
        for (int i = 0; i < 100 && psql_ci(nopw, "select 1", out, sizeof out) != 0; i++)
                nanosleep(&(struct timespec){ .tv_nsec = 50 * 1000 * 1000 }, NULL);
        CHECK_RC(psql_ci(nopw, "select 1", out, sizeof out), 0);
        pg = start(state);
        CHECK(pgembed_pid(pg) != server);
        psql_expect(pg, "select v from marker", "kept");
        expect_refused(nopw, "no password after upgrading a running server");
        stop(pg);
}

int main(void) {
        struct trove_error e = {};

        CHECK_OK(pgembed_find_bindir(&found_bindir, &e));
        CHECK(access(found_bindir, X_OK) == 0);

        /* No password from anywhere but the conninfo. */
        unsetenv("PGPASSWORD");
        setenv("PGPASSFILE", "/dev/null", 1);
        main_pid = getpid();
        CHECK(mkdtemp(tmp_base));
        CHECK(atexit(cleanup) == 0);
        /* The cluster user (when we are root) must be able to traverse it. */
        CHECK(chmod(tmp_base, 0711) == 0);

        if (geteuid() == 0)
                test_unreachable(tmp_base);
        test_lifecycle(tmp_base);
        test_auth(tmp_base);
        if (geteuid() == 0)
                test_as_non_root(tmp_base);

        free(found_bindir);
        return 0;
}
