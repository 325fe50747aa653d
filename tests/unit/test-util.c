/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <sys/stat.h>

#include "test.h"
#include "trove/util.h"

int main(void) {
        uint64_t sz;
        int64_t d;
        char dir[] = "/tmp/trove-test-util-XXXXXX", path[256];
        struct stat st;

        CHECK_OK(parse_size("65536", &sz));
        CHECK_EQ_U64(sz, 65536);
        CHECK_OK(parse_size("64K", &sz));
        CHECK_EQ_U64(sz, 65536);
        CHECK_OK(parse_size("64KiB", &sz));
        CHECK_EQ_U64(sz, 65536);
        CHECK_OK(parse_size("10G", &sz));
        CHECK_EQ_U64(sz, 10ull << 30);
        CHECK_OK(parse_size("2TB", &sz));
        CHECK_EQ_U64(sz, 2ull << 40);
        CHECK_RC(parse_size("", &sz), -EINVAL);
        CHECK_RC(parse_size("K", &sz), -EINVAL);
        CHECK_RC(parse_size("-1", &sz), -EINVAL);
        CHECK_RC(parse_size("12X", &sz), -EINVAL);
        CHECK_RC(parse_size("1Ki", &sz), -EINVAL);
        CHECK_RC(parse_size("12 ", &sz), -EINVAL);
        CHECK_RC(parse_size("18446744073709551616", &sz), -ERANGE);
        CHECK_RC(parse_size("17179869184G", &sz), -ERANGE);

        /* JSON values (an upper bound: one more than the openings and commas
         * outside strings), escapes honoured. */
        CHECK_EQ_U64(json_value_count("", 0), 1);
        CHECK_EQ_U64(json_value_count("{}", 2), 2);
        CHECK_EQ_U64(json_value_count("[[],[],[]]", 10), 7);
        CHECK_EQ_U64(json_value_count("{\"a\":[1,2]}", 11), 4);
        CHECK_EQ_U64(json_value_count("[\"[,{\"]", 7), 2);
        CHECK_EQ_U64(json_value_count("[\"\\\",[\",1]", 11), 3);

        CHECK_OK(parse_duration("3600", &d));
        CHECK_EQ_U64(d, 3600);
        CHECK_OK(parse_duration("15m", &d));
        CHECK_EQ_U64(d, 900);
        CHECK_OK(parse_duration("30d", &d));
        CHECK_EQ_U64(d, 30 * 86400);
        CHECK_OK(parse_duration("2w", &d));
        CHECK_EQ_U64(d, 14 * 86400);
        CHECK_RC(parse_duration("", &d), -EINVAL);
        CHECK_RC(parse_duration("-5", &d), -EINVAL);
        CHECK_RC(parse_duration("5x", &d), -EINVAL);
        CHECK_RC(parse_duration("5dd", &d), -EINVAL);
        CHECK_RC(parse_duration("9223372036854775807y", &d), -ERANGE);

        CHECK(cache_name_valid("main", 4));
        CHECK(cache_name_valid("team-a.ci_1", 11));
        CHECK(!cache_name_valid("", 0));
        CHECK(!cache_name_valid(".", 1));
        CHECK(!cache_name_valid("..", 2));
        CHECK(!cache_name_valid("-x", 2));
        CHECK(!cache_name_valid("a/b", 3));
        CHECK(!cache_name_valid("a b", 3));
        CHECK(!cache_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 65));
        CHECK(cache_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 64));

        CHECK(mkdtemp(dir));
        {
                char file[300], text[16];
                size_t len;
                FILE *f;
                snprintf(file, sizeof file, "%s/key", dir);
                f = fopen(file, "w");
                CHECK(f);
                fputs("name:abc=\n\n", f);
                fclose(f);
                CHECK_OK(read_text_file(file, text, sizeof text, &len));
                CHECK_STREQ(text, "name:abc=");
                CHECK_EQ_U64(len, 9);
                CHECK_RC(read_text_file(file, text, 9, &len), -EFBIG);
                f = fopen(file, "w");
                CHECK(f);
                fwrite("a\0b", 1, 3, f);
                fclose(f);
                CHECK_RC(read_text_file(file, text, sizeof text, &len), -EINVAL);
                snprintf(file, sizeof file, "%s/missing", dir);
                CHECK_RC(read_text_file(file, text, sizeof text, &len), -ENOENT);
        }
        snprintf(path, sizeof path, "%s/a/b/c", dir);
        CHECK_OK(mkdir_parents(path, 0755));
        CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode));
        CHECK_OK(mkdir_parents(path, 0755)); /* exists: fine */
        snprintf(path, sizeof path, "%s/a/b/c", dir);
        {
                char file[300];
                snprintf(file, sizeof file, "%s/a/f", dir);
                FILE *f = fopen(file, "w");
                CHECK(f);
                fclose(f);
                snprintf(file, sizeof file, "%s/a/f/x", dir);
                CHECK_RC(mkdir_parents(file, 0755), -ENOTDIR);
                snprintf(file, sizeof file, "rm -rf %s", dir);
                CHECK(system(file) == 0);
        }
        return 0;
}
