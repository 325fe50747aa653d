/* SPDX-License-Identifier: Apache-2.0 */
/*
 * chunkstore-tool - drives a chunk store from the command line, for the
 * integration tests.
 *
 *   chunkstore-tool SPEC put FILE [LEVEL]  encode FILE as one chunk (zstd LEVEL, default 3),
 *                                          store it, print its id; exit 4 if an object
 *                                          is already stored under that id (not replaced)
 *   chunkstore-tool SPEC get ID            print the chunk's content (frame verified)
 *   chunkstore-tool SPEC get-frame ID      print the stored frame as is
 *   chunkstore-tool SPEC exists ID         print the stored size; exit 1 if absent
 *   chunkstore-tool SPEC delete ID
 *   chunkstore-tool SPEC list              print "ID SIZE" per stored chunk
 *   chunkstore-tool SPEC presign ID SECS   print a presigned GET URL
 *
 * SPEC as chunkstore_open_spec() takes it; S3 credentials from
 * AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Errors: a message on stderr
 * and exit 3; usage errors exit 2.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#include "trove/buf.h"
#include "trove/chunkcodec.h"
#include "trove/chunkstore.h"

static int fail(const char *what, int r) {
        fprintf(stderr, "chunkstore-tool: %s: %s\n", what, strerror(-r));
        return 3;
}

static int read_file(const char *path, struct buf *out) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint8_t tmp[65536];

        if (fd < 0)
                return negative_errno();
        for (;;) {
                ssize_t n = read(fd, tmp, sizeof tmp);
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        return 0;
                int r = buf_append(out, tmp, (size_t) n);
                if (r < 0)
                        return r;
        }
}

static int write_all(const void *p, size_t n) {
        return fwrite(p, 1, n, stdout) == n && fflush(stdout) == 0 ? 0 : -EIO;
}

static int parse_id(const char *s, uint8_t id[SHA256_DIGEST_LEN]) {
        if (strlen(s) != 2 * SHA256_DIGEST_LEN)
                return -EINVAL;
        return hex_decode(s, strlen(s), id, SHA256_DIGEST_LEN);
}

static int print_entry(const uint8_t id[SHA256_DIGEST_LEN], uint64_t size, void *userdata) {
        char hex[2 * SHA256_DIGEST_LEN + 1];

        hex_encode(id, SHA256_DIGEST_LEN, hex);
        printf("%s %" PRIu64 "\n", hex, size);
        return 0;
}

int main(int argc, char **argv) {
        _cleanup_(chunkstore_freep) struct chunkstore *cs = NULL;
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
        _cleanup_(buf_free) struct buf data = BUF_INIT(CHUNK_SIZE_MAX);
        _cleanup_(buf_free) struct buf frame = BUF_INIT(chunkcodec_bound(CHUNK_SIZE_MAX));
        uint8_t id[SHA256_DIGEST_LEN];
        char hex[2 * SHA256_DIGEST_LEN + 1];
        const char *cmd;
        int r;

        if (argc < 3) {
                fprintf(stderr, "usage: chunkstore-tool SPEC put|get|get-frame|exists|delete|list|presign ...\n");
                return 2;
        }
        if (getenv("TROVE_DEBUG"))
                log_set_max_level(TROVE_LOG_DEBUG);
        cmd = argv[2];
        if ((streq(cmd, "get") || streq(cmd, "get-frame") || streq(cmd, "exists") ||
             streq(cmd, "delete")) != (argc == 4 && !streq(cmd, "put")) ||
            (streq(cmd, "put") && argc != 4 && argc != 5) ||
            (streq(cmd, "list") && argc != 3) || (streq(cmd, "presign") && argc != 5)) {
                fprintf(stderr, "chunkstore-tool: wrong arguments for %s\n", cmd);
                return 2;
        }
        if (!streq(cmd, "put") && !streq(cmd, "list") && parse_id(argv[3], id) < 0) {
                fprintf(stderr, "chunkstore-tool: '%s' is not a chunk id\n", argv[3]);
                return 2;
        }

        r = chunkstore_open_spec(argv[1], &cs);
        if (r < 0)
                return fail("open", r);

        if (streq(cmd, "put")) {
                int level = CHUNK_LEVEL_DEFAULT;
                size_t n;
                if (argc == 5) {
                        const char *l = argv[4];
                        if (!((l[0] >= '1' && l[0] <= '9' && !l[1]) ||
                              (l[0] == '1' && l[1] >= '0' && l[1] <= '9' && !l[2]))) {
                                fprintf(stderr, "chunkstore-tool: bad level '%s' (1..19)\n", l);
                                return 2;
                        }
                        level = l[1] ? 10 + (l[1] - '0') : l[0] - '0';
                }
                r = read_file(argv[3], &data);
                if (r < 0)
                        return fail(argv[3], r);
                r = sha256_buf(data.data, data.len, id);
                if (r >= 0)
                        r = chunkcodec_new(level, &codec);
                if (r >= 0)
                        r = buf_reserve(&frame, chunkcodec_bound(data.len));
                if (r >= 0)
                        r = chunkcodec_encode(codec, data.data, data.len, frame.data,
                                              chunkcodec_bound(data.len), &n);
                if (r < 0)
                        return fail("encode", r);
                frame.len = n;
                r = chunkstore_put(cs, id, frame.data, frame.len);
                if (r == -EEXIST)
                        return fail("put", r), 4;
                if (r < 0)
                        return fail("put", r);
                hex_encode(id, sizeof id, hex);
                printf("%s\n", hex);
                return 0;
        }
        if (streq(cmd, "get") || streq(cmd, "get-frame")) {
                uint64_t size;
                size_t n;
                r = chunkstore_get(cs, id, streq(cmd, "get") ? CHUNKSTORE_GET_VERIFY : 0, &frame);
                if (r < 0)
                        return fail("get", r);
                if (streq(cmd, "get-frame"))
                        return write_all(frame.data, frame.len) < 0 ? 3 : 0;
                r = chunkcodec_frame_size(frame.data, frame.len, &size);
                if (r >= 0)
                        r = chunkcodec_new(CHUNK_LEVEL_DEFAULT, &codec);
                if (r >= 0)
                        r = buf_reserve(&data, (size_t) size);
                if (r >= 0)
                        r = chunkcodec_decode(codec, frame.data, frame.len, id, CHUNK_SIZE_MAX,
                                              data.data, (size_t) size + 1, &n);
                if (r < 0)
                        return fail("decode", r);
                return write_all(data.data, n) < 0 ? 3 : 0;
        }
        if (streq(cmd, "exists")) {
                uint64_t size;
                r = chunkstore_exists(cs, id, &size);
                if (r < 0)
                        return fail("exists", r);
                if (r == 0)
                        return 1;
                printf("%" PRIu64 "\n", size);
                return 0;
        }
        if (streq(cmd, "delete")) {
                r = chunkstore_delete(cs, id);
                return r < 0 ? fail("delete", r) : 0;
        }
        if (streq(cmd, "list")) {
                r = chunkstore_list(cs, print_entry, NULL);
                return r < 0 ? fail("list", r) : 0;
        }
        if (streq(cmd, "presign")) {
                _cleanup_free_ char *url = NULL;
                uint64_t secs = 0;
                for (const char *p = argv[4]; *p; p++) {
                        if (*p < '0' || *p > '9' || secs > 1000000) {
                                fprintf(stderr, "chunkstore-tool: bad expiry\n");
                                return 2;
                        }
                        secs = secs * 10 + (uint64_t) (*p - '0');
                }
                r = chunkstore_presign_get(cs, id, (unsigned) secs, &url);
                if (r < 0)
                        return fail("presign", r);
                printf("%s\n", url);
                return 0;
        }
        fprintf(stderr, "chunkstore-tool: unknown command %s\n", cmd);
        return 2;
}
