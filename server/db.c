/* SPDX-License-Identifier: Apache-2.0 */
#include <assert.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "db.h"
#include "trove/buf.h"

#define DB_POOL_MAX 256
/* How long a request waits for a free connection before giving up. */
#define DB_ACQUIRE_TIMEOUT_SEC 30
/* Advisory lock key: garbage collection holds it exclusively, writers of
 * chunk rows and NARs shared. */
#define DB_GC_LOCK "7432002"
/* Advisory lock key: a collection run (one at a time among all instances
 * sharing the database), held for the run by its session. */
#define DB_GC_RUN_LOCK "7432003"
/* Advisory lock key: deleting paths holds it exclusively for one short
 * batch, inserting a path shared, so a path is never deleted by a
 * collection that could not see the new path referencing it. */
#define DB_PATHS_LOCK "7432004"
/* A path used or pushed this recently is never collected: the last-use
 * marks of every instance are flushed well within it. */
#define DB_GC_RECENT "interval '60 seconds'"

/* Cache rows are read on every request; they are kept here for a few
 * seconds. Changes made through this process take effect at once; changes
 * made by another troved sharing the database within cache_ttl seconds
 * (db_set_cache_ttl(), troved's cache-ttl). */
#define DB_CACHE_SLOTS 64
#define DB_CACHE_TTL_DEFAULT_SEC 5

struct cache_slot {
        struct db_cache c;     /* c.name NULL: empty */
        time_t expires;
};

struct db {
        char *conninfo;
        pthread_mutex_t cache_lock;
        struct cache_slot caches[DB_CACHE_SLOTS];
        unsigned cache_next;
        unsigned cache_ttl;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        unsigned n;
        PGconn *conns[DB_POOL_MAX];
        bool busy[DB_POOL_MAX];
        /* Statements prepared on each connection (bit per statement);
         * cleared whenever the connection is reset. */
        uint32_t prepared[DB_POOL_MAX];
        uint64_t waits;
};

/* Schema migrations, applied in order; never edit one that shipped. */
static const char *const migrations[] = {
        /* 1 */
        "CREATE TABLE caches ("
        "  id bigserial PRIMARY KEY,"
        "  name text NOT NULL UNIQUE,"
        "  is_public boolean NOT NULL DEFAULT false,"
        "  priority integer NOT NULL DEFAULT 40,"
        "  store_dir text NOT NULL DEFAULT '/nix/store',"
        "  secret_key text NOT NULL,"
        "  upstream_keys text NOT NULL DEFAULT '',"
        "  retention_sec bigint NOT NULL DEFAULT 0,"
        "  created_at timestamptz NOT NULL DEFAULT now());"
        "CREATE TABLE chunks ("
        "  id bigserial PRIMARY KEY,"
        "  hash bytea NOT NULL UNIQUE CHECK (length(hash) = 32),"
        "  length integer NOT NULL CHECK (length > 0),"
        "  stored_size integer NOT NULL CHECK (stored_size > 0),"
        "  created_at timestamptz NOT NULL DEFAULT now());"
        "CREATE TABLE nars ("
        "  id bigserial PRIMARY KEY,"
        "  nar_hash bytea NOT NULL UNIQUE CHECK (length(nar_hash) = 32),"
        "  nar_size bigint NOT NULL,"
        "  file_hash bytea NOT NULL,"
        "  file_size bigint NOT NULL,"
        "  n_chunks integer NOT NULL,"
        "  listing text NOT NULL,"
        "  created_at timestamptz NOT NULL DEFAULT now());"
        "CREATE TABLE nar_chunks ("
        "  nar_id bigint NOT NULL REFERENCES nars(id) ON DELETE CASCADE,"
        "  seq integer NOT NULL,"
        "  nar_offset bigint NOT NULL,"
        "  chunk_id bigint NOT NULL REFERENCES chunks(id),"
        "  PRIMARY KEY (nar_id, seq));"
        "CREATE INDEX nar_chunks_chunk ON nar_chunks (chunk_id);"
        "CREATE TABLE paths ("
        "  id bigserial PRIMARY KEY,"
        "  cache_id bigint NOT NULL REFERENCES caches(id) ON DELETE CASCADE,"
        "  hash_part text NOT NULL,"
        "  store_path text NOT NULL,"
        "  nar_id bigint NOT NULL REFERENCES nars(id),"
        "  refs text NOT NULL,"
        "  deriver text,"
        "  sigs text NOT NULL DEFAULT '',"
        "  ca text,"
        "  created_at timestamptz NOT NULL DEFAULT now(),"
        "  UNIQUE (cache_id, hash_part));"
        "CREATE INDEX paths_nar ON paths (nar_id);"
        "CREATE TABLE uploads ("
        "  cache_id bigint NOT NULL REFERENCES caches(id) ON DELETE CASCADE,"
        "  file_name text NOT NULL,"
        "  nar_id bigint NOT NULL REFERENCES nars(id),"
        "  created_at timestamptz NOT NULL DEFAULT now(),"
        "  PRIMARY KEY (cache_id, file_name));"
        "CREATE INDEX uploads_nar ON uploads (nar_id);",
        /* 2: objects found in the chunk store without a row (a crash between
         * storing an object and writing its row), remembered with when they
         * were first seen so GC deletes them only once they are old. */
        "CREATE TABLE orphan_objects ("
        "  hash bytea PRIMARY KEY,"
        "  first_seen timestamptz NOT NULL DEFAULT now());",
        /* 3: proof of possession. Storage is shared by all caches, so a
         * chunk counts as present for an upload to a cache only if that
         * cache's uploader sent (and the server verified) its bytes, or a
         * cache the uploader may pull holds it. A claim lives until GC. */
        "CREATE TABLE chunk_claims ("
        "  cache_id bigint NOT NULL REFERENCES caches(id) ON DELETE CASCADE,"
        "  chunk_id bigint NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,"
        "  created_at timestamptz NOT NULL DEFAULT now(),"
        "  PRIMARY KEY (cache_id, chunk_id));"
        "CREATE INDEX chunk_claims_chunk ON chunk_claims (chunk_id);",
        /* 4: pull-through. A cache's upstream binary caches (newline-separated
         * URLs, asked in order), and which paths came from one rather than
         * from a push (a retention policy may drop those first). */
        "ALTER TABLE caches ADD COLUMN upstreams text NOT NULL DEFAULT '';"
        "ALTER TABLE paths ADD COLUMN pulled boolean NOT NULL DEFAULT false;",
        /* 5: cache lifecycle. Retention counts from a path's last use (reads
         * are marked in batches, pushes of an existing path refresh it);
         * pinned paths are never collected; path_refs holds each path's
         * references by hash part (filled by a trigger, so every insert
         * keeps it) for closure-aware collection and for naming the
         * referrers of a path about to be deleted; a cache may have a
         * stored-bytes quota, and a retiring signing key that still signs
         * during a key rotation. */
        "ALTER TABLE paths ADD COLUMN last_used timestamptz NOT NULL DEFAULT now();"
        "UPDATE paths SET last_used = created_at;"
        "ALTER TABLE paths ADD COLUMN pinned_at timestamptz;"
        "CREATE INDEX paths_lru ON paths (cache_id, last_used);"
        "CREATE TABLE path_refs ("
        "  path_id bigint NOT NULL REFERENCES paths(id) ON DELETE CASCADE,"
        "  cache_id bigint NOT NULL,"
        "  ref text NOT NULL,"
        "  PRIMARY KEY (path_id, ref));"
        "CREATE INDEX path_refs_ref ON path_refs (cache_id, ref);"
        "CREATE FUNCTION path_refs_fill() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN"
        "  INSERT INTO path_refs (path_id, cache_id, ref)"
        "   SELECT DISTINCT NEW.id, NEW.cache_id, left(r, 32) FROM unnest(string_to_array(NEW.refs, ' ')) r"
        "   WHERE length(r) >= 32 AND left(r, 32) <> NEW.hash_part;"
        "  RETURN NULL; END $f$;"
        "CREATE TRIGGER paths_refs AFTER INSERT ON paths FOR EACH ROW EXECUTE FUNCTION path_refs_fill();"
        "INSERT INTO path_refs (path_id, cache_id, ref)"
        " SELECT DISTINCT p.id, p.cache_id, left(r, 32) FROM paths p, unnest(string_to_array(p.refs, ' ')) r"
        " WHERE length(r) >= 32 AND left(r, 32) <> p.hash_part;"
        "CREATE INDEX orphan_objects_seen ON orphan_objects (first_seen, hash);"
        "ALTER TABLE caches ADD COLUMN quota_bytes bigint NOT NULL DEFAULT 0;"
        "ALTER TABLE caches ADD COLUMN old_secret_key text NOT NULL DEFAULT '';",
        /* 6: learned prefetch profiles: per store path of a cache, the chunks
         * mounts read soon after looking the path up. weight decays with
         * every report and grows by one for each report naming the chunk;
         * pos is the weighted mean of its first-touch positions. Rows name
         * chunks by hash, without a foreign key: GC may delete a chunk a
         * profile names, and reading a profile joins it with the path's
         * current chunks, so such a row is never served. */
        "CREATE TABLE profile_chunks ("
        "  cache_id bigint NOT NULL REFERENCES caches(id) ON DELETE CASCADE,"
        "  hash_part text NOT NULL,"
        "  chunk_hash bytea NOT NULL CHECK (length(chunk_hash) = 32),"
        "  weight double precision NOT NULL,"
        "  pos double precision NOT NULL,"
        "  PRIMARY KEY (cache_id, hash_part, chunk_hash));",
        /* 7: delta chunks. A chunk is stored plain (kind 0), as a delta
         * against a similar plain chunk, its base (kind 1; never a delta
         * itself: the check and the insert's lookup keep it to one level),
         * or recompressed (kind 2). served_size is the frame it is served
         * as in a .nar.zst (a delta is decoded and compressed alone); the
         * base's row cannot go while a delta names it (the foreign key;
         * GC skips such bases). chunk_features holds the super-features
         * of plain chunks (include/trove/resemble.h), the index in which a
         * new chunk looks for a similar stored one. */
        "ALTER TABLE chunks ADD COLUMN kind smallint NOT NULL DEFAULT 0 CHECK (kind IN (0, 1, 2));"
        "ALTER TABLE chunks ADD COLUMN base_id bigint REFERENCES chunks(id);"
        "ALTER TABLE chunks ADD COLUMN served_size integer CHECK (served_size > 0);"
        "ALTER TABLE chunks ADD CONSTRAINT chunks_delta_base CHECK ((kind = 1) = (base_id IS NOT NULL));"
        "CREATE INDEX chunks_base ON chunks (base_id) WHERE base_id IS NOT NULL;"
        "CREATE TABLE chunk_features ("
        "  sf bigint NOT NULL,"
        "  chunk_id bigint NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,"
        "  PRIMARY KEY (sf, chunk_id));"
        "CREATE INDEX chunk_features_chunk ON chunk_features (chunk_id);",
        /* 8: super-features are six pairs of features, no longer three
         * groups of four (include/trove/resemble.h): the old values never
         * match a new chunk's, so they go; the chunks stored before are no
         * bases for later ones. */
        "DELETE FROM chunk_features;",
};

DEFINE_TRIVIAL_CLEANUP_FUNC(PGresult *, PQclear);
#define _cleanup_pgresult_ _cleanup_(PQclearp)

/* ---- pool ---- */

static bool conn_ok(PGconn *c) {
        return c && PQstatus(c) == CONNECTION_OK;
}

static void notice_log(void *arg, const char *message) {
        log_debug("database: %.*s", (int) strcspn(message, "\n"), message);
}

static PGconn *conn_open(const char *conninfo) {
        PGconn *c = PQconnectdb(conninfo);
        if (c)
                PQsetNoticeProcessor(c, notice_log, NULL);
        if (!conn_ok(c)) {
                log_debug("database connection failed: %s", c ? PQerrorMessage(c) : "out of memory");
                return c; /* kept, reset later */
        }
        return c;
}

static int db_acquire(struct db *db, PGconn **ret, unsigned *ret_slot) {
        struct timespec deadline;
        unsigned slot;

        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += DB_ACQUIRE_TIMEOUT_SEC;
        pthread_mutex_lock(&db->lock);
        for (;;) {
                for (slot = 0; slot < db->n; slot++)
                        if (!db->busy[slot])
                                break;
                if (slot < db->n)
                        break;
                db->waits++;
                if (pthread_cond_timedwait(&db->cond, &db->lock, &deadline) == ETIMEDOUT) {
                        pthread_mutex_unlock(&db->lock);
                        return -EBUSY;
                }
        }
        db->busy[slot] = true;
        pthread_mutex_unlock(&db->lock);

        /* Outside the lock: connecting may take a while. */
        if (!db->conns[slot]) {
                db->conns[slot] = conn_open(db->conninfo);
                db->prepared[slot] = 0;
        } else if (!conn_ok(db->conns[slot])) {
                PQreset(db->conns[slot]);
                db->prepared[slot] = 0;
        }
        if (!conn_ok(db->conns[slot])) {
                pthread_mutex_lock(&db->lock);
                db->busy[slot] = false;
                pthread_cond_signal(&db->cond);
                pthread_mutex_unlock(&db->lock);
                return -ECONNREFUSED;
        }
        *ret = db->conns[slot];
        *ret_slot = slot;
        return 0;
}

static void db_release(struct db *db, unsigned slot) {
        pthread_mutex_lock(&db->lock);
        db->busy[slot] = false;
        pthread_cond_signal(&db->cond);
        pthread_mutex_unlock(&db->lock);
}

