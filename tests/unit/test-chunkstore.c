/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for the local chunk store: round trips, idempotence, concurrent
 * writers of one id, write-once objects (-EEXIST, never replaced), atomic writes (no temporary files left behind, stale
 * ones removed at open), corrupt objects reported, the on-disk layout. */
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>

#include "test.h"
#include "trove/chunkcodec.h"
#include "trove/chunkstore.h"

struct chunk {
        uint8_t id[SHA256_DIGEST_LEN];
        char hex[2 * SHA256_DIGEST_LEN + 1];
        uint8_t *frame;
        size_t frame_len;
};

/* The same content at another zstd level is another frame under the same id. */
static void make_chunk_level(struct chunk *c, size_t size, uint64_t seed, int level) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
        uint8_t *data = malloc(size ? size : 1);

        CHECK(data);
        test_fill(data, size, seed);
        /* Half of it repetitive so it compresses. */
        memset(data, 'a', size / 2);
        CHECK_OK(sha256_buf(data, size, c->id));
        hex_encode(c->id, sizeof c->id, c->hex);
        CHECK_OK(chunkcodec_new(level, &codec));
        c->frame = malloc(chunkcodec_bound(size));
        CHECK(c->frame);
        CHECK_OK(chunkcodec_encode(codec, data, size, c->frame, chunkcodec_bound(size),
                                   &c->frame_len));
        free(data);
}

static void make_chunk(struct chunk *c, size_t size, uint64_t seed) {
        make_chunk_level(c, size, seed, CHUNK_LEVEL_DEFAULT);
}

static void chunk_done(struct chunk *c) {
        free(c->frame);
}

static char root[256];
static int tmp_files;
static int files;

static int count_visit(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        const char *base = path + ftw->base;
        if (flag == FTW_F) {
                files++;
                if (startswith(base, ".tmp-"))
                        tmp_files++;
        }
        return 0;
}

static void count_files(void) {
        tmp_files = files = 0;
        CHECK(nftw(root, count_visit, 16, FTW_PHYS) == 0);
}

