/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replay.c - runs a fuzz target over every file in the directories (or
 * files) named on the command line, so the saved corpus is replayed by the
 * normal test run without a fuzzer. A crash or sanitizer report fails it.
 * Files below a folder named "reject" are replayed with
 * fuzz_replay_must_reject set (fuzz.h).
 */
#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "trove/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

bool fuzz_replay_must_reject;

static int replay_file(const char *path) {
        FILE *f = fopen(path, "rb");
        uint8_t *data = NULL;
        size_t n = 0, cap = 0;

        if (!f) {
                fprintf(stderr, "cannot open %s\n", path);
                return -1;
        }
        for (;;) {
                if (n == cap) {
                        cap = cap ? cap * 2 : 65536;
                        uint8_t *p = realloc(data, cap);
                        if (!p) {
                                free(data);
                                fclose(f);
                                return -1;
                        }
                        data = p;
                }
                size_t k = fread(data + n, 1, cap - n, f);
                if (k == 0)
                        break;
                n += k;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(data, n);
        free(data);
        return 0;
}

static int replay_dir(const char *dir, unsigned *count) {
        DIR *d = opendir(dir);
        struct dirent *de;
        char path[4096];

        if (!d) {
                fprintf(stderr, "cannot open %s\n", dir);
                return -1;
        }
        while ((de = readdir(d))) {
                struct stat st;
                if (de->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                if (stat(path, &st) < 0)
                        continue;
                if (S_ISDIR(st.st_mode)) {
                        bool outer = fuzz_replay_must_reject;
                        int r;

                        fuzz_replay_must_reject = outer || streq(de->d_name, "reject");
                        r = replay_dir(path, count);
                        fuzz_replay_must_reject = outer;
                        if (r < 0) {
                                closedir(d);
                                return -1;
                        }
                } else if (S_ISREG(st.st_mode)) {
                        if (replay_file(path) < 0) {
                                closedir(d);
                                return -1;
                        }
                        (*count)++;
                }
        }
        closedir(d);
        return 0;
}

int main(int argc, char **argv) {
        unsigned count = 0;

        for (int i = 1; i < argc; i++) {
                struct stat st;
                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "cannot stat %s\n", argv[i]);
                        return 1;
                }
                if (S_ISDIR(st.st_mode) ? replay_dir(argv[i], &count) < 0
                                        : (replay_file(argv[i]) < 0 || !++count))
                        return 1;
        }
        /* An empty corpus would make this test unable to fail. */
        if (count == 0) {
                fprintf(stderr, "no inputs replayed\n");
                return 1;
        }
        printf("replayed %u inputs\n", count);
        return 0;
}