struct db_handle {
        struct db *db;
        PGconn *conn;
        unsigned slot;
        bool in_tx;
};

static void db_handle_release(struct db_handle *h) {
        if (!h->conn)
                return;
        if (h->in_tx) {
                PGresult *r = PQexec(h->conn, "ROLLBACK");
                PQclear(r);
        }
        db_release(h->db, h->slot);
        h->conn = NULL;
}
#define _cleanup_handle_ _cleanup_(db_handle_release)

static int db_get(struct db *db, struct db_handle *h) {
        *h = (struct db_handle){ .db = db };
        return db_acquire(db, &h->conn, &h->slot);
}

/* Maps a failed result to an errno: lost connections and server shutdown
 * are -ECONNREFUSED (503), unique violations -EEXIST, foreign key
 * violations -ENOENT, the rest -EIO. */
static int result_errno(PGconn *c, PGresult *res) {
        const char *state;

        if (!conn_ok(c))
                return -ECONNREFUSED;
        state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (!state)
                return -EIO;
        if (streq(state, "23505"))
                return -EEXIST;
        if (streq(state, "23503"))
                return -ENOENT;
        if (startswith(state, "08") || startswith(state, "57P"))
                return -ECONNREFUSED;
        if (streq(state, "40001") || streq(state, "40P01"))
                return -EAGAIN;
        return -EIO;
}

/* Runs a parameterised statement; text parameters and text results. */
static int q(struct db_handle *h, PGresult **ret, const char *sql, int n, const char *const *params) {
        PGresult *res = PQexecParams(h->conn, sql, n, NULL, params, NULL, NULL, 0);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        int r;

        /* The server went away since this connection was last used (a
         * restart): outside a transaction the statement can simply be sent
         * again on a fresh connection. */
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !h->in_tx && !conn_ok(h->conn)) {
                PQclear(res);
                PQreset(h->conn);
                h->db->prepared[h->slot] = 0;
                if (!conn_ok(h->conn))
                        return -ECONNREFUSED;
                res = PQexecParams(h->conn, sql, n, NULL, params, NULL, NULL, 0);
                st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        }

        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
                r = result_errno(h->conn, res);
                if (r != -EEXIST && r != -ENOENT)
                        log_debug("query failed (%s): %s", sql,
                                  res ? PQresultErrorMessage(res) : PQerrorMessage(h->conn));
                PQclear(res);
                return r;
        }
        if (ret)
                *ret = res;
        else
                PQclear(res);
        return 0;
}

/* The statements on the hot read path, prepared once per connection. */
enum {
        STMT_PATH_GET,
        _STMT_MAX,
};

static const char *const statements[_STMT_MAX] = {
        [STMT_PATH_GET] =
                "SELECT p.id, p.store_path, p.refs, p.deriver, p.sigs, p.ca,"
                " extract(epoch FROM p.created_at)::bigint,"
                " n.id, n.nar_hash, n.nar_size, n.file_hash, n.file_size, n.n_chunks"
                " FROM paths p JOIN nars n ON n.id = p.nar_id WHERE p.cache_id = $1 AND p.hash_part = $2",
};

static int qp(struct db_handle *h, PGresult **ret, unsigned stmt, int n, const char *const *params) {
        char name[16];
        PGresult *res;

        snprintf(name, sizeof name, "s%u", stmt);
        if (!(h->db->prepared[h->slot] & (1u << stmt))) {
                res = PQprepare(h->conn, name, statements[stmt], n, NULL);
                if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
                        int r = result_errno(h->conn, res);
                        PQclear(res);
                        /* Fall back to a plain statement (e.g. right after a restart). */
                        return r == -ECONNREFUSED ? q(h, ret, statements[stmt], n, params) : r;
                }
                PQclear(res);
                h->db->prepared[h->slot] |= 1u << stmt;
        }
        res = PQexecPrepared(h->conn, name, n, params, NULL, NULL, 0);
        if (!res || (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)) {
                int r = result_errno(h->conn, res);
                PQclear(res);
                if (r == -ECONNREFUSED || r == -EIO) {
                        /* The connection was reset underneath (or the statement
                         * is gone): prepare again next time, run it plainly now. */
                        h->db->prepared[h->slot] &= ~(1u << stmt);
                        return q(h, ret, statements[stmt], n, params);
                }
                return r;
        }
        *ret = res;
        return 0;
}

static int tx_begin(struct db_handle *h) {
        int r = q(h, NULL, "BEGIN", 0, NULL);
        if (r >= 0)
                h->in_tx = true;
        return r;
}

static int tx_commit(struct db_handle *h) {
        int r = q(h, NULL, "COMMIT", 0, NULL);
        h->in_tx = false;
        return r;
}

/* BEGIN, then lock_stmt (an advisory lock taken before any snapshot of the
 * transaction). On failure the transaction stays open for the caller's
 * rollback. */
static int tx_begin_locked(struct db_handle *h, const char *lock_stmt) {
        int r = tx_begin(h);
        return r < 0 ? r : q(h, NULL, lock_stmt, 0, NULL);
}

static void tx_abort(struct db_handle *h) {
        (void) q(h, NULL, "ROLLBACK", 0, NULL);
        h->in_tx = false;
}

static int migrate(struct db *db) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        int r, version;

        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = tx_begin(&h);
        if (r < 0)
                return r;
        /* Serialises migrations between instances sharing a database. */
        r = q(&h, NULL, "SELECT pg_advisory_xact_lock(7432001)", 0, NULL);
        if (r < 0)
                return r;
        r = q(&h, NULL,
              "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
              " applied_at timestamptz NOT NULL DEFAULT now())",
              0, NULL);
        if (r < 0)
                return r;
        r = q(&h, &res, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL);
        if (r < 0)
                return r;
        version = atoi(PQgetvalue(res, 0, 0)); /* from our own query: an integer */
        if (version > (int) ELEMENTSOF(migrations))
                return log_error_errno(EPROTO, "database schema version %d is newer than this troved (%zu)",
                                       version, ELEMENTSOF(migrations));
        for (int v = version + 1; v <= (int) ELEMENTSOF(migrations); v++) {
                char vs[16];
                const char *p[] = { vs };
                PGresult *mr = PQexec(h.conn, migrations[v - 1]);
                if (!mr || PQresultStatus(mr) != PGRES_COMMAND_OK) {
                        log_error("database migration %d failed: %s", v,
                                  mr ? PQresultErrorMessage(mr) : PQerrorMessage(h.conn));
                        PQclear(mr);
                        return -EIO;
                }
                PQclear(mr);
                snprintf(vs, sizeof vs, "%d", v);
                r = q(&h, NULL, "INSERT INTO schema_migrations (version) VALUES ($1)", 1, p);
                if (r < 0)
                        return r;
                log_info("database schema migrated to version %d", v);
        }
        return tx_commit(&h);
}

int db_open(const char *conninfo, unsigned pool_size, struct db **ret) {
        struct db *db;
        int r;

        if (pool_size == 0 || pool_size > DB_POOL_MAX)
                return -EINVAL;
        db = calloc(1, sizeof *db);
        if (!db)
                return -ENOMEM;
        db->conninfo = strdup(conninfo);
        if (!db->conninfo) {
                free(db);
                return -ENOMEM;
        }
        pthread_mutex_init(&db->lock, NULL);
        pthread_cond_init(&db->cond, NULL);
        pthread_mutex_init(&db->cache_lock, NULL);
        db->n = pool_size;
        db->cache_ttl = DB_CACHE_TTL_DEFAULT_SEC;
        r = migrate(db);
        if (r < 0) {
                db_close(db);
                return r;
        }
        *ret = db;
        return 0;
}

void db_close(struct db *db) {
        if (!db)
                return;
        for (unsigned i = 0; i < db->n; i++)
                if (db->conns[i])
                        PQfinish(db->conns[i]);
        pthread_mutex_destroy(&db->lock);
        pthread_cond_destroy(&db->cond);
        pthread_mutex_destroy(&db->cache_lock);
        for (unsigned i = 0; i < DB_CACHE_SLOTS; i++)
                db_cache_free(&db->caches[i].c);
        free(db->conninfo);
        free(db);
}

void db_set_cache_ttl(struct db *db, unsigned sec) {
        pthread_mutex_lock(&db->cache_lock);
        db->cache_ttl = sec;
        pthread_mutex_unlock(&db->cache_lock);
}

int db_ping(struct db *db) {
        _cleanup_handle_ struct db_handle h = {};
        int r = db_get(db, &h);
        if (r < 0)
                return r;
        return q(&h, NULL, "SELECT 1", 0, NULL);
}

void db_pool_usage(struct db *db, unsigned *ret_busy, unsigned *ret_total, uint64_t *ret_waits) {
        unsigned busy = 0;
        pthread_mutex_lock(&db->lock);
        for (unsigned i = 0; i < db->n; i++)
                busy += db->busy[i];
        *ret_waits = db->waits;
        pthread_mutex_unlock(&db->lock);
        *ret_busy = busy;
        *ret_total = db->n;
}

/* ---- value helpers ---- */

static int parse_i64(const char *s, int64_t *ret) {
        char *end;
        long long v;

        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || end == s || *end)
                return -EIO;
        *ret = v;
        return 0;
}

static int get_i64(PGresult *res, int row, int col, int64_t *ret) {
        if (PQgetisnull(res, row, col)) {
                *ret = 0;
                return 0;
        }
        return parse_i64(PQgetvalue(res, row, col), ret);
}

static int get_u64(PGresult *res, int row, int col, uint64_t *ret) {
        int64_t v;
        int r = get_i64(res, row, col, &v);
        if (r < 0 || v < 0)
                return -EIO;
        *ret = (uint64_t) v;
        return 0;
}

static int get_u32(PGresult *res, int row, int col, uint32_t *ret) {
        int64_t v;
        int r = get_i64(res, row, col, &v);
        if (r < 0 || v < 0 || v > UINT32_MAX)
                return -EIO;
        *ret = (uint32_t) v;
        return 0;
}

/* bytea in text form: "\x<hex>". */
static int get_hash(PGresult *res, int row, int col, uint8_t out[SHA256_DIGEST_LEN]) {
        const char *v = PQgetvalue(res, row, col);
        if (!v || v[0] != '\\' || v[1] != 'x')
                return -EIO;
        return hex_decode(v + 2, strlen(v + 2), out, SHA256_DIGEST_LEN) < 0 ? -EIO : 0;
}

/* Columns col..col+2: kind, the base's hash and length (NULL unless a
 * delta). */
static int chunk_kind_from_row(PGresult *res, int row, int col, uint8_t *ret_kind, uint8_t base[SHA256_DIGEST_LEN],
                               uint32_t *ret_base_length) {
        uint32_t kind;

        if (get_u32(res, row, col, &kind) < 0 || kind > DB_CHUNK_RECOMPRESSED)
                return -EIO;
        *ret_kind = (uint8_t) kind;
        *ret_base_length = 0;
        if (kind != DB_CHUNK_DELTA)
                return 0;
        if (PQgetisnull(res, row, col + 1) || get_hash(res, row, col + 1, base) < 0 ||
            get_u32(res, row, col + 2, ret_base_length) < 0 || *ret_base_length == 0)
                return -EIO;
        return 0;
}

static char *dup_or_null(PGresult *res, int row, int col) {
        return PQgetisnull(res, row, col) ? NULL : strdup(PQgetvalue(res, row, col));
}

/* "\x" + 64 hex + NUL */
#define BYTEA_HASH_LEN (2 + 2 * SHA256_DIGEST_LEN + 1)
static void bytea_hash(const uint8_t h[SHA256_DIGEST_LEN], char out[BYTEA_HASH_LEN]) {
        out[0] = '\\';
        out[1] = 'x';
        hex_encode(h, SHA256_DIGEST_LEN, out + 2);
}

/* ---- caches ---- */

void db_cache_free(struct db_cache *c) {
        if (!c)
                return;
        free(c->name);
        free(c->store_dir);
        if (c->secret_key) {
                explicit_bzero(c->secret_key, strlen(c->secret_key));
                free(c->secret_key);
        }
        if (c->old_secret_key) {
                explicit_bzero(c->old_secret_key, strlen(c->old_secret_key));
                free(c->old_secret_key);
        }
        free(c->upstream_keys);
        free(c->upstreams);
        *c = (struct db_cache){};
}

