/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "test.h"
#include "trove/chunkcache.h"
#include "trove/chunkcodec.h"
#include "trove/hash.h"
#include "trove/manifest.h"

#define N_CHUNKS 8
#define CHUNK_LEN 10000

struct chunk {
        uint8_t data[CHUNK_LEN];
        uint8_t *frame;
        size_t frame_len;
        uint8_t id[SHA256_DIGEST_LEN];
};

static struct chunk chunks[N_CHUNKS];
static char dir[] = "/tmp/test-chunkcache-XXXXXX";

static void make_chunks(void) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;

        CHECK_OK(chunkcodec_new(CHUNK_LEVEL_DEFAULT, &codec));
        for (size_t i = 0; i < N_CHUNKS; i++) {
                struct chunk *c = &chunks[i];
                size_t cap = chunkcodec_bound(CHUNK_LEN);
                test_fill(c->data, CHUNK_LEN, i + 1); /* random: incompressible */
                c->frame = malloc(cap);
                CHECK(c->frame);
                CHECK_OK(chunkcodec_encode(codec, c->data, CHUNK_LEN, c->frame, cap,
                                           &c->frame_len));
                CHECK_OK(sha256_buf(c->data, CHUNK_LEN, c->id));
        }
}

static bool file_exists(struct chunkcache *cc, const uint8_t *id) {
        char path[4200];

        CHECK(chunkcache_path_max(cc) <= sizeof path);
        chunkcache_path(cc, id, path);
        return access(path, F_OK) == 0;
}

/* Get must hit and give back exactly chunk i. */
static void check_hit(struct chunkcache *cc, struct chunkcodec *codec, size_t i) {
        uint8_t out[CHUNK_LEN];
        size_t len = 0;

        CHECK_RC(chunkcache_get(cc, codec, chunks[i].id, CHUNK_LEN, out, sizeof out, &len), 1);
        CHECK_EQ_U64(len, CHUNK_LEN);
        CHECK_MEMEQ(out, chunks[i].data, CHUNK_LEN);
}

static void check_miss(struct chunkcache *cc, struct chunkcodec *codec, size_t i) {
        uint8_t out[CHUNK_LEN];
        size_t len = 12345;

        CHECK_RC(chunkcache_get(cc, codec, chunks[i].id, CHUNK_LEN, out, sizeof out, &len), 0);
        CHECK_EQ_U64(len, 12345);
}

static void test_put_get(struct chunkcodec *codec) {
        _cleanup_(chunkcache_freep) struct chunkcache *cc = NULL;
        struct chunkcache_stats st;
        char path[4200];

        CHECK_OK(chunkcache_open(dir, 0, &cc));
        check_miss(cc, codec, 0);
        CHECK_OK(chunkcache_put(cc, chunks[0].id, chunks[0].frame, chunks[0].frame_len));
        CHECK(file_exists(cc, chunks[0].id));
        /* Layout: <dir>/<ab>/<64 hex>. */
        chunkcache_path(cc, chunks[0].id, path);
        char hex[65];
        hex_encode(chunks[0].id, 32, hex);
        char want[4200];
        snprintf(want, sizeof want, "%s/%.2s/%s", dir, hex, hex);
        CHECK_STREQ(path, want);
        check_hit(cc, codec, 0);
        /* Storing again is harmless. */
        CHECK_OK(chunkcache_put(cc, chunks[0].id, chunks[0].frame, chunks[0].frame_len));
        check_hit(cc, codec, 0);
        /* A wrong expected length means the file is not what we want. */
        uint8_t out[CHUNK_LEN];
        size_t len;
        CHECK_RC(chunkcache_get(cc, codec, chunks[0].id, CHUNK_LEN - 1, out, sizeof out, &len),
                 0);
        CHECK(!file_exists(cc, chunks[0].id));

        CHECK_OK(chunkcache_put(cc, chunks[1].id, chunks[1].frame, chunks[1].frame_len));
        chunkcache_get_stats(cc, &st);
        CHECK_EQ_U64(st.files, 1);
        CHECK_EQ_U64(st.bytes, chunks[1].frame_len);
        CHECK_EQ_U64(st.hits, 2);
        CHECK_EQ_U64(st.misses, 2);
        CHECK_EQ_U64(st.corrupt, 1);
}

