/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nar_reader.c - strict, step-driven NAR parser.
 *
 * Everything in a NAR is a "string" (u64 LE length, bytes, zero padding to
 * 8) except file contents, which have the same framing but are passed
 * through. The reader has two layers of state: the low one (len / body /
 * pad) consumes bytes of whatever slice it is fed, the grammar one (which
 * string is expected next) decides what a completed string means. Because
 * all progress is kept in the struct, the same events come out whether the
 * input arrives in one slice or one byte at a time.
 *
 * Memory is fixed at creation: the longest string kept is a symlink target,
 * paths are bounded by NAR_PATH_MAX, nesting by NAR_DEPTH_MAX.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "trove/nar.h"

#define NAR_MAGIC "nix-archive-1"
#define TOKEN_MAX 16 /* longer than any token Nix writes */

enum low {
        LOW_LEN,
        LOW_BODY,
        LOW_PAD,
};

enum gram {
        G_MAGIC,       /* "nix-archive-1" */
        G_OPEN,        /* "(" of a node */
        G_TYPE_KW,     /* "type" */
        G_TYPE,        /* "regular" | "symlink" | "directory" */
        G_REG_ATTR,    /* "executable" | "contents" */
        G_EXEC_EMPTY,  /* "" after "executable" */
        G_CONTENTS_KW, /* "contents" after the executable marker */
        G_CONTENTS,    /* u64 size, data, padding */
        G_REG_CLOSE,   /* ")" of a regular node */
        G_TARGET_KW,   /* "target" */
        G_TARGET,      /* the symlink target */
        G_SYM_CLOSE,   /* ")" of a symlink node */
        G_DIR_ITEM,    /* "entry" | ")" */
        G_ENTRY_OPEN,  /* "(" of an entry */
        G_NAME_KW,     /* "name" */
        G_NAME,        /* the entry name */
        G_NODE_KW,     /* "node" */
        G_ENTRY_CLOSE, /* ")" of an entry */
        G_DONE,
};

static const char *const gram_expect[] = {
        [G_MAGIC] = "\"" NAR_MAGIC "\"",
        [G_OPEN] = "\"(\"",
        [G_TYPE_KW] = "\"type\"",
        [G_TYPE] = "a node type",
        [G_REG_ATTR] = "\"executable\" or \"contents\"",
        [G_EXEC_EMPTY] = "\"\" after \"executable\"",
        [G_CONTENTS_KW] = "\"contents\"",
        [G_CONTENTS] = "file contents",
        [G_REG_CLOSE] = "\")\" after file contents",
        [G_TARGET_KW] = "\"target\"",
        [G_TARGET] = "a symlink target",
        [G_SYM_CLOSE] = "\")\" after symlink target",
        [G_DIR_ITEM] = "\"entry\" or \")\"",
        [G_ENTRY_OPEN] = "\"(\" after \"entry\"",
        [G_NAME_KW] = "\"name\"",
        [G_NAME] = "an entry name",
        [G_NODE_KW] = "\"node\"",
        [G_ENTRY_CLOSE] = "\")\" closing the entry",
        [G_DONE] = "nothing",
};

struct nar_reader {
        struct nar_reader_callbacks cb;
        void *userdata;

        uint64_t offset;      /* NAR bytes consumed */
        uint64_t item_offset; /* where the current string's length field began */
        int error;            /* sticky */
        enum low low;
        enum gram gram;

        uint8_t lenbuf[8];
        unsigned lenbuf_have;
        uint64_t len;       /* length of the current string */
        uint64_t body_left; /* bytes of body still to come */
        unsigned pad_left;

        size_t str_len;     /* bytes of the current string held in str */
        char str[NAR_TARGET_MAX + 1];

        bool executable;
        uint64_t node_offset; /* offset of the current node's "(" */

        /* Open directories: depth = how many. Path handling as in the
         * encoder: after an entry ends, its name stays behind the parent's
         * path so the next sibling can be compared with it. */
        unsigned depth;
        uint16_t dir_base[NAR_DEPTH_MAX + 1];
        bool dir_has_prev[NAR_DEPTH_MAX + 1];
        size_t path_len;
        char path[NAR_PATH_MAX + 1];

