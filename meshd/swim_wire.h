/* clang-format off */
/* SWIM wire format (msgpack). Used by swim.c; exposed for tests and the fuzz harness.
 *
 * A gossip packet (UDP payload before the daemon seals it) is one msgpack array:
 *
 *     [version, SWIM_PKT_GOSSIP, sender_name, sender_id, [msg, msg, ...]]
 *
 * Each msg is itself an array whose first element is its type; the rest depends on the type:
 *
 *     PING      [1, seq, target_name, target_id]
 *     PING_REQ  [2, seq, target_name, target_id, target_addr, want_nack]
 *     ACK       [3, seq]
 *     NACK      [4, seq]
 *     ALIVE     [5, name, id, addr, incarnation, meta]
 *     SUSPECT   [6, name, id, incarnation, from_name]
 *     DEAD      [7, name, id, incarnation, from_name]
 *     LEFT      [8, name, id, incarnation]
 *
 * Several messages in one packet are SWIM's piggybacking (SWIM §4.1) and memberlist's compound
 * messages. A receiver skips messages of unknown type (counted) and trailing fields it does not
 * know, so a later version can add both; a different version byte drops the packet.
 *
 * A push-pull state (a stream, carried by the daemon over an encrypted TCP link) is:
 *
 *     [version, SWIM_PKT_PP_REQ|SWIM_PKT_PP_RESP, sender_name, sender_id, join, err_code,
 *      err_msg, [[name, id, addr, incarnation, state, meta], ...]]
 *
 * err_code is 0, or the positive value of a MESH_E* code when the responder refuses (name taken).
 * Ids are 16-byte bins; addresses are bins as written by wire_pack_addr. */
/* clang-format on */
#ifndef FOGMESH_MESHD_SWIM_WIRE_H
#define FOGMESH_MESHD_SWIM_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "addr.h"
#include "wire.h"

#define SWIM_WIRE_VERSION 1
#define SWIM_NAME_MAX     64 /* bytes, without the terminating NUL */
#define SWIM_ID_LEN       16
#define SWIM_META_MAX     512
#define SWIM_ERRMSG_MAX   255

enum swim_pkt_type {
    SWIM_PKT_GOSSIP = 1,
    SWIM_PKT_PP_REQ = 2,
    SWIM_PKT_PP_RESP = 3,
};

enum swim_msg_type {
    SWIM_MSG_PING = 1,
    SWIM_MSG_PING_REQ = 2,
    SWIM_MSG_ACK = 3,
    SWIM_MSG_NACK = 4,
    SWIM_MSG_ALIVE = 5,
    SWIM_MSG_SUSPECT = 6,
    SWIM_MSG_DEAD = 7,
    SWIM_MSG_LEFT = 8,
};

/* Largest encoded single message (an ALIVE with a full name and metadata is 631 bytes). */
#define SWIM_MSG_MAX 640
/* Largest packet header including the message array header. */
#define SWIM_HDR_MAX 96

/* One decoded message. Strings are copied and NUL-terminated; meta points into the packet. */
struct swim_msg {
    uint8_t type;
    uint32_t seq;
    char name[SWIM_NAME_MAX + 1]; /* target (ping, ping-req) or subject (state messages) */
    uint8_t id[SWIM_ID_LEN];
    struct mesh_addr addr;
    uint64_t incarnation;
    char from[SWIM_NAME_MAX + 1];
    bool nack;
    uint8_t state; /* push-pull entries only: enum swim_member_state */
    const uint8_t *meta;
    size_t meta_len;
};

struct swim_hdr {
    uint8_t type; /* enum swim_pkt_type */
    char name[SWIM_NAME_MAX + 1];
    uint8_t id[SWIM_ID_LEN];
    /* push-pull only */
    bool join;
    int err_code; /* 0 or a negative MESH_E* */
    char err_msg[SWIM_ERRMSG_MAX + 1];
    uint32_t count; /* number of messages or entries that follow */
};

/* Names are 1..SWIM_NAME_MAX bytes with no control characters (they end up in logs and
 * tables). */
bool swim_name_valid(const char *s, size_t len);

/* Packs one message into pk (the fields its type uses). Returns 0 or -1 on overflow. */
int swim_wire_pack_msg(msgpack_packer *pk, const struct swim_msg *m);
/* Packs one message into buf; returns its length, or 0 if it does not fit. */
size_t swim_wire_encode_msg(const struct swim_msg *m, uint8_t *buf, size_t cap);

/* Packs a header up to and including the array header of `count` elements. */
int swim_wire_pack_hdr(msgpack_packer *pk, const struct swim_hdr *h);
/* Packs one push-pull entry (uses name, id, addr, incarnation, state, meta). */
int swim_wire_pack_entry(msgpack_packer *pk, const struct swim_msg *e);

/* Reads a header of either kind. Returns 0, MESH_EMALFORMED, or MESH_EUNSUPPORTED for a version
 * this code does not speak. */
int swim_wire_read_hdr(struct wire_rd *r, struct swim_hdr *ret_h);
/* Reads one gossip message. Returns 0, MESH_EMALFORMED (the rest of the packet cannot be trusted)
 * or MESH_EUNSUPPORTED (unknown type, skipped: the reader is positioned at the next message). */
int swim_wire_read_msg(struct wire_rd *r, struct swim_msg *ret_m);
/* Reads one push-pull entry: 0 or MESH_EMALFORMED. */
int swim_wire_read_entry(struct wire_rd *r, struct swim_msg *ret_e);

#endif