static void test_corrupt(struct chunkcodec *codec) {
        _cleanup_(chunkcache_freep) struct chunkcache *cc = NULL;
        char path[4200];
        int fd;

        CHECK_OK(chunkcache_open(dir, 0, &cc));
        CHECK_OK(chunkcache_put(cc, chunks[2].id, chunks[2].frame, chunks[2].frame_len));
        chunkcache_path(cc, chunks[2].id, path);

        /* Flip a byte in the middle: decode or SHA-256 fails. */
        fd = open(path, O_WRONLY);
        CHECK(fd >= 0);
        CHECK(pwrite(fd, "\x55", 1, (off_t) chunks[2].frame_len / 2) == 1);
        close(fd);
        check_miss(cc, codec, 2);
        CHECK(!file_exists(cc, chunks[2].id));

        /* Truncated (as a crashed writer that bypassed rename would leave). */
        CHECK_OK(chunkcache_put(cc, chunks[2].id, chunks[2].frame, chunks[2].frame_len));
        CHECK(truncate(path, (off_t) chunks[2].frame_len - 10) == 0);
        check_miss(cc, codec, 2);
        CHECK(!file_exists(cc, chunks[2].id));

        /* Another chunk's frame under this id. */
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        CHECK(fd >= 0);
        CHECK(write(fd, chunks[3].frame, chunks[3].frame_len) == (ssize_t) chunks[3].frame_len);
        close(fd);
        check_miss(cc, codec, 2);
        CHECK(!file_exists(cc, chunks[2].id));

        /* Empty file. */
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        CHECK(fd >= 0);
        close(fd);
        check_miss(cc, codec, 2);
        CHECK(!file_exists(cc, chunks[2].id));

        /* Vanished under us (another mount evicted it): a miss, no error. */
        CHECK_OK(chunkcache_put(cc, chunks[2].id, chunks[2].frame, chunks[2].frame_len));
        CHECK(unlink(path) == 0);
        check_miss(cc, codec, 2);
        /* and storing it again works. */
        CHECK_OK(chunkcache_put(cc, chunks[2].id, chunks[2].frame, chunks[2].frame_len));
        check_hit(cc, codec, 2);

        struct chunkcache_stats st;
        chunkcache_get_stats(cc, &st);
        CHECK_EQ_U64(st.corrupt, 4);
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(p);
}

static void wipe(void) {
        (void) nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        CHECK(mkdir(dir, 0700) == 0);
}

static void set_mtime(struct chunkcache *cc, size_t i, time_t t) {
        char path[4200];
        struct timeval tv[2] = { { t, 0 }, { t, 0 } };

        chunkcache_path(cc, chunks[i].id, path);
        CHECK(utimes(path, tv) == 0);
}

static size_t count_files(void) {
        size_t n = 0;

        for (size_t i = 0; i < N_CHUNKS; i++) {
                char path[4200], hex[65];
                hex_encode(chunks[i].id, 32, hex);
                snprintf(path, sizeof path, "%s/%.2s/%s", dir, hex, hex);
                n += access(path, F_OK) == 0;
        }
        return n;
}