        char errmsg[512];
};

int nar_reader_new(const struct nar_reader_callbacks *cb, void *userdata, struct nar_reader **ret) {
        struct nar_reader *r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        if (cb)
                r->cb = *cb;
        r->userdata = userdata;
        r->low = LOW_LEN;
        r->gram = G_MAGIC;
        *ret = r;
        return 0;
}

struct nar_reader *nar_reader_free(struct nar_reader *r) {
        free(r);
        return NULL;
}

uint64_t nar_reader_offset(const struct nar_reader *r) {
        return r->offset;
}

const char *nar_reader_error(const struct nar_reader *r) {
        if (r->errmsg[0])
                return r->errmsg;
        if (r->error)
                return strerror(-r->error);
        return "no error";
}

/* Appends s[0..n) to out (capacity cap, NUL-terminated) with quotes and
 * backslashes escaped and non-printable bytes as \xNN; long strings keep
 * their head and tail. */
static void escape_into(char *out, size_t cap, const char *s, size_t n) {
        size_t o = strlen(out);
        const size_t keep = 100;

        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                char tmp[8];
                int k;

                if (n > 2 * keep && i == keep) {
                        k = snprintf(tmp, sizeof tmp, "...");
                        i = n - keep - 1;
                } else if (c == '"' || c == '\\')
                        k = snprintf(tmp, sizeof tmp, "\\%c", c);
                else if (c < 0x20 || c >= 0x7f)
                        k = snprintf(tmp, sizeof tmp, "\\x%02x", c);
                else
                        k = snprintf(tmp, sizeof tmp, "%c", c);
                if (o + (size_t) k + 1 > cap)
                        break;
                memcpy(out + o, tmp, (size_t) k + 1);
                o += (size_t) k;
        }
}

/* Records "at NAR offset N (entry "path"): what" and fails the reader. */
_printf_(3, 4)
static int fail_at(struct nar_reader *r, uint64_t at, const char *fmt, ...) {
        char what[384];
        va_list ap;
        size_t o, shown = r->path_len;

        /* Between entries path holds the previous sibling; show the
         * directory instead. */
        if (r->depth > 0 && (r->gram == G_DIR_ITEM || r->gram == G_ENTRY_OPEN ||
                             r->gram == G_NAME_KW || r->gram == G_NAME))
                shown = r->dir_base[r->depth - 1];

        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);

        snprintf(r->errmsg, sizeof r->errmsg, "at NAR offset %" PRIu64, at);
        if (shown > 0) {
                o = strlen(r->errmsg);
                snprintf(r->errmsg + o, sizeof r->errmsg - o, " (entry \"");
                escape_into(r->errmsg, sizeof r->errmsg - 2 - 1, r->path, shown);
                o = strlen(r->errmsg);
                snprintf(r->errmsg + o, sizeof r->errmsg - o, "\")");
        }
        o = strlen(r->errmsg);
        snprintf(r->errmsg + o, sizeof r->errmsg - o, ": %s", what);
        r->error = -EBADMSG;
        return -EBADMSG;
}

/* A callback's own error aborts the read as is. */
static int cb_fail(struct nar_reader *r, int c) {
        if (c > 0)
                c = -c;
        if (c == 0)
                c = -EIO;
        r->error = c;
        snprintf(r->errmsg, sizeof r->errmsg, "at NAR offset %" PRIu64 ": consumer failed: %s",
                 r->offset, strerror(-c));
        return c;
}

static bool str_is(const struct nar_reader *r, const char *tok) {
        size_t n = strlen(tok);
        return r->str_len == n && memcmp(r->str, tok, n) == 0;
}

static int fail_token(struct nar_reader *r) {
        char got[TOKEN_MAX * 4 + 1] = "";
        escape_into(got, sizeof got, r->str, r->str_len);
        return fail_at(r, r->item_offset, "expected %s, got \"%s\"", gram_expect[r->gram], got);
}

/* The current node is complete. */
static void node_end(struct nar_reader *r) {
        r->gram = r->depth == 0 ? G_DONE : G_ENTRY_CLOSE;
}

