/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nixdb.h - the registration of valid store paths in the text form that
 * `nix-store --load-db` reads and `nix-store --dump-db` writes (Nix's
 * makeValidityRegistration / decodeValidPathInfo), made from narinfo.
 *
 * One block per store path, each line ending in '\n':
 *
 *   <store path>
 *   <NAR hash, SHA-256 as 64 lower-case hex digits, no "sha256:" prefix>
 *   <NAR size, decimal>
 *   <deriver, full path, or an empty line when there is none>
 *   <number of references, decimal>
 *   <each reference as a full path, sorted>
 *
 * A runner that mounts the cache at the store directory feeds these blocks
 * to `nix-store --load-db`, and Nix then treats the mounted paths as valid
 * without copying them.
 */
#pragma once

#include "trove/buf.h"
#include "trove/narinfo.h"

/* Appends ni's block to out. store_dir (NULL: STORE_DIR_DEFAULT) prefixes
 * the base names of references and deriver; ni->store_path is written as
 * it is and must lie in store_dir. -EINVAL for a narinfo that would not
 * load back (no store path, one outside store_dir, a reference with a '/'
 * or a newline), -E2BIG beyond out's maximum, -ENOMEM. On error out keeps
 * its previous length. */
int nixdb_render(const struct narinfo *ni, const char *store_dir, struct buf *out);
