/* SPDX-License-Identifier: Apache-2.0 */
/*
 * trove nar chunks [--min N --avg N --max N] [--level L] [--raw] FILE|- :
 * the chunk table of a NAR, as push would store it. One line per chunk on
 * standard output:
 *     <nar offset> <length> <chunk id hex> <stored size>
 * (stored size = bytes of its zstd frame at --level), then a summary on
 * standard error. The input is streamed: memory stays bounded by --max plus
 * the read buffer, whatever the NAR size. The NAR is validated by the strict
 * reader on the way unless --raw is given.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>

#include "trove/chunkcodec.h"
#include "trove/chunker.h"
#include "trove/util.h"
#include "trove/hash.h"
#include "trove/nar.h"
#include "trove.h"

#define CHUNKS_READ_SIZE (1024 * 1024)

static void chunks_usage(FILE *f) {
        fprintf(f,
                "usage: trove nar chunks [--min N] [--avg N] [--max N] [--level L] [--raw] FILE|-\n"
                "\n"
                "Cuts a NAR (FILE, or standard input for '-') into content-defined chunks\n"
                "(FastCDC) the way push stores it and prints one line per chunk:\n"
                "  <nar offset> <length> <chunk id (SHA-256, hex)> <stored size>\n"
                "where stored size is the size of the chunk's zstd frame. A summary goes to\n"
                "standard error.\n"
                "\n"
                "  --min N     smallest chunk (default %u); N may end in K or M (x1024)\n"
                "  --avg N     target average, a power of two (default %u)\n"
                "  --max N     largest chunk (default %u)\n"
                "              --avg alone sets min = avg/4 and max = avg*4\n"
                "  --level L   zstd level of the stored frames (default %d)\n"
                "  --raw       chunk any bytes; do not check that the input is a NAR\n"
                "  -h, --help  this text\n",
                CHUNKER_MIN_DEFAULT, CHUNKER_AVG_DEFAULT, CHUNKER_MAX_DEFAULT,
                CHUNK_LEVEL_DEFAULT);
}

/* A chunking bound: a size (parse_size) of at most CHUNKER_MAX_HIGHEST. */
static int parse_bound(const char *s, uint32_t *ret) {
        uint64_t v;
        int r = parse_size(s, &v);
        if (r < 0)
                return r;
        if (v > CHUNKER_MAX_HIGHEST)
                return -ERANGE;
        *ret = (uint32_t) v;
        return 0;
}

static int parse_level(const char *s, int *ret) {
        long v;
        char *end;

        if (!s || !*s)
                return -EINVAL;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno || *end || v < -1000 || v > 1000)
                return -EINVAL;
        *ret = (int) v;
        return 0;
}

struct chunks_state {
        struct chunkcodec *codec;
        uint8_t *chunk;         /* the chunk in progress, up to max_size */
        size_t chunk_len;
        uint8_t *frame;         /* chunkcodec_bound(max_size) */
        size_t frame_cap;
        uint64_t offset;        /* NAR offset of the chunk in progress */
        uint64_t count, stored, smallest, largest;
};

static int chunks_emit(struct chunks_state *s) {
        uint8_t id[SHA256_DIGEST_LEN];
        char hex[2 * SHA256_DIGEST_LEN + 1];
        size_t flen;
        int r;

        r = sha256_buf(s->chunk, s->chunk_len, id);
        if (r < 0)
                return log_error_errno(r, "nar chunks: SHA-256 failed: %s", strerror(-r));
        r = chunkcodec_encode(s->codec, s->chunk, s->chunk_len, s->frame, s->frame_cap, &flen);
        if (r < 0)
                return log_error_errno(r, "nar chunks: compression failed: %s", strerror(-r));
        hex_encode(id, sizeof id, hex);
        if (printf("%" PRIu64 " %zu %s %zu\n", s->offset, s->chunk_len, hex, flen) < 0)
                return log_error_errno(EIO, "nar chunks: cannot write to standard output");
        s->count++;
        s->stored += flen;
        s->smallest = s->count == 1 ? s->chunk_len : MIN(s->smallest, (uint64_t) s->chunk_len);
        s->largest = MAX(s->largest, (uint64_t) s->chunk_len);
        s->offset += s->chunk_len;
        s->chunk_len = 0;
        return 0;
}

