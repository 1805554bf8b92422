/* Replacing a small file so that a crash at any moment leaves either the old contents or the new
 * ones, never a mix or nothing: write a temporary file, fsync it, rename it over the target, and
 * fsync the directory, so that the rename itself is on disk before the caller relies on it
 * (rename(2) is atomic but not durable: without the directory's fsync, a power loss may bring
 * back the old name, or neither; see ext4's and POSIX's notes, and SQLite's "atomic commit").
 * One home for the key ring, the identity, the epoch, the remembered peers and the runtime's
 * config files. */
#ifndef FOGMESH_COMMON_ATOMICFILE_H
#define FOGMESH_COMMON_ATOMICFILE_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"

/* Writes len bytes of data (borrowed) to path, through tmp (a path on the same file system; an
 * old tmp is removed first, and tmp is never left behind), with mode (the final file's). Both
 * the file and the directory of path are fsynced. Returns 0, or a negative errno code with err
 * naming the file and the reason ("cannot write DIR/.x.tmp: No space left on device"); on error
 * path is untouched. The caller wipes data if it is secret. */
int mesh_file_replace(const char *tmp, const char *path, const void *data, size_t len, mode_t mode,
                      struct mesh_err *err);

/* fsyncs the directory dir (after creating, renaming or removing an entry in it). Returns 0 or
 * a negative errno code with err. */
int mesh_dir_sync(const char *dir, struct mesh_err *err);

#endif
