/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test-nar_dump: nar_dump_path() writes exactly what the real
 * `nix-store --dump` writes for trees made here (every node type, padding
 * sizes, byte-order sorting, executable bits, deep nesting, a file larger
 * than the read buffer), and refuses what a NAR cannot hold with a message
 * naming the path.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "trove/buf.h"
#include "trove/hash.h"
#include "trove/nar.h"
#include "test.h"

/* mkdir k; printf 'hello\n' > k/f; chmod 755 k/f; ln -s f k/l;
 * nix-hash --type sha256 --base32 k   (Nix 2.8) */
#define KNOWN_DIR_HASH "0290xd2s947p54658mzmqaav9br4m01ri4x6dnz39c82asw84w0d"

static char tmp[] = "/tmp/test-nar_dump.XXXXXX";

static int sink_buf(void *ud, const void *p, size_t n) {
        return buf_append(ud, p, n);
}

static void nix_dump(const char *path, struct buf *out) {
        char cmd[4200];
        FILE *f;

        snprintf(cmd, sizeof cmd, "nix-store --dump '%s'", path);
        f = popen(cmd, "r");
        CHECK(f);
        for (;;) {
                uint8_t b[65536];
                size_t k = fread(b, 1, sizeof b, f);
                if (k == 0)
                        break;
                CHECK_OK(buf_append(out, b, k));
        }
        if (pclose(f) != 0)
                TEST_FAIL("nix-store --dump %s failed", path);
        CHECK(out->len > 0);
}

static void trove_dump(const char *path, struct buf *out) {
        struct trove_error err = { { 0 } };
        int r = nar_dump_path(path, sink_buf, out, &err);
        if (r < 0)
                TEST_FAIL("nar_dump_path(%s): %s", path, err.msg);
}

/* Same bytes as nix-store --dump, and the NAR hash nix-hash reports. */
static void check_same_as_nix(const char *rel) {
        char path[4096], cmd[4200], want[128];
        struct buf a = BUF_INIT((size_t) 64 << 20), b = BUF_INIT((size_t) 64 << 20);
        uint8_t h[SHA256_DIGEST_LEN];
        char got[HASH_STRING_MAX];
        FILE *f;

        snprintf(path, sizeof path, "%s/%s", tmp, rel);
        trove_dump(path, &a);
        nix_dump(path, &b);
        if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
                TEST_FAIL("%s: trove's NAR (%zu bytes) differs from nix-store --dump (%zu)", rel,
                          a.len, b.len);

        snprintf(cmd, sizeof cmd, "nix-hash --type sha256 --base32 '%s'", path);
        f = popen(cmd, "r");
        CHECK(f);
        CHECK(fgets(want, sizeof want, f));
        CHECK_OK(pclose(f));
        want[strcspn(want, "\n")] = 0;
        CHECK_OK(sha256_buf(a.data, a.len, h));
        hash_format(h, HASH_NIX32, got);
        CHECK(startswith(got, "sha256:"));
        CHECK_STREQ(got + 7, want);

        buf_free(&a);
        buf_free(&b);
}

static void write_at(const char *rel, const void *p, size_t n, mode_t mode) {
        char path[4096];
        int fd;

        snprintf(path, sizeof path, "%s/%s", tmp, rel);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CHECK(fd >= 0);
        CHECK(write(fd, p, n) == (ssize_t) n);
        CHECK_OK(close(fd));
        CHECK_OK(chmod(path, mode));
}

static void mkdir_at(const char *rel) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", tmp, rel);
        CHECK_OK(mkdir(path, 0755));
}

static void symlink_at(const char *target, const char *rel) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", tmp, rel);
        CHECK_OK(symlink(target, path));
}

static void test_tree(void) {
        static uint8_t big[(1 << 20) * 2 + 12345];
        char name[300];

        mkdir_at("t");
        /* sizes around the 8-byte padding */
        for (unsigned n = 0; n <= 17; n++) {
                snprintf(name, sizeof name, "t/size-%02u", n);
                write_at(name, "0123456789abcdefg", n, 0644);
        }
        /* executable iff the owner may execute */
        write_at("t/exec-owner", "x", 1, 0700);
        write_at("t/exec-group-only", "x", 1, 0650);
        write_at("t/exec-other-only", "x", 1, 0645);
        write_at("t/exec-all", "#!/bin/sh\n", 10, 0755);
        write_at("t/readonly", "r", 1, 0400);
        /* larger than the dump's read buffer */
        test_fill(big, sizeof big, 99);
        write_at("t/big", big, sizeof big, 0644);
        /* byte order of names, not locale order */
        static const char *names[] = { "B", "a", "a-b", "a.b", "a_b", "ab", "Z", "\xc3\xa9",
                                       "with space", "\x7f" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                snprintf(name, sizeof name, "t/%s", names[i]);
                write_at(name, names[i], strlen(names[i]), 0644);
        }
        memset(name, 0, sizeof name);
        memcpy(name, "t/", 2);
        memset(name + 2, 'L', 255);
        write_at(name, "long name", 9, 0644);
        /* symlinks: relative, absolute, dangling, to a directory, long */
        symlink_at("size-03", "t/link-rel");
        symlink_at("/etc/passwd", "t/link-abs");
        symlink_at("../nonexistent/x", "t/link-dangling");
        mkdir_at("t/dir");
        mkdir_at("t/dir/empty");
        mkdir_at("t/dir/sub");
        write_at("t/dir/sub/f", "f", 1, 0755);
        symlink_at("dir", "t/link-dir");
        {
                char target[NAR_TARGET_MAX + 1];
                memset(target, 'x', NAR_TARGET_MAX);
                for (size_t i = 100; i < NAR_TARGET_MAX; i += 100)
                        target[i] = '/';
                target[NAR_TARGET_MAX] = 0;
                symlink_at(target, "t/link-long");
        }
        check_same_as_nix("t");
        /* roots that are not directories */
        check_same_as_nix("t/size-05");
        check_same_as_nix("t/exec-all");
        check_same_as_nix("t/link-dir"); /* not followed */
        check_same_as_nix("t/dir/empty");
        check_same_as_nix("t/big");
}

