/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pgembed.h - the private PostgreSQL cluster troved runs when it is given
 * no database URL.
 *
 * Layout under the state directory:
 *   <state>/pg/          the cluster (initdb), owned by the cluster's user
 *   <state>/pg/log/postgresql.log   server log (pg_ctl -l)
 *   <state>/pg/trove.conf           rewritten at every start: no TCP
 *                                   (listen_addresses = ''), Unix socket
 *                                   in <state>/pg-run, port 5432
 *   <state>/pg/pg_hba.conf          "local all all scram-sha-256": no
 *                                   trust, no TCP; rewritten (and the
 *                                   password set) when it differs, which
 *                                   upgrades clusters made by older
 *                                   versions that trusted local connections
 *   <state>/pg-run/      the socket directory, mode 0700, owned by the
 *                        cluster's user: other OS users cannot connect at all
 *   <state>/pg-password  the password of role trove (64 hex digits, made at
 *                        initdb time from getrandom), mode 0600, owned by
 *                        the cluster's user; a lost one is replaced by a new
 *                        one at the next start
 *   <state>/pg.lock      flock()ed while a process runs the cluster
 *
 * Binaries: $TROVE_PG_BINDIR, else the newest /usr/lib/postgresql/<ver>/bin
 * (the one matching an existing cluster's PG_VERSION is preferred), else the
 * first PATH entry holding initdb, pg_ctl and postgres.
 *
 * PostgreSQL refuses to run as root. When the process is root, the tools
 * run as the user given to pgembed_start(), else $TROVE_PG_USER, else the
 * system user "trove" (created with useradd if missing), through fork +
 * setgid/setuid; the pg directories are chowned to that user, and the state
 * directory and its parents must be searchable by it. Otherwise they run as
 * the calling user. A process that started the cluster as root and then
 * dropped to the cluster's user (troved does) can still stop it: the tools
 * then run as that user.
 *
 * Initialisation is atomic: initdb and CREATE DATABASE trove (single-user
 * `postgres --single`, so no client tool is needed) happen in
 * <state>/pg.init, which is renamed to <state>/pg only when complete; a
 * leftover pg.init from a crash is discarded. A restart reuses the cluster;
 * a stale postmaster.pid (killed server) is cleared; a server that is still
 * running from a killed troved is adopted.
 *
 * The returned connection string is for libpq, and holds the password:
 *   host='<state>/pg-run' port=5432 dbname=trove user=trove password=<hex>
 * Do not log it.
 */
#pragma once

#include "trove/common.h"

#define PGEMBED_DB_NAME "trove"
#define PGEMBED_DB_USER "trove"
#define PGEMBED_PORT 5432

struct pgembed;

/* Finds the PostgreSQL bindir as described above (heap string). */
int pgembed_find_bindir(char **ret, struct trove_error *err);

/* Initialises if needed and starts the cluster of state_dir (created with
 * mode 0711 if missing). user: the OS user the cluster runs as when the
 * process is root (NULL: $TROVE_PG_USER, else "trove"); ignored otherwise.
 * -EBUSY if another process runs it, -EACCES if the cluster's user cannot
 * reach the state directory, -ENOENT without PostgreSQL binaries, other
 * -errno with the reason (initdb output or server log tail) in err. */
int pgembed_start(const char *state_dir, const char *user, struct pgembed **ret,
                  struct trove_error *err);

/* The uid and primary gid of the OS user name (NULL: $TROVE_PG_USER, else
 * "trove"), creating the system user "trove" with useradd if it is missing
 * and the process is root; -ENOENT for another missing name. For a caller
 * that runs as that user itself (troved drops to it). */
int pgembed_resolve_user(const char *name, uid_t *ret_uid, gid_t *ret_gid, struct trove_error *err);

/* libpq connection string; owned by pg. */
const char *pgembed_conninfo(const struct pgembed *pg);
/* The bindir in use (for psql, pg_dump, ...); owned by pg. */
const char *pgembed_bindir(const struct pgembed *pg);
/* The server's PID, as of start. */
pid_t pgembed_pid(const struct pgembed *pg);

/* Stops the server (pg_ctl stop -m fast) and frees pg, also on error.
 * NULL is a no-op. */
int pgembed_stop(struct pgembed *pg, struct trove_error *err);