static void test_eviction(struct chunkcodec *codec) {
        _cleanup_(chunkcache_freep) struct chunkcache *cc = NULL;
        uint64_t frame = chunks[0].frame_len;
        uint64_t max = 3 * frame + frame / 2; /* room for 3 chunks */
        struct chunkcache_stats st;

        wipe();
        CHECK_OK(chunkcache_open(dir, max, &cc));
        for (size_t i = 0; i < 3; i++)
                CHECK_OK(chunkcache_put(cc, chunks[i].id, chunks[i].frame, chunks[i].frame_len));
        /* Use chunk 0: chunk 1 becomes the least recently used. */
        check_hit(cc, codec, 0);
        CHECK_OK(chunkcache_put(cc, chunks[3].id, chunks[3].frame, chunks[3].frame_len));
        CHECK(file_exists(cc, chunks[0].id));
        CHECK(!file_exists(cc, chunks[1].id));
        CHECK(file_exists(cc, chunks[2].id));
        CHECK(file_exists(cc, chunks[3].id));
        for (size_t i = 4; i < N_CHUNKS; i++) {
                CHECK_OK(chunkcache_put(cc, chunks[i].id, chunks[i].frame, chunks[i].frame_len));
                chunkcache_get_stats(cc, &st);
                CHECK(st.bytes <= max);
                CHECK_EQ_U64(st.files, 3);
        }
        /* The three most recent are there, and only they. */
        for (size_t i = 0; i < N_CHUNKS; i++)
                CHECK(file_exists(cc, chunks[i].id) == (i >= N_CHUNKS - 3));
        chunkcache_get_stats(cc, &st);
        CHECK_EQ_U64(st.evicted, N_CHUNKS - 3);
}

/* Remount: the scan finds the files, orders them by mtime, and enforces a
 * smaller bound by dropping the oldest. */
static void test_remount(struct chunkcodec *codec) {
        _cleanup_(chunkcache_freep) struct chunkcache *cc = NULL;
        uint64_t frame = chunks[0].frame_len;
        struct chunkcache_stats st;

        wipe();
        CHECK_OK(chunkcache_open(dir, 0, &cc));
        for (size_t i = 0; i < 4; i++) {
                CHECK_OK(chunkcache_put(cc, chunks[i].id, chunks[i].frame, chunks[i].frame_len));
                /* chunk 2 oldest, then 0, 3, 1 */
                static const time_t t[] = { 2000, 4000, 1000, 3000 };
                set_mtime(cc, i, t[i]);
        }
        cc = chunkcache_free(cc);

        /* A leftover temporary file of a crashed writer, old: removed. */
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s/tmp/leftover", dir);
        int fd = open(tmp, O_WRONLY | O_CREAT, 0644);
        CHECK(fd >= 0);
        close(fd);
        struct timeval tv[2] = { { 1000, 0 }, { 1000, 0 } };
        CHECK(utimes(tmp, tv) == 0);

        CHECK_OK(chunkcache_open(dir, 2 * frame + frame / 2, &cc));
        CHECK(access(tmp, F_OK) != 0);
        chunkcache_get_stats(cc, &st);
        CHECK_EQ_U64(st.files, 2);
        CHECK(!file_exists(cc, chunks[2].id));
        CHECK(!file_exists(cc, chunks[0].id));
        check_hit(cc, codec, 1);
        check_hit(cc, codec, 3);
}

struct thread_arg {
        struct chunkcache *cc;
        unsigned seed;
};

static void *hammer(void *p) {
        struct thread_arg *a = p;
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
        uint64_t s = a->seed;
        uint8_t out[CHUNK_LEN];

        CHECK_OK(chunkcodec_new(CHUNK_LEVEL_DEFAULT, &codec));
        for (int k = 0; k < 2000; k++) {
                size_t i = test_rand(&s) % N_CHUNKS;
                size_t len;
                int r = chunkcache_get(a->cc, codec, chunks[i].id, CHUNK_LEN, out, sizeof out,
                                       &len);
                CHECK(r == 0 || r == 1);
                if (r == 1) {
                        CHECK_EQ_U64(len, CHUNK_LEN);
                        CHECK_MEMEQ(out, chunks[i].data, CHUNK_LEN);
                } else
                        CHECK_OK(chunkcache_put(a->cc, chunks[i].id, chunks[i].frame,
                                                chunks[i].frame_len));
        }
        return NULL;
}

