/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nar_encoder.c - NAR events in, `nix-store --dump` bytes out.
 *
 * The encoder is strict about the order of events so that whatever drives
 * it (a tree walk, a reader, a test) cannot produce an archive Nix would
 * reject or write differently. Small pieces (tokens, names, small file
 * contents) are collected in a staging buffer so the sink sees few, large
 * writes; large data writes bypass it.
 */
#include "trove/nar.h"

enum {
        ENC_NODE,      /* a node is expected (root, or after an entry) */
        ENC_DIR,       /* inside a directory: entry or directory_end */
        ENC_FILE,      /* regular file data owed */
        ENC_ENTRY_END, /* the entry's node is complete */
        ENC_DONE,      /* the root node is complete */
        ENC_FINISHED,  /* nar_encoder_finish() succeeded */
};

bool nar_name_is_valid(const char *name, size_t len) {
        if (len == 0 || len > NAR_NAME_MAX)
                return false;
        if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
                return false;
        return !memchr(name, '/', len) && !memchr(name, 0, len);
}

void nar_encoder_init(struct nar_encoder *e, nar_sink_fn sink, void *userdata) {
        /* The large arrays need no clearing: they are written before read. */
        e->sink = sink;
        e->userdata = userdata;
        e->offset = 0;
        e->file_left = e->file_size = 0;
        e->depth = 0;
        e->started = e->finished = e->in_file = false;
        e->state = ENC_NODE;
        e->error = 0;
        e->stage_len = 0;
        e->path_len = 0;
        e->path[0] = 0;
}

static int enc_fail(struct nar_encoder *e, int err) {
        if (e->error == 0)
                e->error = err;
        return err;
}

static int enc_flush(struct nar_encoder *e) {
        int r;

        if (e->stage_len == 0)
                return 0;
        r = e->sink(e->userdata, e->stage, e->stage_len);
        e->stage_len = 0;
        if (r < 0)
                return enc_fail(e, r);
        return 0;
}

static int enc_put(struct nar_encoder *e, const void *p, size_t n) {
        int r;

        if (n == 0)
                return 0;
        if (n > sizeof e->stage - e->stage_len) {
                r = enc_flush(e);
                if (r < 0)
                        return r;
        }
        if (n >= sizeof e->stage) {
                r = e->sink(e->userdata, p, n);
                if (r < 0)
                        return enc_fail(e, r);
        } else {
                memcpy(e->stage + e->stage_len, p, n);
                e->stage_len += n;
        }
        e->offset += n;
        return 0;
}

static int enc_pad(struct nar_encoder *e, uint64_t len) {
        static const uint8_t zero[8];
        return enc_put(e, zero, (8 - (len & 7)) & 7);
}

static int enc_u64(struct nar_encoder *e, uint64_t v) {
        uint8_t b[8];
        for (unsigned i = 0; i < 8; i++)
                b[i] = (uint8_t) (v >> (8 * i));
        return enc_put(e, b, 8);
}

static int enc_str(struct nar_encoder *e, const void *s, size_t len) {
        int r = enc_u64(e, len);
        if (r < 0)
                return r;
        r = enc_put(e, s, len);
        if (r < 0)
                return r;
        return enc_pad(e, len);
}

static int enc_tok(struct nar_encoder *e, const char *s) {
        return enc_str(e, s, strlen(s));
}

/* Common checks before an event: not failed, in the expected state. */
static int enc_expect(struct nar_encoder *e, int state) {
        if (e->error)
                return e->error;
        if (e->state != state)
                return enc_fail(e, -EINVAL);
        return 0;
}

static int enc_node_begin(struct nar_encoder *e, const char *type) {
        int r = enc_expect(e, ENC_NODE);
        if (r < 0)
                return r;
        if (!e->started) {
                e->started = true;
                r = enc_tok(e, "nix-archive-1");
                if (r < 0)
                        return r;
        }
        r = enc_tok(e, "(");
        if (r < 0)
                return r;
        r = enc_tok(e, "type");
        if (r < 0)
                return r;
        return enc_tok(e, type);
}

/* The current node is complete (its ")" is written). */
static void enc_node_end(struct nar_encoder *e) {
        e->state = e->depth == 0 ? ENC_DONE : ENC_ENTRY_END;
}

int nar_encoder_directory(struct nar_encoder *e) {
        int r;

        /* A directory at depth d may hold entries at depth d+1; the entry
         * check refuses those beyond NAR_DEPTH_MAX, so this cannot overflow
         * dir_base[]. */
        r = enc_node_begin(e, "directory");
        if (r < 0)
                return r;
        e->dir_base[e->depth] = (uint16_t) e->path_len;
        e->dir_has_prev[e->depth] = false;
        e->depth++;
        e->state = ENC_DIR;
        return 0;
}

int nar_encoder_directory_end(struct nar_encoder *e) {
        int r = enc_expect(e, ENC_DIR);
        if (r < 0)
                return r;
        r = enc_tok(e, ")");
        if (r < 0)
                return r;
        e->depth--;
        e->path_len = e->dir_base[e->depth];
        e->path[e->path_len] = 0;
        enc_node_end(e);
        return 0;
}

