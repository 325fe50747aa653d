/* SPDX-License-Identifier: Apache-2.0 */
#include <jansson.h>

#include "trove/profile.h"
#include "trove/storepath.h"
#include "trove/util.h"

int profile_decode(const void *body, size_t n, const char *hash_part,
                   uint8_t (**ret_ids)[SHA256_DIGEST_LEN], size_t *ret_n) {
        json_t *j, *arr;
        const char *h;
        uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        size_t cnt;
        int r = -EBADMSG;

        if (n > PROFILE_BODY_MAX || json_value_count(body, n) > PROFILE_CHUNKS_MAX + 8)
                return -EBADMSG;
        j = json_loadb(body, n, JSON_REJECT_DUPLICATES, NULL);
        if (!j)
                return -EBADMSG;
        h = json_string_value(json_object_get(j, "hash"));
        arr = json_object_get(j, "chunks");
        if (!json_is_object(j) || !h || !streq(h, hash_part) || !json_is_array(arr) ||
            json_array_size(arr) > PROFILE_CHUNKS_MAX)
                goto out;
        cnt = json_array_size(arr);
        ids = calloc(cnt ? cnt : 1, sizeof *ids);
        if (!ids) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < cnt; i++) {
                const char *s = json_string_value(json_array_get(arr, i));
                /* Lower-case hex, as troved writes ids. */
                if (!s || strlen(s) != HASH_BASE16_LEN ||
                    strspn(s, "0123456789abcdef") != HASH_BASE16_LEN ||
                    hex_decode(s, HASH_BASE16_LEN, ids[i], SHA256_DIGEST_LEN) < 0)
                        goto out;
        }
        *ret_ids = ids;
        *ret_n = cnt;
        ids = NULL;
        r = 0;
out:
        free(ids);
        json_decref(j);
        return r;
}

int profile_report_add(struct buf *b, const char *hash_part, const uint8_t (*ids)[SHA256_DIGEST_LEN],
                       size_t n) {
        int r;

        if (!storepath_is_hash_part(hash_part, strlen(hash_part)) || n == 0 ||
            n > PROFILE_CHUNKS_MAX)
                return -EINVAL;
        r = buf_printf(b, "%s{\"hash\":\"%s\",\"chunks\":[", b->len ? "," : "{\"paths\":[",
                       hash_part);
        for (size_t i = 0; i < n && r >= 0; i++) {
                char hex[HASH_BASE16_LEN + 1];
                hex_encode(ids[i], SHA256_DIGEST_LEN, hex);
                r = buf_printf(b, "%s\"%s\"", i ? "," : "", hex);
        }
        if (r >= 0)
                r = buf_printf(b, "]}");
        return r;
}

int profile_report_end(struct buf *b) {
        return buf_printf(b, "%s]}", b->len ? "" : "{\"paths\":[");
}
