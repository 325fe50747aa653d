/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common.h - small helpers every trove module uses: cleanup attributes,
 * ownership hand-over, overflow-checked arithmetic and logging.
 *
 * Conventions: functions return 0 on success, >0 for "yes/found" where that
 * is useful, and a negative errno on failure. ret_* output parameters are
 * written only on success. Free functions accept NULL.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Hand ownership of a pointer over: returns it and leaves NULL behind, so a
 * _cleanup_ handler on the old name does nothing. */
#define TAKE_PTR(p)                             \
        ({                                      \
                __typeof__(p) _take_ = (p);     \
                (p) = NULL;                     \
                _take_;                         \
        })

#define TAKE_FD(fd)                             \
        ({                                      \
                int _fd_ = (fd);                \
                (fd) = -1;                      \
                _fd_;                           \
        })

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

/* Define a cleanup helper for a type whose free function takes a pointer. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)         \
        static inline void func##p(type *p) {           \
                if (*p)                                 \
                        func(*p);                       \
        }

/* Checked arithmetic: true on overflow. */
#define ADD_OVERFLOW(a, b, r) __builtin_add_overflow((a), (b), (r))
#define MUL_OVERFLOW(a, b, r) __builtin_mul_overflow((a), (b), (r))

static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static inline bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Logging. Library code logs at LOG_DEBUG; the edge that decides logs the
 * error once, with context. The log_*_errno() forms return -abs(err) so that
 * "return log_error_errno(r, ...)" logs and propagates in one line. */
enum {
        TROVE_LOG_ERR = 3,
        TROVE_LOG_WARNING = 4,
        TROVE_LOG_NOTICE = 5,
        TROVE_LOG_INFO = 6,
        TROVE_LOG_DEBUG = 7,
};

void log_set_max_level(int level);
int log_get_max_level(void);
/* Prefix every line with this program name (static storage, not copied). */
void log_set_ident(const char *ident);
int log_internal(int level, int err, const char *file, int line, const char *fmt, ...)
        _printf_(5, 6);

#define log_full_errno(level, err, ...) \
        log_internal((level), (err), __FILE__, __LINE__, __VA_ARGS__)
#define log_full(level, ...) (void) log_full_errno((level), 0, __VA_ARGS__)

#define log_debug(...) log_full(TROVE_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(TROVE_LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(TROVE_LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(TROVE_LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(TROVE_LOG_ERR, __VA_ARGS__)

#define log_debug_errno(err, ...) log_full_errno(TROVE_LOG_DEBUG, (err), __VA_ARGS__)
#define log_info_errno(err, ...) log_full_errno(TROVE_LOG_INFO, (err), __VA_ARGS__)
#define log_warning_errno(err, ...) log_full_errno(TROVE_LOG_WARNING, (err), __VA_ARGS__)
#define log_error_errno(err, ...) log_full_errno(TROVE_LOG_ERR, (err), __VA_ARGS__)

/* An error slot that parsers fill with a human-readable reason ("what and
 * where"); callers print it at the edge. */
#define TROVE_ERRMSG_MAX 256
struct trove_error {
        char msg[TROVE_ERRMSG_MAX];
};

/* Formats into e->msg (if e is non-NULL) and returns -abs(err). */
int trove_error_set(struct trove_error *e, int err, const char *fmt, ...) _printf_(3, 4);
