/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Chunk object stores: the dispatching front, the local-directory backend
 * and the S3 backend.
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "trove/chunkcodec.h"
#include "trove/chunkstore.h"

#define TMP_PREFIX ".tmp-"

/* ---- front ---- */

int chunkstore_check_frame(const uint8_t id[SHA256_DIGEST_LEN], const void *frame, size_t n,
                           unsigned flags) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
        _cleanup_free_ uint8_t *out = NULL;
        uint64_t size;
        size_t got;
        int r;

        /* A delta object decodes only with its base: its structure is
         * checked here, its content by the caller, who reads the base. */
        r = chunkcodec_delta_parse(frame, n, NULL, NULL, NULL);
        if (r != 0)
                return r > 0 ? 0 : -EBADMSG;
        r = chunkcodec_object_size(frame, n, &size);
        if (r < 0)
                return -EBADMSG;
        if (size > CHUNK_SIZE_MAX)
                return -EBADMSG;
        if (!(flags & CHUNKSTORE_GET_VERIFY))
                return 0;
        r = chunkcodec_new(CHUNK_LEVEL_DEFAULT, &codec);
        if (r < 0)
                return r;
        out = malloc(size ? size : 1);
        if (!out)
                return -ENOMEM;
        r = chunkcodec_decode(codec, frame, n, id, CHUNK_SIZE_MAX, out, size ? size : 1, &got);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || got != size)
                return -EBADMSG;
        return 0;
}

const char *chunkstore_backend(const struct chunkstore *cs) {
        return cs->ops->name;
}

struct chunkstore *chunkstore_free(struct chunkstore *cs) {
        if (cs)
                cs->ops->free(cs);
        return NULL;
}

int chunkstore_put_flags(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN], const void *frame,
                   size_t n, unsigned flags) {
        if (chunkstore_check_frame(id, frame, n, 0) < 0)
                return -EBADMSG;
        return cs->ops->put(cs, id, frame, n, flags);
}

int chunkstore_put(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN], const void *frame, size_t n) {
        return chunkstore_put_flags(cs, id, frame, n, 0);
}

int chunkstore_sync(struct chunkstore *cs) {
        return cs->ops->sync ? cs->ops->sync(cs) : 0;
}

int chunkstore_get(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN], unsigned flags,
                   struct buf *out) {
        char hex[2 * SHA256_DIGEST_LEN + 1];
        int r;

        buf_reset(out);
        r = cs->ops->get(cs, id, out);
        if (r < 0)
                return r;
        r = chunkstore_check_frame(id, out->data, out->len, flags);
        if (r == -EBADMSG) {
                hex_encode(id, SHA256_DIGEST_LEN, hex);
                log_debug("chunkstore: stored object of chunk %s is corrupt", hex);
        }
        if (r < 0)
                buf_reset(out);
        return r;
}

int chunkstore_exists(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN],
                      uint64_t *ret_size) {
        return cs->ops->exists(cs, id, ret_size);
}

int chunkstore_delete(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN]) {
        return cs->ops->delete(cs, id);
}

int chunkstore_list(struct chunkstore *cs, chunkstore_list_fn fn, void *userdata) {
        return cs->ops->list(cs, fn, userdata);
}

int chunkstore_presign_get(struct chunkstore *cs, const uint8_t id[SHA256_DIGEST_LEN],
                           unsigned expires_s, char **ret_url) {
        if (!cs->ops->presign_get)
                return -EOPNOTSUPP;
        return cs->ops->presign_get(cs, id, expires_s, ret_url);
}

int chunkstore_open(const struct chunkstore_config *cfg, struct chunkstore **ret) {
        switch (cfg->type) {
        case CHUNKSTORE_LOCAL:
                if (!cfg->local_root)
                        return -EINVAL;
                return chunkstore_local_open(cfg->local_root, ret);
        case CHUNKSTORE_S3:
                return chunkstore_s3_open(&cfg->s3, cfg->s3_prefix, cfg->s3_create_bucket, ret);
        }
        return -EINVAL;
}

