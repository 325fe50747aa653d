/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include "trove/chunkcache.h"
#include "trove/manifest.h"
#include "trove/util.h"

/* Temporary files older than this are leftovers of a crashed writer. */
#define TMP_STALE_SECONDS 3600
/* A hit bumps the file's mtime at most this often (it is the LRU key that
 * survives remounts). */
#define TOUCH_INTERVAL_SECONDS 60
/* A stored frame is never larger than the largest chunk's worst case. */
#define FRAME_MAX (CHUNK_SIZE_MAX + CHUNK_SIZE_MAX / 128 + 1024)

/*
 * Two kinds of object share the directory, the counter and the LRU: chunk
 * frames (<dir>/<ab>/<64 hex id>) and kept manifests
 * (<dir>/manifests/<64 hex key>). A kept manifest file is
 *
 *   0   "trovekm1"
 *   8   u32 LE  signature length s (0: none), at most CHUNKCACHE_SIG_MAX
 *   12  u32 LE  0
 *   16  u64 LE  body length n, 1 .. MANIFEST_MAX_SIZE
 *   24  32 bytes SHA-256 of bytes 0..23, the signature and the body
 *   56  the signature text (printable ASCII), then the body
 *
 * and nothing else (the file's size is exactly 56 + s + n). The digest
 * catches damage on disk; the signature (the server's, checked by the
 * fetcher against its trusted keys) catches everything else.
 */
enum kind {
        KIND_CHUNK = 0,
        KIND_MANIFEST = 1,
};
#define MANIFEST_DIR "manifests"
#define KEPT_MAGIC "trovekm1"
#define KEPT_HEADER_SIZE 56
#define KEPT_DIGESTED 24
#define KEPT_FILE_MAX (KEPT_HEADER_SIZE + CHUNKCACHE_SIG_MAX + (uint64_t) MANIFEST_MAX_SIZE)

/*
 * The joint bound. Every mount of one directory keeps the directory's total
 * in <dir>/usage, a small file all of them map shared and update with
 * atomic adds. Changes of the directory's content and of the counter go
 * together under flock() of the directory itself: a store (rename into
 * place + add) or a removal (unlink + subtract) holds it shared, a rescan
 * holds it exclusively, so a rescan sees a quiescent directory and sets the
 * counter to the exact total. A store that leaves the total above the bound
 * rescans the directory (learning what other mounts stored, ordered by
 * mtime among this mount's own LRU) and evicts down to LOW_WATER of the
 * bound, so rescans happen once per tenth of the bound written, not per
 * chunk. A crash between a rename and its add leaves the counter short by
 * one file until the next rescan (every open rescans).
 */
#define USAGE_FILE "usage"
#define USAGE_MAGIC "trovecc1"
#define USAGE_FILE_SIZE 4096
#define LOW_WATER(max) ((max) - (max) / 10)

struct usage {
        char magic[8];
        uint64_t bytes;
        uint64_t files;
};

struct entry {
        uint8_t id[SHA256_DIGEST_LEN];
        uint8_t kind;                   /* enum kind; (kind, id) is the key */
        uint64_t size;
        time_t touched;                 /* mtime as last set or seen */
        time_t used;                    /* last use known to this mount */
        bool seen;                      /* rescan mark */
        struct entry *hnext;            /* hash chain */
        struct entry *prev, *next;      /* LRU: head = most recent */
};

struct chunkcache {
        char *dir;
        size_t dir_len;
        uint64_t max_bytes;
        struct usage *usage;            /* shared mapping of <dir>/usage */

        pthread_mutex_t lock;
        struct entry **buckets;
        size_t n_buckets;               /* power of two */
        size_t n_entries;
        struct entry *head, *tail;
        uint64_t bytes;
        struct chunkcache_stats stats;
};

static size_t id_hash(uint8_t kind, const uint8_t id[SHA256_DIGEST_LEN]) {
        uint64_t h;

        memcpy(&h, id, sizeof h);       /* ids are SHA-256: already uniform */
        return (size_t) (h ^ kind);
}

static struct entry *table_find(struct chunkcache *c, uint8_t kind,
                                const uint8_t id[SHA256_DIGEST_LEN]) {
        for (struct entry *e = c->buckets[id_hash(kind, id) & (c->n_buckets - 1)]; e;
             e = e->hnext)
                if (e->kind == kind && memcmp(e->id, id, SHA256_DIGEST_LEN) == 0)
                        return e;
        return NULL;
}

static int table_grow(struct chunkcache *c) {
        size_t n = c->n_buckets * 2;
        struct entry **b;

        if (n < c->n_buckets)
                return -ENOMEM;
        b = calloc(n, sizeof *b);
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_buckets; i++) {
                struct entry *e = c->buckets[i];
                while (e) {
                        struct entry *next = e->hnext;
                        size_t k = id_hash(e->kind, e->id) & (n - 1);
                        e->hnext = b[k];
                        b[k] = e;
                        e = next;
                }
        }
        free(c->buckets);
        c->buckets = b;
        c->n_buckets = n;
        return 0;
}

