/* Small helpers for msgpack on the wire.
 *
 * Writing goes through msgpack-c's msgpack_packer, either into a fixed buffer that refuses to
 * overflow (UDP packets) or into a growing msgpack_sbuffer (stream payloads).
 *
 * Reading does NOT use msgpack-c's object unpacker: it allocates sizeof(msgpack_object) times the
 * element count an array header claims before looking at the data, so five hostile bytes
 * (0xdd ff ff ff ff) ask for ~100 GB. wire_rd is a cursor over a borrowed buffer that decodes one
 * value at a time, never allocates, and checks every length against the bytes that remain (an
 * array of n elements needs at least n more bytes). Once a read fails the reader stays failed, so
 * a decoder may check r->err once after a run of reads. */
#ifndef FOGMESH_COMMON_WIRE_H
#define FOGMESH_COMMON_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "addr.h"

/* ---- writing ---- */

/* A bounded output buffer for msgpack_packer. buf is borrowed; on overflow nothing more is
 * written and overflow stays set. */
struct wire_wr {
    uint8_t *buf;
    size_t len;
    size_t cap;
    bool overflow;
    msgpack_packer pk;
};

void wire_wr_init(struct wire_wr *w, uint8_t *buf, size_t cap);

/* Addresses travel as bin: family(1) | ip (4 or 16) | port (2, big endian). */
#define WIRE_ADDR_MAX 19
int wire_pack_addr(msgpack_packer *pk, const struct mesh_addr *a);
int wire_pack_str(msgpack_packer *pk, const char *s, size_t len);
int wire_pack_bin(msgpack_packer *pk, const void *b, size_t len);

/* ---- reading ---- */

struct wire_rd {
    const uint8_t *p;
    size_t len;
    size_t off;
    int err; /* 0 or MESH_EMALFORMED, sticky */
};

void wire_rd_init(struct wire_rd *r, const uint8_t *p, size_t len);
size_t wire_rd_left(const struct wire_rd *r);

/* Each returns 0 or MESH_EMALFORMED (type mismatch, truncation, implausible length). Outputs
 * are left untouched on failure; returned pointers point into the reader's buffer. */
int wire_rd_array(struct wire_rd *r, uint32_t *ret_n);
int wire_rd_uint(struct wire_rd *r, uint64_t *ret_v);
int wire_rd_bool(struct wire_rd *r, bool *ret_v);
int wire_rd_str(struct wire_rd *r, const char **ret_s, uint32_t *ret_len);
int wire_rd_bin(struct wire_rd *r, const uint8_t **ret_b, uint32_t *ret_len);
int wire_rd_addr(struct wire_rd *r, struct mesh_addr *ret_addr);
/* Reads a string into dst as a C string: MESH_EMALFORMED unless it is shorter than cap and
 * valid(s, len) holds (valid NULL: any bytes but NUL, which would cut the copy short and make
 * two readers of the same bytes disagree). The one way decoders copy a peer's names out. */
typedef bool (*wire_str_valid_fn)(const char *s, size_t len);
int wire_rd_str_copy(struct wire_rd *r, char *dst, size_t cap, wire_str_valid_fn valid);
/* Skips one complete value of any type, nesting at most `depth` levels of arrays/maps. */
int wire_rd_skip(struct wire_rd *r, unsigned depth);

#endif