/* Two caches on one directory (two mounts), four threads each, a bound
 * that forces constant eviction: every hit is exactly the right bytes. */
static void test_shared_threads(void) {
        _cleanup_(chunkcache_freep) struct chunkcache *a = NULL;
        _cleanup_(chunkcache_freep) struct chunkcache *b = NULL;
        uint64_t max = 3 * chunks[0].frame_len;
        pthread_t th[8];
        struct thread_arg args[8];

        wipe();
        CHECK_OK(chunkcache_open(dir, max, &a));
        CHECK_OK(chunkcache_open(dir, max, &b));
        for (unsigned i = 0; i < 8; i++) {
                args[i] = (struct thread_arg){ i < 4 ? a : b, i + 1 };
                CHECK(pthread_create(&th[i], NULL, hammer, &args[i]) == 0);
        }
        for (unsigned i = 0; i < 8; i++)
                pthread_join(th[i], NULL);
        struct chunkcache_stats st;
        chunkcache_get_stats(a, &st);
        CHECK(st.bytes <= max);
        CHECK(count_files() <= 3);
        CHECK(st.hits > 0);
        CHECK_EQ_U64(st.corrupt, 0);
}

/* Two mounts of one directory, each storing what the other does not know:
 * the bound holds for the directory, not per mount, and what goes first is
 * the directory's least recently used, whoever stored it. */
static void test_joint_bound(struct chunkcodec *codec) {
        _cleanup_(chunkcache_freep) struct chunkcache *a = NULL;
        _cleanup_(chunkcache_freep) struct chunkcache *b = NULL;
        _cleanup_(chunkcache_freep) struct chunkcache *later = NULL;
        uint64_t frame = chunks[0].frame_len;
        uint64_t max = 3 * frame + frame / 2; /* room for 3 chunks */
        struct chunkcache_stats sa, sb;

        wipe();
        CHECK_OK(chunkcache_open(dir, max, &a));
        CHECK_OK(chunkcache_open(dir, max, &b));
        /* a stores two chunks, used long ago. */
        CHECK_OK(chunkcache_put(a, chunks[0].id, chunks[0].frame, chunks[0].frame_len));
        CHECK_OK(chunkcache_put(a, chunks[1].id, chunks[1].frame, chunks[1].frame_len));
        set_mtime(a, 0, 1000);
        set_mtime(a, 1, 2000);
        /* b stores three: each mount alone is under the bound, together
         * they are not. */
        for (size_t i = 2; i < 5; i++) {
                CHECK_OK(chunkcache_put(b, chunks[i].id, chunks[i].frame, chunks[i].frame_len));
                CHECK(count_files() <= 3);
        }
        CHECK(!file_exists(b, chunks[0].id));
        CHECK(!file_exists(b, chunks[1].id));
        for (size_t i = 2; i < 5; i++)
                check_hit(b, codec, i);
        /* Both report the directory's total. */
        chunkcache_get_stats(a, &sa);
        chunkcache_get_stats(b, &sb);
        CHECK_EQ_U64(sa.bytes, 3 * frame);
        CHECK_EQ_U64(sb.bytes, 3 * frame);
        CHECK_EQ_U64(sa.files, 3);
        CHECK_EQ_U64(sb.evicted, 2);
        /* a misses what b evicted, and stores it again within the bound. */
        check_miss(a, codec, 0);
        CHECK_OK(chunkcache_put(a, chunks[0].id, chunks[0].frame, chunks[0].frame_len));
        CHECK(count_files() <= 3);
        check_hit(a, codec, 0);
        /* Alternating stores through both never exceed the bound. */
        for (size_t k = 0; k < 3 * N_CHUNKS; k++) {
                struct chunkcache *cc = k % 2 ? a : b;
                size_t i = (k * 3) % N_CHUNKS;
                CHECK_OK(chunkcache_put(cc, chunks[i].id, chunks[i].frame, chunks[i].frame_len));
                CHECK(count_files() <= 3);
                chunkcache_get_stats(cc, &sa);
                CHECK(sa.bytes <= max);
                CHECK_EQ_U64(sa.files, count_files());
        }
        /* A third mount opened now agrees with the directory. */
        CHECK_OK(chunkcache_open(dir, max, &later));
        chunkcache_get_stats(later, &sa);
        CHECK_EQ_U64(sa.files, count_files());
}

