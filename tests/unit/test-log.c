/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The log functions of common.h (lib/log.c): level filtering, the
 * errno-returning forms, the line format, and trove_error_set().
 * What is printed to stderr is captured in a temporary file.
 */
#include <stdio.h>

#include "trove/common.h"
#include "test.h"

static FILE *capture_file;
static int saved_stderr = -1;

static void capture_begin(void) {
        fflush(stderr);
        capture_file = tmpfile();
        CHECK(capture_file);
        saved_stderr = dup(STDERR_FILENO);
        CHECK(saved_stderr >= 0);
        CHECK(dup2(fileno(capture_file), STDERR_FILENO) == STDERR_FILENO);
}

/* Restores stderr and returns what was written to it (static storage). */
static const char *capture_end(void) {
        static char out[8192];
        size_t n;

        fflush(stderr);
        CHECK(dup2(saved_stderr, STDERR_FILENO) == STDERR_FILENO);
        close(saved_stderr);
        saved_stderr = -1;
        rewind(capture_file);
        n = fread(out, 1, sizeof out - 1, capture_file);
        out[n] = 0;
        fclose(capture_file);
        capture_file = NULL;
        return out;
}

static void test_default_level(void) {
        /* Runs first: the level a program starts with. */
        CHECK_RC(log_get_max_level(), TROVE_LOG_INFO);
        capture_begin();
        log_info("info %d", 1);
        log_debug("debug %d", 2);
        CHECK_STREQ(capture_end(), "trove: info 1\n");
}

static void test_set_get(void) {
        for (int l = TROVE_LOG_ERR; l <= TROVE_LOG_DEBUG; l++) {
                log_set_max_level(l);
                CHECK_RC(log_get_max_level(), l);
        }
        log_set_max_level(TROVE_LOG_INFO);
}

/* A message at level m is printed exactly when m <= the maximum. */
static void test_filtering(void) {
        static const char *const lines[] = {
                [TROVE_LOG_ERR] = "trove: e",    [TROVE_LOG_WARNING] = "trove: w",
                [TROVE_LOG_NOTICE] = "trove: n", [TROVE_LOG_INFO] = "trove: i",
                [TROVE_LOG_DEBUG] = "trove: d",
        };

        for (int max = TROVE_LOG_ERR - 1; max <= TROVE_LOG_DEBUG; max++) {
                size_t n_lines = 0;

                log_set_max_level(max);
                capture_begin();
                log_error("e");
                log_warning("w");
                log_notice("n");
                log_info("i");
                log_debug("d");
                const char *got = capture_end();
                for (const char *p = got; *p; p++)
                        n_lines += *p == '\n';
                for (int level = TROVE_LOG_ERR; level <= TROVE_LOG_DEBUG; level++)
                        if ((strstr(got, lines[level]) != NULL) != (level <= max))
                                TEST_FAIL("max level %d, message at %d: got \"%s\"", max, level, got);
                CHECK_EQ_U64(n_lines, max >= TROVE_LOG_ERR ? (size_t) (max - TROVE_LOG_ERR + 1) : 0);
        }
        log_set_max_level(TROVE_LOG_INFO);
}

static void test_format(void) {
        char want[512];
        int line;

        /* Below debug: "ident: message". */
        log_set_max_level(TROVE_LOG_INFO);
        capture_begin();
        log_warning("disk %s is %d%% full", "sda", 93);
        CHECK_STREQ(capture_end(), "trove: disk sda is 93% full\n");

        /* At debug: the source location is appended. */
        log_set_max_level(TROVE_LOG_DEBUG);
        capture_begin();
        line = __LINE__ + 1;
        log_debug("step %u", 3u);
        snprintf(want, sizeof want, "trove: step 3 (%s:%d)\n", __FILE__, line);
        CHECK_STREQ(capture_end(), want);

        /* The ident, which is not copied. */
        log_set_max_level(TROVE_LOG_INFO);
        log_set_ident("troved");
        capture_begin();
        log_error("stopping");
        log_set_ident("trovefs");
        log_error("mounted");
        CHECK_STREQ(capture_end(), "troved: stopping\ntrovefs: mounted\n");
        log_set_ident("trove");

        /* A message longer than the line buffer is cut, not overflowed. */
        char *big = malloc(5000);
        CHECK(big);
        memset(big, 'm', 4999);
        big[4999] = 0;
        capture_begin();
        log_info("%s", big);
        const char *got = capture_end();
        CHECK(startswith(got, "trove: mmm"));
        CHECK_EQ_U64(strlen(got), strlen("trove: ") + 1023 + 1);
        CHECK(got[strlen(got) - 1] == '\n');
        free(big);
}

static void test_errno_forms(void) {
        log_set_max_level(TROVE_LOG_INFO);
        capture_begin();
        /* Negative or positive in, negative out. */
        CHECK_RC(log_error_errno(-EIO, "read failed"), -EIO);
        CHECK_RC(log_error_errno(EIO, "read failed"), -EIO);
        CHECK_RC(log_warning_errno(-ENOENT, "missing"), -ENOENT);
        CHECK_RC(log_info_errno(-EPERM, "denied"), -EPERM);
        /* Filtered out, the error is still returned. */
        CHECK_RC(log_debug_errno(-EBADMSG, "hidden"), -EBADMSG);
        CHECK_RC(log_full_errno(TROVE_LOG_DEBUG, ENOSPC, "hidden"), -ENOSPC);
        /* No error: 0. */
        CHECK_RC(log_full_errno(TROVE_LOG_ERR, 0, "plain"), 0);
        const char *got = capture_end();
        CHECK_STREQ(got, "trove: read failed\ntrove: read failed\ntrove: missing\ntrove: denied\ntrove: plain\n");

        /* errno survives logging, printed or not. */
        capture_begin();
        errno = EXDEV;
        log_error("printed");
        CHECK(errno == EXDEV);
        errno = ETXTBSY;
        log_debug("not printed");
        CHECK(errno == ETXTBSY);
        errno = EROFS;
        (void) log_error_errno(-EIO, "printed");
        CHECK(errno == EROFS);
        capture_end();
}

static void test_error_set(void) {
        struct trove_error e = {};

        CHECK_RC(trove_error_set(&e, EINVAL, "bad %s at %zu", "thing", (size_t) 12), -EINVAL);
        CHECK_STREQ(e.msg, "bad thing at 12");
        CHECK_RC(trove_error_set(&e, -E2BIG, "again"), -E2BIG);
        CHECK_STREQ(e.msg, "again");
        /* NULL slot: only the return value. */
        CHECK_RC(trove_error_set(NULL, EPERM, "nobody reads this %d", 1), -EPERM);
        /* Cut to the slot, always terminated. */
        char big[TROVE_ERRMSG_MAX * 2];
        memset(big, 'z', sizeof big - 1);
        big[sizeof big - 1] = 0;
        CHECK_RC(trove_error_set(&e, EBADMSG, "%s", big), -EBADMSG);
        CHECK_EQ_U64(strlen(e.msg), TROVE_ERRMSG_MAX - 1);
        /* It never prints. */
        capture_begin();
        (void) trove_error_set(&e, EIO, "quiet");
        CHECK_STREQ(capture_end(), "");
}

int main(void) {
        test_default_level();
        test_set_get();
        test_filtering();
        test_format();
        test_errno_forms();
        test_error_set();
        return 0;
}
