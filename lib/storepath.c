/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Store path syntax, following Nix's libstore/path.cc. Parsing is strict:
 * a store path is "<store_dir>/<hash>-<name>" and nothing else, so a string
 * that passes can be joined to a directory without any traversal risk.
 */
#include "trove/nix32.h"
#include "trove/storepath.h"

static bool storepath_is_name_char(char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '+' || c == '-' || c == '.' || c == '_' || c == '?' || c == '=';
}

int storepath_check_name(const char *name, size_t len) {
        if (len == 0 || len > STOREPATH_NAME_MAX)
                return -EINVAL;
        /* Nix refuses "." and ".." (and ".-x", "..-x"); a leading dot is
         * refused altogether here, which also covers those. */
        if (name[0] == '.')
                return -EINVAL;
        for (size_t i = 0; i < len; i++)
                if (!storepath_is_name_char(name[i]))
                        return -EINVAL;
        return 0;
}

bool storepath_is_hash_part(const char *s, size_t len) {
        if (len != STOREPATH_HASH_LEN)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!nix32_is_char(s[i]))
                        return false;
        return true;
}

int storepath_parse_basename(const char *s, size_t len, struct storepath *ret) {
        const char *name;
        size_t name_len;
        int r;

        if (!s || len < STOREPATH_HASH_LEN + 2 || len > STOREPATH_BASENAME_MAX)
                return -EINVAL;
        if (!storepath_is_hash_part(s, STOREPATH_HASH_LEN) || s[STOREPATH_HASH_LEN] != '-')
                return -EINVAL;
        name = s + STOREPATH_HASH_LEN + 1;
        name_len = len - STOREPATH_HASH_LEN - 1;
        r = storepath_check_name(name, name_len);
        if (r < 0)
                return r;

        memcpy(ret->hash, s, STOREPATH_HASH_LEN);
        ret->hash[STOREPATH_HASH_LEN] = 0;
        memcpy(ret->name, name, name_len);
        ret->name[name_len] = 0;
        return 0;
}

int storepath_parse(const char *store_dir, const char *path, struct storepath *ret) {
        size_t dlen, len;
        const char *base;

        if (!store_dir)
                store_dir = STORE_DIR_DEFAULT;
        if (!path)
                return -EINVAL;
        dlen = strlen(store_dir);
        /* the store directory itself: absolute, no trailing slash */
        if (dlen < 2 || store_dir[0] != '/' || store_dir[dlen - 1] == '/')
                return -EINVAL;
        if (strncmp(path, store_dir, dlen) != 0 || path[dlen] != '/')
                return -EINVAL;

        base = path + dlen + 1;
        len = strlen(base);
        /* Trailing slashes name the same directory (shell completion adds
         * them; Nix's canonPath drops them). Any other '/' is refused, and
         * with it "..", "." and extra components, since none of those can
         * pass the base name rules. */
        while (len > 0 && base[len - 1] == '/')
                len--;
        if (memchr(base, '/', len))
                return -EINVAL;
        return storepath_parse_basename(base, len, ret);
}

bool storepath_dir_valid(const char *dir) {
        size_t n = strlen(dir);

        if (n < 2 || n > STOREDIR_MAX || dir[0] != '/' || dir[n - 1] == '/')
                return false;
        for (size_t i = 0; i < n; i++)
                if (dir[i] < 0x21 || dir[i] > 0x7e)
                        return false;
        for (const char *p = dir; *p;) {
                const char *e = strchr(p + 1, '/');
                size_t len = (e ? (size_t) (e - p) : strlen(p)) - 1;
                if (len == 0 || (len == 1 && p[1] == '.') || (len == 2 && p[1] == '.' && p[2] == '.'))
                        return false;
                p = e ? e : p + len + 1;
        }
        return true;
}