static mode_t mode_of(const char *path) {
        struct stat st;

        CHECK(lstat(path, &st) == 0);
        return st.st_mode & 07777;
}

/* Directories 0700 and files 0600, whatever the umask; an old cache with
 * world-readable modes is made private when opened. */
static void test_permissions(struct chunkcodec *codec) {
        char sub[4300], path[4200], tmp[4300], usage[4300], cdir[4200];
        struct chunkcache *cc = NULL;
        mode_t old_umask = umask(0);

        snprintf(cdir, sizeof cdir, "%s/perm/cache", dir);
        CHECK_OK(chunkcache_open(cdir, 0, &cc));
        CHECK_OK(chunkcache_put(cc, chunks[0].id, chunks[0].frame, chunks[0].frame_len));
        CHECK_OK(chunkcache_put(cc, chunks[1].id, chunks[1].frame, chunks[1].frame_len));
        chunkcache_path(cc, chunks[0].id, path);
        snprintf(sub, sizeof sub, "%.*s", (int) (strrchr(path, '/') - path), path);
        snprintf(tmp, sizeof tmp, "%s/tmp", cdir);
        snprintf(usage, sizeof usage, "%s/usage", cdir);
        CHECK_EQ_U64(mode_of(cdir), 0700);
        CHECK_EQ_U64(mode_of(tmp), 0700);
        CHECK_EQ_U64(mode_of(sub), 0700);
        CHECK_EQ_U64(mode_of(path), 0600);
        CHECK_EQ_U64(mode_of(usage), 0600);
        cc = chunkcache_free(cc);

        /* As an older version left it: everything world-readable. */
        CHECK(chmod(cdir, 0755) == 0);
        CHECK(chmod(tmp, 0755) == 0);
        CHECK(chmod(sub, 0755) == 0);
        CHECK(chmod(path, 0644) == 0);
        CHECK(chmod(usage, 0644) == 0);
        CHECK_OK(chunkcache_open(cdir, 0, &cc));
        CHECK_EQ_U64(mode_of(cdir), 0700);
        CHECK_EQ_U64(mode_of(tmp), 0700);
        CHECK_EQ_U64(mode_of(sub), 0700);
        CHECK_EQ_U64(mode_of(path), 0600);
        CHECK_EQ_U64(mode_of(usage), 0600);
        check_hit(cc, codec, 0);
        check_hit(cc, codec, 1);
        cc = chunkcache_free(cc);
        umask(old_umask);
}

/* ---- kept manifests ---- */

#define KEPT_HEADER 56
#define SIG "c-1:c2lnbmF0dXJl"

static void key_of(unsigned i, uint8_t key[SHA256_DIGEST_LEN]) {
        memset(key, 0, SHA256_DIGEST_LEN);
        key[0] = (uint8_t) i;
        key[31] = 0xa5;
}

static void kept_path(const uint8_t key[SHA256_DIGEST_LEN], char *out, size_t n) {
        char hex[HASH_BASE16_LEN + 1];

        hex_encode(key, SHA256_DIGEST_LEN, hex);
        snprintf(out, n, "%s/manifests/%s", dir, hex);
}

