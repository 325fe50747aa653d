/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gc.c - garbage collection (gc.h).
 */
#include <inttypes.h>

#include "gc.h"
#include "storage.h"

#define GC_LIST_BATCH 10000

static int gc_delete_object(void *userdata, const uint8_t id[SHA256_DIGEST_LEN]) {
        return chunkstore_delete(((struct troved *) userdata)->store, id);
}

struct gc_list {
        struct troved *t;
        uint8_t (*ids)[SHA256_DIGEST_LEN];
        size_t n;
};

static int gc_list_flush(struct gc_list *l) {
        int r = db_orphans_note(l->t->db, (const uint8_t(*)[SHA256_DIGEST_LEN]) l->ids, l->n);
        l->n = 0;
        return r;
}

static int gc_list_one(const uint8_t id[SHA256_DIGEST_LEN], uint64_t size, void *userdata) {
        struct gc_list *l = userdata;
        memcpy(l->ids[l->n++], id, SHA256_DIGEST_LEN);
        return l->n == GC_LIST_BATCH ? gc_list_flush(l) : 0;
}

int gc_collect(struct troved *t, int64_t min_age_sec, struct gc_result *ret) {
        struct gc_list list = { .t = t };
        uint64_t n = 0, orphans = 0;
        int r;

        /* Objects without rows (left by a crash between the two) are noted
         * first; db_gc deletes them once they are old enough. */
        list.ids = malloc(GC_LIST_BATCH * sizeof *list.ids);
        if (!list.ids)
                return -ENOMEM;
        r = chunkstore_list(t->store, gc_list_one, &list);
        if (r >= 0)
                r = gc_list_flush(&list);
        free(list.ids);
        if (r < 0)
                return r;
        r = db_gc(t->db, min_age_sec, gc_delete_object, t, &n, &orphans);
        /* Retention may have removed paths, and objects are gone. */
        nicache_forget(t->narinfos, -1, NULL);
        nicache_forget(t->manifests, -1, NULL);
        storage_forget_present(t);
        if (r < 0)
                return r;
        log_info("garbage collection deleted %" PRIu64 " chunks and %" PRIu64 " orphaned objects", n, orphans);
        *ret = (struct gc_result){ n, orphans };
        return 0;
}