static int chunks_fd(int fd, const char *name, const struct chunker_params *params, int level,
                     bool raw) {
        _cleanup_(chunkcodec_freep) struct chunkcodec *codec = NULL;
        _cleanup_(nar_reader_freep) struct nar_reader *reader = NULL;
        static const struct nar_reader_callbacks no_callbacks = {};
        _cleanup_free_ uint8_t *rbuf = NULL, *chunk = NULL, *frame = NULL;
        struct chunks_state s = {};
        struct chunker c;
        bool complete = false;
        int r;

        r = chunker_init(&c, params);
        if (r < 0)
                return log_error_errno(r, "nar chunks: invalid chunk sizes");
        r = chunkcodec_new(level, &codec);
        if (r < 0)
                return log_error_errno(r, "nar chunks: invalid zstd level %d", level);
        if (!raw) {
                r = nar_reader_new(&no_callbacks, NULL, &reader);
                if (r < 0)
                        return log_error_errno(r, "nar chunks: cannot create NAR reader: %s",
                                               strerror(-r));
        }
        rbuf = malloc(CHUNKS_READ_SIZE);
        chunk = malloc(params->max_size);
        s.frame_cap = chunkcodec_bound(params->max_size);
        frame = malloc(s.frame_cap);
        if (!rbuf || !chunk || !frame)
                return log_error_errno(ENOMEM, "nar chunks: out of memory");
        s.codec = codec;
        s.chunk = chunk;
        s.frame = frame;

        for (;;) {
                ssize_t n = read(fd, rbuf, CHUNKS_READ_SIZE);
                const uint8_t *p = rbuf;

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(errno, "nar chunks: %s: read failed: %m", name);
                }
                if (n == 0)
                        break;
                if (reader) {
                        r = nar_reader_feed(reader, rbuf, (size_t) n);
                        if (r < 0)
                                return log_error_errno(r, "nar chunks: %s: not a valid NAR: %s",
                                                       name, nar_reader_error(reader));
                        complete = r > 0;
                }
                while (n > 0) {
                        size_t k = chunker_scan(&c, p, (size_t) n);
                        size_t take = k ? k : (size_t) n;

                        /* The chunker never lets a chunk exceed max_size. */
                        if (s.chunk_len + take > params->max_size)
                                return log_error_errno(EIO, "nar chunks: chunk over max size");
                        memcpy(chunk + s.chunk_len, p, take);
                        s.chunk_len += take;
                        p += take;
                        n -= (ssize_t) take;
                        if (k) {
                                r = chunks_emit(&s);
                                if (r < 0)
                                        return r;
                        }
                }
        }
        if (reader && !complete) {
                r = nar_reader_finish(reader);
                if (r < 0)
                        return log_error_errno(r, "nar chunks: %s: not a valid NAR: %s", name,
                                               nar_reader_error(reader));
        }
        if (s.chunk_len > 0) {
                r = chunks_emit(&s);
                if (r < 0)
                        return r;
        }
        if (fflush(stdout) != 0 || ferror(stdout))
                return log_error_errno(EIO, "nar chunks: cannot write to standard output");
        fprintf(stderr,
                "%" PRIu64 " chunks, %" PRIu64 " bytes (chunk sizes min %" PRIu64
                ", mean %.0f, max %" PRIu64 "); stored %" PRIu64 " bytes (%.1f%%) at zstd level %d\n",
                s.count, s.offset, s.smallest,
                s.count ? (double) s.offset / (double) s.count : 0.0, s.largest, s.stored,
                s.offset ? 100.0 * (double) s.stored / (double) s.offset : 0.0, level);
        return 0;
}

int cmd_nar_chunks(int argc, char **argv) {
        struct chunker_params params;
        uint32_t min = 0, avg = 0, max = 0;
        int level = CHUNK_LEVEL_DEFAULT, r;
        const char *file = NULL;
        bool options_done = false, raw = false;

        chunker_params_default(&params);
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                uint32_t *target = NULL;

                if (options_done || a[0] != '-' || a[1] == 0) {
                        if (file) {
                                fprintf(stderr,
                                        "trove nar chunks: one FILE only ('%s' and '%s' given)\n",
                                        file, a);
                                return 2;
                        }
                        file = a;
                        continue;
                }
                if (streq(a, "--"))
                        options_done = true;
                else if (streq(a, "--help") || streq(a, "-h")) {
                        chunks_usage(stdout);
                        return 0;
                } else if (streq(a, "--raw"))
                        raw = true;
                else if (streq(a, "--min"))
                        target = &min;
                else if (streq(a, "--avg"))
                        target = &avg;
                else if (streq(a, "--max"))
                        target = &max;
                else if (streq(a, "--level")) {
                        if (i + 1 >= argc || parse_level(argv[i + 1], &level) < 0) {
                                fprintf(stderr, "trove nar chunks: --level needs a number\n");
                                return 2;
                        }
                        i++;
                } else {
                        fprintf(stderr, "trove nar chunks: unknown option '%s'\n", a);
                        chunks_usage(stderr);
                        return 2;
                }
                if (target) {
                        if (i + 1 >= argc || parse_bound(argv[i + 1], target) < 0 || *target == 0) {
                                fprintf(stderr,
                                        "trove nar chunks: %s needs a size in bytes (e.g. 65536, 64K), "
                                        "at most %u\n",
                                        a, CHUNKER_MAX_HIGHEST);
                                return 2;
                        }
                        i++;
                }
        }
        if (!file) {
                chunks_usage(stderr);
                return 2;
        }
        if (avg) {
                params.avg_size = avg;
                params.min_size = avg / 4;
                params.max_size = (uint32_t) MIN((uint64_t) avg * 4, CHUNKER_MAX_HIGHEST);
        }
        if (min)
                params.min_size = min;
        if (max)
                params.max_size = max;
        if (chunker_params_check(&params) < 0) {
                fprintf(stderr,
                        "trove nar chunks: invalid sizes min %u avg %u max %u: need %u <= min < avg "
                        "< max <= %u, avg a power of two\n",
                        params.min_size, params.avg_size, params.max_size, CHUNKER_MIN_LOWEST,
                        CHUNKER_MAX_HIGHEST);
                return 2;
        }

        if (streq(file, "-"))
                r = chunks_fd(STDIN_FILENO, "standard input", &params, level, raw);
        else {
                _cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                        log_error_errno(errno, "nar chunks: %s: %m", file);
                        return 1;
                }
                r = chunks_fd(fd, file, &params, level, raw);
        }
        return r < 0 ? 1 : 0;
}
