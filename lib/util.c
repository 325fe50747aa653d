/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "trove/util.h"

int parse_size(const char *s, uint64_t *ret) {
        uint64_t v = 0, mul = 1;
        const char *p = s;

        for (; *p >= '0' && *p <= '9'; p++)
                if (MUL_OVERFLOW(v, 10, &v) || ADD_OVERFLOW(v, (uint64_t) (*p - '0'), &v))
                        return -ERANGE;
        if (p == s)
                return -EINVAL;
        switch (*p) {
        case '\0': break;
        case 'k': case 'K': mul = 1ULL << 10; p++; break;
        case 'm': case 'M': mul = 1ULL << 20; p++; break;
        case 'g': case 'G': mul = 1ULL << 30; p++; break;
        case 't': case 'T': mul = 1ULL << 40; p++; break;
        default: return -EINVAL;
        }
        if (mul > 1 && (streq(p, "iB") || streq(p, "B")))
                p += strlen(p);
        if (*p)
                return -EINVAL;
        if (MUL_OVERFLOW(v, mul, &v))
                return -ERANGE;
        *ret = v;
        return 0;
}

int parse_duration(const char *s, int64_t *ret) {
        int64_t v = 0, mul = 1;
        const char *p = s;

        for (; *p >= '0' && *p <= '9'; p++)
                if (MUL_OVERFLOW(v, 10, &v) || ADD_OVERFLOW(v, (int64_t) (*p - '0'), &v))
                        return -ERANGE;
        if (p == s)
                return -EINVAL;
        switch (*p) {
        case '\0': break;
        case 's': p++; break;
        case 'm': mul = 60; p++; break;
        case 'h': mul = 3600; p++; break;
        case 'd': mul = 86400; p++; break;
        case 'w': mul = 7 * 86400; p++; break;
        case 'y': mul = 365 * 86400LL; p++; break;
        default: return -EINVAL;
        }
        if (*p)
                return -EINVAL;
        if (MUL_OVERFLOW(v, mul, &v))
                return -ERANGE;
        *ret = v;
        return 0;
}

bool cache_name_valid(const char *s, size_t n) {
        if (n == 0 || n > CACHE_NAME_MAX || s[0] == '.' || s[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-'))
                        return false;
        }
        return true;
}

int mkdir_parents(const char *path, mode_t mode) {
        char buf[4096];
        size_t n = strlen(path);

        if (n == 0 || n >= sizeof buf)
                return -ENAMETOOLONG;
        memcpy(buf, path, n + 1);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int read_text_file(const char *path, char *out, size_t cap, size_t *ret_len) {
        _cleanup_close_ int fd = -1;
        int in = STDIN_FILENO;
        size_t n = 0;
        int r = 0;

        if (cap == 0)
                return -EINVAL;
        if (path && !streq(path, "-")) {
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        return -errno;
                in = fd;
        }
        for (;;) {
                ssize_t k;
                if (n == cap) {
                        r = -EFBIG;
                        break;
                }
                k = read(in, out + n, cap - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        while (r == 0 && n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ' || out[n - 1] == '\t'))
                n--;
        if (r == 0 && memchr(out, 0, n))
                r = -EINVAL;
        if (r == 0 && n == cap)
                r = -EFBIG; /* no room for the NUL */
        if (r < 0) {
                explicit_bzero(out, cap);
                return r;
        }
        out[n] = 0;
        if (ret_len)
                *ret_len = n;
        return 0;
}

size_t json_value_count(const char *p, size_t n) {
        size_t count = 1;
        bool in_string = false;

        for (size_t i = 0; i < n; i++) {
                if (in_string) {
                        if (p[i] == '\\')
                                i++;
                        else if (p[i] == '"')
                                in_string = false;
                } else if (p[i] == '"') {
                        in_string = true;
                } else if (p[i] == '[' || p[i] == '{' || p[i] == ',') {
                        count++;
                }
        }
        return count;
}

uint64_t monotonic_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}
