/* Service tunnels: one TCP connection carried over the mesh, hop by hop, on peers streams
 * (netlink/peers.h). A tunnel joins two ends:
 *
 *   - at the client's node, the accepted client socket and a stream it opens to the next hop
 *     (tunnel_open_fd);
 *   - at a relay, the stream it accepted and a stream it opens to the next hop
 *     (tunnel_accept_relay): each hop decrypts from one link and re-encrypts onto the next;
 *   - at the service's node, the stream it accepted and a TCP connection to the service's
 *     endpoint (tunnel_accept_connect, or tunnel_accept_fd for a socket the caller connected).
 *
 * Bytes flow both ways. Each direction holds at most a bounded number of bytes in the tunnel
 * (TUNNEL_BUF_MAX: the link's per-channel window, which is all a stream can deliver before
 * its data is consumed), and backpressure runs end to end: data a stream delivers is consumed
 * (its credit returned to the sender) only once written to the other side, and a socket is read
 * only while the stream can take more, so a slow reader stalls the writer at the far end
 * instead of growing any buffer on the way. A direction's buffer grows with what it holds (from
 * 64 KiB, doubling); the worst case for a node is TUNNEL_DEFAULT_MAX tunnels x 2 directions x
 * the window, reached only if every tunnel's sink stops reading while its source keeps sending.
 *
 * Half-close both ways: a socket's EOF becomes the stream's FIN and a stream's FIN becomes
 * shutdown(SHUT_WR) on the socket (or the FIN of the next stream), each after the data before
 * it. Resets propagate: a socket error (a TCP RST) or a stream that ends with an error resets
 * the other end: a stream with peers_stream_reset, a socket by closing it with SO_LINGER 0 so
 * that its peer gets a TCP RST. A tunnel ends when both ends are closed (code 0) or after a
 * reset (the first error's code and message).
 *
 * The open payload: the opener of each hop's stream names what the tunnel is for, in the OPEN
 * frame (LINK_OPEN_PAYLOAD_MAX bytes): one msgpack array
 *
 *     [1, service, dest_node, origin_node, hops_left, tunnel_id]
 *
 * A relay forwards it with hops_left one less (tunnel_open_next) and refuses it at 0, so a
 * routing loop during convergence dies out instead of circling. Decoders ignore trailing
 * elements. Which node is the next hop, and which endpoint a service has, is the caller's
 * business (netlink/route.h, the desired state): tunnels only carry bytes.
 *
 * Lifetime: the tunnels object owns every tunnel; each one frees itself when it ends, after the
 * on_end hook, which always runs from the event loop, never from inside a tunnel_* call.
 * tunnels_free resets what is still open without calling the hook. Everything is bounded: the
 * number of tunnels and the bytes each holds. */
#ifndef FOGMESH_NETLINK_TUNNEL_H
#define FOGMESH_NETLINK_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "addr.h"
#include "err.h"
#include "link.h"
#include "names.h"
#include "peers.h"

/* ---- the open payload -------------------------------------------------------------------- */

#define TUNNEL_OPEN_VERSION 1
#define TUNNEL_SERVICE_MAX  63 /* node-name characters (common/names.h) */
#define TUNNEL_DEFAULT_HOPS 16
#define TUNNEL_OPEN_MAX     (1 + 1 + (2 + TUNNEL_SERVICE_MAX) + 2 * (2 + MESH_NODE_NAME_MAX) + 1 + 9)

struct tunnel_open {
    char service[TUNNEL_SERVICE_MAX + 1];
    char dest[MESH_NODE_NAME_MAX + 1];   /* the node that hosts the service */
    char origin[MESH_NODE_NAME_MAX + 1]; /* the node where the client connected */
    uint8_t hops_left;                   /* decremented at each relay */
    uint64_t id;                         /* chosen by the origin, for logs */
};

/* Encodes into buf; the length, MESH_EINVAL for a bad name (service, dest and origin follow
 * the node-name rules; service at most TUNNEL_SERVICE_MAX), MESH_ETOOBIG when cap is short. */
int tunnel_open_encode(const struct tunnel_open *o, uint8_t *buf, size_t cap);

/* Decodes; MESH_EMALFORMED for anything unexpected (bad names included), MESH_EUNSUPPORTED
 * for another version. ret is untouched on failure. */