static int cache_copy(const struct db_cache *src, struct db_cache *ret) {
        struct db_cache c = *src;
        c.name = strdup(src->name);
        c.store_dir = strdup(src->store_dir);
        c.secret_key = strdup(src->secret_key);
        c.upstream_keys = strdup(src->upstream_keys);
        c.upstreams = strdup(src->upstreams ? src->upstreams : "");
        c.old_secret_key = strdup(src->old_secret_key ? src->old_secret_key : "");
        if (!c.name || !c.store_dir || !c.secret_key || !c.upstream_keys || !c.upstreams || !c.old_secret_key) {
                db_cache_free(&c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

/* Drops a cached row (NULL: all of them). */
static void cache_forget(struct db *db, const char *name) {
        pthread_mutex_lock(&db->cache_lock);
        for (unsigned i = 0; i < DB_CACHE_SLOTS; i++)
                if (db->caches[i].c.name && (!name || streq(db->caches[i].c.name, name)))
                        db_cache_free(&db->caches[i].c);
        pthread_mutex_unlock(&db->cache_lock);
}

static int cache_row_get(struct db *db, const char *name, struct db_cache *ret) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        const char *p[] = { name };
        struct db_cache c = {};
        int r;

        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res,
              "SELECT id, name, is_public, priority, store_dir, secret_key, upstream_keys, retention_sec,"
              " upstreams, quota_bytes, old_secret_key FROM caches WHERE name = $1",
              1, p);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1)
                return -ENOENT;
        int64_t prio;
        if (get_i64(res, 0, 0, &c.id) < 0 || get_i64(res, 0, 3, &prio) < 0 ||
            get_i64(res, 0, 7, &c.retention_sec) < 0 || get_i64(res, 0, 9, &c.quota_bytes) < 0)
                return -EIO;
        c.priority = (int) prio;
        c.is_public = PQgetvalue(res, 0, 2)[0] == 't';
        c.name = strdup(PQgetvalue(res, 0, 1));
        c.store_dir = strdup(PQgetvalue(res, 0, 4));
        c.secret_key = strdup(PQgetvalue(res, 0, 5));
        c.upstream_keys = strdup(PQgetvalue(res, 0, 6));
        c.upstreams = strdup(PQgetvalue(res, 0, 8));
        c.old_secret_key = strdup(PQgetvalue(res, 0, 10));
        if (!c.name || !c.store_dir || !c.secret_key || !c.upstream_keys || !c.upstreams || !c.old_secret_key) {
                db_cache_free(&c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

int db_cache_get(struct db *db, const char *name, struct db_cache *ret) {
        time_t now = time(NULL);
        struct db_cache fresh;
        int r;

        pthread_mutex_lock(&db->cache_lock);
        for (unsigned i = 0; i < DB_CACHE_SLOTS; i++) {
                struct cache_slot *sl = &db->caches[i];
                if (sl->c.name && streq(sl->c.name, name) && sl->expires > now) {
                        r = cache_copy(&sl->c, ret);
                        pthread_mutex_unlock(&db->cache_lock);
                        return r;
                }
        }
        pthread_mutex_unlock(&db->cache_lock);

        r = cache_row_get(db, name, &fresh);
        if (r < 0)
                return r;
        pthread_mutex_lock(&db->cache_lock);
        {
                unsigned slot = db->cache_next++ % DB_CACHE_SLOTS;
                for (unsigned i = 0; i < DB_CACHE_SLOTS; i++)
                        if (db->caches[i].c.name && streq(db->caches[i].c.name, name)) {
                                slot = i;
                                break;
                        }
                db_cache_free(&db->caches[slot].c);
                if (cache_copy(&fresh, &db->caches[slot].c) >= 0)
                        db->caches[slot].expires = now + db->cache_ttl;
        }
        pthread_mutex_unlock(&db->cache_lock);
        *ret = fresh;
        return 0;
}

int db_cache_create(struct db *db, const struct db_cache *c, int64_t *ret_id) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char prio[24], ret_s[24], quota[24];
        int r;

        snprintf(prio, sizeof prio, "%d", c->priority);
        snprintf(ret_s, sizeof ret_s, "%" PRId64, c->retention_sec);
        snprintf(quota, sizeof quota, "%" PRId64, c->quota_bytes);
        const char *p[] = { c->name, c->is_public ? "t" : "f", prio, c->store_dir, c->secret_key,
                            c->upstream_keys ? c->upstream_keys : "", ret_s, c->upstreams ? c->upstreams : "", quota };
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res,
              "INSERT INTO caches (name, is_public, priority, store_dir, secret_key, upstream_keys,"
              " retention_sec, upstreams, quota_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
              9, p);
        if (r < 0)
                return r;
        if (ret_id)
                return get_i64(res, 0, 0, ret_id);
        return 0;
}

int db_cache_update(struct db *db, const struct db_cache *c) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char prio[24], ret_s[24], id[24], quota[24];
        int r;

        snprintf(prio, sizeof prio, "%d", c->priority);
        snprintf(ret_s, sizeof ret_s, "%" PRId64, c->retention_sec);
        snprintf(id, sizeof id, "%" PRId64, c->id);
        snprintf(quota, sizeof quota, "%" PRId64, c->quota_bytes);
        const char *p[] = { id, c->is_public ? "t" : "f", prio, c->upstream_keys ? c->upstream_keys : "",
                            ret_s, c->upstreams ? c->upstreams : "", quota, c->secret_key,
                            c->old_secret_key ? c->old_secret_key : "" };
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res,
              "UPDATE caches SET is_public = $2, priority = $3, upstream_keys = $4, retention_sec = $5,"
              " upstreams = $6, quota_bytes = $7, secret_key = $8, old_secret_key = $9 WHERE id = $1",
              9, p);
        cache_forget(db, c->name);
        if (r < 0)
                return r;
        return streq(PQcmdTuples(res), "1") ? 0 : -ENOENT;
}

int db_cache_destroy(struct db *db, const char *name) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        const char *p[] = { name };
        int r;

        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res, "DELETE FROM caches WHERE name = $1", 1, p);
        cache_forget(db, name);
        if (r < 0)
                return r;
        return streq(PQcmdTuples(res), "1") ? 0 : -ENOENT;
}

int db_cache_stats(struct db *db, int64_t cache_id, struct db_cache_stats *ret) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char id[24];
        const char *p[] = { id };
        struct db_cache_stats s = {};
        int r;

        snprintf(id, sizeof id, "%" PRId64, cache_id);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res,
              "SELECT (SELECT count(*) FROM paths WHERE cache_id = $1),"
              " (SELECT coalesce(sum(n.nar_size), 0) FROM paths p JOIN nars n ON n.id = p.nar_id"
              "  WHERE p.cache_id = $1),"
              " count(*), coalesce(sum(c.stored_size), 0),"
              " (SELECT count(*) FROM paths WHERE cache_id = $1 AND pulled),"
              " (SELECT coalesce(sum(n.nar_size), 0) FROM paths p JOIN nars n ON n.id = p.nar_id"
              "  WHERE p.cache_id = $1 AND p.pulled),"
              " coalesce(sum(c.stored_size) FILTER (WHERE c.kind = 0), 0),"
              " coalesce(sum(c.stored_size) FILTER (WHERE c.kind = 1), 0),"
              " coalesce(sum(c.stored_size) FILTER (WHERE c.kind = 2), 0)"
              " FROM chunks c WHERE c.id IN (SELECT nc.chunk_id FROM nar_chunks nc"
              "  JOIN paths p ON p.nar_id = nc.nar_id WHERE p.cache_id = $1"
              "  UNION SELECT d.base_id FROM nar_chunks nc JOIN paths p ON p.nar_id = nc.nar_id"
              "  JOIN chunks d ON d.id = nc.chunk_id WHERE p.cache_id = $1 AND d.base_id IS NOT NULL)",
              1, p);
        if (r < 0)
                return r;
        if (get_u64(res, 0, 0, &s.paths) < 0 || get_u64(res, 0, 1, &s.nar_bytes) < 0 ||
            get_u64(res, 0, 2, &s.chunks) < 0 || get_u64(res, 0, 3, &s.stored_bytes) < 0 ||
            get_u64(res, 0, 4, &s.pulled_paths) < 0 || get_u64(res, 0, 5, &s.pulled_nar_bytes) < 0 ||
            get_u64(res, 0, 6, &s.stored_by_kind[0]) < 0 || get_u64(res, 0, 7, &s.stored_by_kind[1]) < 0 ||
            get_u64(res, 0, 8, &s.stored_by_kind[2]) < 0)
                return -EIO;
        *ret = s;
        return 0;
}

int db_global_stats(struct db *db, struct db_global_stats *ret) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        struct db_global_stats s = {};
        int r;

        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res,
              "SELECT (SELECT count(*) FROM chunks), (SELECT coalesce(sum(length), 0) FROM chunks),"
              " (SELECT coalesce(sum(stored_size), 0) FROM chunks), (SELECT count(*) FROM nars),"
              " (SELECT coalesce(sum(nar_size), 0) FROM nars), (SELECT count(*) FROM paths),"
              " (SELECT coalesce(sum(stored_size), 0) FROM chunks WHERE kind = 0),"
              " (SELECT coalesce(sum(stored_size), 0) FROM chunks WHERE kind = 1),"
              " (SELECT coalesce(sum(stored_size), 0) FROM chunks WHERE kind = 2)",
              0, NULL);
        if (r < 0)
                return r;
        if (get_u64(res, 0, 0, &s.chunks) < 0 || get_u64(res, 0, 1, &s.chunk_bytes) < 0 ||
            get_u64(res, 0, 2, &s.chunk_stored_bytes) < 0 || get_u64(res, 0, 3, &s.nars) < 0 ||
            get_u64(res, 0, 4, &s.nar_bytes) < 0 || get_u64(res, 0, 5, &s.paths) < 0 ||
            get_u64(res, 0, 6, &s.stored_by_kind[0]) < 0 || get_u64(res, 0, 7, &s.stored_by_kind[1]) < 0 ||
            get_u64(res, 0, 8, &s.stored_by_kind[2]) < 0)
                return -EIO;
        *ret = s;
        return 0;
}

/* ---- chunks ---- */

struct one_chunk {
        int (*ensure_stored)(void *userdata);
        void *userdata;
};

static int one_chunk_ensure_stored(void *userdata, size_t i) {
        struct one_chunk *o = userdata;
        return o->ensure_stored ? o->ensure_stored(o->userdata) : 0;
}

int db_chunk_insert(struct db *db, const struct db_chunk *c, int (*ensure_stored)(void *userdata),
                    void *userdata) {
        struct one_chunk o = { ensure_stored, userdata };
        int r = db_chunks_insert(db, c, 1, one_chunk_ensure_stored, &o);
        return r < 0 ? r : r > 0;
}

int db_chunks_insert(struct db *db, const struct db_chunk *c, size_t n,
                     int (*ensure_stored)(void *userdata, size_t i), void *userdata) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        struct buf hashes = BUF_INIT((size_t) 1 << 30), lens = BUF_INIT((size_t) 1 << 30),
                   feats = BUF_INIT((size_t) 1 << 30);
        uint64_t added;
        int r;

        if (n == 0)
                return 0;
        for (size_t i = 0; i < n; i++) {
                char hex[2 * SHA256_DIGEST_LEN + 1], base[2 * SHA256_DIGEST_LEN + 1] = "";
                hex_encode(c[i].id, SHA256_DIGEST_LEN, hex);
                if (c[i].kind == DB_CHUNK_DELTA)
                        hex_encode(c[i].base, SHA256_DIGEST_LEN, base);
                r = buf_printf(&hashes, "%s%s", i ? "," : "", hex);
                if (r >= 0)
                        r = buf_printf(&lens, "%s%" PRIu32 ":%" PRIu32 ":%" PRIu32 ":%u:%s", i ? "," : "", c[i].length,
                                       c[i].stored_size, c[i].served_size ? c[i].served_size : c[i].stored_size,
                                       (unsigned) c[i].kind, base);
                for (unsigned k = 0; r >= 0 && c[i].kind != DB_CHUNK_DELTA && c[i].has_features && k < RESEMBLE_SF; k++)
                        r = buf_printf(&feats, "%s%s:%" PRId64, feats.len ? "," : "", hex, (int64_t) c[i].features[k]);
                if (r < 0)
                        goto out;
        }
        r = db_get(db, &h);
        if (r < 0)
                goto out;
        r = tx_begin(&h);
        if (r < 0)
                goto out;
        r = q(&h, NULL, "SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock_shared(" DB_GC_LOCK ")",
              0, NULL);
        if (r < 0)
                goto out;
        for (size_t i = 0; ensure_stored && i < n; i++) {
                r = ensure_stored(userdata, i);
                if (r < 0)
                        goto out;
        }
        {
                const char *p[] = { (const char *) hashes.data, (const char *) lens.data, (const char *) feats.data };
                /* A delta's base is looked up here, under the GC lock: a
                 * base that is gone, or is itself a delta, leaves base_id
                 * NULL and the row fails its check, so no delta row ever
                 * names a base that cannot be read. The super-features of
                 * the plain rows inserted go in with them, by the ids the
                 * insert returns (a row that was there has its own). */
                r = q(&h, &res,
                      "WITH ins AS (INSERT INTO chunks (hash, length, stored_size, served_size, kind, base_id)"
                      " SELECT decode(hh.x, 'hex'), split_part(ll.x, ':', 1)::integer, split_part(ll.x, ':', 2)::integer,"
                      "  split_part(ll.x, ':', 3)::integer, split_part(ll.x, ':', 4)::smallint,"
                      "  (SELECT b.id FROM chunks b WHERE split_part(ll.x, ':', 5) <> ''"
                      "   AND b.hash = decode(split_part(ll.x, ':', 5), 'hex') AND b.kind <> 1)"
                      " FROM unnest(string_to_array($1, ',')) WITH ORDINALITY AS hh(x, ord)"
                      " JOIN unnest(string_to_array($2, ',')) WITH ORDINALITY AS ll(x, ord) USING (ord)"
                      " ON CONFLICT (hash) DO NOTHING RETURNING id, hash, kind),"
                      " feat AS (INSERT INTO chunk_features (sf, chunk_id)"
                      "  SELECT split_part(f.x, ':', 2)::bigint, ins.id FROM unnest(string_to_array($3, ',')) AS f(x)"
                      "  JOIN ins ON ins.hash = decode(split_part(f.x, ':', 1), 'hex') AND ins.kind <> 1"
                      "  ON CONFLICT DO NOTHING)"
                      " SELECT count(*) FROM ins",
                      3, p);
                if (r < 0)
                        goto out;
        }
        if (get_u64(res, 0, 0, &added) < 0) {
                r = -EIO;
                goto out;
        }
        r = tx_commit(&h);
        if (r >= 0)
                r = (int) MIN(added, (uint64_t) INT32_MAX);
out:
        buf_free(&hashes);
        buf_free(&lens);
        buf_free(&feats);
        return r;
}