static void lru_unlink(struct chunkcache *c, struct entry *e) {
        if (e->prev)
                e->prev->next = e->next;
        else
                c->head = e->next;
        if (e->next)
                e->next->prev = e->prev;
        else
                c->tail = e->prev;
        e->prev = e->next = NULL;
}

static void lru_push_front(struct chunkcache *c, struct entry *e) {
        e->prev = NULL;
        e->next = c->head;
        if (c->head)
                c->head->prev = e;
        c->head = e;
        if (!c->tail)
                c->tail = e;
}

static void lru_push_back(struct chunkcache *c, struct entry *e) {
        e->next = NULL;
        e->prev = c->tail;
        if (c->tail)
                c->tail->next = e;
        c->tail = e;
        if (!c->head)
                c->head = e;
}

/* Removes e from the table and the LRU and frees it. */
static void entry_drop(struct chunkcache *c, struct entry *e) {
        struct entry **p = &c->buckets[id_hash(e->kind, e->id) & (c->n_buckets - 1)];

        while (*p != e)
                p = &(*p)->hnext;
        *p = e->hnext;
        lru_unlink(c, e);
        c->bytes -= e->size;
        c->n_entries--;
        free(e);
}

/* Adds (or refreshes) an entry; front = most recently used. */
static int entry_add(struct chunkcache *c, uint8_t kind, const uint8_t id[SHA256_DIGEST_LEN],
                     uint64_t size, time_t touched, bool front) {
        struct entry *e = table_find(c, kind, id);
        size_t k;

        if (e) {
                c->bytes = c->bytes - e->size + size;
                e->size = size;
                e->touched = touched;
                e->used = touched;
                lru_unlink(c, e);
        } else {
                if (c->n_entries >= c->n_buckets && table_grow(c) < 0)
                        return -ENOMEM;
                e = calloc(1, sizeof *e);
                if (!e)
                        return -ENOMEM;
                memcpy(e->id, id, SHA256_DIGEST_LEN);
                e->kind = kind;
                e->size = size;
                e->touched = touched;
                e->used = touched;
                k = id_hash(kind, id) & (c->n_buckets - 1);
                e->hnext = c->buckets[k];
                c->buckets[k] = e;
                c->n_entries++;
                c->bytes += size;
        }
        if (front)
                lru_push_front(c, e);
        else
                lru_push_back(c, e);
        return 0;
}

size_t chunkcache_path_max(const struct chunkcache *c) {
        /* The longer of <dir>/<ab>/<hex> and <dir>/manifests/<hex>. */
        return c->dir_len + 1 + strlen(MANIFEST_DIR) + 1 + HASH_BASE16_LEN + 1;
}

void chunkcache_path(const struct chunkcache *c, const uint8_t id[SHA256_DIGEST_LEN], char *out) {
        char hex[HASH_BASE16_LEN + 1];

        hex_encode(id, SHA256_DIGEST_LEN, hex);
        memcpy(out, c->dir, c->dir_len);
        out[c->dir_len] = '/';
        memcpy(out + c->dir_len + 1, hex, 2);
        out[c->dir_len + 3] = '/';
        memcpy(out + c->dir_len + 4, hex, HASH_BASE16_LEN + 1);
}

bool chunkcache_has(const struct chunkcache *c, const uint8_t id[SHA256_DIGEST_LEN]) {
        char path[PATH_MAX];

        if (chunkcache_path_max(c) > sizeof path)
                return false;
        chunkcache_path(c, id, path);
        return access(path, F_OK) == 0;
}

/* Where object (kind, id) lives; out holds chunkcache_path_max(c). */
static void object_path(const struct chunkcache *c, uint8_t kind,
                        const uint8_t id[SHA256_DIGEST_LEN], char *out) {
        if (kind == KIND_CHUNK) {
                chunkcache_path(c, id, out);
                return;
        }
        memcpy(out, c->dir, c->dir_len);
        memcpy(out + c->dir_len, "/" MANIFEST_DIR "/", strlen(MANIFEST_DIR) + 2);
        hex_encode(id, SHA256_DIGEST_LEN, out + c->dir_len + strlen(MANIFEST_DIR) + 2);
}

static bool is_hex_name(const char *s) {
        size_t n = strlen(s);

        if (n != HASH_BASE16_LEN)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

struct scanned {
        uint8_t id[SHA256_DIGEST_LEN];
        uint8_t kind;
        uint64_t size;
        time_t mtime;
};

/* Private: chunks of a private cache are its content, readable by the mount
 * only. Directories DIR_MODE, files FILE_MODE, also those an older version
 * created world-readable (fixed when the directory is scanned). */
#define DIR_MODE 0700
#define FILE_MODE 0600

/* fd's mode becomes mode unless it is already. */
static int fix_mode(int fd, mode_t mode) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        if ((st.st_mode & 07777) != mode && fchmod(fd, mode) < 0)
                return -errno;
        return 0;
}

/* The directory path, created if needed (with its parents), as DIR_MODE. */
static int make_private_dir(const char *path) {
        _cleanup_close_ int fd = -1;
        int r = mkdir_parents(path, DIR_MODE);

        if (r < 0)
                return r;
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return fix_mode(fd, DIR_MODE);
}