static void check_kept(struct chunkcache *cc, const uint8_t *key, const char *sig,
                       const void *body, size_t n) {
        char *got_sig = NULL;
        uint8_t *got = NULL;
        size_t len = 0;

        CHECK_RC(chunkcache_manifest_get(cc, key, &got_sig, &got, &len), 1);
        CHECK_STREQ(got_sig, sig);
        CHECK_EQ_U64(len, n);
        CHECK_MEMEQ(got, body, n);
        free(got_sig);
        free(got);
}

static void check_not_kept(struct chunkcache *cc, const uint8_t *key, int want) {
        char *got_sig = (char *) "x";
        uint8_t *got = (uint8_t *) "y";
        size_t len = 77;

        CHECK_RC(chunkcache_manifest_get(cc, key, &got_sig, &got, &len), want);
        CHECK(len == 77 && got_sig[0] == 'x' && got[0] == 'y');
}

/* Written (privately, in <dir>/manifests/<64 hex key>), read back exactly,
 * counted with the chunks, found again after a remount; bad input refused. */
static void test_kept_put_get(struct chunkcodec *codec) {
        _cleanup_(chunkcache_freep) struct chunkcache *cc = NULL;
        static const char body[] = "{\"version\":1,\"storePath\":\"...\"}";
        struct chunkcache_stats st;
        uint8_t k0[SHA256_DIGEST_LEN], k1[SHA256_DIGEST_LEN];
        char path[4300], mdir[4300];
        struct stat sb;

        wipe();
        key_of(0, k0);
        key_of(1, k1);
        CHECK_OK(chunkcache_open(dir, 0, &cc));
        check_not_kept(cc, k0, 0);
        CHECK_OK(chunkcache_manifest_put(cc, k0, SIG, body, sizeof body - 1));
        CHECK_OK(chunkcache_manifest_put(cc, k1, NULL, body, 5));
        CHECK_OK(chunkcache_put(cc, chunks[0].id, chunks[0].frame, chunks[0].frame_len));
        /* Again: a no-op. */
        CHECK_OK(chunkcache_manifest_put(cc, k0, SIG, body, sizeof body - 1));
        check_kept(cc, k0, SIG, body, sizeof body - 1);
        check_kept(cc, k1, "", body, 5);
        kept_path(k0, path, sizeof path);
        snprintf(mdir, sizeof mdir, "%s/manifests", dir);
        CHECK(stat(path, &sb) == 0);
        CHECK_EQ_U64(sb.st_size, KEPT_HEADER + strlen(SIG) + sizeof body - 1);
        CHECK_EQ_U64(sb.st_mode & 07777, 0600);
        CHECK_EQ_U64(mode_of(mdir), 0700);
        chunkcache_get_stats(cc, &st);
        CHECK_EQ_U64(st.manifests_stored, 2);
        CHECK_EQ_U64(st.manifest_hits, 2);
        CHECK_EQ_U64(st.manifest_misses, 1);
        CHECK_EQ_U64(st.files, 3);
        CHECK_EQ_U64(st.bytes, (uint64_t) sb.st_size + KEPT_HEADER + 5 + chunks[0].frame_len);

        /* Refused: empty, too big, a signature that is not signature text. */
        CHECK_RC(chunkcache_manifest_put(cc, k0, SIG, body, 0), -EINVAL);
        CHECK_RC(chunkcache_manifest_put(cc, k0, SIG, body, (size_t) MANIFEST_MAX_SIZE + 1),
                 -EINVAL);
        CHECK_RC(chunkcache_manifest_put(cc, k1, "c-1:  x", body, 5), -EINVAL);
        CHECK_RC(chunkcache_manifest_put(cc, k1, " c-1:x", body, 5), -EINVAL);
        CHECK_RC(chunkcache_manifest_put(cc, k1, "c-1:x ", body, 5), -EINVAL);
        CHECK_RC(chunkcache_manifest_put(cc, k1, "c-1:\nx", body, 5), -EINVAL);

        /* A remount finds both kinds; world-readable leftovers become private. */
        cc = chunkcache_free(cc);
        CHECK(chmod(path, 0644) == 0);
        CHECK(chmod(mdir, 0755) == 0);
        CHECK_OK(chunkcache_open(dir, 0, &cc));
        CHECK_EQ_U64(mode_of(path), 0600);
        CHECK_EQ_U64(mode_of(mdir), 0700);
        chunkcache_get_stats(cc, &st);
        CHECK_EQ_U64(st.files, 3);
        check_kept(cc, k0, SIG, body, sizeof body - 1);
        check_hit(cc, codec, 0);
        /* Removed: gone, uncounted. */
        CHECK_OK(chunkcache_manifest_remove(cc, k0));
        CHECK_OK(chunkcache_manifest_remove(cc, k0));
        check_not_kept(cc, k0, 0);
        chunkcache_get_stats(cc, &st);
        CHECK_EQ_U64(st.files, 2);
}