int db_cold_chunks(struct db *db, int64_t min_age_sec, size_t max, int64_t *cursor, struct db_cold_chunk **ret,
                   size_t *ret_n) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char age[24], lim[24], cur[24];
        const char *p[] = { age, lim, cur };
        struct db_cold_chunk *v;
        int r, n;

        snprintf(age, sizeof age, "%" PRId64, min_age_sec);
        snprintf(lim, sizeof lim, "%zu", max);
        snprintf(cur, sizeof cur, "%" PRId64, *cursor);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res,
              "SELECT c.id, c.hash, c.length, c.stored_size FROM chunks c"
              " WHERE c.kind = 0 AND c.id > $3::bigint AND c.created_at < now() - make_interval(secs => $1::bigint)"
              " AND NOT EXISTS (SELECT 1 FROM nar_chunks nc JOIN paths p ON p.nar_id = nc.nar_id"
              "  WHERE nc.chunk_id = c.id AND p.last_used >= now() - make_interval(secs => $1::bigint))"
              " ORDER BY c.id LIMIT $2::integer",
              3, p);
        if (r < 0)
                return r;
        n = PQntuples(res);
        v = calloc(n > 0 ? (size_t) n : 1, sizeof *v);
        if (!v)
                return -ENOMEM;
        for (int i = 0; i < n; i++)
                if (get_i64(res, i, 0, cursor) < 0 || get_hash(res, i, 1, v[i].id) < 0 ||
                    get_u32(res, i, 2, &v[i].length) < 0 || get_u32(res, i, 3, &v[i].stored_size) < 0) {
                        free(v);
                        return -EIO;
                }
        *ret = v;
        *ret_n = (size_t) n;
        return 0;
}

int db_chunk_recompress(struct db *db, const uint8_t id[SHA256_DIGEST_LEN], uint32_t stored_size,
                        int (*replace)(void *userdata), void *userdata) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char hash[BYTEA_HASH_LEN], st[16];
        const char *p[] = { hash, st };
        int r;

        bytea_hash(id, hash);
        snprintf(st, sizeof st, "%" PRIu32, stored_size);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = tx_begin_locked(&h, "SELECT pg_advisory_xact_lock_shared(" DB_GC_LOCK ")");
        if (r < 0)
                return r;
        r = q(&h, &res, "SELECT 1 FROM chunks WHERE hash = $1 AND kind = 0 FOR UPDATE", 1, p);
        if (r < 0)
                return r;
        if (PQntuples(res) == 0)
                return tx_commit(&h) < 0 ? -EIO : 0;
        r = replace ? replace(userdata) : 0;
        if (r < 0)
                return r;
        r = q(&h, NULL, "UPDATE chunks SET kind = 2, stored_size = $2::integer WHERE hash = $1", 2, p);
        if (r < 0)
                return r;
        r = tx_commit(&h);
        return r < 0 ? r : 1;
}

/* Chunks looked at per super-feature of a new chunk, the newest first. */
#define DB_BASE_CANDIDATES_PER_SF "4"

int db_chunk_bases(struct db *db, int64_t cache_id, const struct db_base_query *qs, size_t n,
                   struct db_chunk_base *ret) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        struct buf list = BUF_INIT((size_t) 64 << 20);
        char cid[24];
        int r;

        for (size_t i = 0; i < n; i++)
                ret[i].found = false;
        for (size_t i = 0; i < n; i++)
                for (unsigned k = 0; k < RESEMBLE_SF; k++) {
                        r = buf_printf(&list, "%s%zu:%" PRId64 ":%" PRIu32, list.len ? "," : "", i,
                                       (int64_t) qs[i].features[k], qs[i].length);
                        if (r < 0)
                                goto out;
                }
        if (list.len == 0) {
                r = 0;
                goto out;
        }
        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        r = db_get(db, &h);
        if (r < 0)
                goto out;
        r = tx_begin_locked(&h, "SELECT pg_advisory_xact_lock_shared(" DB_GC_LOCK ")");
        if (r < 0)
                goto out;
        {
                const char *p[] = { (const char *) list.data, cid };
                /* The plain chunk sharing the most super-features, of a
                 * similar length, that this cache holds (a path, an upload
                 * or a claim of it: a reader of this cache may then read the
                 * base, and learns nothing of other tenants). Per
                 * super-feature only the newest few chunks having it are
                 * looked at (an index scan each, LATERAL so that the planner
                 * does not hash the whole table for every batch; a feature
                 * thousands of chunks share costs no more than a rare one),
                 * and the newest of equally good ones wins: after an update
                 * the last version is the likeliest base. A base chosen is
                 * kept from GC for its min-age, as a chunk found present is,
                 * until the delta's row protects it. */
                r = q(&h, &res,
                      "WITH f AS (SELECT split_part(x, ':', 1)::integer AS i, split_part(x, ':', 2)::bigint AS sf,"
                      "  split_part(x, ':', 3)::integer AS len FROM unnest(string_to_array($1, ',')) AS x),"
                      " m AS (SELECT f.i, k.id, k.hash, k.length, count(*) AS n FROM f CROSS JOIN LATERAL"
                      "  (SELECT c.id, c.hash, c.length FROM chunk_features cf JOIN chunks c ON c.id = cf.chunk_id"
                      "   WHERE cf.sf = f.sf AND c.kind <> 1 AND c.length BETWEEN f.len / 2 AND f.len * 2"
                      "   ORDER BY cf.chunk_id DESC LIMIT " DB_BASE_CANDIDATES_PER_SF ") k"
                      "  GROUP BY f.i, k.id, k.hash, k.length),"
                      " best AS (SELECT DISTINCT ON (m.i) m.i, m.id, m.hash, m.length FROM m"
                      "  WHERE EXISTS (SELECT 1 FROM chunk_claims cl WHERE cl.chunk_id = m.id AND cl.cache_id = $2::bigint)"
                      "   OR EXISTS (SELECT 1 FROM nar_chunks nc JOIN paths p ON p.nar_id = nc.nar_id"
                      "              WHERE nc.chunk_id = m.id AND p.cache_id = $2::bigint)"
                      "   OR EXISTS (SELECT 1 FROM nar_chunks nc JOIN uploads u ON u.nar_id = nc.nar_id"
                      "              WHERE nc.chunk_id = m.id AND u.cache_id = $2::bigint)"
                      "  ORDER BY m.i, m.n DESC, m.id DESC),"
                      " touch AS (UPDATE chunks SET created_at = now() WHERE id IN (SELECT c.id FROM best"
                      "  JOIN chunks c ON c.id = best.id WHERE c.created_at < now() - interval '1 minute'"
                      "  ORDER BY c.id FOR UPDATE OF c SKIP LOCKED))"
                      " SELECT i, hash, length FROM best",
                      2, p);
        }
        if (r >= 0)
                r = tx_commit(&h);
        if (r < 0)
                goto out;
        for (int k = 0; k < PQntuples(res); k++) {
                uint64_t i;
                if (get_u64(res, k, 0, &i) < 0 || i >= n) {
                        r = -EIO;
                        goto out;
                }
                if (get_hash(res, k, 1, ret[i].id) < 0 || get_u32(res, k, 2, &ret[i].length) < 0) {
                        r = -EIO;
                        goto out;
                }
                ret[i].found = true;
        }
        r = 0;
out:
        buf_free(&list);
        return r;
}

int db_chunk_get(struct db *db, const uint8_t id[SHA256_DIGEST_LEN], struct db_chunk *ret) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char hash[BYTEA_HASH_LEN];
        const char *p[] = { hash };
        struct db_chunk c = {};
        int r;

        bytea_hash(id, hash);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res,
              "SELECT c.length, c.stored_size, coalesce(c.served_size, c.stored_size), c.kind, b.hash, b.length"
              " FROM chunks c LEFT JOIN chunks b ON b.id = c.base_id WHERE c.hash = $1",
              1, p);
        if (r < 0)
                return r;
        if (PQntuples(res) == 0)
                return 0;
        memcpy(c.id, id, SHA256_DIGEST_LEN);
        if (get_u32(res, 0, 0, &c.length) < 0 || get_u32(res, 0, 1, &c.stored_size) < 0 ||
            get_u32(res, 0, 2, &c.served_size) < 0 || chunk_kind_from_row(res, 0, 3, &c.kind, c.base, &c.base_length) < 0)
                return -EIO;
        *ret = c;
        return 1;
}

/* Builds "hex,hex,..." of n hashes. */
static int hash_list(const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, char **ret) {
        size_t len;
        char *s, *p;

        if (MUL_OVERFLOW(n, (size_t) 2 * SHA256_DIGEST_LEN + 1, &len))
                return -E2BIG;
        s = malloc(len + 1);
        if (!s)
                return -ENOMEM;
        p = s;
        for (size_t i = 0; i < n; i++) {
                if (i)
                        *p++ = ',';
                hex_encode(ids[i], SHA256_DIGEST_LEN, p);
                p += 2 * SHA256_DIGEST_LEN;
        }
        *p = 0;
        *ret = s;
        return 0;
}

/* Runs sql with $1 the "hex,hex,..." list of n ids and $2... the extra
 * parameters; *ret (if not NULL) gets the result. With n == 0 nothing runs
 * and *ret is NULL. gc_shared: in a transaction that holds the GC lock
 * shared (taken before the statement's snapshot), so a collection batch
 * is either wholly before or wholly after it. */
static int ids_query_ex(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, const char *sql,
                        int n_extra, const char *const *extra, PGresult **ret, bool gc_shared) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_free_ char *list = NULL;
        const char *p[4];
        int r;

        assert(n_extra < 4);
        if (ret)
                *ret = NULL;
        if (n == 0)
                return 0;
        r = hash_list(ids, n, &list);
        if (r < 0)
                return r;
        p[0] = list;
        for (int i = 0; i < n_extra; i++)
                p[i + 1] = extra[i];
        r = db_get(db, &h);
        if (r < 0)
                return r;
        if (!gc_shared)
                return q(&h, ret, sql, n_extra + 1, p);
        r = tx_begin_locked(&h, "SELECT pg_advisory_xact_lock_shared(" DB_GC_LOCK ")");
        if (r >= 0)
                r = q(&h, ret, sql, n_extra + 1, p);
        if (r >= 0) {
                r = tx_commit(&h);
                if (r < 0 && ret) {
                        PQclear(*ret);
                        *ret = NULL;
                }
        }
        return r;
}

static int ids_query(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, const char *sql,
                     int n_extra, const char *const *extra, PGresult **ret) {
        return ids_query_ex(db, ids, n, sql, n_extra, extra, ret, false);
}

/* Runs sql (as ids_query) and sets present[i] for each ordinal i - 1 it
 * returns. */
static int chunks_query(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, const char *sql,
                        int n_extra, const char *const *extra, bool *present) {
        _cleanup_pgresult_ PGresult *res = NULL;
        int r;

        for (size_t i = 0; i < n; i++)
                present[i] = false;
        r = ids_query_ex(db, ids, n, sql, n_extra, extra, &res, true);
        if (r < 0 || !res)
                return r;
        for (int i = 0; i < PQntuples(res); i++) {
                uint64_t idx;
                if (get_u64(res, i, 0, &idx) < 0 || idx >= n)
                        return -EIO;
                present[idx] = true;
        }
        return 0;
}

int db_chunks_present(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, bool *present) {
        /* The caller will reference what it finds: its age is refreshed
         * (at most once a minute; rows another writer is touching are
         * skipped, not waited for, so no two writers deadlock). */
        return chunks_query(db, ids, n,
                            "WITH t AS (SELECT decode(x, 'hex') AS h, ord"
                            "  FROM unnest(string_to_array($1, ',')) WITH ORDINALITY AS t(x, ord)),"
                            " touch AS (UPDATE chunks SET created_at = now() WHERE id IN (SELECT c.id FROM t"
                            "  JOIN chunks c ON c.hash = t.h WHERE c.created_at < now() - interval '1 minute'"
                            "  ORDER BY c.id FOR UPDATE OF c SKIP LOCKED))"
                            " SELECT t.ord - 1 FROM t WHERE EXISTS (SELECT 1 FROM chunks c WHERE c.hash = t.h)",
                            0, NULL, present);
}

int db_chunk_in_cache(struct db *db, int64_t cache_id, const uint8_t id[SHA256_DIGEST_LEN], uint32_t *ret_length,
                      uint8_t *ret_kind) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char hash[BYTEA_HASH_LEN], cid[24];
        const char *p[] = { hash, cid };
        int r;

        bytea_hash(id, hash);
        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res,
              "SELECT c.length, c.kind FROM chunks c JOIN nar_chunks nc ON nc.chunk_id = c.id"
              " JOIN paths p ON p.nar_id = nc.nar_id WHERE c.hash = $1 AND p.cache_id = $2 LIMIT 1",
              2, p);
        if (r < 0)
                return r;
        if (PQntuples(res) == 0)
                return 0;
        {
                uint32_t length, kind;
                if (get_u32(res, 0, 0, &length) < 0 || get_u32(res, 0, 1, &kind) < 0 || kind > DB_CHUNK_RECOMPRESSED)
                        return -EIO;
                if (ret_length)
                        *ret_length = length;
                if (ret_kind)
                        *ret_kind = (uint8_t) kind;
        }
        return 1;
}

/* "{1,2,3}" of n ids, for a bigint[] parameter. */
static int id_array(const int64_t *ids, size_t n, char **ret) {
        struct buf b = BUF_INIT((size_t) 64 << 20);
        int r = buf_printf(&b, "{");
        for (size_t i = 0; i < n && r >= 0; i++)
                r = buf_printf(&b, "%s%" PRId64, i ? "," : "", ids[i]);
        if (r >= 0)
                r = buf_printf(&b, "}");
        if (r >= 0)
                r = buf_steal(&b, ret, NULL);
        buf_free(&b);
        return r;
}

