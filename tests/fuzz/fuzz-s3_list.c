/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz-s3_list.c - s3_list_parse (the ListObjectsV2 reply parser) on
 * arbitrary bytes. A refusal is one of the documented errors and returns
 * nothing; a page that parses holds bounded, NUL-free keys, a token exactly
 * when it is truncated, and, rendered back to a ListBucketResult document,
 * parses again to the same page (what the parser read is what the reply
 * said, however the reply was laid out). Inputs under reject/ must be
 * refused.
 */
#include <inttypes.h>
#include <stdio.h>

#include "fuzz.h"
#include "trove/buf.h"
#include "trove/s3.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_KEY_MAX 1024 /* s3.h: keys are 1..1024 bytes */

static int append_escaped(struct buf *b, const char *s) {
        for (; *s; s++) {
                int r;
                switch (*s) {
                case '&':
                        r = buf_append_str(b, "&amp;");
                        break;
                case '<':
                        r = buf_append_str(b, "&lt;");
                        break;
                case '>':
                        r = buf_append_str(b, "&gt;");
                        break;
                default:
                        r = buf_append(b, s, 1);
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

static int render(const struct s3_list_page *p, struct buf *b) {
        int r = buf_append_str(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult>");
        if (r >= 0)
                r = buf_printf(b, "<IsTruncated>%s</IsTruncated>", p->truncated ? "true" : "false");
        for (size_t i = 0; r >= 0 && i < p->n_objects; i++) {
                r = buf_append_str(b, "<Contents><Key>");
                if (r >= 0)
                        r = append_escaped(b, p->objects[i].key);
                if (r >= 0)
                        r = buf_printf(b, "</Key><Size>%" PRIu64 "</Size></Contents>", p->objects[i].size);
        }
        if (r >= 0 && p->next_token) {
                r = buf_append_str(b, "<NextContinuationToken>");
                if (r >= 0)
                        r = append_escaped(b, p->next_token);
                if (r >= 0)
                        r = buf_append_str(b, "</NextContinuationToken>");
        }
        if (r >= 0)
                r = buf_append_str(b, "</ListBucketResult>");
        return r;
}

static bool same(const struct s3_list_page *a, const struct s3_list_page *b) {
        if (a->n_objects != b->n_objects || a->truncated != b->truncated || (!a->next_token) != (!b->next_token) ||
            (a->next_token && !streq(a->next_token, b->next_token)))
                return false;
        for (size_t i = 0; i < a->n_objects; i++)
                if (!streq(a->objects[i].key, b->objects[i].key) || a->objects[i].size != b->objects[i].size)
                        return false;
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(s3_list_page_done) struct s3_list_page page = {}, again = {};
        _cleanup_(buf_free) struct buf doc = BUF_INIT(S3_LIST_XML_MAX);
        int r;

        r = s3_list_parse((const char *) data, size, &page);
        if (r < 0) {
                if (r != -EBADMSG && r != -E2BIG && r != -ENOMEM)
                        abort();
                if (page.objects || page.n_objects || page.next_token || page.truncated)
                        abort();
                return 0;
        }
        if (fuzz_must_reject() || (page.n_objects > 0 && !page.objects))
                abort();
        for (size_t i = 0; i < page.n_objects; i++)
                if (!page.objects[i].key || strlen(page.objects[i].key) > FUZZ_KEY_MAX)
                        abort();
        /* A token exactly when truncated, and never an empty one. */
        if (page.truncated != (page.next_token != NULL) || (page.next_token && !page.next_token[0]))
                abort();

        if (render(&page, &doc) < 0)
                abort();
        r = s3_list_parse((const char *) doc.data, doc.len, &again);
        if (r < 0) {
                fprintf(stderr, "rendered listing does not parse (%s):\n%s\n", strerror(-r), (char *) doc.data);
                abort();
        }
        if (!same(&page, &again))
                abort();
        return 0;
}
