/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nar.h - Nix Archives, byte-exact with `nix-store --dump`.
 *
 * Three pieces share one event vocabulary:
 *  - nar_encoder turns events (directory, entry, file, data, symlink) into
 *    NAR bytes handed to a sink;
 *  - nar_dump walks a tree on disk and drives an encoder;
 *  - nar_reader is a strict, step-driven parser fed arbitrary slices that
 *    reports the same events (with NAR offsets) to callbacks.
 * A reader feeding an encoder reproduces its input byte for byte.
 *
 * Wire format (all strings: u64 little-endian length, bytes, zero padding to
 * 8): "nix-archive-1" node; node = "(" "type" T ... ")"; regular: "type"
 * "regular" ["executable" ""] "contents" <u64 size, data, pad>; symlink:
 * "type" "symlink" "target" <str>; directory: "type" "directory" then per
 * entry "entry" "(" "name" <str> "node" node ")".
 */
#pragma once

#include "trove/common.h"

/* Limits the reader enforces (and the encoder refuses to exceed). */
#define NAR_NAME_MAX 255          /* bytes in one entry name */
#define NAR_DEPTH_MAX 256         /* directory nesting */
#define NAR_TARGET_MAX 4095       /* bytes in a symlink target */
#define NAR_PATH_MAX 4096         /* bytes in the relative path of an entry */
/* Every NAR offset (and so every file size) fits in off_t. */
#define NAR_SIZE_MAX ((uint64_t) INT64_MAX)

enum nar_type {
        NAR_REGULAR = 1,
        NAR_DIRECTORY = 2,
        NAR_SYMLINK = 3,
};

/* True if name may be a directory entry: 1..NAR_NAME_MAX bytes, not "." or
 * "..", no '/' and no NUL. */
bool nar_name_is_valid(const char *name, size_t len);

/* Sink for produced bytes: returns 0 or a negative errno that aborts. */
typedef int (*nar_sink_fn)(void *userdata, const void *p, size_t n);

/* ---- encoder ---- */

/* Bytes the encoder collects before handing them to the sink: headers and
 * small file contents are batched; large data writes pass straight through. */
#define NAR_ENCODER_STAGE 16384

/* Caller-allocated (about 21 KiB, no heap). Fields are private. */
struct nar_encoder {
        nar_sink_fn sink;
        void *userdata;
        uint64_t offset;          /* bytes emitted so far (staged included) */
        uint64_t file_left;       /* bytes of the current file still owed */
        uint64_t file_size;
        unsigned depth;           /* open directories */
        bool started, finished, in_file;
        int state;
        int error;                /* sticky: first failure */
        size_t stage_len;
        size_t path_len;
        /* path of the current entry; after an entry ends, its name stays
         * behind the parent's path so the next sibling can be compared */
        uint16_t dir_base[NAR_DEPTH_MAX + 1];
        bool dir_has_prev[NAR_DEPTH_MAX + 1];
        char path[NAR_PATH_MAX + 1];
        uint8_t stage[NAR_ENCODER_STAGE];
};

void nar_encoder_init(struct nar_encoder *e, nar_sink_fn sink, void *userdata);
/* Events, in NAR order. The root node has no entry; every other node is
 * preceded by nar_encoder_entry(name) and followed by nar_encoder_entry_end().
 * A regular file's contents follow nar_encoder_regular() in any number of
 * nar_encoder_data() calls totalling exactly size bytes (the file node ends
 * by itself once they are written). Any event out of order, a name that is
 * invalid or not strictly greater than its predecessor, or a limit exceeded
 * returns -EINVAL; a sink error is returned as is. Either leaves the encoder
 * failed: every later call returns the same error. */
int nar_encoder_directory(struct nar_encoder *e);
int nar_encoder_directory_end(struct nar_encoder *e);
int nar_encoder_entry(struct nar_encoder *e, const char *name, size_t len);
int nar_encoder_entry_end(struct nar_encoder *e);
int nar_encoder_regular(struct nar_encoder *e, uint64_t size, bool executable);
int nar_encoder_data(struct nar_encoder *e, const void *p, size_t n);
int nar_encoder_symlink(struct nar_encoder *e, const char *target, size_t len);
/* Checks the archive is complete (-EINVAL if not) and flushes the staged
 * bytes to the sink. */
int nar_encoder_finish(struct nar_encoder *e);

/* ---- dump from disk ---- */

/* Serializes the tree at path (a file, symlink or directory; not followed if
 * a symlink) like `nix-store --dump`: directory entries in byte order,
 * executable = any x bit of the owner. Errors carry the path in err. */
int nar_dump_path(const char *path, nar_sink_fn sink, void *userdata, struct trove_error *err);

/* ---- reader ---- */

struct nar_reader_callbacks {
        /* Every callback may be NULL. path is the entry's path relative to
         * the root ("" for the root, "bin/sh" inside), NUL-terminated, valid
         * only during the call. offset is the NAR offset of the node's "("
         * for nodes, and for regular files contents_offset is where the
         * file's bytes start. Returning non-zero aborts the read with that
         * error (a positive value is negated).
         *
         * Order: directory, then per entry: entry, the child's events,
         * entry_end; then directory_end. A regular file: regular, data (zero
         * or more calls, pointing into the fed slice, no copy), regular_end
         * once its ")" is read. Events are reported as soon as their bytes
         * are in, so a consumer may see events of an archive that later
         * turns out malformed: it must not commit anything before feed()
         * returned 1 and finish() 0. */
        int (*directory)(void *ud, const char *path, uint64_t offset);
        int (*directory_end)(void *ud, const char *path);
        int (*regular)(void *ud, const char *path, uint64_t size, bool executable,
                       uint64_t contents_offset);
        int (*data)(void *ud, const void *p, size_t n);
        int (*regular_end)(void *ud, const char *path);
        int (*symlink)(void *ud, const char *path, const char *target, size_t target_len);
        /* name of the entry about to be described; for consumers that
         * re-encode (the reader already validated it). */
        int (*entry)(void *ud, const char *name, size_t len);
        int (*entry_end)(void *ud);
};

struct nar_reader;

int nar_reader_new(const struct nar_reader_callbacks *cb, void *userdata, struct nar_reader **ret);
struct nar_reader *nar_reader_free(struct nar_reader *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct nar_reader *, nar_reader_free);
/* The reader holds only fixed-size state (about 9 KiB: the current path,
 * the longest string it keeps, one slot per nesting level); nothing it
 * allocates grows with the input.
 *
 * Feeds the next n bytes (any slicing gives the same events and result). Returns 0 while more is expected, 1 once the
 * archive is complete (further bytes are an error), or a negative errno:
 * -EBADMSG for malformed input (message in nar_reader_error()), or what a
 * callback returned. After an error the reader refuses further input. */
int nar_reader_feed(struct nar_reader *r, const void *p, size_t n);
/* 0 if the archive was complete, -EBADMSG ("truncated ...") otherwise. */
int nar_reader_finish(struct nar_reader *r);
uint64_t nar_reader_offset(const struct nar_reader *r);
/* "at NAR offset N (entry \"a/b\"): what" for the first error. */
const char *nar_reader_error(const struct nar_reader *r);

/* Convenience: encoder driven by reader callbacks (for re-encoding); call
 * nar_encoder_finish() after the reader finished. */
extern const struct nar_reader_callbacks nar_reencode_callbacks; /* ud = struct nar_encoder * */