static int scanned_cmp(const void *a, const void *b) {
        const struct scanned *x = a, *y = b;

        /* Newest first: the oldest ends up at the tail, first to go. */
        return x->mtime < y->mtime ? 1 : x->mtime > y->mtime ? -1 : 0;
}

static void remove_stale_tmp(const char *tmpdir) {
        DIR *d = opendir(tmpdir);
        struct dirent *de;
        time_t now = time(NULL);

        if (!d)
                return;
        while ((de = readdir(d))) {
                struct stat st;
                if (de->d_name[0] == '.')
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (st.st_mtime + TMP_STALE_SECONDS < now)
                        (void) unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
}

/* Adds the object files of one subdirectory (sub, as kind) to v. Chunk
 * files must sit in the subdirectory named by their first two digits. */
static int scan_sub(const char *sub, uint8_t kind, const char *prefix, struct scanned **v,
                    size_t *n, size_t *cap) {
        DIR *d = opendir(sub);
        struct dirent *de;

        if (!d)
                return errno == ENOENT ? 0 : -errno;
        if (fix_mode(dirfd(d), DIR_MODE) < 0)
                log_debug("chunk cache: cannot make %s private", sub);
        while ((de = readdir(d))) {
                struct stat st;
                if (!is_hex_name(de->d_name) || (prefix && strncmp(de->d_name, prefix, 2) != 0))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                    !S_ISREG(st.st_mode))
                        continue;
                if ((st.st_mode & 07777) != FILE_MODE &&
                    fchmodat(dirfd(d), de->d_name, FILE_MODE, 0) < 0)
                        log_debug("chunk cache: cannot make %s/%s private", sub, de->d_name);
                if (*n == *cap) {
                        size_t ncap = *cap ? *cap * 2 : 1024;
                        struct scanned *nv = reallocarray(*v, ncap, sizeof **v);
                        if (!nv) {
                                closedir(d);
                                return -ENOMEM;
                        }
                        *v = nv;
                        *cap = ncap;
                }
                (void) hex_decode(de->d_name, HASH_BASE16_LEN, (*v)[*n].id, SHA256_DIGEST_LEN);
                (*v)[*n].kind = kind;
                (*v)[*n].size = (uint64_t) st.st_size;
                (*v)[*n].mtime = st.st_mtime;
                (*n)++;
        }
        closedir(d);
        return 0;
}