int nar_encoder_entry(struct nar_encoder *e, const char *name, size_t len) {
        unsigned level;
        size_t pos;
        int r;

        r = enc_expect(e, ENC_DIR);
        if (r < 0)
                return r;
        if (!nar_name_is_valid(name, len))
                return enc_fail(e, -EINVAL);
        /* Entries inside the directory at depth depth-1 are at depth depth. */
        if (e->depth > NAR_DEPTH_MAX)
                return enc_fail(e, -EINVAL);
        level = e->depth - 1;
        pos = e->dir_base[level] + (e->dir_base[level] > 0 ? 1 : 0);
        if (e->dir_has_prev[level]) {
                /* the previous sibling's name is still at path[pos..path_len) */
                size_t plen = e->path_len - pos;
                int c = memcmp(name, e->path + pos, MIN(len, plen));
                if (c < 0 || (c == 0 && len <= plen))
                        return enc_fail(e, -EINVAL);
        }
        if (pos + len > NAR_PATH_MAX)
                return enc_fail(e, -EINVAL);
        if (pos > 0)
                e->path[pos - 1] = '/';
        memcpy(e->path + pos, name, len);
        e->path_len = pos + len;
        e->path[e->path_len] = 0;

        r = enc_tok(e, "entry");
        if (r >= 0)
                r = enc_tok(e, "(");
        if (r >= 0)
                r = enc_tok(e, "name");
        if (r >= 0)
                r = enc_str(e, name, len);
        if (r >= 0)
                r = enc_tok(e, "node");
        if (r < 0)
                return r;
        e->state = ENC_NODE;
        return 0;
}

int nar_encoder_entry_end(struct nar_encoder *e) {
        int r = enc_expect(e, ENC_ENTRY_END);
        if (r < 0)
                return r;
        r = enc_tok(e, ")");
        if (r < 0)
                return r;
        e->dir_has_prev[e->depth - 1] = true;
        e->state = ENC_DIR;
        return 0;
}

static int enc_file_end(struct nar_encoder *e) {
        int r = enc_pad(e, e->file_size);
        if (r < 0)
                return r;
        r = enc_tok(e, ")");
        if (r < 0)
                return r;
        e->in_file = false;
        enc_node_end(e);
        return 0;
}

int nar_encoder_regular(struct nar_encoder *e, uint64_t size, bool executable) {
        uint64_t end;
        int r;

        r = enc_node_begin(e, "regular");
        if (r < 0)
                return r;
        if (executable) {
                r = enc_tok(e, "executable");
                if (r >= 0)
                        r = enc_str(e, "", 0);
                if (r < 0)
                        return r;
        }
        /* Offsets must stay within NAR_SIZE_MAX; the same bound as the
         * reader's, so what one accepts the other does too. */
        if (ADD_OVERFLOW(e->offset + 24, size, &end) ||
            ADD_OVERFLOW(end, (8 - (size & 7)) & 7, &end) || end > NAR_SIZE_MAX)
                return enc_fail(e, -EINVAL);
        r = enc_tok(e, "contents");
        if (r >= 0)
                r = enc_u64(e, size);
        if (r < 0)
                return r;
        e->file_size = e->file_left = size;
        e->in_file = true;
        e->state = ENC_FILE;
        if (size == 0)
                return enc_file_end(e);
        return 0;
}

int nar_encoder_data(struct nar_encoder *e, const void *p, size_t n) {
        int r = enc_expect(e, ENC_FILE);
        if (r < 0)
                return r;
        if (n > e->file_left)
                return enc_fail(e, -EINVAL);
        r = enc_put(e, p, n);
        if (r < 0)
                return r;
        e->file_left -= n;
        if (e->file_left == 0)
                return enc_file_end(e);
        return 0;
}

int nar_encoder_symlink(struct nar_encoder *e, const char *target, size_t len) {
        int r;

        if (e->error)
                return e->error;
        if (len == 0 || len > NAR_TARGET_MAX || memchr(target, 0, len))
                return enc_fail(e, -EINVAL);
        r = enc_node_begin(e, "symlink");
        if (r >= 0)
                r = enc_tok(e, "target");
        if (r >= 0)
                r = enc_str(e, target, len);
        if (r >= 0)
                r = enc_tok(e, ")");
        if (r < 0)
                return r;
        enc_node_end(e);
        return 0;
}

int nar_encoder_finish(struct nar_encoder *e) {
        int r = enc_expect(e, ENC_DONE);
        if (r < 0)
                return r;
        r = enc_flush(e);
        if (r < 0)
                return r;
        e->finished = true;
        e->state = ENC_FINISHED;
        return 0;
}

/* ---- reader → encoder ---- */

static int re_directory(void *ud, const char *path, uint64_t offset) {
        return nar_encoder_directory(ud);
}

static int re_directory_end(void *ud, const char *path) {
        return nar_encoder_directory_end(ud);
}

static int re_regular(void *ud, const char *path, uint64_t size, bool executable,
                      uint64_t contents_offset) {
        return nar_encoder_regular(ud, size, executable);
}

static int re_data(void *ud, const void *p, size_t n) {
        return nar_encoder_data(ud, p, n);
}

static int re_symlink(void *ud, const char *path, const char *target, size_t target_len) {
        return nar_encoder_symlink(ud, target, target_len);
}

static int re_entry(void *ud, const char *name, size_t len) {
        return nar_encoder_entry(ud, name, len);
}

static int re_entry_end(void *ud) {
        return nar_encoder_entry_end(ud);
}

const struct nar_reader_callbacks nar_reencode_callbacks = {
        .directory = re_directory,
        .directory_end = re_directory_end,
        .regular = re_regular,
        .data = re_data,
        .regular_end = NULL,
        .symlink = re_symlink,
        .entry = re_entry,
        .entry_end = re_entry_end,
};