static int node_begin_dir(struct nar_reader *r) {
        int c;

        /* entry checks keep depth <= NAR_DEPTH_MAX here */
        r->dir_base[r->depth] = (uint16_t) r->path_len;
        r->dir_has_prev[r->depth] = false;
        r->depth++;
        r->path[r->path_len] = 0;
        if (r->cb.directory) {
                c = r->cb.directory(r->userdata, r->path, r->node_offset);
                if (c != 0)
                        return cb_fail(r, c);
        }
        r->gram = G_DIR_ITEM;
        return 0;
}

static int dir_end(struct nar_reader *r) {
        int c;

        r->depth--;
        r->path_len = r->dir_base[r->depth];
        r->path[r->path_len] = 0;
        if (r->cb.directory_end) {
                c = r->cb.directory_end(r->userdata, r->path);
                if (c != 0)
                        return cb_fail(r, c);
        }
        node_end(r);
        return 0;
}

static int entry_name(struct nar_reader *r) {
        unsigned level = r->depth - 1;
        size_t pos = r->dir_base[level] + (r->dir_base[level] > 0 ? 1 : 0);
        const char *name = r->str;
        size_t len = r->str_len;
        char shown[160] = "";
        int c;

        if (memchr(name, 0, len) || memchr(name, '/', len) || streq(name, ".") ||
            streq(name, "..")) {
                escape_into(shown, sizeof shown, name, len);
                return fail_at(r, r->item_offset, "invalid entry name \"%s\"", shown);
        }
        if (r->dir_has_prev[level]) {
                size_t plen = r->path_len - pos;
                c = memcmp(name, r->path + pos, MIN(len, plen));
                if (c < 0 || (c == 0 && len <= plen)) {
                        char prev[160] = "";
                        escape_into(shown, sizeof shown, name, len);
                        escape_into(prev, sizeof prev, r->path + pos, plen);
                        return fail_at(r, r->item_offset,
                                       c == 0 && len == plen ? "duplicate entry name \"%s\"%.0s"
                                                             : "names not sorted: \"%s\" after \"%s\"",
                                       shown, prev);
                }
        }
        if (r->depth > NAR_DEPTH_MAX) {
                return fail_at(r, r->item_offset, "directories nested deeper than %d",
                               NAR_DEPTH_MAX);
        }
        if (pos + len > NAR_PATH_MAX) {
                return fail_at(r, r->item_offset, "path longer than %d bytes", NAR_PATH_MAX);
        }
        if (pos > 0)
                r->path[pos - 1] = '/';
        memcpy(r->path + pos, name, len);
        r->path_len = pos + len;
        r->path[r->path_len] = 0;
        if (r->cb.entry) {
                c = r->cb.entry(r->userdata, name, len);
                if (c != 0)
                        return cb_fail(r, c);
        }
        r->gram = G_NODE_KW;
        return 0;
}

/* A length field is complete: bound it before anything is read. */
static int on_len(struct nar_reader *r) {
        uint64_t len = 0, pad;
        int c;

        for (unsigned i = 0; i < 8; i++)
                len |= (uint64_t) r->lenbuf[i] << (8 * i);
        r->len = len;
        pad = (8 - (len & 7)) & 7;

        switch (r->gram) {
        case G_DONE:
                return fail_at(r, r->item_offset, "data after the end of the archive");
        case G_CONTENTS: {
                uint64_t end;
                if (ADD_OVERFLOW(r->offset, len, &end) || ADD_OVERFLOW(end, pad, &end) ||
                    end > NAR_SIZE_MAX)
                        return fail_at(r, r->item_offset, "file size %" PRIu64 " is too large",
                                       len);
                r->path[r->path_len] = 0;
                if (r->cb.regular) {
                        c = r->cb.regular(r->userdata, r->path, len, r->executable, r->offset);
                        if (c != 0)
                                return cb_fail(r, c);
                }
                break;
        }
        case G_NAME:
                if (len == 0)
                        return fail_at(r, r->item_offset, "empty entry name");
                if (len > NAR_NAME_MAX)
                        return fail_at(r, r->item_offset,
                                       "entry name of %" PRIu64 " bytes (limit %d)", len,
                                       NAR_NAME_MAX);
                break;
        case G_TARGET:
                if (len == 0)
                        return fail_at(r, r->item_offset, "empty symlink target");
                if (len > NAR_TARGET_MAX)
                        return fail_at(r, r->item_offset,
                                       "symlink target of %" PRIu64 " bytes (limit %d)", len,
                                       NAR_TARGET_MAX);
                break;
        default:
                if (len > TOKEN_MAX)
                        return fail_at(r, r->item_offset,
                                       "expected %s, got a string of %" PRIu64 " bytes",
                                       gram_expect[r->gram], len);
                break;
        }
        r->str_len = 0;
        r->body_left = len;
        r->pad_left = (unsigned) pad;
        r->low = LOW_BODY;
        return 0;
}

