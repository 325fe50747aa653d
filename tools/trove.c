/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "trove/common.h"
#include "trove.h"

static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *summary;
} commands[] = {
        { "nar", cmd_nar, "dump a path as NAR, list or chunk a NAR" },
        { "hash", cmd_hash, "print the NAR hash of a NAR file as Nix does" },
        { "key", cmd_key, "generate signing keys, derive public keys" },
        { "narinfo", cmd_narinfo, "sign, verify and fingerprint .narinfo files" },
        { "push", cmd_push, "push store paths (closures) to a cache, chunk by chunk" },
        { "watch-store", cmd_watch, "push new store paths as they appear, until stopped" },
        { "cache", cmd_cache, "create, show, configure or destroy a cache; pin, unpin, delete paths; rotate its key" },
        { "gc", cmd_gc, "run garbage collection on the server now" },
        { "login", cmd_login, "save a server and its access token" },
        { "use", cmd_use, "make Nix substitute from a cache (nix.conf, netrc)" },
        { "token", cmd_token, "mint an access token from the server secret" },
        { "nix-db", cmd_nixdb, "print a closure's registration for nix-store --load-db" },
};

int subcommand_dispatch(const char *prog, const struct subcommand *table, size_t n, void (*usage_fn)(FILE *f),
                        int argc, char **argv) {
        if (argc < 2) {
                usage_fn(stderr);
                return 2;
        }
        if (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
                usage_fn(stdout);
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                if (streq(argv[1], table[i].name))
                        return table[i].run(argc - 1, argv + 1);
        fprintf(stderr, "%s: unknown subcommand '%s'\n", prog, argv[1]);
        usage_fn(stderr);
        return 2;
}

static void usage(FILE *f) {
        fprintf(f, "usage: trove [-v] COMMAND [ARGS...]\n\ncommands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
        fprintf(f, "\n'trove COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv) {
        log_set_ident("trove");
        while (argc > 1 && (streq(argv[1], "-v") || streq(argv[1], "--verbose"))) {
                log_set_max_level(TROVE_LOG_DEBUG);
                argv++;
                argc--;
        }
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
                usage(stdout);
                return 0;
        }
        if (streq(argv[1], "--version")) {
                printf("trove %s\n", TROVE_VERSION);
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(argv[1], commands[i].name))
                        return commands[i].run(argc - 1, argv + 1);
        fprintf(stderr, "trove: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return 2;
}