int db_chunks_visible(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n, const int64_t *cache_ids,
                      size_t n_caches, int64_t claim_cache_id, bool *present) {
        _cleanup_free_ char *caches = NULL;
        char claim[24];
        int r;

        r = id_array(cache_ids, n_caches, &caches);
        if (r < 0)
                return r;
        snprintf(claim, sizeof claim, "%" PRId64, claim_cache_id);
        const char *extra[] = { caches, claim };
        /* What is reported present is claimed for claim_cache_id in the
         * same transaction (under the GC lock), so it stays while the
         * push that asked goes on to reference it. */
        return chunks_query(db, ids, n,
                            "WITH v AS (SELECT t.ord, c.id FROM unnest(string_to_array($1, ',')) WITH ORDINALITY AS t(x, ord)"
                            " JOIN chunks c ON c.hash = decode(t.x, 'hex') WHERE"
                            " EXISTS (SELECT 1 FROM chunk_claims cl WHERE cl.chunk_id = c.id AND cl.cache_id = $3::bigint)"
                            " OR EXISTS (SELECT 1 FROM nar_chunks nc JOIN paths p ON p.nar_id = nc.nar_id"
                            "            WHERE nc.chunk_id = c.id AND p.cache_id = ANY($2::bigint[]))"
                            " OR EXISTS (SELECT 1 FROM nar_chunks nc JOIN uploads u ON u.nar_id = nc.nar_id"
                            "            WHERE nc.chunk_id = c.id AND u.cache_id = ANY($2::bigint[]))),"
                            " cl AS (INSERT INTO chunk_claims (cache_id, chunk_id)"
                            "  SELECT DISTINCT $3::bigint, id FROM v ORDER BY 2"
                            "  ON CONFLICT (cache_id, chunk_id) DO UPDATE SET created_at = now())"
                            " SELECT ord - 1 FROM v",
                            2, extra, present);
}

int db_chunk_claims_add(struct db *db, int64_t cache_id, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n,
                        bool *claimed) {
        _cleanup_free_ bool *ignored = NULL;
        char cid[24];

        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        const char *extra[] = { cid };
        if (!claimed) {
                claimed = ignored = calloc(n + 1, sizeof *ignored);
                if (!ignored)
                        return -ENOMEM;
        }
        /* A refreshed claim keeps the chunk's proof young for GC. Claims
         * are written in chunk id order: concurrent uploads of the same
         * chunks never wait on each other in a circle. */
        return chunks_query(db, ids, n,
                            "WITH c AS (SELECT t.ord, c.id FROM unnest(string_to_array($1, ',')) WITH ORDINALITY AS t(x, ord)"
                            "  JOIN chunks c ON c.hash = decode(t.x, 'hex')),"
                            " cl AS (INSERT INTO chunk_claims (cache_id, chunk_id)"
                            "  SELECT DISTINCT $2::bigint, id FROM c ORDER BY 2"
                            "  ON CONFLICT (cache_id, chunk_id) DO UPDATE SET created_at = now())"
                            " SELECT ord - 1 FROM c",
                            1, extra, claimed);
}

int db_cache_list(struct db *db, struct db_cache_ref **ret, size_t *ret_n) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        struct db_cache_ref *v;
        int r, n;

        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res, "SELECT id, name, is_public FROM caches ORDER BY id", 0, NULL);
        if (r < 0)
                return r;
        n = PQntuples(res);
        v = calloc((size_t) n + 1, sizeof *v);
        if (!v)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                const char *name = PQgetvalue(res, i, 1);
                if (get_i64(res, i, 0, &v[i].id) < 0 || strlen(name) >= sizeof v[i].name) {
                        free(v);
                        return -EIO;
                }
                memcpy(v[i].name, name, strlen(name) + 1);
                v[i].is_public = PQgetvalue(res, i, 2)[0] == 't';
        }
        *ret = v;
        *ret_n = (size_t) n;
        return 0;
}

/* ---- NARs ---- */

static int nar_from_row(PGresult *res, int row, int col, struct db_nar *n) {
        /* columns: id, nar_hash, nar_size, file_hash, file_size, n_chunks */
        if (get_i64(res, row, col, &n->id) < 0 || get_hash(res, row, col + 1, n->nar_hash) < 0 ||
            get_u64(res, row, col + 2, &n->nar_size) < 0 || get_hash(res, row, col + 3, n->file_hash) < 0 ||
            get_u64(res, row, col + 4, &n->file_size) < 0 || get_u32(res, row, col + 5, &n->n_chunks) < 0)
                return -EIO;
        return 0;
}

#define NAR_COLUMNS "n.id, n.nar_hash, n.nar_size, n.file_hash, n.file_size, n.n_chunks"

int db_nar_insert(struct db *db, const struct db_nar *n, const struct db_nar_chunk *chunks,
                  size_t n_chunks, const char *listing, int64_t *ret_id) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL, *res2 = NULL;
        _cleanup_free_ char *ids = NULL;
        struct buf offs = BUF_INIT((size_t) 1 << 30);
        char nar_hash[BYTEA_HASH_LEN], file_hash[BYTEA_HASH_LEN], nar_size[24], file_size[24], nc[16], id[24];
        uint8_t (*idv)[SHA256_DIGEST_LEN];
        int64_t nar_id;
        int r;

        if (n_chunks == 0 || n_chunks > INT32_MAX)
                return -EINVAL;
        bytea_hash(n->nar_hash, nar_hash);
        bytea_hash(n->file_hash, file_hash);
        snprintf(nar_size, sizeof nar_size, "%" PRIu64, n->nar_size);
        snprintf(file_size, sizeof file_size, "%" PRIu64, n->file_size);
        snprintf(nc, sizeof nc, "%zu", n_chunks);

        idv = malloc(n_chunks * sizeof *idv);
        if (!idv)
                return -ENOMEM;
        for (size_t i = 0; i < n_chunks; i++) {
                memcpy(idv[i], chunks[i].id, SHA256_DIGEST_LEN);
                r = buf_printf(&offs, "%s%" PRIu64, i ? "," : "", chunks[i].nar_offset);
                if (r < 0) {
                        free(idv);
                        buf_free(&offs);
                        return r;
                }
        }
        r = hash_list((const uint8_t(*)[SHA256_DIGEST_LEN]) idv, n_chunks, &ids);
        free(idv);
        if (r < 0) {
                buf_free(&offs);
                return r;
        }

        r = db_get(db, &h);
        if (r < 0)
                goto out;
        r = tx_begin(&h);
        if (r < 0)
                goto out;
        r = q(&h, NULL, "SELECT pg_advisory_xact_lock_shared(" DB_GC_LOCK ")", 0, NULL);
        if (r < 0)
                goto out;
        {
                const char *p[] = { nar_hash, nar_size, file_hash, file_size, nc, listing };
                r = q(&h, &res,
                      "INSERT INTO nars (nar_hash, nar_size, file_hash, file_size, n_chunks, listing)"
                      " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (nar_hash) DO NOTHING RETURNING id",
                      6, p);
                if (r < 0)
                        goto out;
        }
        if (PQntuples(res) == 0) {
                /* Someone else committed the same NAR first: theirs is complete.
                 * Its age restarts: the caller is about to reference it, and
                 * garbage collection leaves NARs younger than its min-age. */
                const char *p[] = { nar_hash };
                PQclear(res);
                res = NULL;
                r = q(&h, &res, "UPDATE nars SET created_at = now() WHERE nar_hash = $1 RETURNING id", 1, p);
                if (r < 0)
                        goto out;
                if (PQntuples(res) != 1 || get_i64(res, 0, 0, &nar_id) < 0) {
                        r = -EIO;
                        goto out;
                }
                r = tx_commit(&h);
                if (r >= 0 && ret_id)
                        *ret_id = nar_id;
                goto out;
        }
        if (get_i64(res, 0, 0, &nar_id) < 0) {
                r = -EIO;
                goto out;
        }
        snprintf(id, sizeof id, "%" PRId64, nar_id);
        {
                const char *p[] = { id, ids, (const char *) offs.data };
                r = q(&h, &res2,
                      "INSERT INTO nar_chunks (nar_id, seq, nar_offset, chunk_id)"
                      " SELECT $1, h.ord - 1, o.x::bigint, c.id"
                      " FROM unnest(string_to_array($2, ',')) WITH ORDINALITY AS h(x, ord)"
                      " JOIN unnest(string_to_array($3, ',')) WITH ORDINALITY AS o(x, ord) USING (ord)"
                      " JOIN chunks c ON c.hash = decode(h.x, 'hex')",
                      3, p);
                if (r < 0)
                        goto out;
        }
        if (!streq(PQcmdTuples(res2), nc)) {
                /* A chunk without a row: the transaction is rolled back. */
                r = -ENOENT;
                goto out;
        }
        r = tx_commit(&h);
        if (r >= 0 && ret_id)
                *ret_id = nar_id;
out:
        buf_free(&offs);
        return r;
}

int db_nar_get(struct db *db, int64_t id, struct db_nar *ret) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char ids[24];
        const char *p[] = { ids };
        int r;

        snprintf(ids, sizeof ids, "%" PRId64, id);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res, "SELECT " NAR_COLUMNS " FROM nars n WHERE n.id = $1", 1, p);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1)
                return -ENOENT;
        return nar_from_row(res, 0, 0, ret);
}

int db_nar_find(struct db *db, const uint8_t nar_hash[SHA256_DIGEST_LEN], struct db_nar *ret) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char hash[BYTEA_HASH_LEN];
        const char *p[] = { hash };
        int r;

        bytea_hash(nar_hash, hash);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res, "SELECT " NAR_COLUMNS " FROM nars n WHERE n.nar_hash = $1", 1, p);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1)
                return 0;
        r = nar_from_row(res, 0, 0, ret);
        return r < 0 ? r : 1;
}

int db_nar_find_visible(struct db *db, const uint8_t nar_hash[SHA256_DIGEST_LEN], const int64_t *cache_ids,
                        size_t n_caches, struct db_nar *ret) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        _cleanup_free_ char *caches = NULL;
        char hash[BYTEA_HASH_LEN];
        int r;

        bytea_hash(nar_hash, hash);
        r = id_array(cache_ids, n_caches, &caches);
        if (r < 0)
                return r;
        const char *p[] = { hash, caches };
        r = db_get(db, &h);
        if (r < 0)
                return r;
        /* The caller will reference what it finds: its age restarts (at
         * most once a minute), under the GC lock, so a collection either
         * deleted it before (not found) or leaves it for its min-age. */
        r = tx_begin_locked(&h, "SELECT pg_advisory_xact_lock_shared(" DB_GC_LOCK ")");
        if (r >= 0)
                r = q(&h, &res,
                      "WITH f AS (SELECT " NAR_COLUMNS " FROM nars n WHERE n.nar_hash = $1 AND ("
                      " EXISTS (SELECT 1 FROM paths p WHERE p.nar_id = n.id AND p.cache_id = ANY($2::bigint[]))"
                      " OR EXISTS (SELECT 1 FROM uploads u WHERE u.nar_id = n.id AND u.cache_id = ANY($2::bigint[])))),"
                      " t AS (UPDATE nars SET created_at = now() FROM f WHERE nars.id = f.id"
                      "  AND nars.created_at < now() - interval '1 minute')"
                      " SELECT * FROM f",
                      2, p);
        if (r >= 0)
                r = tx_commit(&h);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1)
                return 0;
        r = nar_from_row(res, 0, 0, ret);
        return r < 0 ? r : 1;
}

int db_nar_chunks(struct db *db, int64_t nar_id, int64_t cache_id, struct db_nar_chunk **ret, size_t *ret_n) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char ids[24], cid[24];
        const char *p[] = { ids, cid };
        struct db_nar_chunk *v;
        int r, n;

        snprintf(ids, sizeof ids, "%" PRId64, nar_id);
        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        /* base_visible: a path of the cache holds the base itself, so its
         * readers may fetch it (the test db_chunk_in_cache makes). */
        r = q(&h, &res,
              "SELECT nc.nar_offset, c.length, c.stored_size, c.hash, coalesce(c.served_size, c.stored_size),"
              " c.kind, b.hash, b.length, b.id IS NOT NULL AND $2::bigint > 0 AND"
              "  EXISTS (SELECT 1 FROM nar_chunks bn JOIN paths p ON p.nar_id = bn.nar_id"
              "          WHERE bn.chunk_id = b.id AND p.cache_id = $2::bigint)"
              " FROM nar_chunks nc"
              " JOIN chunks c ON c.id = nc.chunk_id LEFT JOIN chunks b ON b.id = c.base_id"
              " WHERE nc.nar_id = $1 ORDER BY nc.seq",
              2, p);
        if (r < 0)
                return r;
        n = PQntuples(res);
        v = calloc(n > 0 ? (size_t) n : 1, sizeof *v);
        if (!v)
                return -ENOMEM;
        for (int i = 0; i < n; i++)
                if (get_u64(res, i, 0, &v[i].nar_offset) < 0 || get_u32(res, i, 1, &v[i].length) < 0 ||
                    get_u32(res, i, 2, &v[i].stored_size) < 0 || get_hash(res, i, 3, v[i].id) < 0 ||
                    get_u32(res, i, 4, &v[i].served_size) < 0 ||
                    chunk_kind_from_row(res, i, 5, &v[i].kind, v[i].base, &v[i].base_length) < 0) {
                        free(v);
                        return -EIO;
                }
        for (int i = 0; i < n; i++)
                v[i].base_visible = streq(PQgetvalue(res, i, 8), "t");
        *ret = v;
        *ret_n = (size_t) n;
        return 0;
}