/* Every chunk and kept manifest file in the directory, newest first. */
static int scan_dir(struct chunkcache *c, struct scanned **ret, size_t *ret_n) {
        _cleanup_free_ struct scanned *v = NULL;
        size_t n = 0, cap = 0, sub_max = c->dir_len + strlen(MANIFEST_DIR) + 2;
        _cleanup_free_ char *sub = malloc(sub_max);
        int r;

        if (!sub)
                return -ENOMEM;
        for (unsigned i = 0; i < 256; i++) {
                snprintf(sub, sub_max, "%s/%02x", c->dir, i);
                r = scan_sub(sub, KIND_CHUNK, sub + c->dir_len + 1, &v, &n, &cap);
                if (r < 0)
                        return r;
        }
        snprintf(sub, sub_max, "%s/" MANIFEST_DIR, c->dir);
        r = scan_sub(sub, KIND_MANIFEST, NULL, &v, &n, &cap);
        if (r < 0)
                return r;
        if (n > 0)
                qsort(v, n, sizeof *v, scanned_cmp);
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

/* ---- the shared usage counter and the directory lock ---- */

/* flock() of the cache directory, on a descriptor of its own (flock locks
 * belong to open file descriptions: threads of one mount exclude each
 * other as two mounts do). Returns the descriptor, or a negative errno. */
static int dir_lock(const struct chunkcache *c, int op) {
        int fd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        while (flock(fd, op) < 0) {
                int r = -errno;
                if (r == -EINTR)
                        continue;
                close(fd);
                return r;
        }
        return fd;
}

static uint64_t usage_bytes(const struct chunkcache *c) {
        return c->usage ? __atomic_load_n(&c->usage->bytes, __ATOMIC_SEQ_CST) : c->bytes;
}

static void usage_add(struct chunkcache *c, uint64_t bytes, uint64_t files) {
        if (!c->usage)
                return;
        __atomic_add_fetch(&c->usage->bytes, bytes, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&c->usage->files, files, __ATOMIC_SEQ_CST);
}

static void sub_clamped(uint64_t *p, uint64_t v) {
        uint64_t old = __atomic_load_n(p, __ATOMIC_SEQ_CST);

        /* A counter short after a crash must not wrap: 0 is the floor. */
        while (!__atomic_compare_exchange_n(p, &old, old > v ? old - v : 0, false,
                                            __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
                ;
}

static void usage_sub(struct chunkcache *c, uint64_t bytes, uint64_t files) {
        if (!c->usage)
                return;
        sub_clamped(&c->usage->bytes, bytes);
        sub_clamped(&c->usage->files, files);
}

/* Maps <dir>/usage (creating it). Under the exclusive lock. */
static int usage_map(struct chunkcache *c) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;
        void *p;

        if (asprintf(&path, "%s/" USAGE_FILE, c->dir) < 0) {
                path = NULL;
                return -ENOMEM;
        }
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, FILE_MODE);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if ((st.st_mode & 07777) != FILE_MODE && fchmod(fd, FILE_MODE) < 0)
                return -errno;
        if (st.st_size != USAGE_FILE_SIZE && ftruncate(fd, USAGE_FILE_SIZE) < 0)
                return -errno;
        p = mmap(NULL, USAGE_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
                return -errno;
        c->usage = p;
        return 0;
}

/* ---- eviction ---- */

/* Picks the least recently used entries until this mount's view of the
 * directory (c->bytes, exact right after a rescan) is at most target, and
 * returns them as a list linked by next; the caller unlinks their files
 * outside the lock. keep (may be NULL) is never chosen. */
static struct entry *evict_pick(struct chunkcache *c, const struct entry *keep, uint64_t target) {
        struct entry *victims = NULL;

        while (c->bytes > target && c->tail && c->tail != keep) {
                struct entry *e = c->tail;
                struct entry **p = &c->buckets[id_hash(e->kind, e->id) & (c->n_buckets - 1)];

                while (*p != e)
                        p = &(*p)->hnext;
                *p = e->hnext;
                lru_unlink(c, e);
                c->bytes -= e->size;
                c->n_entries--;
                c->stats.evicted++;
                e->next = victims;
                victims = e;
        }
        return victims;
}

/* Unlinks the victims' files (another mount may have removed one already). */
static void evict_files(struct chunkcache *c, struct entry *victims) {
        _cleanup_free_ char *path = malloc(chunkcache_path_max(c));

        while (victims) {
                struct entry *e = victims;
                victims = e->next;
                if (path) {
                        object_path(c, e->kind, e->id, path);
                        (void) unlink(path);
                }
                free(e);
        }
}

/* Under the exclusive directory lock: learns every file in the directory
 * (entries whose files are gone are dropped; files other mounts stored join
 * the LRU by their mtime, among this mount's entries by their last use),
 * evicts down to LOW_WATER when over the bound (never keep_id), and sets
 * the shared counter to the exact total. */
static int rescan(struct chunkcache *c, uint8_t keep_kind, const uint8_t *keep_id) {
        _cleanup_free_ struct scanned *v = NULL;
        struct entry *fresh = NULL, **fresh_end = &fresh, *old, *victims = NULL;
        uint64_t bytes, files;
        size_t n = 0;
        int r;

        r = scan_dir(c, &v, &n);
        if (r < 0)
                return r;

        pthread_mutex_lock(&c->lock);
        for (struct entry *e = c->head; e; e = e->next)
                e->seen = false;
        for (size_t i = 0; i < n; i++) {
                struct entry *e = table_find(c, v[i].kind, v[i].id);
                if (e) {
                        c->bytes = c->bytes - e->size + v[i].size;
                        e->size = v[i].size;
                        e->seen = true;
                        continue;
                }
                if (c->n_entries >= c->n_buckets && table_grow(c) < 0) {
                        r = -ENOMEM;
                        break;
                }
                e = calloc(1, sizeof *e);
                if (!e) {
                        r = -ENOMEM;
                        break;
                }
                memcpy(e->id, v[i].id, SHA256_DIGEST_LEN);
                e->kind = v[i].kind;
                e->size = v[i].size;
                e->touched = e->used = v[i].mtime;
                e->seen = true;
                size_t k = id_hash(e->kind, e->id) & (c->n_buckets - 1);
                e->hnext = c->buckets[k];
                c->buckets[k] = e;
                c->n_entries++;
                c->bytes += e->size;
                *fresh_end = e;
                fresh_end = &e->next;
        }
        if (r < 0) {
                /* Keep what is known; link the new entries in at the back. */
                while (fresh) {
                        struct entry *e = fresh;
                        fresh = e->next;
                        lru_push_back(c, e);
                }
                pthread_mutex_unlock(&c->lock);
                return r;
        }
        /* Entries whose files are gone. */
        for (struct entry *e = c->head, *next; e; e = next) {
                next = e->next;
                if (!e->seen)
                        entry_drop(c, e);
        }
        /* Merge: both lists are ordered by last use, newest first. */
        old = c->head;
        c->head = c->tail = NULL;
        while (old || fresh) {
                struct entry *e;
                if (old && (!fresh || old->used >= fresh->used)) {
                        e = old;
                        old = old->next;
                } else {
                        e = fresh;
                        fresh = fresh->next;
                }
                lru_push_back(c, e);
        }
        if (c->max_bytes > 0 && c->bytes > c->max_bytes)
                victims = evict_pick(c, keep_id ? table_find(c, keep_kind, keep_id) : NULL,
                                     LOW_WATER(c->max_bytes));
        bytes = c->bytes;
        files = c->n_entries;
        pthread_mutex_unlock(&c->lock);

        evict_files(c, victims);
        if (c->usage) {
                /* Exact: nobody changes the directory while the exclusive
                 * lock is held. (A victim that failed to unlink is
                 * uncounted until the next rescan finds it again.) */
                memcpy(c->usage->magic, USAGE_MAGIC, sizeof c->usage->magic);
                __atomic_store_n(&c->usage->bytes, bytes, __ATOMIC_SEQ_CST);
                __atomic_store_n(&c->usage->files, files, __ATOMIC_SEQ_CST);
        }
        return 0;
}

/* A store left the directory over the bound: rescan and evict, unless
 * another thread or mount did it meanwhile. */
static void enforce_bound(struct chunkcache *c, uint8_t keep_kind, const uint8_t *keep_id) {
        int fd, r;

        fd = dir_lock(c, LOCK_EX);
        if (fd < 0) {
                log_debug_errno(fd, "chunk cache: cannot lock %s", c->dir);
                return;
        }
        if (usage_bytes(c) > c->max_bytes) {
                r = rescan(c, keep_kind, keep_id);
                if (r < 0)
                        log_debug_errno(r, "chunk cache: rescan of %s failed", c->dir);
        }
        close(fd);
}

int chunkcache_open(const char *dir, uint64_t max_bytes, struct chunkcache **ret) {
        struct chunkcache *c;
        _cleanup_free_ char *tmp = NULL, *mdir = NULL;
        size_t len;
        int r, fd;

        if (!dir || dir[0] == '\0')
                return -EINVAL;
        len = strlen(dir);
        while (len > 1 && dir[len - 1] == '/')
                len--;
        if (len > 4000)
                return -ENAMETOOLONG;
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        pthread_mutex_init(&c->lock, NULL);
        c->dir = strndup(dir, len);
        c->dir_len = len;
        c->max_bytes = max_bytes;
        c->n_buckets = 1024;
        c->buckets = calloc(c->n_buckets, sizeof *c->buckets);
        if (!c->dir || !c->buckets) {
                chunkcache_free(c);
                return -ENOMEM;
        }
        if (asprintf(&tmp, "%s/tmp", c->dir) < 0) {
                tmp = NULL;
                chunkcache_free(c);
                return -ENOMEM;
        }
        if (asprintf(&mdir, "%s/" MANIFEST_DIR, c->dir) < 0) {
                mdir = NULL;
                chunkcache_free(c);
                return -ENOMEM;
        }
        /* The cache directory itself decides who can read the chunks. */
        r = make_private_dir(c->dir);
        if (r >= 0)
                r = make_private_dir(tmp);
        if (r >= 0)
                r = make_private_dir(mdir);
        if (r < 0) {
                chunkcache_free(c);
                return r;
        }
        remove_stale_tmp(tmp);

        fd = dir_lock(c, LOCK_EX);
        if (fd < 0) {
                chunkcache_free(c);
                return fd;
        }
        r = usage_map(c);
        if (r >= 0)
                r = rescan(c, KIND_CHUNK, NULL);
        close(fd);
        if (r < 0) {
                chunkcache_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

struct chunkcache *chunkcache_free(struct chunkcache *c) {
        if (!c)
                return NULL;
        if (c->buckets)
                for (size_t i = 0; i < c->n_buckets; i++) {
                        struct entry *e = c->buckets[i];
                        while (e) {
                                struct entry *next = e->hnext;
                                free(e);
                                e = next;
                        }
                }
        if (c->usage)
                (void) munmap(c->usage, USAGE_FILE_SIZE);
        free(c->buckets);
        free(c->dir);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}

static int read_all(int fd, void *p, size_t n) {
        size_t done = 0;

        while (done < n) {
                ssize_t k = pread(fd, (uint8_t *) p + done, n - done, (off_t) done);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EBADMSG; /* shrank under us: treat as corrupt */
                done += (size_t) k;
        }
        return 0;
}

/* Deletes the file at path if it is still the one described by st,
 * accounting for it in the shared counter. */
static void unlink_if_same(struct chunkcache *c, const char *path, const struct stat *st) {
        struct stat now;
        int fd = dir_lock(c, LOCK_SH);

        if (stat(path, &now) == 0 && now.st_ino == st->st_ino && now.st_dev == st->st_dev &&
            unlink(path) == 0 && fd >= 0)
                usage_sub(c, (uint64_t) now.st_size, 1);
        if (fd >= 0)
                close(fd);
}

static void forget(struct chunkcache *c, uint8_t kind, const uint8_t id[SHA256_DIGEST_LEN]) {
        struct entry *e;

        pthread_mutex_lock(&c->lock);
        e = table_find(c, kind, id);
        if (e)
                entry_drop(c, e);
        pthread_mutex_unlock(&c->lock);
}

/* A verified hit on the file fd (st): moves it to the front of the LRU and
 * bumps its mtime at most once per TOUCH_INTERVAL_SECONDS. */
static void note_hit(struct chunkcache *c, uint8_t kind, const uint8_t id[SHA256_DIGEST_LEN],
                     int fd, const struct stat *st) {
        time_t now = time(NULL);
        bool touch = false;
        struct entry *e;

        pthread_mutex_lock(&c->lock);
        if (kind == KIND_CHUNK)
                c->stats.hits++;
        else
                c->stats.manifest_hits++;
        e = table_find(c, kind, id);
        if (e) {
                lru_unlink(c, e);
                lru_push_front(c, e);
                e->used = now;
                if (e->touched + TOUCH_INTERVAL_SECONDS < now) {
                        e->touched = now;
                        touch = true;
                }
        } else {
                /* Stored by another mount (and counted by it): track its
                 * use from now on. */
                (void) entry_add(c, kind, id, (uint64_t) st->st_size, now, true);
                touch = st->st_mtime + TOUCH_INTERVAL_SECONDS < now;
        }
        pthread_mutex_unlock(&c->lock);
        if (touch)
                (void) futimens(fd, NULL);
}

int chunkcache_get(struct chunkcache *c, struct chunkcodec *codec,
                   const uint8_t id[SHA256_DIGEST_LEN], size_t expected_len, void *out,
                   size_t cap, size_t *ret_len) {
        _cleanup_free_ char *path = malloc(chunkcache_path_max(c));
        _cleanup_free_ uint8_t *frame = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;
        size_t len = 0;
        bool corrupt = false;
        int r;

        if (!path)
                return -ENOMEM;
        chunkcache_path(c, id, path);
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
                r = -errno;
                if (r != -ENOENT)
                        return r;
                forget(c, KIND_CHUNK, id);
                pthread_mutex_lock(&c->lock);
                c->stats.misses++;
                pthread_mutex_unlock(&c->lock);
                return 0;
        }
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t) st.st_size > FRAME_MAX)
                corrupt = true;
        else {
                frame = malloc((size_t) st.st_size);
                if (!frame)
                        return -ENOMEM;
                r = read_all(fd, frame, (size_t) st.st_size);
                if (r == -EBADMSG)
                        corrupt = true;
                else if (r < 0)
                        return r;
                else {
                        r = chunkcodec_decode(codec, frame, (size_t) st.st_size, id,
                                              expected_len ? expected_len : cap, out, cap, &len);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0 || (expected_len && len != expected_len))
                                corrupt = true;
                }
        }
        if (corrupt) {
                log_debug("chunk cache: %s does not verify, deleting it", path);
                unlink_if_same(c, path, &st);
                forget(c, KIND_CHUNK, id);
                pthread_mutex_lock(&c->lock);
                c->stats.corrupt++;
                c->stats.misses++;
                pthread_mutex_unlock(&c->lock);
                return 0;
        }
        note_hit(c, KIND_CHUNK, id, fd, &st);
        *ret_len = len;
        return 1;
}