static int percent_decode(const char *s, size_t n, char **ret) {
        _cleanup_(buf_free) struct buf b = BUF_INIT(4096);
        int r;

        r = buf_reserve(&b, 0);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                uint8_t ch = (uint8_t) s[i];
                if (ch == '%') {
                        if (n - i < 3 || hex_decode(s + i + 1, 2, &ch, 1) < 0 || ch == 0)
                                return -EINVAL;
                        i += 2;
                }
                r = buf_append(&b, &ch, 1);
                if (r < 0)
                        return -EINVAL;
        }
        return buf_steal(&b, ret, NULL);
}

int chunkstore_open_spec_tuned(const char *spec, const struct s3_config *tuning, struct chunkstore **ret) {
        _cleanup_free_ char *bucket = NULL, *endpoint = NULL, *region = NULL, *prefix = NULL;
        const char *p, *q;
        bool create = false;
        unsigned attempts = 0;
        int r;

        if (spec[0] == '/')
                return chunkstore_local_open(spec, ret);
        if (startswith(spec, "file://")) {
                if (spec[7] != '/')
                        return -EINVAL;
                return chunkstore_local_open(spec + 7, ret);
        }
        if (!startswith(spec, "s3://"))
                return log_debug_errno(-EINVAL, "chunkstore: unknown store spec '%s'", spec);

        p = spec + 5;
        q = strchr(p, '?');
        bucket = strndup(p, q ? (size_t) (q - p) : strlen(p));
        if (!bucket)
                return -ENOMEM;
        while (q && *q) {
                const char *name = q + 1, *eq, *end;
                char **slot;
                end = strchr(name, '&');
                if (!end)
                        end = name + strlen(name);
                eq = memchr(name, '=', (size_t) (end - name));
                if (!eq)
                        return log_debug_errno(-EINVAL, "chunkstore: bad spec parameter");
                size_t nl = (size_t) (eq - name);
                if (nl == 8 && strncmp(name, "endpoint", nl) == 0)
                        slot = &endpoint;
                else if (nl == 6 && strncmp(name, "region", nl) == 0)
                        slot = &region;
                else if (nl == 6 && strncmp(name, "prefix", nl) == 0)
                        slot = &prefix;
                else if (nl == 8 && strncmp(name, "attempts", nl) == 0) {
                        attempts = 0;
                        for (const char *d = eq + 1; d < end; d++) {
                                if (*d < '0' || *d > '9' || attempts > 100)
                                        return log_debug_errno(-EINVAL, "chunkstore: bad attempts=");
                                attempts = attempts * 10 + (unsigned) (*d - '0');
                        }
                        if (attempts == 0 || attempts > 100)
                                return log_debug_errno(-EINVAL, "chunkstore: bad attempts=");
                        q = end;
                        continue;
                } else if (nl == 6 && strncmp(name, "create", nl) == 0) {
                        create = (size_t) (end - eq - 1) == 1 && eq[1] == '1';
                        q = end;
                        continue;
                } else
                        return log_debug_errno(-EINVAL, "chunkstore: unknown spec parameter '%.*s'",
                                               (int) nl, name);
                free(*slot);
                *slot = NULL;
                r = percent_decode(eq + 1, (size_t) (end - eq - 1), slot);
                if (r < 0)
                        return r;
                q = end;
        }
        if (!endpoint)
                return log_debug_errno(-EINVAL, "chunkstore: s3 spec needs endpoint=");
        struct s3_config c = tuning ? *tuning : (struct s3_config){};
        c.endpoint = endpoint;
        c.bucket = bucket;
        c.region = region;
        c.access_key = getenv("AWS_ACCESS_KEY_ID");
        c.secret_key = getenv("AWS_SECRET_ACCESS_KEY");
        if (attempts)
                c.max_attempts = attempts;
        return chunkstore_s3_open(&c, prefix, create, ret);
}

int chunkstore_open_spec(const char *spec, struct chunkstore **ret) {
        return chunkstore_open_spec_tuned(spec, NULL, ret);
}

int chunkstore_probe(struct chunkstore *cs) {
        return cs->ops->probe ? cs->ops->probe(cs) : 0;
}

