/* The mesh key: 32 random bytes shared by every node of a mesh, written as standard base64
 * (44 characters) in key files and by `meshctl keygen`. One home for the format, used by both
 * meshd and meshctl. */
#ifndef FOGMESH_COMMON_MESHKEY_H
#define FOGMESH_COMMON_MESHKEY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define MESH_KEY_LEN     32
#define MESH_KEY_B64_LEN 44 /* without the terminating NUL */

/* Fills key with fresh random bytes. */
void mesh_key_generate(uint8_t key[static MESH_KEY_LEN]);

/* Encodes key as base64 into out (MESH_KEY_B64_LEN + 1 bytes, NUL-terminated). */
void mesh_key_encode(const uint8_t key[static MESH_KEY_LEN], char out[static MESH_KEY_B64_LEN + 1]);

/* Decodes base64 text (surrounding white space ignored) into exactly MESH_KEY_LEN bytes. On
 * failure ret_key is untouched and err says why. */
int mesh_key_decode(const char *text, uint8_t ret_key[static MESH_KEY_LEN], struct mesh_err *err);

/* Reads a key file (one base64 key; lines starting with '#' ignored). The file must not be
 * readable by group or others. */
int mesh_key_load(const char *path, uint8_t ret_key[static MESH_KEY_LEN], struct mesh_err *err);

#endif
