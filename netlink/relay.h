/* Relaying through intermediate hops: the one relay header, and routed calls (CALL_RELAY).
 *
 * What this module owns. (1) The relay header codec, the only one in the tree: every message
 * that travels through relays towards an address names it with this header, whatever carries
 * it (a routed call here, a relayed raft stream in consensus/transport.c). All multi-byte
 * fields are big-endian (network order): */
/* clang-format off */
/*   [u8 version = 1, u8 hops_left, u16 type, u32 max_reply, u8 family (4 or 6),
 *    16 bytes ip (IPv4: the first 4, the rest zero), u16 port]        RELAY_HDR_LEN bytes */
/* clang-format on */
/* Then the body. `type` is the call type the destination serves and `max_reply` the reply
 * bound the caller set; a relayed stream, which has neither, sends 0 for both. (2) Routed
 * calls: a call to a node this one may not reach directly goes to the next hop on the route as
 * a relay call (the header, then the request); each node on the way passes it on with one hop
 * less, the node whose next hop is the destination makes the real call, and every relay
 * answers with what it got back (status and message included).
 *
 * What it must not do: any I/O, logging or clock reading. Calls, answers and the next hop come
 * through struct relay_io, provided by the caller (meshd wires it to peers_call, peers_respond
 * and its routes); which call types may be relayed is the caller's configuration.
 *
 * Threading and ownership: not thread-safe; one object per node, driven from the node's loop.
 * The relay object owns the relays in flight (at most cfg.max_inflight); each one ends with
 * exactly one io->respond. relay_free drops those still waiting without answering them: call
 * it once the io's calls can no longer call back (after peers_free in meshd). */
#ifndef FOGMESH_NETLINK_RELAY_H
#define FOGMESH_NETLINK_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "err.h"
#include "peers.h"

/* ---- the relay header -------------------------------------------------------------------- */

#define RELAY_HDR_VERSION 1
#define RELAY_HDR_LEN     27

struct relay_hdr {
    uint8_t hops_left; /* relays the message may still cross; 0: the next one refuses it */
    uint16_t type;     /* the call type at the destination; 0 for a stream */
    uint32_t max_reply;
    struct mesh_addr dest; /* where it goes */
};

/* Writes the header into buf (cap at least RELAY_HDR_LEN). Returns RELAY_HDR_LEN, MESH_EINVAL
 * when dest is not an address (family 4 or 6, port not 0), MESH_ETOOBIG when cap is short. */
int relay_hdr_encode(const struct relay_hdr *h, uint8_t *buf, size_t cap);

/* Reads the header at the start of buf; the body is buf + RELAY_HDR_LEN. MESH_EUNSUPPORTED for
 * another version, MESH_EMALFORMED for anything else unexpected (shorter than a header, a
 * family other than 4 or 6, IPv4 with bytes past its four, port 0). ret is untouched on
 * failure. */
int relay_hdr_decode(const uint8_t *buf, size_t len, struct relay_hdr *ret);

/* ---- routed calls ------------------------------------------------------------------------ */

#define RELAY_DEFAULT_HOPS       8
#define RELAY_DEFAULT_MAX        64 /* relays in flight on one node */
#define RELAY_DEFAULT_TIMEOUT_MS 10000
#define RELAY_DEFAULT_MAX_REPLY  (1u << 20)
#define RELAY_TYPES_MAX          8

struct relay_io {
    void *data; /* passed as `ud` to every callback */

    /* The next hop towards dest: 0 with *ret_hop (dest itself when it is reached directly),
     * or a negative code when no route is known (the call then goes to dest directly). */
    int (*next_hop)(void *ud, const struct mesh_addr *dest, struct mesh_addr *ret_hop);

    /* Starts a call, peers_call's contract: req is borrowed for the call; cb fires exactly
     * once when this returns 0, never when it returns an error. */
    int (*call)(void *ud, const struct mesh_addr *to, uint16_t type, const uint8_t *req, size_t len,
                size_t max_reply, uint64_t timeout_ms, peers_reply_fn cb, void *cb_ud);

    /* Answers a request given to relay_serve (peers_respond's contract: once per request;
     * reply and msg borrowed for the call, msg may be NULL). */
    void (*respond)(void *ud, void *req, int rc, const uint8_t *reply, size_t len, const char *msg);
};

struct relay_config {
    struct mesh_addr self;           /* this node's address: a relay call to it is refused */
    uint16_t types[RELAY_TYPES_MAX]; /* the call types that may be relayed (0 ends the list) */
    uint16_t relay_type;             /* the call type of relay calls themselves (CALL_RELAY) */
    uint8_t hops;                    /* 0: RELAY_DEFAULT_HOPS, for calls this node starts */
    size_t max_inflight;             /* 0: RELAY_DEFAULT_MAX */
    uint64_t timeout_ms;             /* 0: RELAY_DEFAULT_TIMEOUT_MS, each relay's own call */
    uint32_t max_reply;              /* 0: RELAY_DEFAULT_MAX_REPLY, the largest reply relayed */
};

struct relay_stats {
    uint64_t started; /* calls this node started through a next hop */
    uint64_t relayed; /* relay calls passed on (or made, at the last relay) */
    uint64_t refused; /* relay calls answered with an error at once */
};

struct relay;

/* cfg and io are copied. MESH_EINVAL (relay_type 0, a callback missing), MESH_ENOMEM. */
int relay_new(const struct relay_config *cfg, const struct relay_io *io, struct relay **ret);
/* Accepts NULL. Frees the relays still waiting without answering them (see above). */
void relay_free(struct relay *r);

/* A call towards dest along the routes: directly when dest is the next hop or no route is
 * known, else as a relay call through the next hop. Same contract as io->call (req borrowed;
 * cb once when 0 is returned); MESH_ENOMEM. */
int relay_call(struct relay *r, const struct mesh_addr *dest, uint16_t type, const uint8_t *req,
               size_t len, size_t max_reply, uint64_t timeout_ms, peers_reply_fn cb, void *ud);

/* Serves one received relay call: data (borrowed for the call) is the header then the request.
 * req is the caller's handle for io->respond, which answers it exactly once, inside this call
 * (refused: malformed, a type not relayable, no hops left, addressed to this node, a reply
 * bound over cfg.max_reply, cfg.max_inflight relays waiting, or the next call could not start)
 * or when the next call's reply comes. */
void relay_serve(struct relay *r, void *req, const uint8_t *data, size_t len);

size_t relay_inflight(const struct relay *r);
const struct relay_stats *relay_stats(const struct relay *r);

#endif