/* Any change of a kept file (header, signature, body, size) is found: the
 * file is deleted and uncounted, and nothing is returned. */
static void test_kept_damage(void) {
        _cleanup_(chunkcache_freep) struct chunkcache *cc = NULL;
        static const char body[] = "{\"version\":1,\"chunks\":[[0,1,\"ab\",2]]}";
        const size_t size = KEPT_HEADER + strlen(SIG) + sizeof body - 1;
        /* magic, sig length, reserved, body length, digest, sig, body, last byte */
        const long offsets[] = { 0, 8, 12, 16, 30, KEPT_HEADER + 3, KEPT_HEADER + 20,
                                 (long) size - 1 };
        struct chunkcache_stats st;
        uint8_t key[SHA256_DIGEST_LEN];
        char path[4300];
        uint64_t damaged = 0;

        wipe();
        key_of(7, key);
        kept_path(key, path, sizeof path);
        CHECK_OK(chunkcache_open(dir, 0, &cc));
        for (size_t i = 0; i < sizeof offsets / sizeof offsets[0] + 2; i++) {
                FILE *fp;

                CHECK_OK(chunkcache_manifest_put(cc, key, SIG, body, sizeof body - 1));
                check_kept(cc, key, SIG, body, sizeof body - 1);
                if (i < sizeof offsets / sizeof offsets[0]) {
                        int c;
                        fp = fopen(path, "r+");
                        CHECK(fp);
                        CHECK(fseek(fp, offsets[i], SEEK_SET) == 0);
                        c = fgetc(fp);
                        CHECK(fseek(fp, offsets[i], SEEK_SET) == 0);
                        fputc(c ^ 0x01, fp);
                        fclose(fp);
                } else if (i == sizeof offsets / sizeof offsets[0])
                        CHECK(truncate(path, (off_t) size - 1) == 0);
                else {
                        fp = fopen(path, "a");
                        CHECK(fp);
                        fputc('}', fp);
                        fclose(fp);
                }
                check_not_kept(cc, key, -EBADMSG);
                damaged++;
                CHECK(access(path, F_OK) != 0);
                check_not_kept(cc, key, 0);
                chunkcache_get_stats(cc, &st);
                CHECK_EQ_U64(st.manifest_damaged, damaged);
                CHECK_EQ_U64(st.files, 0);
                /* The file's size at deletion is subtracted: a file
                 * truncated behind the cache's back leaves the byte it
                 * lost counted until the next rescan. */
                CHECK(st.bytes <= 1);
        }
        /* Refused by the caller (its signature did not verify): discarded. */
        CHECK_OK(chunkcache_manifest_put(cc, key, SIG, body, sizeof body - 1));
        CHECK_OK(chunkcache_manifest_discard(cc, key));
        check_not_kept(cc, key, 0);
        chunkcache_get_stats(cc, &st);
        CHECK_EQ_U64(st.manifest_damaged, damaged + 1);
        /* Not a regular file, or empty. */
        CHECK(mkdir(path, 0700) == 0);
        check_not_kept(cc, key, -EBADMSG);
        CHECK(rmdir(path) == 0);
        fclose(fopen(path, "w"));
        check_not_kept(cc, key, -EBADMSG);
        CHECK(access(path, F_OK) != 0);
}

