/* SPDX-License-Identifier: Apache-2.0 */
/*
 * trove.h - the subcommands of the trove CLI. Each returns a process exit
 * status (0 ok, 1 failure, 2 usage) and prints its own errors.
 */
#pragma once

#include <stdio.h>

/* A command with subcommands: runs the one named by argv[1] with argv
 * shifted by one; "help", -h and --help print usage to stdout; anything
 * else is a usage error (status 2) naming the program. */
struct subcommand {
        const char *name;
        int (*run)(int argc, char **argv);
};
int subcommand_dispatch(const char *prog, const struct subcommand *table, size_t n, void (*usage)(FILE *f),
                        int argc, char **argv);

int cmd_nar(int argc, char **argv);  /* trove nar dump|ls|chunks ... */
int cmd_hash(int argc, char **argv); /* trove hash FILE|- */
int cmd_key(int argc, char **argv);  /* trove key generate|public ... */
int cmd_narinfo(int argc, char **argv); /* trove narinfo sign|verify|fingerprint ... */
/* trove nar chunks FILE|- (called by cmd_nar with argv[0] = "chunks") */
int cmd_nar_chunks(int argc, char **argv);
int cmd_push(int argc, char **argv);  /* trove push [SERVER:]CACHE PATH... */
int cmd_login(int argc, char **argv); /* trove login NAME URL [TOKEN] */
int cmd_use(int argc, char **argv);   /* trove use [SERVER:]CACHE */
int cmd_cache(int argc, char **argv); /* trove cache create|info|configure|destroy|pin|unpin|pins|delete-path|rotate-key */
int cmd_gc(int argc, char **argv);    /* trove gc [SERVER] */
int cmd_token(int argc, char **argv); /* trove token create ... */
int cmd_watch(int argc, char **argv); /* trove watch-store [SERVER:]CACHE */
int cmd_nixdb(int argc, char **argv); /* trove nix-db [SERVER:]CACHE PATH... */