int db_nar_listing(struct db *db, int64_t nar_id, char **ret) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char ids[24];
        const char *p[] = { ids };
        char *s;
        int r;

        snprintf(ids, sizeof ids, "%" PRId64, nar_id);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res, "SELECT listing FROM nars WHERE id = $1", 1, p);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1)
                return -ENOENT;
        s = strdup(PQgetvalue(res, 0, 0));
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int db_nar_in_cache(struct db *db, int64_t cache_id, int64_t nar_id) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char cid[24], nid[24];
        const char *p[] = { cid, nid };
        int r;

        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        snprintf(nid, sizeof nid, "%" PRId64, nar_id);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res,
              "SELECT 1 WHERE EXISTS (SELECT 1 FROM paths WHERE cache_id = $1 AND nar_id = $2)"
              " OR EXISTS (SELECT 1 FROM uploads WHERE cache_id = $1 AND nar_id = $2)",
              2, p);
        if (r < 0)
                return r;
        return PQntuples(res) > 0 ? 1 : 0;
}

/* ---- paths ---- */

void db_path_free(struct db_path *p) {
        if (!p)
                return;
        free(p->store_path);
        free(p->references);
        free(p->deriver);
        free(p->sigs);
        free(p->ca);
        *p = (struct db_path){};
}

int db_path_get(struct db *db, int64_t cache_id, const char *hash_part, struct db_path *ret) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char cid[24];
        const char *p[] = { cid, hash_part };
        struct db_path path = {};
        int r;

        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = qp(&h, &res, STMT_PATH_GET, 2, p);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1)
                return 0;
        if (get_i64(res, 0, 0, &path.id) < 0 || get_i64(res, 0, 6, &path.created_at) < 0 ||
            nar_from_row(res, 0, 7, &path.nar) < 0)
                return -EIO;
        path.store_path = strdup(PQgetvalue(res, 0, 1));
        path.references = strdup(PQgetvalue(res, 0, 2));
        path.deriver = dup_or_null(res, 0, 3);
        path.sigs = strdup(PQgetvalue(res, 0, 4));
        path.ca = dup_or_null(res, 0, 5);
        if (!path.store_path || !path.references || !path.sigs ||
            (!PQgetisnull(res, 0, 3) && !path.deriver) || (!PQgetisnull(res, 0, 5) && !path.ca)) {
                db_path_free(&path);
                return -ENOMEM;
        }
        *ret = path;
        return 1;
}

int db_path_insert(struct db *db, int64_t cache_id, const char *hash_part, const struct db_path *path,
                   int64_t nar_id) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char cid[24], nid[24];
        int r;

        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        snprintf(nid, sizeof nid, "%" PRId64, nar_id);
        const char *p[] = { cid, hash_part, path->store_path, nid, path->references ? path->references : "",
                            path->deriver, path->sigs ? path->sigs : "", path->ca, path->pulled ? "t" : "f" };
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = tx_begin_locked(&h, "SELECT pg_advisory_xact_lock_shared(" DB_PATHS_LOCK ")");
        if (r < 0)
                return r;
        /* An existing row wins (it is complete); only signatures it lacks
         * are added, so re-pushing with another signature keeps both. A
         * pulled path that is then pushed counts as pushed. */
        r = q(&h, &res,
              "INSERT INTO paths (cache_id, hash_part, store_path, nar_id, refs, deriver, sigs, ca, pulled)"
              " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
              " ON CONFLICT (cache_id, hash_part) DO UPDATE SET sigs ="
              "  (SELECT coalesce(string_agg(s, E'\\n' ORDER BY s), '') FROM (SELECT DISTINCT s FROM"
              "   unnest(string_to_array(paths.sigs, E'\\n') || string_to_array(EXCLUDED.sigs, E'\\n')) s"
              "   WHERE s <> '') AS x), pulled = paths.pulled AND EXCLUDED.pulled, last_used = now()"
              "  WHERE paths.nar_id = EXCLUDED.nar_id"
              " RETURNING (xmax = 0)",
              9, p);
        if (r < 0)
                return r;
        if (PQntuples(res) == 0)
                return -EEXIST; /* same path, different NAR: refuse to overwrite */
        r = tx_commit(&h);
        if (r < 0)
                return r;
        return PQgetvalue(res, 0, 0)[0] == 't' ? 1 : 0;
}

/* "{a,b,c}" of n hash parts (nix32 characters only: nothing to quote), for
 * a text[] parameter. */
static int hash_array(char *const *hash_parts, size_t n, char **ret) {
        struct buf b = BUF_INIT((size_t) 64 << 20);
        int r = buf_printf(&b, "{");
        for (size_t i = 0; i < n && r >= 0; i++) {
                if (strpbrk(hash_parts[i], "{},\"\\ ")) {
                        buf_free(&b);
                        return -EINVAL;
                }
                r = buf_printf(&b, "%s%s", i ? "," : "", hash_parts[i]);
        }
        if (r >= 0)
                r = buf_printf(&b, "}");
        if (r >= 0)
                r = buf_steal(&b, ret, NULL);
        buf_free(&b);
        return r;
}

/* The first column of every row, newline-separated. */
static int rows_joined(PGresult *res, char **ret) {
        struct buf b = BUF_INIT((size_t) 64 << 20);
        int r = 0;
        for (int i = 0; i < PQntuples(res) && r >= 0; i++)
                r = buf_printf(&b, "%s%s", i ? "\n" : "", PQgetvalue(res, i, 0));
        if (r >= 0)
                r = buf_append(&b, "", 1);
        if (r >= 0)
                r = buf_steal(&b, ret, NULL);
        buf_free(&b);
        return r;
}

/* 0 if every one of the hash parts in $2 is a path of cache $1, else
 * -ENOENT. */
static int paths_all_present(struct db_handle *h, const char *const *p, size_t n) {
        _cleanup_pgresult_ PGresult *res = NULL;
        uint64_t found;
        int r = q(h, &res, "SELECT count(*) FROM paths WHERE cache_id = $1 AND hash_part = ANY($2::text[])", 2, p);
        if (r < 0)
                return r;
        if (get_u64(res, 0, 0, &found) < 0)
                return -EIO;
        return found == n ? 0 : -ENOENT;
}

int db_paths_delete(struct db *db, int64_t cache_id, char *const *hash_parts, size_t n, bool force,
                    char **ret_blockers) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        _cleanup_free_ char *arr = NULL;
        char cid[24];
        int r;

        if (ret_blockers)
                *ret_blockers = NULL;
        r = hash_array(hash_parts, n, &arr);
        if (r < 0)
                return r;
        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        const char *p[] = { cid, arr };
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = tx_begin_locked(&h, "SELECT pg_advisory_xact_lock(" DB_PATHS_LOCK ")");
        if (r < 0)
                return r;
        r = paths_all_present(&h, p, n);
        if (r < 0)
                return r;
        if (!force) {
                /* Referrers outside the set first (deleting would break their
                 * closures), then pins. */
                static const char *const checks[] = {
                        "SELECT DISTINCT q.store_path FROM path_refs r JOIN paths q ON q.id = r.path_id"
                        " WHERE r.cache_id = $1 AND r.ref = ANY($2::text[]) AND q.hash_part <> ALL($2::text[])"
                        " ORDER BY 1 LIMIT 20",
                        "SELECT store_path FROM paths WHERE cache_id = $1 AND hash_part = ANY($2::text[])"
                        " AND pinned_at IS NOT NULL ORDER BY 1 LIMIT 20",
                };
                for (size_t i = 0; i < ELEMENTSOF(checks); i++) {
                        r = q(&h, &res, checks[i], 2, p);
                        if (r < 0)
                                return r;
                        if (PQntuples(res) > 0) {
                                if (ret_blockers && rows_joined(res, ret_blockers) < 0)
                                        return -ENOMEM;
                                return i == 0 ? -EBUSY : -EPERM;
                        }
                        PQclear(res);
                        res = NULL;
                }
        }
        r = q(&h, NULL, "DELETE FROM paths WHERE cache_id = $1 AND hash_part = ANY($2::text[])", 2, p);
        if (r < 0)
                return r;
        /* A deleted path's learned profile goes with it. */
        r = q(&h, NULL, "DELETE FROM profile_chunks WHERE cache_id = $1 AND hash_part = ANY($2::text[])", 2, p);
        if (r < 0)
                return r;
        return tx_commit(&h);
}

int db_paths_pin(struct db *db, int64_t cache_id, char *const *hash_parts, size_t n, bool pin, bool closure,
                 uint64_t *ret_changed) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        _cleanup_free_ char *arr = NULL;
        char cid[24];
        uint64_t changed;
        int r;

        r = hash_array(hash_parts, n, &arr);
        if (r < 0)
                return r;
        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        const char *p[] = { cid, arr, pin ? "t" : "f" };
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = tx_begin(&h);
        if (r < 0)
                return r;
        r = paths_all_present(&h, p, n);
        if (r < 0)
                return r;
        r = q(&h, &res,
              closure ? "WITH RECURSIVE cl(h) AS (SELECT unnest($2::text[])"
                        "  UNION SELECT r.ref FROM cl JOIN paths p ON p.cache_id = $1 AND p.hash_part = cl.h"
                        "  JOIN path_refs r ON r.path_id = p.id)"
                        " UPDATE paths SET pinned_at = CASE WHEN $3::boolean THEN now() END"
                        " WHERE cache_id = $1 AND hash_part IN (SELECT h FROM cl) AND (pinned_at IS NULL) = $3::boolean"
                      : "UPDATE paths SET pinned_at = CASE WHEN $3::boolean THEN now() END"
                        " WHERE cache_id = $1 AND hash_part = ANY($2::text[]) AND (pinned_at IS NULL) = $3::boolean",
              3, p);
        if (r < 0)
                return r;
        if (parse_i64(PQcmdTuples(res), (int64_t *) &changed) < 0)
                return -EIO;
        r = tx_commit(&h);
        if (r >= 0)
                *ret_changed = changed;
        return r;
}

int db_pins_list(struct db *db, int64_t cache_id, char **ret) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char cid[24];
        const char *p[] = { cid };
        int r;

        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res, "SELECT store_path FROM paths WHERE cache_id = $1 AND pinned_at IS NOT NULL ORDER BY 1", 1, p);
        if (r < 0)
                return r;
        return rows_joined(res, ret);
}

int db_paths_missing(struct db *db, int64_t cache_id, char *const *hash_parts, size_t n, bool *missing) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        struct buf list = BUF_INIT((size_t) 64 * 1024 * 1024);
        char cid[24];
        int r;

        for (size_t i = 0; i < n; i++)
                missing[i] = true;
        if (n == 0)
                return 0;
        for (size_t i = 0; i < n; i++) {
                if (strchr(hash_parts[i], ',')) {
                        buf_free(&list);
                        return -EINVAL;
                }
                r = buf_printf(&list, "%s%s", i ? "," : "", hash_parts[i]);
                if (r < 0) {
                        buf_free(&list);
                        return r;
                }
        }
        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        const char *p[] = { cid, (const char *) list.data };
        r = db_get(db, &h);
        if (r < 0)
                goto out;
        r = q(&h, &res,
              "SELECT t.ord - 1 FROM unnest(string_to_array($2, ',')) WITH ORDINALITY AS t(x, ord)"
              " WHERE EXISTS (SELECT 1 FROM paths p WHERE p.cache_id = $1 AND p.hash_part = t.x)",
              2, p);
        if (r < 0)
                goto out;
        for (int i = 0; i < PQntuples(res); i++) {
                uint64_t idx;
                if (get_u64(res, i, 0, &idx) < 0 || idx >= n) {
                        r = -EIO;
                        goto out;
                }
                missing[idx] = false;
        }
out:
        buf_free(&list);
        return r;
}

/* ---- learned prefetch profiles ---- */

/* How much a profile's weights keep of their value with each report, and
 * below which weight a chunk leaves the profile. A chunk read by every
 * mount tends to weight 1 / (1 - DECAY) = 4. */
#define PROFILE_DECAY "0.75"
#define PROFILE_DROP "0.05"