/* Manifests and chunks share one bound and one LRU: the least recently
 * used object goes first, whatever its kind, and a second mount of the
 * directory counts both. */
static void test_kept_eviction(struct chunkcodec *codec) {
        _cleanup_(chunkcache_freep) struct chunkcache *cc = NULL, *other = NULL;
        uint64_t frame = chunks[0].frame_len;
        uint64_t max = 3 * frame + frame / 2; /* room for 3 objects */
        size_t n = frame - KEPT_HEADER - strlen(SIG); /* a file as big as a chunk */
        _cleanup_free_ uint8_t *body = malloc(n);
        uint8_t m1[SHA256_DIGEST_LEN], m2[SHA256_DIGEST_LEN];
        struct chunkcache_stats st;

        CHECK(body);
        memset(body, 'm', n);
        for (size_t i = 1; i < N_CHUNKS; i++)
                CHECK_EQ_U64(chunks[i].frame_len, frame);
        key_of(1, m1);
        key_of(2, m2);
        wipe();
        CHECK_OK(chunkcache_open(dir, max, &cc));
        CHECK_OK(chunkcache_manifest_put(cc, m1, SIG, body, n));
        CHECK_OK(chunkcache_put(cc, chunks[0].id, chunks[0].frame, chunks[0].frame_len));
        CHECK_OK(chunkcache_put(cc, chunks[1].id, chunks[1].frame, chunks[1].frame_len));
        /* Use the manifest: chunk 0 becomes the least recently used. */
        check_kept(cc, m1, SIG, body, n);
        CHECK_OK(chunkcache_put(cc, chunks[2].id, chunks[2].frame, chunks[2].frame_len));
        CHECK(!file_exists(cc, chunks[0].id));
        check_kept(cc, m1, SIG, body, n);
        check_hit(cc, codec, 1);
        check_hit(cc, codec, 2);
        /* Now the manifest is the oldest: a new manifest evicts it. */
        CHECK_OK(chunkcache_manifest_put(cc, m2, SIG, body, n));
        check_not_kept(cc, m1, 0);
        check_kept(cc, m2, SIG, body, n);
        chunkcache_get_stats(cc, &st);
        CHECK(st.bytes <= max);
        CHECK_EQ_U64(st.files, 3);
        CHECK_EQ_U64(st.evicted, 2);

        /* Another mount of the directory sees the joint total, and its
         * stores evict this mount's objects, manifests included. */
        CHECK_OK(chunkcache_open(dir, max, &other));
        chunkcache_get_stats(other, &st);
        CHECK_EQ_U64(st.files, 3);
        CHECK_EQ_U64(st.bytes, 3 * frame);
        for (size_t i = 3; i < 6; i++)
                CHECK_OK(chunkcache_put(other, chunks[i].id, chunks[i].frame,
                                        chunks[i].frame_len));
        check_not_kept(cc, m2, 0);
        chunkcache_get_stats(cc, &st);
        CHECK(st.bytes <= max);
        CHECK_EQ_U64(st.files, 3);
}

int main(void) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;

        CHECK(mkdtemp(dir));
        make_chunks();
        CHECK_OK(chunkcodec_new(CHUNK_LEVEL_DEFAULT, &codec));
        CHECK_RC(chunkcache_open("", 0, &(struct chunkcache *){ NULL }), -EINVAL);
        test_put_get(codec);
        test_corrupt(codec);
        test_eviction(codec);
        test_remount(codec);
        test_shared_threads();
        test_joint_bound(codec);
        test_permissions(codec);
        test_kept_put_get(codec);
        test_kept_damage();
        test_kept_eviction(codec);
        (void) nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        for (size_t i = 0; i < N_CHUNKS; i++)
                free(chunks[i].frame);
        return 0;
}