/* A string (or the file contents) and its padding are complete. */
static int on_string(struct nar_reader *r) {
        int c;

        r->str[r->str_len] = 0;
        switch (r->gram) {
        case G_MAGIC:
                if (!str_is(r, NAR_MAGIC)) {
                        char got[TOKEN_MAX * 4 + 1] = "";
                        escape_into(got, sizeof got, r->str, r->str_len);
                        return fail_at(r, r->item_offset, "not a NAR: bad magic \"%s\"", got);
                }
                r->gram = G_OPEN;
                return 0;
        case G_OPEN:
                if (!str_is(r, "("))
                        return fail_token(r);
                r->node_offset = r->item_offset;
                r->gram = G_TYPE_KW;
                return 0;
        case G_TYPE_KW:
                if (!str_is(r, "type"))
                        return fail_token(r);
                r->gram = G_TYPE;
                return 0;
        case G_TYPE:
                if (str_is(r, "regular")) {
                        r->executable = false;
                        r->gram = G_REG_ATTR;
                        return 0;
                }
                if (str_is(r, "symlink")) {
                        r->gram = G_TARGET_KW;
                        return 0;
                }
                if (str_is(r, "directory"))
                        return node_begin_dir(r);
                {
                        char got[TOKEN_MAX * 4 + 1] = "";
                        escape_into(got, sizeof got, r->str, r->str_len);
                        return fail_at(r, r->item_offset, "unknown node type \"%s\"", got);
                }
        case G_REG_ATTR:
                if (str_is(r, "executable")) {
                        r->executable = true;
                        r->gram = G_EXEC_EMPTY;
                        return 0;
                }
                if (str_is(r, "contents")) {
                        r->gram = G_CONTENTS;
                        return 0;
                }
                return fail_token(r);
        case G_EXEC_EMPTY:
                if (r->str_len != 0)
                        return fail_token(r);
                r->gram = G_CONTENTS_KW;
                return 0;
        case G_CONTENTS_KW:
                if (!str_is(r, "contents"))
                        return fail_token(r);
                r->gram = G_CONTENTS;
                return 0;
        case G_CONTENTS:
                r->gram = G_REG_CLOSE;
                return 0;
        case G_REG_CLOSE:
                if (!str_is(r, ")"))
                        return fail_token(r);
                r->path[r->path_len] = 0;
                if (r->cb.regular_end) {
                        c = r->cb.regular_end(r->userdata, r->path);
                        if (c != 0)
                                return cb_fail(r, c);
                }
                node_end(r);
                return 0;
        case G_TARGET_KW:
                if (!str_is(r, "target"))
                        return fail_token(r);
                r->gram = G_TARGET;
                return 0;
        case G_TARGET:
                if (memchr(r->str, 0, r->str_len))
                        return fail_at(r, r->item_offset, "NUL byte in symlink target");
                r->path[r->path_len] = 0;
                if (r->cb.symlink) {
                        c = r->cb.symlink(r->userdata, r->path, r->str, r->str_len);
                        if (c != 0)
                                return cb_fail(r, c);
                }
                r->gram = G_SYM_CLOSE;
                return 0;
        case G_SYM_CLOSE:
                if (!str_is(r, ")"))
                        return fail_token(r);
                node_end(r);
                return 0;
        case G_DIR_ITEM:
                if (str_is(r, "entry")) {
                        r->gram = G_ENTRY_OPEN;
                        return 0;
                }
                if (str_is(r, ")"))
                        return dir_end(r);
                return fail_token(r);
        case G_ENTRY_OPEN:
                if (!str_is(r, "("))
                        return fail_token(r);
                r->gram = G_NAME_KW;
                return 0;
        case G_NAME_KW:
                if (!str_is(r, "name"))
                        return fail_token(r);
                r->gram = G_NAME;
                return 0;
        case G_NAME:
                return entry_name(r);
        case G_NODE_KW:
                if (!str_is(r, "node"))
                        return fail_token(r);
                r->gram = G_OPEN;
                return 0;
        case G_ENTRY_CLOSE:
                if (!str_is(r, ")"))
                        return fail_token(r);
                r->dir_has_prev[r->depth - 1] = true;
                if (r->cb.entry_end) {
                        c = r->cb.entry_end(r->userdata);
                        if (c != 0)
                                return cb_fail(r, c);
                }
                r->gram = G_DIR_ITEM;
                return 0;
        case G_DONE:
                break;
        }
        return fail_at(r, r->item_offset, "internal state error");
}