int chunkstore_s3_stats(struct chunkstore *cs, struct s3_stats *ret) {
        if (!cs->ops->s3_stats)
                return -EOPNOTSUPP;
        cs->ops->s3_stats(cs, ret);
        return 0;
}

int chunkstore_s3_recover(struct chunkstore *cs) {
        return cs->ops->s3_recover ? cs->ops->s3_recover(cs) : -EOPNOTSUPP;
}

void chunkstore_cancel(struct chunkstore *cs) {
        if (cs->ops->cancel)
                cs->ops->cancel(cs);
}

static bool is_lower_hex(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

/* ---- local directory ---- */

struct chunkstore_local {
        struct chunkstore base;
        int chunks_fd; /* <root>/chunks */
        int lock_fd;
};

#define LOCAL_PATH_MAX (sizeof("ab/cd/") + 2 * SHA256_DIGEST_LEN)

static void local_path(const uint8_t id[SHA256_DIGEST_LEN], char out[LOCAL_PATH_MAX]) {
        char hex[2 * SHA256_DIGEST_LEN + 1];

        hex_encode(id, SHA256_DIGEST_LEN, hex);
        snprintf(out, LOCAL_PATH_MAX, "%.2s/%.2s/%s", hex, hex + 2, hex);
}

static int fsync_dirat(int dirfd, const char *path) {
        _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return negative_errno();
        if (fsync(fd) < 0)
                return negative_errno();
        return 0;
}

/* Makes the shard directories of path. A new directory is made durable at
 * once unless the put is NOSYNC: then the caller's chunkstore_sync() (one
 * syncfs) covers it with the objects, and a fresh store does not pay an
 * fsync for each of its first thousands of chunks. */
static int mkdir_shard(int chunks_fd, const char *path, bool sync) {
        char d1[3] = { path[0], path[1], 0 };
        char d2[6] = { path[0], path[1], '/', path[3], path[4], 0 };
        int r;

        if (mkdirat(chunks_fd, d1, 0700) == 0) {
                if (sync && (r = fsync_dirat(chunks_fd, ".")) < 0)
                        return r;
        } else if (errno != EEXIST)
                return negative_errno();
        if (mkdirat(chunks_fd, d2, 0700) == 0) {
                if (sync && (r = fsync_dirat(chunks_fd, d1)) < 0)
                        return r;
        } else if (errno != EEXIST)
                return negative_errno();
        return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                p += w;
                n -= (size_t) w;
        }
        return 0;
}

/* Publishes tmp under path without ever replacing an object there:
 * renameat2(RENAME_NOREPLACE), or where the file system lacks it, link()
 * (which also fails on an existing name) and unlink of tmp. */
static int publish_noreplace(int dir_fd, const char *tmp, const char *path) {
        if (renameat2(dir_fd, tmp, dir_fd, path, RENAME_NOREPLACE) == 0)
                return 0;
        if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
                return negative_errno();
        if (linkat(dir_fd, tmp, dir_fd, path, 0) < 0)
                return negative_errno();
        (void) unlinkat(dir_fd, tmp, 0);
        return 0;
}