int db_profiles_report(struct db *db, int64_t cache_id, const struct db_profile_report *reps, size_t n_reps,
                       size_t *ret_bad) {
        _cleanup_handle_ struct db_handle h = {};
        char cid[24];
        int r;

        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = tx_begin(&h);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_reps; i++) {
                _cleanup_pgresult_ PGresult *res = NULL;
                _cleanup_free_ char *list = NULL;
                uint64_t distinct, of_path, exists;

                if (reps[i].n == 0)
                        continue;
                r = hash_list(reps[i].ids, reps[i].n, &list);
                if (r < 0)
                        return r;
                const char *p[] = { cid, reps[i].hash_part, list };
                /* Every chunk named must be one of the path's own. */
                r = q(&h, &res,
                      "WITH t AS (SELECT DISTINCT decode(x, 'hex') AS hash FROM unnest(string_to_array($3, ',')) AS u(x))"
                      " SELECT (SELECT count(*) FROM t),"
                      " (SELECT count(*) FROM t WHERE t.hash IN (SELECT c.hash FROM paths p"
                      "   JOIN nar_chunks nc ON nc.nar_id = p.nar_id JOIN chunks c ON c.id = nc.chunk_id"
                      "   WHERE p.cache_id = $1 AND p.hash_part = $2)),"
                      " (SELECT count(*) FROM paths WHERE cache_id = $1 AND hash_part = $2)",
                      3, p);
                if (r < 0)
                        return r;
                if (get_u64(res, 0, 0, &distinct) < 0 || get_u64(res, 0, 1, &of_path) < 0 ||
                    get_u64(res, 0, 2, &exists) < 0)
                        return -EIO;
                if (exists == 0 || distinct != of_path) {
                        *ret_bad = i;
                        return exists == 0 ? -ENOENT : -EBADMSG;
                }
                r = q(&h, NULL,
                      "UPDATE profile_chunks SET weight = weight * " PROFILE_DECAY
                      " WHERE cache_id = $1 AND hash_part = $2",
                      2, p);
                if (r < 0)
                        return r;
                /* The first position at which the report names a chunk. */
                r = q(&h, NULL,
                      "INSERT INTO profile_chunks (cache_id, hash_part, chunk_hash, weight, pos)"
                      " SELECT $1::bigint, $2, decode(x, 'hex'), 1, min(ord) - 1"
                      " FROM unnest(string_to_array($3, ',')) WITH ORDINALITY AS u(x, ord) GROUP BY x"
                      " ON CONFLICT (cache_id, hash_part, chunk_hash) DO UPDATE SET"
                      " pos = (profile_chunks.pos * profile_chunks.weight + EXCLUDED.pos) / (profile_chunks.weight + 1),"
                      " weight = profile_chunks.weight + 1",
                      3, p);
                if (r < 0)
                        return r;
                r = q(&h, NULL,
                      "DELETE FROM profile_chunks WHERE cache_id = $1 AND hash_part = $2 AND weight < " PROFILE_DROP,
                      2, p);
                if (r < 0)
                        return r;
        }
        return tx_commit(&h);
}

int db_profile_get(struct db *db, int64_t cache_id, const char *hash_part, size_t max,
                   uint8_t (**ret_ids)[SHA256_DIGEST_LEN], size_t *ret_n) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        uint8_t (*ids)[SHA256_DIGEST_LEN] = NULL;
        char cid[24], lim[24];
        const char *p[] = { cid, hash_part, lim };
        size_t n;
        int r;

        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        snprintf(lim, sizeof lim, "%zu", max);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res, "SELECT 1 FROM paths WHERE cache_id = $1 AND hash_part = $2", 2, p);
        if (r < 0)
                return r;
        if (PQntuples(res) == 0)
                return -ENOENT;
        PQclear(TAKE_PTR(res));
        /* Chunks read by few of the mounts (weight under a third of the
         * strongest) are left out, and so is any chunk that is not (or no
         * longer) one of the path's own. */
        r = q(&h, &res,
              "WITH own AS (SELECT pc.chunk_hash, pc.weight, pc.pos FROM profile_chunks pc"
              "   WHERE pc.cache_id = $1 AND pc.hash_part = $2"
              "   AND pc.chunk_hash IN (SELECT c.hash FROM paths p JOIN nar_chunks nc ON nc.nar_id = p.nar_id"
              "     JOIN chunks c ON c.id = nc.chunk_id WHERE p.cache_id = $1 AND p.hash_part = $2))"
              " SELECT chunk_hash FROM own WHERE weight * 3 >= (SELECT max(weight) FROM own)"
              " ORDER BY pos, chunk_hash LIMIT $3::bigint",
              3, p);
        if (r < 0)
                return r;
        n = (size_t) PQntuples(res);
        ids = calloc(n ? n : 1, sizeof *ids);
        if (!ids)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (get_hash(res, (int) i, 0, ids[i]) < 0) {
                        free(ids);
                        return -EIO;
                }
        *ret_ids = ids;
        *ret_n = n;
        return 0;
}

/* ---- uploads ---- */

int db_upload_put(struct db *db, int64_t cache_id, const char *file_name, int64_t nar_id) {
        _cleanup_handle_ struct db_handle h = {};
        char cid[24], nid[24];
        const char *p[] = { cid, file_name, nid };
        int r;

        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        snprintf(nid, sizeof nid, "%" PRId64, nar_id);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        return q(&h, NULL,
                 "INSERT INTO uploads (cache_id, file_name, nar_id) VALUES ($1, $2, $3)"
                 " ON CONFLICT (cache_id, file_name) DO UPDATE SET nar_id = EXCLUDED.nar_id, created_at = now()",
                 3, p);
}

int db_upload_get(struct db *db, int64_t cache_id, const char *file_name, int64_t *ret_nar_id) {
        _cleanup_handle_ struct db_handle h = {};
        _cleanup_pgresult_ PGresult *res = NULL;
        char cid[24];
        const char *p[] = { cid, file_name };
        int r;

        snprintf(cid, sizeof cid, "%" PRId64, cache_id);
        r = db_get(db, &h);
        if (r < 0)
                return r;
        r = q(&h, &res, "SELECT nar_id FROM uploads WHERE cache_id = $1 AND file_name = $2", 2, p);
        if (r < 0)
                return r;
        if (PQntuples(res) != 1)
                return 0;
        r = get_i64(res, 0, 0, ret_nar_id);
        return r < 0 ? r : 1;
}

/* ---- last use ---- */

int db_paths_mark_used(struct db *db, const struct db_use *uses, size_t n) {
        /* One statement per kind; "cache:key" pairs in $1. Rows are
         * updated in id order so that two flushes never deadlock. */
        static const char *const sql[] = {
                [DB_USE_PATH] = "UPDATE paths SET last_used = now() WHERE id IN (SELECT p.id FROM paths p"
                                " JOIN (SELECT split_part(x, ':', 1)::bigint AS c, split_part(x, ':', 2) AS h"
                                "  FROM unnest(string_to_array($1, ',')) x) t ON p.cache_id = t.c AND p.hash_part = t.h"
                                " WHERE p.last_used < now() - interval '1 minute' ORDER BY p.id FOR UPDATE OF p SKIP LOCKED)",
                [DB_USE_NAR] = "UPDATE paths SET last_used = now() WHERE id IN (SELECT p.id FROM paths p"
                               " JOIN (SELECT split_part(x, ':', 1)::bigint AS c, split_part(x, ':', 2)::bigint AS n"
                               "  FROM unnest(string_to_array($1, ',')) x) t ON p.cache_id = t.c AND p.nar_id = t.n"
                               " WHERE p.last_used < now() - interval '1 minute' ORDER BY p.id FOR UPDATE OF p SKIP LOCKED)",
                [DB_USE_CHUNK] = "UPDATE paths SET last_used = now() WHERE id IN (SELECT p.id FROM paths p"
                                 " JOIN (SELECT DISTINCT t.c, nc.nar_id FROM (SELECT split_part(x, ':', 1)::bigint AS c,"
                                 "   decode(split_part(x, ':', 2), 'hex') AS h FROM unnest(string_to_array($1, ',')) x) t"
                                 "  JOIN chunks ch ON ch.hash = t.h JOIN nar_chunks nc ON nc.chunk_id = ch.id) u"
                                 "  ON p.cache_id = u.c AND p.nar_id = u.nar_id"
                                 " WHERE p.last_used < now() - interval '1 minute' ORDER BY p.id FOR UPDATE OF p SKIP LOCKED)",
        };
        _cleanup_handle_ struct db_handle h = {};
        int r = 0;

        for (unsigned kind = 0; kind < ELEMENTSOF(sql) && r >= 0; kind++) {
                struct buf b = BUF_INIT((size_t) 64 << 20);
                for (size_t i = 0; i < n && r >= 0; i++) {
                        const struct db_use *u = &uses[i];
                        char hex[2 * SHA256_DIGEST_LEN + 1];
                        if (u->kind != kind)
                                continue;
                        if (kind == DB_USE_PATH && strpbrk(u->hash, ",:"))
                                continue;
                        if (kind == DB_USE_CHUNK)
                                hex_encode(u->chunk, SHA256_DIGEST_LEN, hex);
                        r = kind == DB_USE_NAR ? buf_printf(&b, "%s%" PRId64 ":%" PRId64, b.len ? "," : "", u->cache_id,
                                                            u->nar_id)
                                               : buf_printf(&b, "%s%" PRId64 ":%s", b.len ? "," : "", u->cache_id,
                                                            kind == DB_USE_PATH ? u->hash : hex);
                }
                if (r >= 0 && b.len > 0) {
                        const char *p[] = { (const char *) b.data };
                        if (!h.conn)
                                r = db_get(db, &h);
                        if (r >= 0)
                                r = q(&h, NULL, sql[kind], 1, p);
                }
                buf_free(&b);
        }
        return r;
}

/* ---- garbage collection ---- */

int db_orphans_note(struct db *db, const uint8_t (*ids)[SHA256_DIGEST_LEN], size_t n) {
        return ids_query(db, ids, n,
                         "INSERT INTO orphan_objects (hash) SELECT decode(t.x, 'hex')"
                         " FROM unnest(string_to_array($1, ',')) AS t(x)"
                         " WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.hash = decode(t.x, 'hex'))"
                         " ON CONFLICT (hash) DO NOTHING",
                         0, NULL, NULL);
}

struct db_gc {
        struct db_handle h;
        bool locked;
};

void db_gc_end(struct db_gc *g) {
        if (!g)
                return;
        if (g->locked && conn_ok(g->h.conn) && !g->h.in_tx)
                (void) q(&g->h, NULL, "SELECT pg_advisory_unlock(" DB_GC_RUN_LOCK ")", 0, NULL);
        db_handle_release(&g->h);
        free(g);
}

int db_gc_begin(struct db *db, bool wait, struct db_gc **ret) {
        _cleanup_pgresult_ PGresult *res = NULL;
        struct db_gc *g;
        int r;

        g = calloc(1, sizeof *g);
        if (!g)
                return -ENOMEM;
        r = db_get(db, &g->h);
        if (r < 0)
                goto fail;
        if (wait) {
                /* Bounded: a run that does not end within the timeout is
                 * reported as running (-EALREADY). */
                r = q(&g->h, NULL, "SET lock_timeout = '300s'", 0, NULL);
                if (r < 0)
                        goto fail;
                r = q(&g->h, NULL, "SELECT pg_advisory_lock(" DB_GC_RUN_LOCK ")", 0, NULL);
                (void) q(&g->h, NULL, "RESET lock_timeout", 0, NULL);
                if (r == -EIO && conn_ok(g->h.conn))
                        r = -EALREADY;
                if (r < 0)
                        goto fail;
        } else {
                r = q(&g->h, &res, "SELECT pg_try_advisory_lock(" DB_GC_RUN_LOCK ")", 0, NULL);
                if (r < 0)
                        goto fail;
                if (PQgetvalue(res, 0, 0)[0] != 't') {
                        r = -EALREADY;
                        goto fail;
                }
        }
        g->locked = true;
        /* The run's work lists live in this session only: a run that dies
         * leaves nothing behind but what the next run finds again. */
        static const char *const setup[] = {
                "SET client_min_messages = warning",
                "CREATE TEMP TABLE IF NOT EXISTS gc_paths (id bigint PRIMARY KEY, used_before timestamptz NOT NULL)",
                "CREATE TEMP TABLE IF NOT EXISTS gc_nars (id bigint PRIMARY KEY)",
                "CREATE TEMP TABLE IF NOT EXISTS gc_chunks (id bigint PRIMARY KEY)",
                "TRUNCATE gc_paths, gc_nars, gc_chunks",
        };
        for (size_t i = 0; i < ELEMENTSOF(setup); i++) {
                r = q(&g->h, NULL, setup[i], 0, NULL);
                if (r < 0)
                        goto fail;
        }
        *ret = g;
        return 0;
fail:
        db_gc_end(g);
        return r;
}

static int cmd_count(PGresult *res, uint64_t *ret) {
        int64_t v;
        if (parse_i64(PQcmdTuples(res), &v) < 0 || v < 0)
                return -EIO;
        *ret = (uint64_t) v;
        return 0;
}

int db_gc_mark_retention(struct db_gc *g, uint64_t *ret_n) {
        _cleanup_pgresult_ PGresult *res = NULL;
        int r;

        /* Kept: pinned paths, paths used within the retention, and
         * everything they reference, transitively. The rest of a cache
         * with a retention is marked, with the cut-off it was marked by. */
        r = q(&g->h, &res,
              "INSERT INTO gc_paths (id, used_before)"
              " WITH RECURSIVE keep(cache_id, h) AS ("
              "  SELECT p.cache_id, p.hash_part FROM paths p JOIN caches c ON c.id = p.cache_id"
              "   WHERE c.retention_sec > 0 AND (p.pinned_at IS NOT NULL OR"
              "    p.last_used >= now() - make_interval(secs => LEAST(c.retention_sec, " DB_RETENTION_MAX_STR ")))"
              "  UNION"
              "  SELECT r.cache_id, r.ref FROM keep k JOIN paths p ON p.cache_id = k.cache_id AND p.hash_part = k.h"
              "   JOIN path_refs r ON r.path_id = p.id)"
              " SELECT p.id, now() - make_interval(secs => LEAST(c.retention_sec, " DB_RETENTION_MAX_STR "))"
              " FROM paths p JOIN caches c ON c.id = p.cache_id WHERE c.retention_sec > 0"
              " AND NOT EXISTS (SELECT 1 FROM keep k WHERE k.cache_id = p.cache_id AND k.h = p.hash_part)"
              " ON CONFLICT (id) DO NOTHING",
              0, NULL);
        if (r < 0)
                return r;
        return cmd_count(res, ret_n);
}

