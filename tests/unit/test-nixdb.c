/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nixdb: the registration text made from narinfo must be what
 * `nix-store --dump-db` (Nix 2.8) prints for the same paths, so that
 * `nix-store --load-db` takes it. The vectors: two paths built by Nix 2.8
 * (one references the other and itself), their narinfo as
 * `nix copy --to file://…?compression=none` wrote it, and
 * `nix-store --dump-db` of both.
 */
#include "test.h"
#include "trove/buf.h"
#include "trove/narinfo.h"
#include "trove/nixdb.h"

static const char NI_DEP[] =
        "StorePath: /nix/store/0zx4fi82bhb2p85hrqcfwg8q0yd150qa-trove-nixdb-dep\n"
        "URL: nar/00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv.nar\n"
        "Compression: none\n"
        "FileHash: sha256:00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv\n"
        "FileSize: 120\n"
        "NarHash: sha256:00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv\n"
        "NarSize: 120\n"
        "References: \n"
        "Deriver: r520gp6v2pxwlh78vgdkl5gk3yn8fp8k-trove-nixdb-dep.drv\n";

/* References reversed on purpose: the output is sorted as Nix sorts them. */
static const char NI_TOP[] =
        "StorePath: /nix/store/j3zchpsk86lw5y3by4l4f0a294p6c3pg-trove-nixdb-top\n"
        "URL: nar/18qm5zpbnv3zh4lm2vx537prkijl41cz1fpfsazggdd84hvm25di.nar\n"
        "Compression: none\n"
        "FileHash: sha256:18qm5zpbnv3zh4lm2vx537prkijl41cz1fpfsazggdd84hvm25di\n"
        "FileSize: 400\n"
        "NarHash: sha256:18qm5zpbnv3zh4lm2vx537prkijl41cz1fpfsazggdd84hvm25di\n"
        "NarSize: 400\n"
        "References: j3zchpsk86lw5y3by4l4f0a294p6c3pg-trove-nixdb-top 0zx4fi82bhb2p85hrqcfwg8q0yd150qa-trove-nixdb-dep\n"
        "Deriver: zqg9znxnx153rjfly1n3mq8f6z6dmvds-trove-nixdb-top.drv\n";

/* nix-store --dump-db <dep> <top> */
static const char DUMP_DB[] =
        "/nix/store/0zx4fi82bhb2p85hrqcfwg8q0yd150qa-trove-nixdb-dep\n"
        "7bdbc9e6407d9d3ed40adc64d746be6366b5f58ee668c6b02866008bbef57202\n"
        "120\n"
        "/nix/store/r520gp6v2pxwlh78vgdkl5gk3yn8fp8k-trove-nixdb-dep.drv\n"
        "0\n"
        "/nix/store/j3zchpsk86lw5y3by4l4f0a294p6c3pg-trove-nixdb-top\n"
        "b115513724a8b5f7bed2eebaf0592054c699ef19a56f5129817f6cbbee2f15a3\n"
        "400\n"
        "/nix/store/zqg9znxnx153rjfly1n3mq8f6z6dmvds-trove-nixdb-top.drv\n"
        "2\n"
        "/nix/store/0zx4fi82bhb2p85hrqcfwg8q0yd150qa-trove-nixdb-dep\n"
        "/nix/store/j3zchpsk86lw5y3by4l4f0a294p6c3pg-trove-nixdb-top\n";

static void parse(const char *text, const char *store_dir, struct narinfo *ni) {
        struct trove_error err = {};
        int r = narinfo_parse(text, strlen(text), store_dir, ni, &err);
        if (r < 0)
                TEST_FAIL("narinfo_parse: %s", err.msg);
}

static void test_matches_dump_db(void) {
        struct narinfo dep = {}, top = {};
        struct buf out = BUF_INIT(1 << 20);

        parse(NI_DEP, NULL, &dep);
        parse(NI_TOP, NULL, &top);
        CHECK_OK(nixdb_render(&dep, NULL, &out));
        CHECK_OK(nixdb_render(&top, "/nix/store", &out));
        CHECK(out.len == strlen(DUMP_DB));
        CHECK(memcmp(out.data, DUMP_DB, out.len) == 0);
        narinfo_free(&dep);
        narinfo_free(&top);
        buf_free(&out);
}

/* No deriver: an empty line, as --dump-db prints for a path added with
 * nix-store --add. */