static int rm_visit(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

struct collected {
        uint8_t ids[16][SHA256_DIGEST_LEN];
        uint64_t sizes[16];
        size_t n;
};

static int collect(const uint8_t id[SHA256_DIGEST_LEN], uint64_t size, void *userdata) {
        struct collected *c = userdata;
        if (c->n >= 16)
                return -E2BIG;
        memcpy(c->ids[c->n], id, SHA256_DIGEST_LEN);
        c->sizes[c->n++] = size;
        return 0;
}

static bool collected_has(const struct collected *c, const struct chunk *ch) {
        for (size_t i = 0; i < c->n; i++)
                if (memcmp(c->ids[i], ch->id, SHA256_DIGEST_LEN) == 0 &&
                    c->sizes[i] == ch->frame_len)
                        return true;
        return false;
}

static int stop_after_one(const uint8_t id[SHA256_DIGEST_LEN], uint64_t size, void *userdata) {
        (*(int *) userdata)++;
        return 42;
}

static void test_roundtrip(void) {
        _cleanup_(chunkstore_freep) struct chunkstore *cs = NULL;
        struct buf out = BUF_INIT(1 << 20);
        struct chunk a, b, c;
        struct collected col = {};
        char path[512];
        uint64_t size;
        struct stat st;
        int calls = 0;

        make_chunk(&a, 100000, 1);
        make_chunk(&b, 1, 2);
        make_chunk(&c, 0, 3);

        CHECK_OK(chunkstore_local_open(root, &cs));
        CHECK_STREQ(chunkstore_backend(cs), "local");

        CHECK_RC(chunkstore_exists(cs, a.id, &size), 0);
        CHECK_RC(chunkstore_get(cs, a.id, 0, &out), -ENOENT);

        CHECK_OK(chunkstore_put(cs, a.id, a.frame, a.frame_len));
        CHECK_RC(chunkstore_put(cs, a.id, a.frame, a.frame_len), -EEXIST); /* write-once */
        CHECK_OK(chunkstore_put(cs, b.id, b.frame, b.frame_len));
        CHECK_OK(chunkstore_put(cs, c.id, c.frame, c.frame_len));

        /* The documented layout: <root>/chunks/ab/cd/<64 hex>. */
        snprintf(path, sizeof path, "%s/chunks/%.2s/%.2s/%s", root, a.hex, a.hex + 2, a.hex);
        CHECK(stat(path, &st) == 0);
        CHECK_EQ_U64(st.st_size, a.frame_len);

        CHECK_RC(chunkstore_exists(cs, a.id, &size), 1);
        CHECK_EQ_U64(size, a.frame_len);
        CHECK_OK(chunkstore_get(cs, a.id, CHUNKSTORE_GET_VERIFY, &out));
        CHECK_EQ_U64(out.len, a.frame_len);
        CHECK_MEMEQ(out.data, a.frame, a.frame_len);
        CHECK_OK(chunkstore_get(cs, c.id, CHUNKSTORE_GET_VERIFY, &out));
        CHECK_EQ_U64(out.len, c.frame_len);

        /* A buffer too small for the object: refused, not truncated. */
        struct buf small = BUF_INIT(100);
        CHECK_RC(chunkstore_get(cs, a.id, 0, &small), -EFBIG);
        buf_free(&small);

        /* Garbage is not stored. */
        CHECK_RC(chunkstore_put(cs, a.id, "not a zstd frame", 16), -EBADMSG);

        CHECK_OK(chunkstore_list(cs, collect, &col));
        CHECK_EQ_U64(col.n, 3);
        CHECK(collected_has(&col, &a) && collected_has(&col, &b) && collected_has(&col, &c));
        CHECK_RC(chunkstore_list(cs, stop_after_one, &calls), 42);
        CHECK_EQ_U64(calls, 1);

        CHECK_OK(chunkstore_delete(cs, b.id));
        CHECK_OK(chunkstore_delete(cs, b.id)); /* gone already: still fine */
        CHECK_RC(chunkstore_exists(cs, b.id, NULL), 0);
        CHECK_RC(chunkstore_get(cs, b.id, 0, &out), -ENOENT);
        col.n = 0;
        CHECK_OK(chunkstore_list(cs, collect, &col));
        CHECK_EQ_U64(col.n, 2);
        CHECK(!collected_has(&col, &b));

        char *url = NULL;
        CHECK_RC(chunkstore_presign_get(cs, a.id, 60, &url), -EOPNOTSUPP);

        count_files();
        CHECK_EQ_U64(tmp_files, 0);

        buf_free(&out);
        chunk_done(&a);
        chunk_done(&b);
        chunk_done(&c);
}

/* Batched durability: NOSYNC puts are visible at once under their final
 * name (no temporary file left), whole, and chunkstore_sync() succeeds. */
static void test_nosync_batch(void) {
        _cleanup_(chunkstore_freep) struct chunkstore *cs = NULL;
        struct buf out = BUF_INIT(1 << 20);
        struct chunk ch[8];

        CHECK_OK(chunkstore_local_open(root, &cs));
        for (unsigned i = 0; i < ELEMENTSOF(ch); i++) {
                make_chunk(&ch[i], 1000 + 5000 * i, 100 + i);
                CHECK_OK(chunkstore_put_flags(cs, ch[i].id, ch[i].frame, ch[i].frame_len, CHUNKSTORE_PUT_NOSYNC));
        }
        CHECK_OK(chunkstore_sync(cs));
        for (unsigned i = 0; i < ELEMENTSOF(ch); i++) {
                CHECK_OK(chunkstore_get(cs, ch[i].id, CHUNKSTORE_GET_VERIFY, &out));
                CHECK_EQ_U64(out.len, ch[i].frame_len);
                CHECK_MEMEQ(out.data, ch[i].frame, ch[i].frame_len);
        }
        /* A bad frame is refused with or without the flag. */
        CHECK_RC(chunkstore_put_flags(cs, ch[0].id, "garbage", 7, CHUNKSTORE_PUT_NOSYNC), -EBADMSG);
        buf_free(&out);
        for (unsigned i = 0; i < ELEMENTSOF(ch); i++)
                free(ch[i].frame);
}

static void test_exclusive_and_stale_tmp(void) {
        struct chunkstore *cs = NULL, *cs2 = NULL;
        struct chunk a;
        char path[512];
        int fd;

        make_chunk(&a, 5000, 10);
        CHECK_OK(chunkstore_local_open(root, &cs));
        /* One process per root: the second open is refused. */
        CHECK_RC(chunkstore_local_open(root, &cs2), -EBUSY);
        CHECK(cs2 == NULL);
        CHECK_OK(chunkstore_put(cs, a.id, a.frame, a.frame_len));
        chunkstore_free(cs);

        /* A crash mid-put leaves a temporary file; the next open removes it,
         * and the half-written object never shows up. */
        snprintf(path, sizeof path, "%s/chunks/%.2s/%.2s/.tmp-%s.0123456789abcdef", root, a.hex,
                 a.hex + 2, a.hex);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        CHECK(fd >= 0);
        CHECK(write(fd, a.frame, 10) == 10);
        close(fd);
        count_files();
        CHECK_EQ_U64(tmp_files, 1);

        CHECK_OK(chunkstore_local_open(root, &cs));
        count_files();
        CHECK_EQ_U64(tmp_files, 0);
        chunkstore_free(cs);
        chunk_done(&a);
}

static void test_corrupt(void) {
        _cleanup_(chunkstore_freep) struct chunkstore *cs = NULL;
        struct buf out = BUF_INIT(1 << 20);
        struct chunk a, b;
        char path[512];
        int fd;

        make_chunk(&a, 50000, 20);
        make_chunk(&b, 50000, 21);
        CHECK_OK(chunkstore_local_open(root, &cs));
        CHECK_OK(chunkstore_put(cs, a.id, a.frame, a.frame_len));
        CHECK_OK(chunkstore_put(cs, b.id, b.frame, b.frame_len));

        /* Truncated: the header still parses, so only the verifying read
         * can tell; it must. */
        snprintf(path, sizeof path, "%s/chunks/%.2s/%.2s/%s", root, a.hex, a.hex + 2, a.hex);
        CHECK(truncate(path, (off_t) a.frame_len - 7) == 0);
        CHECK_RC(chunkstore_get(cs, a.id, CHUNKSTORE_GET_VERIFY, &out), -EBADMSG);
        CHECK_EQ_U64(out.len, 0);

        /* Overwritten with garbage: even a plain read refuses it. */
        fd = open(path, O_WRONLY | O_TRUNC);
        CHECK(fd >= 0);
        CHECK(write(fd, "garbage garbage garbage", 23) == 23);
        close(fd);
        CHECK_RC(chunkstore_get(cs, a.id, 0, &out), -EBADMSG);

        /* Another chunk's frame under this id: valid zstd, wrong content. */
        fd = open(path, O_WRONLY | O_TRUNC);
        CHECK(fd >= 0);
        CHECK(write(fd, b.frame, b.frame_len) == (ssize_t) b.frame_len);
        close(fd);
        CHECK_RC(chunkstore_get(cs, a.id, CHUNKSTORE_GET_VERIFY, &out), -EBADMSG);

        /* Empty file. */
        CHECK(truncate(path, 0) == 0);
        CHECK_RC(chunkstore_get(cs, a.id, 0, &out), -EBADMSG);

        /* b is untouched. */
        CHECK_OK(chunkstore_get(cs, b.id, CHUNKSTORE_GET_VERIFY, &out));
        CHECK_MEMEQ(out.data, b.frame, b.frame_len);

        buf_free(&out);
        chunk_done(&a);
        chunk_done(&b);
}

#define THREADS 8
#define ROUNDS 20

struct worker {
        struct chunkstore *cs;
        struct chunk *chunks; /* ROUNDS of them, shared by all threads */
        int failures;
        int stored; /* puts that returned 0 */
};

static void *worker_main(void *arg) {
        struct worker *w = arg;
        struct buf out = BUF_INIT(1 << 20);

        for (int i = 0; i < ROUNDS; i++) {
                struct chunk *c = &w->chunks[i];
                int p = chunkstore_put(w->cs, c->id, c->frame, c->frame_len);
                if (p == 0)
                        w->stored++;
                else if (p != -EEXIST)
                        w->failures++;
                /* Whenever it is visible, it is complete. */
                int r = chunkstore_get(w->cs, c->id, CHUNKSTORE_GET_VERIFY, &out);
                if (r != 0 || out.len != c->frame_len)
                        w->failures++;
        }
        buf_free(&out);
        return NULL;
}

static void test_concurrent_puts(void) {
        _cleanup_(chunkstore_freep) struct chunkstore *cs = NULL;
        struct chunk chunks[ROUNDS];
        struct worker w[THREADS];
        pthread_t t[THREADS];
        struct collected col = {};
        int before;

        count_files();
        before = files;
        for (int i = 0; i < ROUNDS; i++)
                make_chunk(&chunks[i], 20000 + (size_t) i * 1000, 100 + (uint64_t) i);
        CHECK_OK(chunkstore_local_open(root, &cs));
        for (int i = 0; i < THREADS; i++) {
                w[i] = (struct worker){ .cs = cs, .chunks = chunks };
                CHECK(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0);
        }
        int stored = 0;
        for (int i = 0; i < THREADS; i++) {
                pthread_join(t[i], NULL);
                CHECK_EQ_U64(w[i].failures, 0);
                stored += w[i].stored;
        }
        /* Exactly one put per id stored it; the others got -EEXIST. */
        CHECK_EQ_U64(stored, ROUNDS);
        /* Each id stored exactly once, no temporary file left. */
        count_files();
        CHECK_EQ_U64(tmp_files, 0);
        CHECK_EQ_U64(files, before + ROUNDS);
        (void) col;
        for (int i = 0; i < ROUNDS; i++)
                chunk_done(&chunks[i]);
}

/* Write-once: a second frame for a stored id (the same chunk at another
 * zstd level) is refused with -EEXIST and the stored object stays byte for
 * byte the first one; objects and directories are the owner's only. */
static void test_write_once(void) {
        _cleanup_(chunkstore_freep) struct chunkstore *cs = NULL;
        struct buf out = BUF_INIT(1 << 20);
        struct chunk a, b;
        char path[512];
        struct stat st;

        make_chunk_level(&a, 80000, 30, 1);
        make_chunk_level(&b, 80000, 30, 19);
        CHECK(memcmp(a.id, b.id, SHA256_DIGEST_LEN) == 0);
        CHECK(a.frame_len != b.frame_len || memcmp(a.frame, b.frame, a.frame_len) != 0);

        CHECK_OK(chunkstore_local_open(root, &cs));
        CHECK_OK(chunkstore_put(cs, a.id, a.frame, a.frame_len));
        CHECK_RC(chunkstore_put(cs, b.id, b.frame, b.frame_len), -EEXIST);
        CHECK_RC(chunkstore_put_flags(cs, b.id, b.frame, b.frame_len, CHUNKSTORE_PUT_NOSYNC), -EEXIST);
        CHECK_RC(chunkstore_put(cs, a.id, a.frame, a.frame_len), -EEXIST);
        CHECK_OK(chunkstore_get(cs, a.id, CHUNKSTORE_GET_VERIFY, &out));
        CHECK_EQ_U64(out.len, a.frame_len);
        CHECK_MEMEQ(out.data, a.frame, a.frame_len);
        count_files();
        CHECK_EQ_U64(tmp_files, 0);

        snprintf(path, sizeof path, "%s/chunks/%.2s/%.2s/%s", root, a.hex, a.hex + 2, a.hex);
        CHECK(stat(path, &st) == 0);
        CHECK_EQ_U64(st.st_mode & 07777, 0600);
        snprintf(path, sizeof path, "%s/chunks/%.2s/%.2s", root, a.hex, a.hex + 2);
        CHECK(stat(path, &st) == 0);
        CHECK_EQ_U64(st.st_mode & 07777, 0700);
        snprintf(path, sizeof path, "%s/chunks/%.2s", root, a.hex);
        CHECK(stat(path, &st) == 0);
        CHECK_EQ_U64(st.st_mode & 07777, 0700);
        buf_free(&out);
        chunk_done(&a);
        chunk_done(&b);
}

struct racer {
        struct chunkstore *cs;
        struct chunk *c; /* this thread's frame of the shared id */
        pthread_barrier_t *start;
        int r;
};

static void *racer_main(void *arg) {
        struct racer *x = arg;
        pthread_barrier_wait(x->start);
        x->r = chunkstore_put(x->cs, x->c->id, x->c->frame, x->c->frame_len);
        return NULL;
}

/* Racing puts of one id with different frames: exactly one wins, and the
 * stored object is the winner's frame, whole. */
static void test_write_once_race(void) {
        _cleanup_(chunkstore_freep) struct chunkstore *cs = NULL;
        struct buf out = BUF_INIT(1 << 20);
        static const int levels[] = { 1, 3, 9, 19 };
        struct chunk c[ELEMENTSOF(levels)];
        struct racer x[ELEMENTSOF(levels)];
        pthread_t t[ELEMENTSOF(levels)];
        pthread_barrier_t start;

        CHECK_OK(chunkstore_local_open(root, &cs));
        for (int round = 0; round < 10; round++) {
                int winner = -1;

                CHECK(pthread_barrier_init(&start, NULL, ELEMENTSOF(levels)) == 0);
                for (size_t i = 0; i < ELEMENTSOF(levels); i++) {
                        make_chunk_level(&c[i], 60000, 500 + (uint64_t) round, levels[i]);
                        x[i] = (struct racer){ .cs = cs, .c = &c[i], .start = &start };
                        CHECK(pthread_create(&t[i], NULL, racer_main, &x[i]) == 0);
                }
                for (size_t i = 0; i < ELEMENTSOF(levels); i++) {
                        pthread_join(t[i], NULL);
                        if (x[i].r == 0) {
                                CHECK(winner < 0);
                                winner = (int) i;
                        } else
                                CHECK_RC(x[i].r, -EEXIST);
                }
                CHECK(winner >= 0);
                CHECK_OK(chunkstore_get(cs, c[0].id, CHUNKSTORE_GET_VERIFY, &out));
                CHECK_EQ_U64(out.len, c[winner].frame_len);
                CHECK_MEMEQ(out.data, c[winner].frame, c[winner].frame_len);
                pthread_barrier_destroy(&start);
                for (size_t i = 0; i < ELEMENTSOF(levels); i++)
                        chunk_done(&c[i]);
        }
        count_files();
        CHECK_EQ_U64(tmp_files, 0);
        buf_free(&out);
}

static void test_spec(void) {
        struct chunkstore *cs = NULL;
        char spec[300];
        int r;

        snprintf(spec, sizeof spec, "file://%s", root);
        CHECK_OK(chunkstore_open_spec(spec, &cs));
        CHECK_STREQ(chunkstore_backend(cs), "local");
        chunkstore_free(cs);
        cs = NULL;
        CHECK_RC(chunkstore_open_spec("relative/path", &cs), -EINVAL);
        CHECK_RC(chunkstore_open_spec("s3://bucket", &cs), -EINVAL); /* no endpoint */
        CHECK_RC(chunkstore_open_spec("s3://bucket?endpoint=http://127.0.0.1:1&bogus=1", &cs),
                 -EINVAL);
        unsetenv("AWS_ACCESS_KEY_ID");
        r = chunkstore_open_spec("s3://bucket?endpoint=http%3A%2F%2F127.0.0.1%3A1", &cs);
        CHECK_RC(r, -EINVAL); /* no credentials in the environment */
        setenv("AWS_ACCESS_KEY_ID", "a", 1);
        setenv("AWS_SECRET_ACCESS_KEY", "s", 1);
        CHECK_RC(chunkstore_open_spec("s3://bucket?endpoint=http://127.0.0.1:1&attempts=0", &cs),
                 -EINVAL);
        CHECK_RC(chunkstore_open_spec("s3://bucket?endpoint=http://127.0.0.1:1&attempts=1x", &cs),
                 -EINVAL);
        CHECK_OK(chunkstore_open_spec("s3://bucket?endpoint=http%3A%2F%2F127.0.0.1%3A1&prefix=p%2F&attempts=3", &cs));
        CHECK_STREQ(chunkstore_backend(cs), "s3");
        char *url = NULL;
        uint8_t id[SHA256_DIGEST_LEN] = { 0xab, 0xcd };
        CHECK_OK(chunkstore_presign_get(cs, id, 60, &url));
        CHECK(startswith(url, "http://127.0.0.1:1/bucket/p/chunks/ab/abcd0000"));
        free(url);
        chunkstore_free(cs);
}

/* Recompression: REPLACE swaps the object under an id for another one of
 * the same content (a recompressed object), leaving no temporary file. */
static void test_replace(void) {
        _cleanup_(chunkstore_freep) struct chunkstore *cs = NULL;
        _cleanup_(chunkcodec_freep) struct chunkcodec *high = NULL;
        struct buf out = BUF_INIT(1 << 20);
        uint8_t *data = malloc(90000), *obj = malloc(chunkcodec_bound(90000) + CHUNKCODEC_RECOMPRESSED_HEADER);
        uint8_t content[90000];
        struct chunk a;
        size_t olen, len;

        CHECK(data && obj);
        make_chunk(&a, 90000, 77);
        CHECK_OK(chunkstore_local_open(root, &cs));
        CHECK_OK(chunkstore_put(cs, a.id, a.frame, a.frame_len));
        CHECK_OK(chunkstore_get(cs, a.id, 0, &out));
        CHECK_OK(chunkcodec_new(19, &high));
        CHECK_OK(chunkcodec_decode(high, out.data, out.len, a.id, 90000, data, 90000, &len));
        CHECK_OK(chunkcodec_encode_recompressed(high, data, len, obj,
                                                chunkcodec_bound(90000) + CHUNKCODEC_RECOMPRESSED_HEADER, &olen));
        CHECK_RC(chunkcodec_object_kind(obj, olen, NULL), 2);
        CHECK_RC(chunkcodec_object_kind(a.frame, a.frame_len, NULL), 0);
        /* not a frame for uploads, but decodes as one */
        uint64_t size;
        CHECK_RC(chunkcodec_frame_size(obj, olen, &size), -EBADMSG);
        CHECK_OK(chunkcodec_object_size(obj, olen, &size));
        CHECK_EQ_U64(size, 90000);
        CHECK_RC(chunkstore_put(cs, a.id, obj, olen), -EEXIST);
        CHECK_OK(chunkstore_put_flags(cs, a.id, obj, olen, CHUNKSTORE_PUT_REPLACE));
        CHECK_OK(chunkstore_get(cs, a.id, CHUNKSTORE_GET_VERIFY, &out));
        CHECK_EQ_U64(out.len, olen);
        CHECK_MEMEQ(out.data, obj, olen);
        CHECK_OK(chunkcodec_decode(high, out.data, out.len, a.id, 90000, content, sizeof content, &len));
        CHECK_MEMEQ(content, data, 90000);
        /* a damaged recompressed object is caught like a frame */
        obj[olen - 5] ^= 0x40;
        CHECK_OK(chunkstore_put_flags(cs, a.id, obj, olen, CHUNKSTORE_PUT_REPLACE));
        CHECK_RC(chunkstore_get(cs, a.id, CHUNKSTORE_GET_VERIFY, &out), -EBADMSG);
        count_files();
        CHECK_EQ_U64(tmp_files, 0);
        buf_free(&out);
        chunk_done(&a);
        free(data);
        free(obj);
}

int main(void) {
        snprintf(root, sizeof root, "/tmp/test-chunkstore-XXXXXX");
        CHECK(mkdtemp(root));
        test_roundtrip();
        test_nosync_batch();
        test_exclusive_and_stale_tmp();
        test_corrupt();
        test_concurrent_puts();
        test_write_once();
        test_write_once_race();
        test_replace();
        test_spec();
        CHECK(nftw(root, rm_visit, 16, FTW_DEPTH | FTW_PHYS) == 0);
        return 0;
}