static int write_all(int fd, const void *p, size_t n) {
        size_t done = 0;

        while (done < n) {
                ssize_t k = write(fd, (const uint8_t *) p + done, n - done);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                done += (size_t) k;
        }
        return 0;
}

/* Moves tmp to path unless path exists: 1 moved, 0 present already. */
static int move_into_place(const char *tmp, const char *path) {
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
                return 1;
        if (errno == EEXIST)
                return 0;
        if (errno != EINVAL && errno != ENOSYS)
                return -errno;
        /* A file system without RENAME_NOREPLACE: a hard link fails on an
         * existing name as well. */
        if (link(tmp, path) == 0)
                return 1;
        return errno == EEXIST ? 0 : -errno;
}

/* Stores object (kind, id) with the bytes of parts[0..n_parts) unless it is
 * there already (see chunkcache_put). */
static int put_object(struct chunkcache *c, uint8_t kind, const uint8_t id[SHA256_DIGEST_LEN],
                      const struct iovec *parts, size_t n_parts) {
        _cleanup_free_ char *path = malloc(chunkcache_path_max(c));
        _cleanup_free_ char *tmp = NULL;
        char hex[HASH_BASE16_LEN + 1];
        bool over = false;
        uint64_t n = 0;
        int fd, lock_fd, r = 0;

        if (!path)
                return -ENOMEM;
        object_path(c, kind, id, path);
        for (size_t i = 0; i < n_parts; i++)
                n += parts[i].iov_len;

        pthread_mutex_lock(&c->lock);
        bool known = table_find(c, kind, id) != NULL;
        pthread_mutex_unlock(&c->lock);
        if (known && access(path, F_OK) == 0)
                return 0;

        hex_encode(id, SHA256_DIGEST_LEN, hex);
        if (asprintf(&tmp, "%s/tmp/%s.XXXXXX", c->dir, hex) < 0) {
                tmp = NULL;
                return -ENOMEM;
        }
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
                /* Someone removed the tmp directory: recreate it. */
                char *slash = strrchr(tmp, '/');
                *slash = '\0';
                r = mkdir_parents(tmp, DIR_MODE);
                *slash = '/';
                if (r < 0)
                        return r;
                memcpy(tmp + strlen(tmp) - 6, "XXXXXX", 6);
                fd = mkostemp(tmp, O_CLOEXEC);
        }
        if (fd < 0)
                return -errno;
        for (size_t i = 0; i < n_parts && r == 0; i++)
                r = write_all(fd, parts[i].iov_base, parts[i].iov_len);
        if (r == 0 && fchmod(fd, FILE_MODE) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r < 0) {
                (void) unlink(tmp);
                return r;
        }

        /* The file appears and is counted together (see the top). */
        lock_fd = dir_lock(c, LOCK_SH);
        if (lock_fd < 0) {
                (void) unlink(tmp);
                return lock_fd;
        }
        r = move_into_place(tmp, path);
        if (r == -ENOENT) {
                char *slash = strrchr(path, '/');
                *slash = '\0';
                r = mkdir_parents(path, DIR_MODE);
                *slash = '/';
                if (r == 0)
                        r = move_into_place(tmp, path);
        }
        if (r > 0) {
                usage_add(c, n, 1);
                over = c->max_bytes > 0 && usage_bytes(c) > c->max_bytes;
        }
        close(lock_fd);
        (void) unlink(tmp); /* still there unless renamed */
        if (r < 0)
                return r;

        pthread_mutex_lock(&c->lock);
        if (r > 0) {
                if (kind == KIND_CHUNK)
                        c->stats.stored++;
                else
                        c->stats.manifests_stored++;
        }
        r = entry_add(c, kind, id, n, time(NULL), true);
        pthread_mutex_unlock(&c->lock);
        if (over)
                enforce_bound(c, kind, id);
        return r;
}