static void test_no_deriver(void) {
        static const char want[] =
                "/nix/store/0zx4fi82bhb2p85hrqcfwg8q0yd150qa-trove-nixdb-dep\n"
                "7bdbc9e6407d9d3ed40adc64d746be6366b5f58ee668c6b02866008bbef57202\n"
                "120\n"
                "\n"
                "0\n";
        struct narinfo ni = {};
        struct buf out = BUF_INIT(1 << 20);

        parse(NI_DEP, NULL, &ni);
        free(ni.deriver);
        ni.deriver = NULL;
        CHECK_OK(nixdb_render(&ni, NULL, &out));
        CHECK(out.len == strlen(want) && memcmp(out.data, want, out.len) == 0);
        narinfo_free(&ni);
        buf_free(&out);
}

/* Another store directory: every path is written with it. */
static void test_other_store_dir(void) {
        static const char ni_text[] =
                "StorePath: /tmp/store/0zx4fi82bhb2p85hrqcfwg8q0yd150qa-trove-nixdb-dep\n"
                "URL: nar/x.nar\n"
                "NarHash: sha256:00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv\n"
                "NarSize: 120\n"
                "References: 0zx4fi82bhb2p85hrqcfwg8q0yd150qa-trove-nixdb-dep\n"
                "Deriver: r520gp6v2pxwlh78vgdkl5gk3yn8fp8k-trove-nixdb-dep.drv\n";
        static const char want[] =
                "/tmp/store/0zx4fi82bhb2p85hrqcfwg8q0yd150qa-trove-nixdb-dep\n"
                "7bdbc9e6407d9d3ed40adc64d746be6366b5f58ee668c6b02866008bbef57202\n"
                "120\n"
                "/tmp/store/r520gp6v2pxwlh78vgdkl5gk3yn8fp8k-trove-nixdb-dep.drv\n"
                "1\n"
                "/tmp/store/0zx4fi82bhb2p85hrqcfwg8q0yd150qa-trove-nixdb-dep\n";
        struct narinfo ni = {};
        struct buf out = BUF_INIT(1 << 20);

        parse(ni_text, "/tmp/store", &ni);
        CHECK_OK(nixdb_render(&ni, "/tmp/store", &out));
        CHECK(out.len == strlen(want) && memcmp(out.data, want, out.len) == 0);
        /* The narinfo's store path is not in /nix/store. */
        CHECK_RC(nixdb_render(&ni, "/nix/store", &out), -EINVAL);
        CHECK(out.len == strlen(want));
        narinfo_free(&ni);
        buf_free(&out);
}

/* Values that would break the line format are refused, and the buffer
 * keeps what it had. */
static void test_refuses_bad_fields(void) {
        struct narinfo ni = {};
        struct buf out = BUF_INIT(1 << 20);
        char *saved;

        parse(NI_TOP, NULL, &ni);
        CHECK_OK(buf_append_str(&out, "keep"));

        saved = ni.references[0];
        ni.references[0] = (char *) "j3zchpsk86lw5y3by4l4f0a294p6c3pg-x\nnext";
        CHECK_RC(nixdb_render(&ni, NULL, &out), -EINVAL);
        ni.references[0] = (char *) "../j3zchpsk86lw5y3by4l4f0a294p6c3pg-x";
        CHECK_RC(nixdb_render(&ni, NULL, &out), -EINVAL);
        ni.references[0] = saved;

        saved = ni.deriver;
        ni.deriver = (char *) "zqg9znxnx153rjfly1n3mq8f6z6dmvds-a/b.drv";
        CHECK_RC(nixdb_render(&ni, NULL, &out), -EINVAL);
        ni.deriver = saved;

        saved = ni.store_path;
        ni.store_path = NULL;
        CHECK_RC(nixdb_render(&ni, NULL, &out), -EINVAL);
        ni.store_path = (char *) "/nix/store/j3zchpsk86lw5y3by4l4f0a294p6c3pg-trove-nixdb-top/refs";
        CHECK_RC(nixdb_render(&ni, NULL, &out), -EINVAL);
        ni.store_path = saved;

        CHECK(out.len == 4 && memcmp(out.data, "keep", 4) == 0);

        /* Beyond the buffer's maximum: -E2BIG, nothing half-written. */
        struct buf small = BUF_INIT(64);
        CHECK_RC(nixdb_render(&ni, NULL, &small), -E2BIG);
        CHECK(small.len == 0);
        buf_free(&small);

        narinfo_free(&ni);
        buf_free(&out);
}

int main(void) {
        test_matches_dump_db();
        test_no_deriver();
        test_other_store_dir();
        test_refuses_bad_fields();
        return 0;
}