static int local_put(struct chunkstore *base, const uint8_t id[SHA256_DIGEST_LEN],
                     const void *frame, size_t n, unsigned flags) {
        struct chunkstore_local *cs = (struct chunkstore_local *) base;
        char path[LOCAL_PATH_MAX], tmp[LOCAL_PATH_MAX + 32], dir[6];
        _cleanup_close_ int fd = -1;
        uint64_t rnd;
        struct stat st;
        int r;

        local_path(id, path);
        /* Cheap early answer; the no-replace publish below is what makes it
         * true under concurrency. */
        if (!(flags & CHUNKSTORE_PUT_REPLACE)) {
                if (fstatat(cs->chunks_fd, path, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        return -EEXIST;
                if (errno != ENOENT)
                        return negative_errno();
        }
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
                return -EIO;
        /* Same directory as the final name, so publishing it is atomic. The
         * shard directories are made when the first open says they are
         * missing. */
        snprintf(tmp, sizeof tmp, "%.6s" TMP_PREFIX "%s.%016" PRIx64, path, path + 6, rnd);
        fd = openat(cs->chunks_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno == ENOENT) {
                r = mkdir_shard(cs->chunks_fd, path, !(flags & CHUNKSTORE_PUT_NOSYNC));
                if (r < 0)
                        return r;
                fd = openat(cs->chunks_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        }
        if (fd < 0)
                return negative_errno();
        r = write_all(fd, frame, n);
        if (r >= 0 && !(flags & CHUNKSTORE_PUT_NOSYNC) && fsync(fd) < 0)
                r = negative_errno();
        if (r >= 0 && close(TAKE_FD(fd)) < 0)
                r = negative_errno();
        /* A concurrent put of the same id may have published first, possibly
         * with another frame (another compression level): that object wins
         * and stays as it is (-EEXIST). */
        if (r >= 0 && (flags & CHUNKSTORE_PUT_REPLACE))
                r = renameat(cs->chunks_fd, tmp, cs->chunks_fd, path) < 0 ? negative_errno() : 0;
        else if (r >= 0)
                r = publish_noreplace(cs->chunks_fd, tmp, path);
        if (r < 0) {
                (void) unlinkat(cs->chunks_fd, tmp, 0);
                return r;
        }
        if (flags & CHUNKSTORE_PUT_NOSYNC)
                return 0;
        memcpy(dir, path, 5);
        dir[5] = 0;
        return fsync_dirat(cs->chunks_fd, dir);
}

/* One syncfs for a whole batch of NOSYNC puts: data, inodes, renames. */
static int local_sync(struct chunkstore *base) {
        struct chunkstore_local *cs = (struct chunkstore_local *) base;
        return syncfs(cs->chunks_fd) < 0 ? negative_errno() : 0;
}

static int local_get(struct chunkstore *base, const uint8_t id[SHA256_DIGEST_LEN],
                     struct buf *out) {
        struct chunkstore_local *cs = (struct chunkstore_local *) base;
        char path[LOCAL_PATH_MAX];
        _cleanup_close_ int fd = -1;
        struct stat st;
        size_t size, got = 0;
        int r;

        local_path(id, path);
        fd = openat(cs->chunks_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        if ((uint64_t) st.st_size > out->max)
                return -EFBIG;
        size = (size_t) st.st_size;
        r = buf_reserve(out, size);
        if (r < 0)
                return r;
        while (got < size) {
                ssize_t n = pread(fd, out->data + got, size - got, (off_t) got);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return -EBADMSG; /* shrank under us: not an immutable object */
                got += (size_t) n;
        }
        out->len = size;
        out->data[size] = 0;
        return 0;
}

static int local_exists(struct chunkstore *base, const uint8_t id[SHA256_DIGEST_LEN],
                        uint64_t *ret_size) {
        struct chunkstore_local *cs = (struct chunkstore_local *) base;
        char path[LOCAL_PATH_MAX];
        struct stat st;

        local_path(id, path);
        if (fstatat(cs->chunks_fd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        if (ret_size)
                *ret_size = (uint64_t) st.st_size;
        return 1;
}

static int local_delete(struct chunkstore *base, const uint8_t id[SHA256_DIGEST_LEN]) {
        struct chunkstore_local *cs = (struct chunkstore_local *) base;
        char path[LOCAL_PATH_MAX];

        local_path(id, path);
        if (unlinkat(cs->chunks_fd, path, 0) < 0 && errno != ENOENT)
                return negative_errno();
        return 0;
}

static void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}

/* Walks chunks/ab/cd/ and calls visit for every file there. */
typedef int (*local_visit_fn)(int dir_fd, const char *name, const char *shard, void *userdata);

static int local_walk(int chunks_fd, local_visit_fn visit, void *userdata) {
        _cleanup_(closedirp) DIR *top = NULL;
        struct dirent *e1;
        int fd, r;

        fd = openat(chunks_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        top = fdopendir(fd);
        if (!top) {
                close(fd);
                return negative_errno();
        }
        while ((errno = 0, e1 = readdir(top))) {
                _cleanup_(closedirp) DIR *mid = NULL;
                struct dirent *e2;

                if (strlen(e1->d_name) != 2 || !is_lower_hex(e1->d_name, 2))
                        continue;
                fd = openat(chunks_fd, e1->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0)
                        continue;
                mid = fdopendir(fd);
                if (!mid) {
                        close(fd);
                        return negative_errno();
                }
                while ((errno = 0, e2 = readdir(mid))) {
                        _cleanup_(closedirp) DIR *leaf = NULL;
                        struct dirent *e3;
                        char shard[5];

                        if (strlen(e2->d_name) != 2 || !is_lower_hex(e2->d_name, 2))
                                continue;
                        fd = openat(dirfd(mid), e2->d_name,
                                    O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                        if (fd < 0)
                                continue;
                        leaf = fdopendir(fd);
                        if (!leaf) {
                                close(fd);
                                return negative_errno();
                        }
                        memcpy(shard, e1->d_name, 2);
                        memcpy(shard + 2, e2->d_name, 2);
                        shard[4] = 0;
                        while ((errno = 0, e3 = readdir(leaf))) {
                                if (streq(e3->d_name, ".") || streq(e3->d_name, ".."))
                                        continue;
                                r = visit(dirfd(leaf), e3->d_name, shard, userdata);
                                if (r != 0)
                                        return r;
                        }
                        if (errno != 0)
                                return negative_errno();
                }
                if (errno != 0)
                        return negative_errno();
        }
        if (errno != 0)
                return negative_errno();
        return 0;
}

static int remove_tmp(int dir_fd, const char *name, const char *shard, void *userdata) {
        unsigned *removed = userdata;

        if (!startswith(name, TMP_PREFIX))
                return 0;
        if (unlinkat(dir_fd, name, 0) < 0 && errno != ENOENT)
                return negative_errno();
        (*removed)++;
        return 0;
}

struct list_ctx {
        chunkstore_list_fn fn;
        void *userdata;
};

static int list_visit(int dir_fd, const char *name, const char *shard, void *userdata) {
        struct list_ctx *lc = userdata;
        uint8_t id[SHA256_DIGEST_LEN];
        struct stat st;

        if (strlen(name) != 2 * SHA256_DIGEST_LEN || !is_lower_hex(name, 2 * SHA256_DIGEST_LEN) ||
            memcmp(name, shard, 4) != 0)
                return 0;
        if (hex_decode(name, 2 * SHA256_DIGEST_LEN, id, sizeof id) < 0)
                return 0;
        if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT) /* deleted meanwhile */
                        return 0;
                return negative_errno();
        }
        if (!S_ISREG(st.st_mode))
                return 0;
        return lc->fn(id, (uint64_t) st.st_size, lc->userdata);
}

static int local_list(struct chunkstore *base, chunkstore_list_fn fn, void *userdata) {
        struct chunkstore_local *cs = (struct chunkstore_local *) base;
        struct list_ctx lc = { fn, userdata };

        return local_walk(cs->chunks_fd, list_visit, &lc);
}

static void local_free(struct chunkstore *base) {
        struct chunkstore_local *cs = (struct chunkstore_local *) base;

        if (cs->chunks_fd >= 0)
                close(cs->chunks_fd);
        if (cs->lock_fd >= 0)
                close(cs->lock_fd);
        free(cs);
}

static const struct chunkstore_ops local_ops = {
        .name = "local",
        .put = local_put,
        .sync = local_sync,
        .get = local_get,
        .exists = local_exists,
        .delete = local_delete,
        .list = local_list,
        .free = local_free,
};

int chunkstore_local_open(const char *root, struct chunkstore **ret) {
        _cleanup_close_ int root_fd = -1, chunks_fd = -1, lock_fd = -1;
        struct chunkstore_local *cs;
        unsigned removed = 0;
        int r;

        if (!root || !root[0])
                return -EINVAL;
        if (mkdir(root, 0700) < 0 && errno != EEXIST)
                return negative_errno();
        root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (root_fd < 0)
                return negative_errno();
        if (mkdirat(root_fd, "chunks", 0700) < 0 && errno != EEXIST)
                return negative_errno();
        chunks_fd = openat(root_fd, "chunks", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (chunks_fd < 0)
                return negative_errno();
        lock_fd = openat(chunks_fd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (lock_fd < 0)
                return negative_errno();
        if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0)
                return errno == EWOULDBLOCK ? -EBUSY : negative_errno();

        /* Nobody else writes here now: every temporary file is from a crash. */
        r = local_walk(chunks_fd, remove_tmp, &removed);
        if (r < 0)
                return r;
        if (removed > 0)
                log_debug("chunkstore: removed %u stale temporary files under %s", removed, root);

        cs = calloc(1, sizeof *cs);
        if (!cs)
                return -ENOMEM;
        cs->base.ops = &local_ops;
        cs->chunks_fd = TAKE_FD(chunks_fd);
        cs->lock_fd = TAKE_FD(lock_fd);
        *ret = &cs->base;
        return 0;
}

/* ---- S3 ---- */

struct chunkstore_s3 {
        struct chunkstore base;
        struct s3 *s3;
        char *prefix; /* "<prefix>chunks/" */
};

#define S3_CHUNK_KEY_MAX 1024

static int s3_key(struct chunkstore_s3 *cs, const uint8_t id[SHA256_DIGEST_LEN],
                  char out[S3_CHUNK_KEY_MAX]) {
        char hex[2 * SHA256_DIGEST_LEN + 1];
        int n;

        hex_encode(id, SHA256_DIGEST_LEN, hex);
        n = snprintf(out, S3_CHUNK_KEY_MAX, "%s%.2s/%s", cs->prefix, hex, hex);
        return n < 0 || n >= S3_CHUNK_KEY_MAX ? -ENAMETOOLONG : 0;
}

static int s3cs_put(struct chunkstore *base, const uint8_t id[SHA256_DIGEST_LEN],
                    const void *frame, size_t n, unsigned flags) {
        struct chunkstore_s3 *cs = (struct chunkstore_s3 *) base;
        char key[S3_CHUNK_KEY_MAX];
        int r;

        r = s3_key(cs, id, key);
        if (r < 0)
                return r;
        /* Conditional PUT (If-None-Match: *): an object already stored, with
         * whatever frame, is never replaced (-EEXIST). A replacement is one
         * PUT: S3 makes it visible whole. */
        if (flags & CHUNKSTORE_PUT_REPLACE)
                return s3_put_object(cs->s3, key, frame, n);
        return s3_put_object_new(cs->s3, key, frame, n);
}

static int s3cs_get(struct chunkstore *base, const uint8_t id[SHA256_DIGEST_LEN],
                    struct buf *out) {
        struct chunkstore_s3 *cs = (struct chunkstore_s3 *) base;
        char key[S3_CHUNK_KEY_MAX];
        int r;

        r = s3_key(cs, id, key);
        if (r < 0)
                return r;
        r = s3_get_object(cs->s3, key, NULL, out);
        return r == -E2BIG ? -EFBIG : r;
}

static int s3cs_exists(struct chunkstore *base, const uint8_t id[SHA256_DIGEST_LEN],
                       uint64_t *ret_size) {
        struct chunkstore_s3 *cs = (struct chunkstore_s3 *) base;
        char key[S3_CHUNK_KEY_MAX];
        int r;

        r = s3_key(cs, id, key);
        if (r < 0)
                return r;
        return s3_head_object(cs->s3, key, ret_size);
}

static int s3cs_delete(struct chunkstore *base, const uint8_t id[SHA256_DIGEST_LEN]) {
        struct chunkstore_s3 *cs = (struct chunkstore_s3 *) base;
        char key[S3_CHUNK_KEY_MAX];
        int r;

        r = s3_key(cs, id, key);
        if (r < 0)
                return r;
        return s3_delete_object(cs->s3, key);
}

struct s3_list_ctx {
        struct chunkstore_s3 *cs;
        chunkstore_list_fn fn;
        void *userdata;
};

static int s3_list_visit(const struct s3_object *o, void *userdata) {
        struct s3_list_ctx *lc = userdata;
        size_t pl = strlen(lc->cs->prefix);
        const char *rest;
        uint8_t id[SHA256_DIGEST_LEN];

        /* "<prefix>ab/<64 hex>" with ab the first two hex digits. */
        if (!startswith(o->key, lc->cs->prefix))
                return 0;
        rest = o->key + pl;
        if (strlen(rest) != 3 + 2 * SHA256_DIGEST_LEN || rest[2] != '/' ||
            !is_lower_hex(rest + 3, 2 * SHA256_DIGEST_LEN) || memcmp(rest, rest + 3, 2) != 0)
                return 0;
        if (hex_decode(rest + 3, 2 * SHA256_DIGEST_LEN, id, sizeof id) < 0)
                return 0;
        return lc->fn(id, o->size, lc->userdata);
}

static int s3cs_list(struct chunkstore *base, chunkstore_list_fn fn, void *userdata) {
        struct chunkstore_s3 *cs = (struct chunkstore_s3 *) base;
        struct s3_list_ctx lc = { cs, fn, userdata };

        return s3_list_foreach(cs->s3, cs->prefix, s3_list_visit, &lc);
}

static int s3cs_presign_get(struct chunkstore *base, const uint8_t id[SHA256_DIGEST_LEN],
                            unsigned expires_s, char **ret_url) {
        struct chunkstore_s3 *cs = (struct chunkstore_s3 *) base;
        char key[S3_CHUNK_KEY_MAX];
        int r;

        r = s3_key(cs, id, key);
        if (r < 0)
                return r;
        return s3_presign_get(cs->s3, key, expires_s, time(NULL), ret_url);
}

static int s3cs_probe(struct chunkstore *base) {
        return s3_probe(((struct chunkstore_s3 *) base)->s3);
}

static void s3cs_stats(struct chunkstore *base, struct s3_stats *ret) {
        s3_stats_get(((struct chunkstore_s3 *) base)->s3, ret);
}

static int s3cs_recover(struct chunkstore *base) {
        return s3_recover(((struct chunkstore_s3 *) base)->s3);
}

static void s3cs_cancel(struct chunkstore *base) {
        s3_cancel(((struct chunkstore_s3 *) base)->s3);
}

static void s3cs_free(struct chunkstore *base) {
        struct chunkstore_s3 *cs = (struct chunkstore_s3 *) base;

        s3_free(cs->s3);
        free(cs->prefix);
        free(cs);
}

static const struct chunkstore_ops s3_ops = {
        .name = "s3",
        .put = s3cs_put,
        .get = s3cs_get,
        .exists = s3cs_exists,
        .delete = s3cs_delete,
        .list = s3cs_list,
        .presign_get = s3cs_presign_get,
        .probe = s3cs_probe,
        .s3_stats = s3cs_stats,
        .s3_recover = s3cs_recover,
        .cancel = s3cs_cancel,
        .free = s3cs_free,
};

int chunkstore_s3_open(const struct s3_config *cfg, const char *prefix, bool create_bucket,
                       struct chunkstore **ret) {
        _cleanup_(s3_freep) struct s3 *s3 = NULL;
        _cleanup_free_ char *full = NULL;
        struct chunkstore_s3 *cs;
        int r;

        if (!prefix)
                prefix = "";
        if (strlen(prefix) > 256 || prefix[0] == '/')
                return -EINVAL;
        r = s3_new(cfg, &s3);
        if (r < 0)
                return r;
        if (create_bucket) {
                r = s3_create_bucket(s3);
                if (r < 0)
                        return log_debug_errno(r, "chunkstore: creating bucket %s failed",
                                               cfg->bucket);
        }
        if (asprintf(&full, "%schunks/", prefix) < 0) {
                full = NULL;
                return -ENOMEM;
        }
        cs = calloc(1, sizeof *cs);
        if (!cs)
                return -ENOMEM;
        cs->base.ops = &s3_ops;
        cs->s3 = TAKE_PTR(s3);
        cs->prefix = TAKE_PTR(full);
        *ret = &cs->base;
        return 0;
}
