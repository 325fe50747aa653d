/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>

#include "trove/common.h"

static int log_max_level = TROVE_LOG_INFO;
static const char *log_ident = "trove";

void log_set_max_level(int level) {
        log_max_level = level;
}

int log_get_max_level(void) {
        return log_max_level;
}

void log_set_ident(const char *ident) {
        log_ident = ident;
}

int log_internal(int level, int err, const char *file, int line, const char *fmt, ...) {
        char msg[1024];
        va_list ap;
        int saved = errno;

        if (err < 0)
                err = -err;
        if (level > log_max_level) {
                errno = saved;
                return -err;
        }
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (log_max_level >= TROVE_LOG_DEBUG)
                fprintf(stderr, "%s: %s (%s:%d)\n", log_ident, msg, file, line);
        else
                fprintf(stderr, "%s: %s\n", log_ident, msg);
        errno = saved;
        return -err;
}

int trove_error_set(struct trove_error *e, int err, const char *fmt, ...) {
        va_list ap;

        if (err < 0)
                err = -err;
        if (e) {
                va_start(ap, fmt);
                vsnprintf(e->msg, sizeof e->msg, fmt, ap);
                va_end(ap);
        }
        return -err;
}