/* Known answer independent of the nix binary at test time: a directory with
 * an executable "hello\n" named f and a symlink l -> f, as dumped by
 * nix-hash --type sha256 --base32 on Nix 2.8. */
static void test_known_hash(void) {
        char path[4096];
        struct buf a = BUF_INIT(1 << 20);
        uint8_t h[SHA256_DIGEST_LEN];
        char got[HASH_STRING_MAX];

        mkdir_at("k");
        write_at("k/f", "hello\n", 6, 0755);
        symlink_at("f", "k/l");
        snprintf(path, sizeof path, "%s/k", tmp);
        trove_dump(path, &a);
        CHECK_OK(sha256_buf(a.data, a.len, h));
        hash_format(h, HASH_NIX32, got);
        CHECK_STREQ(got, "sha256:" KNOWN_DIR_HASH);
        buf_free(&a);
}

/* Nesting deeper than PATH_MAX allows as one path: the walk is relative
 * to directory fds. 200 levels of 20-byte names = 4200 bytes, more than
 * NAR_PATH_MAX, so trove refuses it cleanly; 150 levels fit and match. */
static void test_deep(void) {
        char rel[8192];
        size_t len;
        int dfd, fd;

        dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(dfd >= 0);
        CHECK_OK(mkdirat(dfd, "deep", 0755));
        fd = openat(dfd, "deep", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        CHECK(fd >= 0);
        close(dfd);
        dfd = fd;
        for (unsigned i = 0; i < 150; i++) {
                CHECK_OK(mkdirat(dfd, "nnnnnnnnnnnnnnnnnnn", 0755));
                fd = openat(dfd, "nnnnnnnnnnnnnnnnnnn", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                CHECK(fd >= 0);
                close(dfd);
                dfd = fd;
        }
        fd = openat(dfd, "leaf", O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
        CHECK(fd >= 0);
        CHECK(write(fd, "leaf", 4) == 4);
        close(fd);
        check_same_as_nix("deep");

        for (unsigned i = 0; i < 60; i++) {
                CHECK_OK(mkdirat(dfd, "nnnnnnnnnnnnnnnnnnn", 0755));
                fd = openat(dfd, "nnnnnnnnnnnnnnnnnnn", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                CHECK(fd >= 0);
                close(dfd);
                dfd = fd;
        }
        close(dfd);
        {
                struct buf a = BUF_INIT((size_t) 1 << 20);
                struct trove_error err = { { 0 } };
                snprintf(rel, sizeof rel, "%s/deep", tmp);
                CHECK_RC(nar_dump_path(rel, sink_buf, &a, &err), -ENAMETOOLONG);
                len = strlen(err.msg);
                CHECK(len > 0);
                if (!strstr(err.msg, "path too long"))
                        TEST_FAIL("message: %s", err.msg);
                buf_free(&a);
        }
}

static void check_refused(const char *rel, int want, const char *what) {
        char path[4096];
        struct buf a = BUF_INIT((size_t) 1 << 20);
        struct trove_error err = { { 0 } };

        snprintf(path, sizeof path, "%s/%s", tmp, rel);
        CHECK_RC(nar_dump_path(path, sink_buf, &a, &err), want);
        if (!strstr(err.msg, what) || !strstr(err.msg, rel))
                TEST_FAIL("message \"%s\" should name %s and say %s", err.msg, rel, what);
        buf_free(&a);
}

static void test_refused(void) {
        char path[4096];
        int s;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        mkdir_at("bad");
        write_at("bad/a", "a", 1, 0644);
        snprintf(path, sizeof path, "%s/bad/fifo", tmp);
        CHECK_OK(mkfifo(path, 0644));
        check_refused("bad", -EOPNOTSUPP, "fifo");
        CHECK_OK(unlink(path));

        snprintf(sa.sun_path, sizeof sa.sun_path, "%s/bad/sock", tmp);
        s = socket(AF_UNIX, SOCK_STREAM, 0);
        CHECK(s >= 0);
        CHECK_OK(bind(s, (struct sockaddr *) &sa, sizeof sa));
        check_refused("bad", -EOPNOTSUPP, "socket");
        close(s);
        CHECK_OK(unlink(sa.sun_path));

        check_refused("does-not-exist", -ENOENT, "No such file");

        /* a sink error stops the dump and is returned as is */
        {
                struct trove_error err = { { 0 } };
                struct buf small = BUF_INIT(100);
                snprintf(path, sizeof path, "%s/bad", tmp);
                CHECK_RC(nar_dump_path(path, sink_buf, &small, &err), -E2BIG);
                CHECK(strlen(err.msg) > 0);
                buf_free(&small);
        }
}

int main(void) {
        char cmd[256];

        CHECK(mkdtemp(tmp));
        test_tree();
        test_known_hash();
        test_deep();
        test_refused();
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        CHECK_OK(system(cmd));
        return 0;
}
