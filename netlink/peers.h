/* Links to other nodes, and request/response calls over them.
 *
 * peers owns the mesh port's TCP side: it accepts links, dials the peers that calls are
 * addressed to (one link per peer address, reused by every call), and carries each call on a
 * channel of its own: the caller's request, FIN, then the reply, FIN. Services register a
 * handler per channel type. Gossip push-pull, key-ring operations and later Raft forwarding and
 * log streaming are such calls.
 *
 * A reply travels in a small envelope: one status byte (0 for success, 1..127 an errno value,
 * 128..255 a MESH_E* code) then the reply bytes, or the error message, so a caller gets the
 * remote's error with its context ("key not in ring").
 *
 * Async contract (libuv's): if peers_call returns an error, its callback never fires;
 * otherwise it fires exactly once, never from inside peers_call. Every table is bounded: links,
 * calls in flight, requests being served, and the request and reply sizes. */
#ifndef FOGMESH_NETLINK_PEERS_H
#define FOGMESH_NETLINK_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "addr.h"
#include "err.h"
#include "keyring.h"
#include "link.h"

#define PEERS_DEFAULT_MAX_LINKS 256
#define PEERS_MAX_CALLS         1024 /* in flight, outgoing */
#define PEERS_MAX_SERVING       1024 /* requests being received or answered */
#define PEERS_MAX_SERVICES      16

struct peers;

/* What a handler is given. Answer it exactly once with peers_respond (inside the handler or
 * later); the request stays valid until then, even if the link goes away meanwhile. */
struct peers_req {
    const uint8_t *data;
    size_t len;
    uint16_t type;
    struct mesh_addr from;             /* the peer's advertised address */
    uint8_t peer_static[LINK_KEY_LEN]; /* the peer's identity key */
};

typedef void (*peers_serve_fn)(void *ud, struct peers_req *req);
typedef void (*peers_reply_fn)(void *ud, int rc, const uint8_t *reply, size_t len,
                               const struct mesh_err *err);

struct peers_hooks {
    void *ud;
    /* Checks a peer's handshake payload and returns its advertised address. Return 0 to
     * accept the link, a negative code to refuse it. Required. */
    int (*on_handshake)(void *ud, const uint8_t peer_static[LINK_KEY_LEN], const uint8_t *payload,
                        size_t len, struct mesh_addr *ret_adv);
    /* Optional: a link came up, or ended (err->code 0 for a normal close), for logs. `addr` is
     * the dialled or advertised address when known, else the remote socket address. */
    void (*on_link)(void *ud, const struct mesh_addr *addr, bool up, bool outgoing,
                    const struct mesh_err *err);
};

struct peers_config {
    const uint8_t *static_priv; /* our identity (X25519), copied */
    const struct keyring *kr;   /* borrowed: new links use its current link PSKs */
    const uint8_t *payload;     /* our handshake payload, copied; <= LINK_HS_PAYLOAD_MAX */
    size_t payload_len;
    size_t max_links; /* 0: PEERS_DEFAULT_MAX_LINKS */
};

struct peers_stats {
    uint64_t links_accepted, links_dialled, links_up, links_failed;
    uint64_t handshake_failures;
    uint64_t calls, calls_failed, served, refused;
};

/* listen_fd: a bound, listening TCP socket; peers takes it over (closed by peers_free). */
int peers_new(struct event_base *base, int listen_fd, const struct peers_config *cfg,
              const struct peers_hooks *hooks, struct peers **ret, struct mesh_err *err);
void peers_free(struct peers *p); /* accepts NULL; pending callbacks do not fire */

/* Registers the handler for channel `type` (LINK_CHAN_CONTROL may be set for priority). */
int peers_serve(struct peers *p, uint16_t type, size_t max_req, peers_serve_fn fn, void *ud);

/* Answers a request: rc 0 with reply bytes (copied), or a negative code with msg. Frees req. */
void peers_respond(struct peers_req *req, int rc, const uint8_t *reply, size_t len,
                   const char *msg);

/* Calls `type` on the node at `to` with req (copied). The reply (at most max_reply bytes) or
 * the failure comes to cb. timeout_ms covers dialling, the handshake and the exchange. */
int peers_call(struct peers *p, const struct mesh_addr *to, uint16_t type, const uint8_t *req,
               size_t len, size_t max_reply, uint64_t timeout_ms, peers_reply_fn cb, void *ud);

/* Closes every link (graceful GOAWAY); pending calls fail. */
void peers_close_all(struct peers *p);

size_t peers_link_count(const struct peers *p);
const struct peers_stats *peers_stats(const struct peers *p);

#endif
