/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nar_dump.c - serialize a tree on disk like `nix-store --dump`.
 *
 * Same rules as Nix's archive.cc: lstat (symlinks are never followed),
 * directory entries sorted by byte order of their names, "executable" iff
 * the owner's x bit (S_IXUSR) is set on a regular file, symlink targets as
 * readlink returns them; anything else (socket, device, fifo) is refused.
 *
 * The walk works relative to directory fds (openat/fstatat/readlinkat), so
 * depth is limited by NAR_DEPTH_MAX and NAR_PATH_MAX, not by PATH_MAX.
 * Regular files are read with one large buffer and fadvise(SEQUENTIAL).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "trove/buf.h"
#include "trove/nar.h"

#define DUMP_BUFSIZE (1024 * 1024)
#define DUMP_DIR_ENTRIES_MAX (16u * 1024 * 1024)

struct dump {
        struct nar_encoder enc;
        struct trove_error *err;
        uint8_t *buf;
        /* root path + "/" + relative path, for messages only */
        char path[PATH_MAX + NAR_PATH_MAX + 2];
        size_t path_len;
};

static int dump_fail(struct dump *d, int r, const char *what) {
        /* the message slot is small: keep the end of a long path, which
         * names the offending entry, and the reason */
        const size_t keep = 150;
        if (d->path_len > keep)
                return trove_error_set(d->err, r, "cannot dump ...%s: %s",
                                       d->path + d->path_len - keep, what);
        return trove_error_set(d->err, r, "cannot dump %s: %s", d->path, what);
}

static int dump_fail_errno(struct dump *d, int r, const char *what) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s: %s", what, strerror(r < 0 ? -r : r));
        return dump_fail(d, r, msg);
}

static int dump_node(struct dump *d, int dirfd, const char *name, unsigned depth);

static int name_cmp(const void *a, const void *b) {
        /* strcmp compares as unsigned char: byte order, as Nix's std::map */
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static void free_names(char **names, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

static int dump_regular(struct dump *d, int dirfd, const char *name, const struct stat *lst) {
        _cleanup_close_ int fd = -1;
        struct stat st;
        uint64_t left;
        int r;

        fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return dump_fail_errno(d, -errno, "open");
        if (fstat(fd, &st) < 0)
                return dump_fail_errno(d, -errno, "stat");
        if (!S_ISREG(st.st_mode) || st.st_dev != lst->st_dev || st.st_ino != lst->st_ino)
                return dump_fail(d, -EAGAIN, "file replaced while reading");
        /* one read covers a small file: the hint would only cost a syscall */
        if (st.st_size > DUMP_BUFSIZE)
                (void) posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

        r = nar_encoder_regular(&d->enc, (uint64_t) st.st_size, (st.st_mode & S_IXUSR) != 0);
        if (r < 0)
                return dump_fail_errno(d, r, "encoding");
        left = (uint64_t) st.st_size;
        while (left > 0) {
                ssize_t k = read(fd, d->buf, (size_t) MIN(left, (uint64_t) DUMP_BUFSIZE));
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return dump_fail_errno(d, -errno, "read");
                }
                if (k == 0)
                        return dump_fail(d, -EIO, "file shrank while reading");
                r = nar_encoder_data(&d->enc, d->buf, (size_t) k);
                if (r < 0)
                        return dump_fail_errno(d, r, "writing");
                left -= (uint64_t) k;
        }
        return 0;
}

static int dump_symlink(struct dump *d, int dirfd, const char *name) {
        char target[NAR_TARGET_MAX + 1];
        ssize_t k;
        int r;

        k = readlinkat(dirfd, name, target, sizeof target);
        if (k < 0)
                return dump_fail_errno(d, -errno, "readlink");
        if ((size_t) k > NAR_TARGET_MAX)
                return dump_fail(d, -ENAMETOOLONG, "symlink target too long");
        if (k == 0)
                return dump_fail(d, -EINVAL, "empty symlink target");
        r = nar_encoder_symlink(&d->enc, target, (size_t) k);
        if (r < 0)
                return dump_fail_errno(d, r, "writing");
        return 0;
}

static int dump_directory(struct dump *d, int dirfd, const char *name, unsigned depth) {
        _cleanup_close_ int fd = -1;
        char **names = NULL;
        size_t n = 0, cap = 0, saved_len;
        struct dirent *de;
        DIR *dir;
        int r;

        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return dump_fail_errno(d, -errno, "open");
        /* fdopendir takes its own fd so fd stays usable for openat */
        {
                int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (dfd < 0)
                        return dump_fail_errno(d, -errno, "dup");
                dir = fdopendir(dfd);
                if (!dir) {
                        r = -errno;
                        close(dfd);
                        return dump_fail_errno(d, r, "opendir");
                }
        }
        for (;;) {
                errno = 0;
                de = readdir(dir);
                if (!de) {
                        if (errno != 0) {
                                r = -errno;
                                closedir(dir);
                                free_names(names, n);
                                return dump_fail_errno(d, r, "readdir");
                        }
                        break;
                }
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (n == cap) {
                        size_t ncap = cap ? cap * 2 : 64;
                        char **p;
                        if (ncap > DUMP_DIR_ENTRIES_MAX) {
                                closedir(dir);
                                free_names(names, n);
                                return dump_fail(d, -E2BIG, "too many directory entries");
                        }
                        p = realloc(names, ncap * sizeof *names);
                        if (!p) {
                                closedir(dir);
                                free_names(names, n);
                                return dump_fail(d, -ENOMEM, "out of memory");
                        }
                        names = p;
                        cap = ncap;
                }
                names[n] = strdup(de->d_name);
                if (!names[n]) {
                        closedir(dir);
                        free_names(names, n);
                        return dump_fail(d, -ENOMEM, "out of memory");
                }
                n++;
        }
        closedir(dir);
        if (n > 1)
                qsort(names, n, sizeof *names, name_cmp);

        r = nar_encoder_directory(&d->enc);
        if (r < 0) {
                free_names(names, n);
                return dump_fail_errno(d, r, "writing");
        }
        saved_len = d->path_len;
        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(names[i]);

                if (d->path_len + 1 + len >= sizeof d->path) {
                        free_names(names, n);
                        return dump_fail(d, -ENAMETOOLONG, "path too long");
                }
                d->path[d->path_len] = '/';
                memcpy(d->path + d->path_len + 1, names[i], len + 1);
                d->path_len += 1 + len;

                if (depth + 1 > NAR_DEPTH_MAX) {
                        free_names(names, n);
                        return dump_fail(d, -ELOOP, "tree nested too deep for a NAR");
                }
                r = nar_encoder_entry(&d->enc, names[i], len);
                if (r < 0) {
                        free_names(names, n);
                        return dump_fail(d, r == -EINVAL ? -ENAMETOOLONG : r,
                                         r == -EINVAL ? "path too long for a NAR" : "writing");
                }
                r = dump_node(d, fd, names[i], depth + 1);
                if (r < 0) {
                        free_names(names, n);
                        return r;
                }
                r = nar_encoder_entry_end(&d->enc);
                if (r < 0) {
                        free_names(names, n);
                        return dump_fail_errno(d, r, "writing");
                }
                d->path_len = saved_len;
                d->path[d->path_len] = 0;
        }
        free_names(names, n);
        r = nar_encoder_directory_end(&d->enc);
        if (r < 0)
                return dump_fail_errno(d, r, "writing");
        return 0;
}

