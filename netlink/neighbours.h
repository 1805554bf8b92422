/* Neighbours and link state: which members this node reaches directly, how far they are, what
 * it advertises of them, and the routes over what every member advertises (netlink/route.h).
 *
 * What this module owns. Probing: every NBRS_PING_MS (nbrs_tick) the node pings up to
 * NBRS_TRACK_MAX alive (or suspect) members over the mesh's links. A reply carrying the ping's
 * generation back gives a round-trip time, smoothed (EWMA, 1/4 weight for the new sample, as
 * TCP's SRTT uses 1/8, RFC 6298); NBRS_FAILS_DOWN failures in a row and the neighbour is down.
 * Advertising: the NBRS_ADVERTISE_MAX nearest neighbours that are up, as a link-state record
 * (route_ls_encode), published when the set changes (at once, from the ping's answer or
 * failure) or an RTT moved by more than half (at the next tick; at most every
 * NBRS_REPUBLISH_MS otherwise), so gossip carries link changes within a second without
 * churning on noise; as many as io->publish accepts, nearest first. Routes: nbrs_recompute
 * (every NBRS_ROUTE_MS, and at once when a neighbour comes up or goes down) builds the graph of
 * the alive members and their advertised neighbours, with this node's own fresher view, and
 * runs Dijkstra from this node; the table is replaced whole. Next hops: for calls
 * (nbrs_next_hop: a neighbour that answers directly is reached directly) and for relays of a
 * tunnel (nbrs_relay_hop: never back to the hop it came from).
 *
 * What it must not do: any I/O, logging or clock reading. Membership, pings, publishing and
 * link events go through struct nbrs_io; the caller owns the timers and passes the time.
 *
 * Threading and ownership: not thread-safe; one object per node, driven from the node's loop.
 * io callbacks must not call back into the object, except that a ping's answer may be given
 * (nbrs_pong) at any later time, also after the member went away; never after nbrs_free, so
 * free the object only once no ping can answer any more (after peers_free in meshd). */
#ifndef FOGMESH_NETLINK_NEIGHBOURS_H
#define FOGMESH_NETLINK_NEIGHBOURS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "err.h"
#include "names.h"
#include "route.h"

#define NBRS_TRACK_MAX       64 /* members pinged; the mesh may be larger (see nbrs_tick) */
#define NBRS_ADVERTISE_MAX   16
#define NBRS_PING_MS         1000
#define NBRS_PING_TIMEOUT_MS 2000
/* Failed pings in a row that make a neighbour down: ~3 s when the calls fail at once (a refused
 * dial), ~6 s when they time out (one ping in flight at a time, NBRS_PING_TIMEOUT_MS each). */
#define NBRS_FAILS_DOWN   3
#define NBRS_REPUBLISH_MS 10000
#define NBRS_ROUTE_MS     500
#define NBRS_PING_LEN     8 /* a ping's request, echoed as its reply */

/* A member as the io reports it. name is borrowed: it must stay valid while the membership
 * does not change, which it does not during a call into this object. */
struct nbrs_member {
    const char *name;
    struct mesh_addr addr;
    bool alive; /* alive or suspect */
};

struct nbrs_io {
    void *data; /* passed as `ud` to every callback */

    /* The current members, this node included (recognised by its name): the i-th, and the
     * one named name (false when there is none). */
    size_t (*member_count)(void *ud);
    void (*member_at)(void *ud, size_t i, struct nbrs_member *ret);
    bool (*member_find)(void *ud, const char *name, struct nbrs_member *ret);
    /* The link-state record (route.h) the i-th member advertises: its length and *ret_ls
     * (borrowed until the next io call), or a negative code when it advertises none. */
    int (*member_ls)(void *ud, size_t i, const uint8_t **ret_ls);

    /* Sends a ping (buf, len: borrowed) to `to`. Its outcome goes to nbrs_pong(cookie, ...)
     * exactly once when this returns 0, never when it returns an error (a failed ping). */
    int (*ping)(void *ud, const struct mesh_addr *to, const uint8_t *buf, size_t len,
                uint64_t timeout_ms, void *cookie);

    /* Publishes this node's link-state record (borrowed; len 0: none). Returns 0, or
     * MESH_ETOOBIG when it does not fit (the record is then tried with fewer neighbours; a
     * record of none must be taken). */
    int (*publish)(void *ud, const uint8_t *ls, size_t len);

    /* Optional. A neighbour came up (with its first RTT) or went down. */
    void (*link)(void *ud, const char *name, const struct mesh_addr *addr, bool up,
                 uint32_t rtt_us);
};

struct nbrs_config {
    const char *name; /* this node's (copied) */
    size_t max_nodes; /* of the route graph; 0: ROUTE_DEFAULT_MAX_NODES */
};

/* What nbrs_at reports of one tracked member. */
struct nbrs_info {
    const char *name; /* valid until the next call into the object */
    struct mesh_addr addr;
    bool up;
    uint32_t rtt_us; /* smoothed; 0 until the first reply */
};

struct nbrs;

/* cfg and io are copied. MESH_EINVAL (a bad name, a required callback missing), MESH_ENOMEM. */
int nbrs_new(const struct nbrs_config *cfg, const struct nbrs_io *io, struct nbrs **ret);
void nbrs_free(struct nbrs *nb); /* accepts NULL */

/* The ping round (every NBRS_PING_MS): forgets members that are gone, dead or moved, tracks new
 * ones in free slots (membership order: in a larger mesh the ones tracked stay), pings every
 * tracked one whose last ping has been answered, and republishes when due. */
void nbrs_tick(struct nbrs *nb, uint64_t now_us);

/* A ping's outcome: cookie as given to io->ping; rc and reply as peers_call reports them. */
void nbrs_pong(void *cookie, int rc, const uint8_t *reply, size_t len, uint64_t now_us);

/* Rebuilds the graph from the members and recomputes the table (every NBRS_ROUTE_MS). */
void nbrs_recompute(struct nbrs *nb);

/* The last table; NULL until first computed. Valid until the next call into the object. */
const struct route_table *nbrs_table(const struct nbrs *nb);

/* The next hop towards the member at address dest: dest itself when it is a neighbour that
 * answers directly (a path through others measuring shorter does not move raft's connections,
 * each move costs a reconnect), else the route's next hop. MESH_ENOTFOUND when no member has
 * that address or no route is known. */
int nbrs_next_hop(struct nbrs *nb, const struct mesh_addr *dest, struct mesh_addr *ret_hop);

/* The hop a relay passes a tunnel to, towards the member named dest, for a tunnel that came
 * from the hop at address from: the route's next hop, unless that leads back to from (one of
 * the two has not heard of a link change yet, and the tunnel would bounce between them until
 * its hops run out); then dest directly when it answers directly, since dest cannot send it
 * back. MESH_ENOTFOUND without a route, MESH_EAGAIN when the only way is back. */
int nbrs_relay_hop(struct nbrs *nb, const char *dest, const struct mesh_addr *from,
                   struct mesh_addr *ret_hop);

/* The tracked members: i < NBRS_TRACK_MAX; false for a free slot. */
bool nbrs_at(const struct nbrs *nb, size_t i, struct nbrs_info *ret);

#endif