int tunnel_open_decode(const uint8_t *buf, size_t len, struct tunnel_open *ret);

/* What a relay sends on: in with one hop less. MESH_ETOOBIG when no hop is left. */
int tunnel_open_next(const struct tunnel_open *in, struct tunnel_open *ret);

/* ---- tunnels ----------------------------------------------------------------------------- */

#define TUNNEL_BUF_MAX         LINK_DEFAULT_WINDOW /* bytes held per direction, at most */
#define TUNNEL_DEFAULT_MAX     1024                /* tunnels at once */
#define TUNNEL_DEFAULT_READ    (64 * 1024)         /* a socket's bytes read ahead, at most */
#define TUNNEL_CONNECT_TIMEOUT 10000               /* ms, tunnel_accept_connect */

/* Directions: UP from the client towards the service, DOWN back. */
enum { TUNNEL_UP = 0, TUNNEL_DOWN = 1 };

struct tunnels;
struct tunnel;

/* How a tunnel ended, for the hook; valid during the call. */
struct tunnel_summary {
    uint64_t id;
    uint64_t bytes[2];  /* delivered, by direction */
    size_t held_max[2]; /* the most bytes the tunnel held, by direction */
    int code;           /* 0: closed both ways; else the first error */
    const char *msg;    /* "" for code 0 */
};

struct tunnels_config {
    size_t max_tunnels; /* 0: TUNNEL_DEFAULT_MAX */
    size_t read_max;    /* 0: TUNNEL_DEFAULT_READ; at most TUNNEL_BUF_MAX */
};

struct tunnels_hooks {
    void *ud;
    /* Optional: a tunnel ended (logs, counters). The tunnel is freed right after. */
    void (*on_end)(void *ud, const struct tunnel_summary *s);
};

struct tunnels_stats {
    uint64_t opened, ended, failed;
    uint64_t bytes[2];
    size_t held_max; /* the most any tunnel held in one direction */
};

/* p: the node's peers (borrowed; free the tunnels first). cfg and hooks may be NULL. */
int tunnels_new(struct event_base *base, struct peers *p, const struct tunnels_config *cfg,
                const struct tunnels_hooks *hooks, struct tunnels **ret);
/* Accepts NULL. Resets every open tunnel (streams reset, sockets closed with a TCP RST); the
 * hook does not fire. */
void tunnels_free(struct tunnels *ts);

size_t tunnels_count(const struct tunnels *ts);
const struct tunnels_stats *tunnels_stats(const struct tunnels *ts);

/* The client's node: opens a stream of channel `type` to the next hop `to` with the open
 * payload (copied), and splices the connected TCP socket fd to it; fd is read once the peer
 * accepted. timeout_ms as for peers_stream_open. On success the tunnel owns fd; on failure
 * nothing is created and fd stays the caller's. id is for the summary. */
int tunnel_open_fd(struct tunnels *ts, int fd, const struct mesh_addr *to, uint16_t type,
                   const uint8_t *payload, size_t len, uint64_t timeout_ms, uint64_t id,
                   struct tunnel **ret);

/* The next three take over a stream a peers acceptor was given, from inside the acceptor
 * (they set its callbacks): return 0 from the acceptor after they succeed; when they fail the
 * stream is untouched, so refuse it. */

/* A relay: opens a stream to the next hop `to` and splices the two. */
int tunnel_accept_relay(struct tunnels *ts, struct peers_stream *s, const struct mesh_addr *to,
                        uint16_t type, const uint8_t *payload, size_t len, uint64_t timeout_ms,
                        uint64_t id, struct tunnel **ret);

/* The service's node: connects (non-blocking) to endpoint and splices. A connection that fails
 * or takes longer than TUNNEL_CONNECT_TIMEOUT resets the stream. */
int tunnel_accept_connect(struct tunnels *ts, struct peers_stream *s,
                          const struct mesh_addr *endpoint, uint64_t id, struct tunnel **ret);

/* Splices a connected socket the caller made. On success the tunnel owns fd. */
int tunnel_accept_fd(struct tunnels *ts, struct peers_stream *s, int fd, uint64_t id,
                     struct tunnel **ret);

/* Bytes the tunnel holds now in direction dir (TUNNEL_UP or TUNNEL_DOWN). */
size_t tunnel_held(const struct tunnel *t, int dir);
uint64_t tunnel_id(const struct tunnel *t);

#endif