static int dump_node(struct dump *d, int dirfd, const char *name, unsigned depth) {
        struct stat st;

        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return dump_fail_errno(d, -errno, "stat");
        if (S_ISREG(st.st_mode))
                return dump_regular(d, dirfd, name, &st);
        if (S_ISLNK(st.st_mode))
                return dump_symlink(d, dirfd, name);
        if (S_ISDIR(st.st_mode))
                return dump_directory(d, dirfd, name, depth);
        return dump_fail(d, -EOPNOTSUPP,
                         S_ISSOCK(st.st_mode)  ? "unsupported file type (socket)"
                         : S_ISFIFO(st.st_mode) ? "unsupported file type (fifo)"
                         : S_ISCHR(st.st_mode)  ? "unsupported file type (character device)"
                         : S_ISBLK(st.st_mode)  ? "unsupported file type (block device)"
                                                : "unsupported file type");
}

int nar_dump_path(const char *path, nar_sink_fn sink, void *userdata, struct trove_error *err) {
        struct dump *d;
        size_t len = strlen(path);
        int r;

        if (len == 0 || len >= PATH_MAX)
                return trove_error_set(err, -EINVAL, "cannot dump \"%s\": invalid path",
                                       len ? "..." : "");
        d = malloc(sizeof *d);
        if (!d)
                return trove_error_set(err, -ENOMEM, "cannot dump %s: out of memory", path);
        d->buf = malloc(DUMP_BUFSIZE);
        if (!d->buf) {
                free(d);
                return trove_error_set(err, -ENOMEM, "cannot dump %s: out of memory", path);
        }
        d->err = err;
        memcpy(d->path, path, len + 1);
        d->path_len = len;
        nar_encoder_init(&d->enc, sink, userdata);

        r = dump_node(d, AT_FDCWD, path, 0);
        if (r >= 0) {
                r = nar_encoder_finish(&d->enc);
                if (r < 0)
                        r = dump_fail_errno(d, r, "writing");
        }
        free(d->buf);
        free(d);
        return r < 0 ? r : 0;
}