int chunkcache_put(struct chunkcache *c, const uint8_t id[SHA256_DIGEST_LEN], const void *frame,
                   size_t n) {
        struct iovec part = { (void *) frame, n };

        if (n == 0 || n > FRAME_MAX)
                return -EINVAL;
        return put_object(c, KIND_CHUNK, id, &part, 1);
}

static int remove_object(struct chunkcache *c, uint8_t kind, const uint8_t id[SHA256_DIGEST_LEN]) {
        _cleanup_free_ char *path = malloc(chunkcache_path_max(c));
        struct stat st;
        int fd, r = 0;

        if (!path)
                return -ENOMEM;
        object_path(c, kind, id, path);
        forget(c, kind, id);
        fd = dir_lock(c, LOCK_SH);
        if (fd < 0)
                return fd;
        if (lstat(path, &st) == 0 && unlink(path) == 0)
                usage_sub(c, (uint64_t) st.st_size, 1);
        else if (errno != ENOENT)
                r = -errno;
        close(fd);
        return r;
}

int chunkcache_remove(struct chunkcache *c, const uint8_t id[SHA256_DIGEST_LEN]) {
        return remove_object(c, KIND_CHUNK, id);
}

/* ---- kept manifests ---- */

static void put_le32(uint8_t *p, uint32_t v) {
        for (unsigned i = 0; i < 4; i++)
                p[i] = (uint8_t) (v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v) {
        for (unsigned i = 0; i < 8; i++)
                p[i] = (uint8_t) (v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p) {
        uint32_t v = 0;

        for (unsigned i = 0; i < 4; i++)
                v |= (uint32_t) p[i] << (8 * i);
        return v;
}

static uint64_t get_le64(const uint8_t *p) {
        uint64_t v = 0;

        for (unsigned i = 0; i < 8; i++)
                v |= (uint64_t) p[i] << (8 * i);
        return v;
}

/* Printable ASCII; single spaces between signatures (a key rotation's two). */
static bool sig_text_ok(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (s[i] < ' ' || s[i] > '~' ||
                    (s[i] == ' ' && (i == 0 || i + 1 == n || s[i - 1] == ' ')))
                        return false;
        return true;
}

/* The digest of a kept manifest file: header bytes 0..23, sig, body. */
static int kept_digest(const uint8_t *head, const char *sig, size_t sig_len, const void *body,
                       size_t n, uint8_t out[SHA256_DIGEST_LEN]) {
        struct sha256 h;
        int r = sha256_init(&h);

        if (r < 0)
                return r;
        r = sha256_update(&h, head, KEPT_DIGESTED);
        if (r >= 0)
                r = sha256_update(&h, sig, sig_len);
        if (r >= 0)
                r = sha256_update(&h, body, n);
        if (r >= 0)
                r = sha256_final(&h, out);
        sha256_done(&h);
        return r;
}

int chunkcache_manifest_put(struct chunkcache *c, const uint8_t key[SHA256_DIGEST_LEN],
                            const char *sig, const void *body, size_t n) {
        uint8_t head[KEPT_HEADER_SIZE] = { 0 };
        size_t sig_len = sig ? strlen(sig) : 0;
        struct iovec parts[3];
        int r;

        if (n == 0 || n > MANIFEST_MAX_SIZE || sig_len > CHUNKCACHE_SIG_MAX ||
            !sig_text_ok(sig, sig_len))
                return -EINVAL;
        memcpy(head, KEPT_MAGIC, 8);
        put_le32(head + 8, (uint32_t) sig_len);
        put_le64(head + 16, n);
        r = kept_digest(head, sig, sig_len, body, n, head + KEPT_DIGESTED);
        if (r < 0)
                return r;
        parts[0] = (struct iovec) { head, sizeof head };
        parts[1] = (struct iovec) { (void *) (sig ? sig : ""), sig_len };
        parts[2] = (struct iovec) { (void *) body, n };
        return put_object(c, KIND_MANIFEST, key, parts, 3);
}

/* Whether data (a whole kept manifest file of size bytes) is intact; sets
 * the signature and body spans. */
static bool kept_parse(const uint8_t *data, uint64_t size, size_t *ret_sig_len,
                       size_t *ret_body_len) {
        uint8_t digest[SHA256_DIGEST_LEN];
        uint32_t sig_len;
        uint64_t n;

        if (size < KEPT_HEADER_SIZE || memcmp(data, KEPT_MAGIC, 8) != 0)
                return false;
        sig_len = get_le32(data + 8);
        n = get_le64(data + 16);
        if (get_le32(data + 12) != 0 || sig_len > CHUNKCACHE_SIG_MAX || n == 0 ||
            n > MANIFEST_MAX_SIZE || size != KEPT_HEADER_SIZE + sig_len + n)
                return false;
        if (!sig_text_ok((const char *) data + KEPT_HEADER_SIZE, sig_len))
                return false;
        if (kept_digest(data, (const char *) data + KEPT_HEADER_SIZE, sig_len,
                        data + KEPT_HEADER_SIZE + sig_len, n, digest) < 0 ||
            memcmp(digest, data + KEPT_DIGESTED, SHA256_DIGEST_LEN) != 0)
                return false;
        *ret_sig_len = sig_len;
        *ret_body_len = (size_t) n;
        return true;
}

int chunkcache_manifest_get(struct chunkcache *c, const uint8_t key[SHA256_DIGEST_LEN],
                            char **ret_sig, uint8_t **ret_body, size_t *ret_len) {
        _cleanup_free_ char *path = malloc(chunkcache_path_max(c));
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ char *sig = NULL;
        _cleanup_free_ uint8_t *body = NULL;
        _cleanup_close_ int fd = -1;
        size_t sig_len = 0, n = 0;
        struct stat st;
        bool intact = false;
        int r;

        if (!path)
                return -ENOMEM;
        object_path(c, KIND_MANIFEST, key, path);
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
                r = -errno;
                if (r != -ENOENT)
                        return r;
                forget(c, KIND_MANIFEST, key);
                pthread_mutex_lock(&c->lock);
                c->stats.manifest_misses++;
                pthread_mutex_unlock(&c->lock);
                return 0;
        }
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISREG(st.st_mode) && st.st_size >= KEPT_HEADER_SIZE &&
            (uint64_t) st.st_size <= KEPT_FILE_MAX) {
                data = malloc((size_t) st.st_size);
                if (!data)
                        return -ENOMEM;
                r = read_all(fd, data, (size_t) st.st_size);
                if (r < 0 && r != -EBADMSG)
                        return r;
                intact = r == 0 && kept_parse(data, (uint64_t) st.st_size, &sig_len, &n);
        }
        if (!intact) {
                log_debug("chunk cache: kept manifest %s is damaged, deleting it", path);
                unlink_if_same(c, path, &st);
                forget(c, KIND_MANIFEST, key);
                pthread_mutex_lock(&c->lock);
                c->stats.manifest_damaged++;
                pthread_mutex_unlock(&c->lock);
                return -EBADMSG;
        }
        sig = strndup((const char *) data + KEPT_HEADER_SIZE, sig_len);
        if (!sig)
                return -ENOMEM;
        /* The body in place of the file's bytes: no second copy. */
        memmove(data, data + KEPT_HEADER_SIZE + sig_len, n);
        body = TAKE_PTR(data);
        note_hit(c, KIND_MANIFEST, key, fd, &st);
        *ret_sig = TAKE_PTR(sig);
        *ret_body = TAKE_PTR(body);
        *ret_len = n;
        return 1;
}

int chunkcache_manifest_remove(struct chunkcache *c, const uint8_t key[SHA256_DIGEST_LEN]) {
        return remove_object(c, KIND_MANIFEST, key);
}

int chunkcache_manifest_discard(struct chunkcache *c, const uint8_t key[SHA256_DIGEST_LEN]) {
        pthread_mutex_lock(&c->lock);
        c->stats.manifest_damaged++;
        pthread_mutex_unlock(&c->lock);
        return remove_object(c, KIND_MANIFEST, key);
}

void chunkcache_get_stats(struct chunkcache *c, struct chunkcache_stats *ret) {
        pthread_mutex_lock(&c->lock);
        *ret = c->stats;
        ret->files = c->n_entries;
        ret->bytes = c->bytes;
        pthread_mutex_unlock(&c->lock);
        if (c->usage) {
                ret->files = __atomic_load_n(&c->usage->files, __ATOMIC_SEQ_CST);
                ret->bytes = __atomic_load_n(&c->usage->bytes, __ATOMIC_SEQ_CST);
        }
}
