/* The mesh key: 32 random bytes shared by every node of a mesh, written as standard base64
 * (44 characters) in key files and by `meshctl keygen`. One home for the format, used by both
 * meshd and meshctl. */
#ifndef FOGMESH_COMMON_MESHKEY_H
#define FOGMESH_COMMON_MESHKEY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define MESH_KEY_LEN        32
#define MESH_KEY_B64_LEN    44 /* without the terminating NUL */
#define MESH_KEY_FP_LEN     8  /* a key's fingerprint: what `meshctl keys list` shows */
#define MESH_KEY_FP_STR_LEN (MESH_KEY_FP_LEN * 2)

/* Fills key with fresh random bytes. */
void mesh_key_generate(uint8_t key[static MESH_KEY_LEN]);

/* Encodes key as base64 into out (MESH_KEY_B64_LEN + 1 bytes, NUL-terminated). */
void mesh_key_encode(const uint8_t key[static MESH_KEY_LEN], char out[static MESH_KEY_B64_LEN + 1]);

/* Decodes base64 text (surrounding white space ignored) into exactly MESH_KEY_LEN bytes. On
 * failure ret_key is untouched and err says why. */
int mesh_key_decode(const char *text, uint8_t ret_key[static MESH_KEY_LEN], struct mesh_err *err);

/* A key's fingerprint: the first MESH_KEY_FP_LEN bytes of BLAKE2b-256("fogmesh-key-fp" || key).
 * It names a key in lists and key operations between nodes, so that key bytes never leave a
 * node (except sealed to one recipient, keyring.h); the domain string keeps it unrelated to
 * every other hash of the key (subkeys, gossip hints). 64 bits: a fingerprint only picks a key
 * that the operation then proves or checks, it authenticates nothing by itself. */
void mesh_key_fingerprint(const uint8_t key[static MESH_KEY_LEN],
                          uint8_t ret_fp[static MESH_KEY_FP_LEN]);

/* Lower-case hex of a fingerprint into out (MESH_KEY_FP_STR_LEN + 1 bytes). */
void mesh_key_fp_format(const uint8_t fp[static MESH_KEY_FP_LEN],
                        char out[static MESH_KEY_FP_STR_LEN + 1]);

/* Reads a key file (one base64 key; lines starting with '#' ignored). The file must not be
 * readable by group or others. */
int mesh_key_load(const char *path, uint8_t ret_key[static MESH_KEY_LEN], struct mesh_err *err);

#endif