int nar_reader_feed(struct nar_reader *r, const void *p, size_t n) {
        const uint8_t *in = p;
        int c;

        if (r->error)
                return r->error;

        while (n > 0) {
                switch (r->low) {
                case LOW_LEN: {
                        if (r->lenbuf_have == 0) {
                                if (r->gram == G_DONE)
                                        return fail_at(r, r->offset,
                                                       "data after the end of the archive");
                                r->item_offset = r->offset;
                        }
                        size_t k = MIN(n, 8 - (size_t) r->lenbuf_have);
                        memcpy(r->lenbuf + r->lenbuf_have, in, k);
                        r->lenbuf_have += (unsigned) k;
                        in += k;
                        n -= k;
                        r->offset += k;
                        if (r->lenbuf_have < 8)
                                break;
                        r->lenbuf_have = 0;
                        c = on_len(r);
                        if (c < 0)
                                return c;
                        break;
                }
                case LOW_BODY: {
                        size_t k = (size_t) MIN((uint64_t) n, r->body_left);
                        if (r->gram == G_CONTENTS) {
                                if (k > 0 && r->cb.data) {
                                        c = r->cb.data(r->userdata, in, k);
                                        if (c != 0) {
                                                r->offset += k;
                                                return cb_fail(r, c);
                                        }
                                }
                        } else {
                                /* on_len bounded len by sizeof str - 1 */
                                memcpy(r->str + r->str_len, in, k);
                                r->str_len += k;
                        }
                        in += k;
                        n -= k;
                        r->offset += k;
                        r->body_left -= k;
                        break;
                }
                case LOW_PAD:
                        if (*in != 0)
                                return fail_at(r, r->offset, "non-zero padding byte 0x%02x", *in);
                        in++;
                        n--;
                        r->offset++;
                        r->pad_left--;
                        break;
                }

                /* Complete the string as soon as its last byte is in, so
                 * the archive's end is seen without more input. */
                if (r->low == LOW_BODY && r->body_left == 0)
                        r->low = LOW_PAD;
                if (r->low == LOW_PAD && r->pad_left == 0) {
                        r->low = LOW_LEN;
                        c = on_string(r);
                        if (c < 0)
                                return c;
                }
        }
        return r->gram == G_DONE ? 1 : 0;
}

int nar_reader_finish(struct nar_reader *r) {
        const char *what = gram_expect[r->gram];

        if (r->error)
                return r->error;
        if (r->gram == G_DONE)
                return 0;
        if (r->low == LOW_LEN && r->lenbuf_have == 0)
                return fail_at(r, r->offset, "truncated archive: ended where %s was expected",
                               what);
        if (r->low == LOW_LEN)
                return fail_at(r, r->offset, "truncated archive: ended inside the length of %s",
                               what);
        if (r->low == LOW_BODY && r->gram == G_CONTENTS)
                return fail_at(r, r->offset,
                               "truncated archive: ended inside file contents, %" PRIu64
                               " bytes missing",
                               r->body_left);
        if (r->low == LOW_BODY)
                return fail_at(r, r->offset, "truncated archive: ended inside %s", what);
        return fail_at(r, r->offset, "truncated archive: ended inside the padding of %s", what);
}
