/* SPDX-License-Identifier: Apache-2.0 */
#include "trove/profile.h"
#include "test.h"

#define HP "467mxjn776qs58j748809359zrra1zdi"
#define ID_A "aa00000000000000000000000000000000000000000000000000000000000001"
#define ID_B "bb00000000000000000000000000000000000000000000000000000000000002"

static int decode(const char *s, size_t *ret_n) {
        uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        int r = profile_decode(s, strlen(s), HP, &ids, ret_n);
        free(ids);
        return r;
}

static void test_decode(void) {
        uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        const char *ok = "{\"hash\":\"" HP "\",\"chunks\":[\"" ID_A "\",\"" ID_B "\"]}";
        size_t n = 0;

        CHECK_OK(profile_decode(ok, strlen(ok), HP, &ids, &n));
        CHECK_EQ_U64(n, 2);
        CHECK(ids[0][0] == 0xaa && ids[0][31] == 1 && ids[1][0] == 0xbb);
        free(ids);
        CHECK_OK(decode("{\"hash\":\"" HP "\",\"chunks\":[]}", &n));
        CHECK_EQ_U64(n, 0);

        /* Another path's profile, malformed ids, wrong shapes. */
        CHECK_RC(decode("{\"hash\":\"567mxjn776qs58j748809359zrra1zdi\",\"chunks\":[]}", &n), -EBADMSG);
        CHECK_RC(decode("{\"hash\":\"" HP "\",\"chunks\":[\"aa\"]}", &n), -EBADMSG);
        CHECK_RC(decode("{\"hash\":\"" HP "\",\"chunks\":[\"" ID_A "x\"]}", &n), -EBADMSG);
        CHECK_RC(decode("{\"hash\":\"" HP "\",\"chunks\":[1]}", &n), -EBADMSG);
        CHECK_RC(decode("{\"hash\":\"" HP "\",\"chunks\":{}}", &n), -EBADMSG);
        CHECK_RC(decode("{\"hash\":\"" HP "\"}", &n), -EBADMSG);
        CHECK_RC(decode("[]", &n), -EBADMSG);
        CHECK_RC(decode("{\"hash\":\"" HP "\",\"hash\":\"" HP "\",\"chunks\":[]}", &n), -EBADMSG);
        CHECK_RC(decode("", &n), -EBADMSG);
}

static void test_decode_bound(void) {
        struct buf b = BUF_INIT(PROFILE_BODY_MAX * 2);
        size_t n;

        CHECK_OK(buf_printf(&b, "{\"hash\":\"" HP "\",\"chunks\":["));
        for (size_t i = 0; i <= PROFILE_CHUNKS_MAX; i++)
                CHECK_OK(buf_printf(&b, "%s\"" ID_A "\"", i ? "," : ""));
        CHECK_OK(buf_printf(&b, "]}"));
        CHECK_OK(buf_append(&b, "", 1));
        CHECK_RC(decode((const char *) b.data, &n), -EBADMSG);
        buf_free(&b);
}

static void test_report(void) {
        struct buf b = BUF_INIT(PROFILE_REPORT_BODY_MAX);
        uint8_t ids[2][SHA256_DIGEST_LEN] = { { 0xaa }, { 0xbb } };

        CHECK_OK(profile_report_end(&b));
        CHECK(b.len == strlen("{\"paths\":[]}") && memcmp(b.data, "{\"paths\":[]}", b.len) == 0);
        buf_reset(&b);
        CHECK_OK(profile_report_add(&b, HP, (const uint8_t (*)[SHA256_DIGEST_LEN]) ids, 2));
        CHECK_OK(profile_report_add(&b, HP, (const uint8_t (*)[SHA256_DIGEST_LEN]) ids, 1));
        CHECK_OK(profile_report_end(&b));
        CHECK_OK(buf_append(&b, "", 1));
        CHECK_STREQ((const char *) b.data,
                    "{\"paths\":[{\"hash\":\"" HP "\",\"chunks\":[\"aa" "00000000000000000000000000000000000000000000000000000000000000\",\"bb"
                    "00000000000000000000000000000000000000000000000000000000000000\"]},{\"hash\":\"" HP
                    "\",\"chunks\":[\"aa00000000000000000000000000000000000000000000000000000000000000\"]}]}");
        CHECK_RC(profile_report_add(&b, "not-a-hash", (const uint8_t (*)[SHA256_DIGEST_LEN]) ids, 1), -EINVAL);
        CHECK_RC(profile_report_add(&b, HP, (const uint8_t (*)[SHA256_DIGEST_LEN]) ids, 0), -EINVAL);
        buf_free(&b);
}

int main(void) {
        test_decode();
        test_decode_bound();
        test_report();
        return 0;
}
