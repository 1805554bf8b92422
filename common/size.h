/* Sizes as specs spell them: "64Mi", "1Gi", "512M", "100k" or bytes. One home for the
 * parser, which consensus/spec.c validates with and runtime/ turns into the engine's byte
 * counts (tmpfs, shm_size). */
#ifndef FOGMESH_COMMON_SIZE_H
#define FOGMESH_COMMON_SIZE_H

#include <stddef.h>
#include <stdint.h>

#define MESH_SIZE_MAX    (1ull << 50) /* 1Pi */
#define MESH_SIZE_STRLEN 24

/* Parses a size: digits with an optional fraction and one suffix k, M, G, T, P (powers of 1000)
 * or Ki, Mi, Gi, Ti, Pi (powers of 1024), or none (bytes). The result must be a whole number of
 * bytes in 1..MESH_SIZE_MAX. Returns 0 with *ret_bytes, or MESH_EINVAL. */
int mesh_size_parse(const char *s, uint64_t *ret_bytes);

/* The shortest exact spelling of bytes that mesh_size_parse reads back ("64Mi", "512M",
 * "100k", "1000"); binary suffixes win ties. Returns the length needed, as snprintf;
 * MESH_SIZE_STRLEN bytes always suffice. */
size_t mesh_size_format(uint64_t bytes, char *buf, size_t len);

#endif