int db_gc_mark_quota(struct db_gc *g, unsigned batch, uint64_t *ret_n) {
        _cleanup_pgresult_ PGresult *res = NULL;
        char lim[16];
        const char *p[] = { lim };
        int r;

        snprintf(lim, sizeof lim, "%u", batch);
        /* Stored bytes as `trove cache info` counts them. Candidates: paths
         * nothing references (dropping one breaks no closure), unpinned,
         * pulled ones first, then least recently used, as many as their
         * NARs' stored size covers the excess. */
        r = q(&g->h, &res,
              "INSERT INTO gc_paths (id, used_before)"
              " WITH over AS (SELECT c.id, s.stored - c.quota_bytes AS excess FROM caches c,"
              "   LATERAL (SELECT coalesce(sum(ch.stored_size), 0) AS stored FROM chunks ch WHERE ch.id IN"
              "    (SELECT nc.chunk_id FROM nar_chunks nc JOIN paths p ON p.nar_id = nc.nar_id WHERE p.cache_id = c.id)) s"
              "   WHERE c.quota_bytes > 0 AND s.stored > c.quota_bytes),"
              " cand AS (SELECT p.id, o.excess, p.pulled, p.last_used,"
              "   sum(n.file_size) OVER (PARTITION BY p.cache_id ORDER BY p.pulled DESC, p.last_used, p.id)"
              "    - n.file_size AS before"
              "   FROM paths p JOIN over o ON o.id = p.cache_id JOIN nars n ON n.id = p.nar_id"
              "   WHERE p.pinned_at IS NULL AND p.last_used < now() - " DB_GC_RECENT
              "   AND NOT EXISTS (SELECT 1 FROM path_refs r WHERE r.cache_id = p.cache_id AND r.ref = p.hash_part))"
              " SELECT id, now() FROM cand WHERE before < excess ORDER BY pulled DESC, last_used, id LIMIT $1"
              " ON CONFLICT (id) DO UPDATE SET used_before = EXCLUDED.used_before",
              1, p);
        if (r < 0)
                return r;
        return cmd_count(res, ret_n);
}

int db_gc_sweep_paths(struct db_gc *g, unsigned batch, int64_t *after,
                      void (*deleted)(void *userdata, int64_t cache_id, const char *hash), void *userdata,
                      uint64_t *ret_n) {
        _cleanup_pgresult_ PGresult *res = NULL;
        char lim[16], from[24];
        const char *p[] = { lim, from };
        int64_t last = 0;
        int r;

        snprintf(lim, sizeof lim, "%u", batch);
        snprintf(from, sizeof from, "%" PRId64, *after);
        r = tx_begin_locked(&g->h, "SELECT pg_advisory_xact_lock(" DB_PATHS_LOCK ")");
        if (r < 0)
                goto fail;
        /* Referrers go before what they reference: of the batch looked at,
         * only paths that nothing references now go, so every closure that
         * is visible between two batches is whole. A path used, pushed or
         * pinned since it was marked stays. Each batch is an index range
         * of the marked set (a query that searched the whole set for
         * deletable paths would cost as much for each batch). The first
         * row carries the last id looked at. */
        r = q(&g->h, &res,
              "WITH s AS (SELECT id, used_before FROM gc_paths WHERE id > $2::bigint ORDER BY id LIMIT $1::integer),"
              " b AS (SELECT p.id FROM s JOIN paths p ON p.id = s.id"
              "  WHERE p.pinned_at IS NULL AND p.last_used < LEAST(s.used_before, now() - " DB_GC_RECENT ")"
              "  AND NOT EXISTS (SELECT 1 FROM path_refs r WHERE r.cache_id = p.cache_id AND r.ref = p.hash_part)),"
              " d AS (DELETE FROM paths p USING b WHERE p.id = b.id RETURNING p.id, p.cache_id, p.hash_part),"
              " x AS (DELETE FROM gc_paths g USING d WHERE g.id = d.id),"
              " y AS (DELETE FROM profile_chunks c USING d WHERE c.cache_id = d.cache_id AND c.hash_part = d.hash_part)"
              " SELECT (SELECT max(id) FROM s), NULL UNION ALL SELECT cache_id, hash_part FROM d",
              2, p);
        if (r < 0)
                goto fail;
        r = tx_commit(&g->h);
        if (r < 0)
                return r;
        if (!PQgetisnull(res, 0, 0) && get_i64(res, 0, 0, &last) < 0)
                return -EIO;
        for (int i = 1; deleted && i < PQntuples(res); i++) {
                int64_t cid;
                if (get_i64(res, i, 0, &cid) >= 0)
                        deleted(userdata, cid, PQgetvalue(res, i, 1));
        }
        *after = last;
        *ret_n = (uint64_t) PQntuples(res) - 1;
        return 0;
fail:
        tx_abort(&g->h);
        return r;
}

int db_gc_mark_unreferenced(struct db_gc *g, int64_t min_age_sec, uint64_t *ret_n) {
        _cleanup_pgresult_ PGresult *res = NULL;
        char age[24];
        const char *p[] = { age };
        uint64_t nars, chunks;
        int r;

        snprintf(age, sizeof age, "%" PRId64, min_age_sec);
        r = q(&g->h, NULL, "DELETE FROM uploads WHERE created_at < now() - make_interval(secs => $1::bigint)", 1, p);
        if (r >= 0)
                r = q(&g->h, NULL,
                      "DELETE FROM chunk_claims WHERE created_at < now() - make_interval(secs => $1::bigint)", 1, p);
        if (r >= 0)
                r = q(&g->h, NULL,
                      "DELETE FROM orphan_objects o WHERE EXISTS (SELECT 1 FROM chunks c WHERE c.hash = o.hash)", 0,
                      NULL);
        if (r >= 0)
                r = q(&g->h, NULL, "TRUNCATE gc_nars, gc_chunks", 0, NULL);
        if (r >= 0)
                r = q(&g->h, &res,
                      "INSERT INTO gc_nars SELECT n.id FROM nars n"
                      " WHERE n.created_at < now() - make_interval(secs => $1::bigint)"
                      " AND NOT EXISTS (SELECT 1 FROM paths p WHERE p.nar_id = n.id)"
                      " AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.nar_id = n.id)",
                      1, p);
        if (r < 0 || (r = cmd_count(res, &nars)) < 0)
                return r;
        PQclear(res);
        res = NULL;
        /* Chunks that only the NARs about to go use count too. */
        r = q(&g->h, &res,
              "INSERT INTO gc_chunks SELECT c.id FROM chunks c"
              " WHERE c.created_at < now() - make_interval(secs => $1::bigint)"
              " AND NOT EXISTS (SELECT 1 FROM nar_chunks nc WHERE nc.chunk_id = c.id"
              "  AND NOT EXISTS (SELECT 1 FROM gc_nars gn WHERE gn.id = nc.nar_id))"
              " AND NOT EXISTS (SELECT 1 FROM chunk_claims cl WHERE cl.chunk_id = c.id)"
              " AND NOT EXISTS (SELECT 1 FROM chunks d WHERE d.base_id = c.id)",
              1, p);
        if (r < 0 || (r = cmd_count(res, &chunks)) < 0)
                return r;
        *ret_n = nars + chunks;
        return 0;
}

int db_gc_sweep_rows(struct db_gc *g, int64_t min_age_sec, unsigned batch, int64_t after[2], uint64_t *ret_nars,
                     uint64_t *ret_chunks) {
        _cleanup_pgresult_ PGresult *res = NULL;
        char age[24], lim[16], from[24];
        const char *p[] = { age, lim, from };
        uint64_t taken, done;
        int64_t last[2] = { after[0], after[1] };
        bool nars, any = false;
        int r;

        snprintf(age, sizeof age, "%" PRId64, min_age_sec);
        snprintf(lim, sizeof lim, "%u", batch);
        *ret_nars = *ret_chunks = 0;
        r = tx_begin_locked(&g->h, "SELECT pg_advisory_xact_lock(" DB_GC_LOCK ")");
        if (r < 0)
                goto fail;
        /* NARs first (their chunk tables go with them), then chunk rows;
         * every candidate is checked again here, under the lock, against
         * what writers committed since it was found. A chunk row's object
         * is recorded for deletion in the same transaction. */
        for (int pass = 0; pass < 2; pass++) {
                nars = pass == 0;
                /* Each list is taken from where the last batch ended: an
                 * index range, each candidate once. */
                snprintf(from, sizeof from, "%" PRId64, after[pass]);
                r = q(&g->h, &res,
                      nars ? "WITH b AS (SELECT id FROM gc_nars WHERE id > $3::bigint ORDER BY id LIMIT $2::integer),"
                             " d AS (DELETE FROM nars n USING b WHERE n.id = b.id"
                             "  AND n.created_at < now() - make_interval(secs => $1::bigint)"
                             "  AND NOT EXISTS (SELECT 1 FROM paths p WHERE p.nar_id = n.id)"
                             "  AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.nar_id = n.id) RETURNING 1)"
                             " SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM d), (SELECT max(id) FROM b)"
                           : "WITH b AS (SELECT id FROM gc_chunks WHERE id > $3::bigint ORDER BY id LIMIT $2::integer),"
                             " d AS (DELETE FROM chunks c USING b WHERE c.id = b.id"
                             "  AND c.created_at < now() - make_interval(secs => $1::bigint)"
                             "  AND NOT EXISTS (SELECT 1 FROM nar_chunks nc WHERE nc.chunk_id = c.id)"
                             "  AND NOT EXISTS (SELECT 1 FROM chunk_claims cl WHERE cl.chunk_id = c.id)"
                             "  AND NOT EXISTS (SELECT 1 FROM chunks d WHERE d.base_id = c.id) RETURNING c.hash),"
                             " o AS (INSERT INTO orphan_objects (hash, first_seen) SELECT hash, '-infinity' FROM d"
                             "  ON CONFLICT (hash) DO UPDATE SET first_seen = '-infinity')"
                             " SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM d), (SELECT max(id) FROM b)",
                      3, p);
                if (r < 0)
                        goto fail;
                if (get_u64(res, 0, 0, &taken) < 0 || get_u64(res, 0, 1, &done) < 0 ||
                    (taken > 0 && get_i64(res, 0, 2, &last[pass]) < 0)) {
                        r = -EIO;
                        goto fail;
                }
                PQclear(res);
                res = NULL;
                *(nars ? ret_nars : ret_chunks) = done;
                any = any || taken > 0;
                if (taken > 0) {
                        if (done == 0 && nars)
                                continue; /* all still referenced: on to the chunks */
                        break;
                }
        }
        r = tx_commit(&g->h);
        if (r < 0)
                return r;
        after[0] = last[0];
        after[1] = last[1];
        return any;
fail:
        tx_abort(&g->h);
        return r;
}

static uint64_t monotonic_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

int db_gc_delete_objects(struct db_gc *g, int64_t min_age_sec, unsigned batch, uint64_t budget_usec,
                         int (*delete_object)(void *userdata, const uint8_t id[SHA256_DIGEST_LEN]), void *userdata,
                         uint64_t *ret_n, bool *ret_more) {
        _cleanup_pgresult_ PGresult *res = NULL;
        struct buf done = BUF_INIT((size_t) 64 << 20);
        char age[24], lim[16];
        const char *p[] = { age, lim };
        uint64_t n = 0, deleted = 0, start;
        bool failed = false, stopped = false;
        int r;

        snprintf(age, sizeof age, "%" PRId64, min_age_sec);
        snprintf(lim, sizeof lim, "%u", batch);
        r = tx_begin_locked(&g->h, "SELECT pg_advisory_xact_lock(" DB_GC_LOCK ")");
        if (r < 0)
                goto fail;
        /* The batch is taken in index order first and checked for rows
         * after (a hash anti-join over all chunk rows per batch would
         * hold the lock for seconds). An entry whose object got a row again
         * is only forgotten. */
        r = q(&g->h, &res,
              "SELECT o.hash, EXISTS (SELECT 1 FROM chunks c WHERE c.hash = o.hash) FROM"
              " (SELECT hash FROM orphan_objects WHERE first_seen <= now() - make_interval(secs => $1::bigint)"
              "  ORDER BY first_seen, hash LIMIT $2::integer) o",
              2, p);
        if (r < 0)
                goto fail;
        /* The lock is held while objects are deleted: writers wait at most
         * the time budget (and one store call). */
        start = monotonic_usec();
        for (int i = 0; i < PQntuples(res); i++) {
                uint8_t id[SHA256_DIGEST_LEN];
                if (monotonic_usec() - start > budget_usec) {
                        stopped = true;
                        break;
                }
                if (get_hash(res, i, 0, id) < 0) {
                        r = -EIO;
                        goto fail;
                }
                if (PQgetvalue(res, i, 1)[0] == 't')
                        ; /* has a row: not an orphan, forgotten below */
                else if (delete_object(userdata, id) < 0) {
                        /* Kept in the list: the next run tries again. */
                        failed = true;
                        continue;
                } else
                        deleted++;
                r = buf_printf(&done, "%s%s", n ? "," : "", PQgetvalue(res, i, 0) + 2);
                if (r < 0)
                        goto fail;
                n++;
        }
        if (n > 0) {
                const char *pd[] = { (const char *) done.data };
                r = q(&g->h, NULL,
                      "DELETE FROM orphan_objects WHERE hash IN (SELECT decode(x, 'hex') FROM unnest(string_to_array($1, ',')) x)",
                      1, pd);
                if (r < 0)
                        goto fail;
        }
        r = tx_commit(&g->h);
        if (r < 0)
                goto out;
        *ret_n = deleted;
        *ret_more = !failed && (stopped || (uint64_t) PQntuples(res) == batch);
        goto out;
fail:
        tx_abort(&g->h);
out:
        buf_free(&done);
        return r;
}
