/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-kept_manifest.c - chunkcache_manifest_get on an arbitrary file in
 * the place of a kept manifest (<dir>/manifests/<key>). The file is either
 * returned whole (1, with a signature and a body that fit in the file) or
 * refused as damaged (-EBADMSG) and deleted; nothing else. Inputs under
 * reject/ must be refused.
 */
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>

#include "fuzz.h"
#include "trove/chunkcache.h"
#include "trove/hash.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/tmp/fuzz-kept-manifest-XXXXXX";
static struct chunkcache *cache;
static char path[sizeof dir + 80];
static const uint8_t key[SHA256_DIGEST_LEN] = { 1, 2, 3 };

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(p);
}

static void cleanup(void) {
        chunkcache_free(cache);
        (void) nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char hex[HASH_BASE16_LEN + 1];
        char *sig = NULL;
        uint8_t *body = NULL;
        size_t len = 0;
        FILE *f;
        int r;

        if (!cache) {
                if (!mkdtemp(dir) || chunkcache_open(dir, 0, &cache) < 0)
                        abort();
                atexit(cleanup);
                hex_encode(key, SHA256_DIGEST_LEN, hex);
                snprintf(path, sizeof path, "%s/manifests/%s", dir, hex);
        }
        f = fopen(path, "wb");
        if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
                abort();

        r = chunkcache_manifest_get(cache, key, &sig, &body, &len);
        if (r == 1) {
                if (fuzz_must_reject() || len == 0 || len + strlen(sig) + 56 != size ||
                    memcmp(body, data + size - len, len) != 0)
                        abort();
                free(sig);
                free(body);
        } else if (r != -EBADMSG || access(path, F_OK) == 0)
                abort();
        (void) unlink(path);
        return 0;
}
