/* Link-state routing: every node gossips its neighbours with measured RTTs, and every node
 * computes shortest paths over what all the alive nodes report (OSPF's idea, RFC 2328 section
 * 16, without areas). Pure logic: no I/O, no clock; every table has a fixed bound.
 *
 * The link-state record. One node's neighbour list travels in its gossip metadata, which is
 * small (meshd/swim_wire.h's SWIM_META_MAX, shared with the node's other facts), so neighbours
 * are named by a 64-bit id, route_node_id(name), instead of their names, which every node knows
 * from membership anyway. Encoded as one msgpack array
 *
 *     [1, [id, rtt_us, id, rtt_us, ...]]
 *
 * with ids strictly increasing (so the encoding is canonical and has no duplicates). 16
 * neighbours take at most 16 * (9 + 5) + 5 = 229 bytes, 197 for RTTs under 65 ms.
 * Decoders ignore trailing elements after the list, so later versions can append.
 *
 * The graph. A link between u and v counts only when both ends report it and both are alive;
 * its cost, in both directions, is the larger of the two RTTs. So a stale list from a dead node,
 * a link that works one way only, or one node's claim alone never makes a path, and the graph
 * every node computes over is the same undirected one (hop-by-hop forwarding needs that: each
 * hop's remaining cost strictly decreases, so packets cannot loop). An RTT of 0 counts as 1 us,
 * so every link costs something.
 *
 * Tie-breaks (deterministic, the same on every node): the lower cost, then fewer hops, then the
 * next hop whose name sorts first (strcmp). */
#ifndef FOGMESH_NETLINK_ROUTE_H
#define FOGMESH_NETLINK_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "names.h"

#define ROUTE_LS_VERSION        1
#define ROUTE_NBR_MAX           32 /* neighbours in one node's list (decoder's bound) */
#define ROUTE_LS_MAX            (5 + ROUTE_NBR_MAX * 14) /* the longest encoding */
#define ROUTE_DEFAULT_MAX_NODES 1024

/* ---- the link-state record ---- */

struct route_nbr {
    uint64_t id;     /* route_node_id of the neighbour's name */
    uint32_t rtt_us; /* measured round-trip time */
};

/* The id of a node name on the wire: SipHash-2-4 (libsodium's crypto_shorthash) of the name
 * under a fixed all-zero key. Not a secret, only a short name; two names with the same id are
 * refused by route_graph_add_node. */
uint64_t route_node_id(const char *name, size_t len);

/* Encodes nbrs (n <= ROUTE_NBR_MAX, ids distinct, any order: sorted on the way) into buf.
 * Returns the length, MESH_EINVAL for too many or duplicate ids, MESH_ETOOBIG when it does not
 * fit in cap. */
int route_ls_encode(const struct route_nbr *nbrs, size_t n, uint8_t *buf, size_t cap);

/* Decodes a record into ret (sorted by id). MESH_EMALFORMED for anything unexpected (bad types,
 * an odd list, more than ROUTE_NBR_MAX neighbours, ids not strictly increasing, an RTT beyond
 * 32 bits), MESH_EUNSUPPORTED for another version. Outputs are untouched on failure. */
int route_ls_decode(const uint8_t *buf, size_t len, struct route_nbr ret[ROUTE_NBR_MAX],
                    size_t *ret_n);

/* ---- the graph ---- */

/* The nodes and what each reports. Bounded: max_nodes nodes, ROUTE_NBR_MAX reports each. */
struct route_graph;

/* max_nodes 0: ROUTE_DEFAULT_MAX_NODES. MESH_ENOMEM. */
int route_graph_new(size_t max_nodes, struct route_graph **ret);
void route_graph_free(struct route_graph *g); /* accepts NULL */

/* Forgets every node and report (to rebuild the graph from the current gossip). */
void route_graph_clear(struct route_graph *g);

/* Adds a node (name copied, a valid node name of common/names.h), or sets the alive flag of a
 * known one. A node that is not alive takes part in no link. MESH_EINVAL for a bad name,
 * MESH_EFULL beyond max_nodes, MESH_EEXISTS when another name has the same id. */
int route_graph_add_node(struct route_graph *g, const char *name, bool alive);

/* `from` reports `to` as a neighbour at rtt_us (an earlier report of the same pair is replaced).
 * MESH_ENOTFOUND when either node was not added, MESH_EINVAL for a node reporting itself,
 * MESH_EFULL beyond ROUTE_NBR_MAX reports from one node. */
int route_graph_add_edge(struct route_graph *g, const char *from, const char *to, uint32_t rtt_us);

/* `from` reports a decoded neighbour list (replacing its earlier reports). Ids that name no
 * node of the graph (not known yet, or gone) and from's own id are skipped. Returns how many
 * were skipped, or MESH_ENOTFOUND when `from` is unknown, MESH_EINVAL for n > ROUTE_NBR_MAX. */
int route_graph_set_nbrs(struct route_graph *g, const char *from, const struct route_nbr *nbrs,
                         size_t n);

size_t route_graph_count(const struct route_graph *g);

/* ---- routes ---- */

/* The route from the computing node to one destination. */
struct route_entry {
    const char *dest;     /* points into the table */
    const char *next_hop; /* NULL when unreachable, and for the node itself */
    bool reachable;       /* the node itself is reachable (hops 0, cost 0) */
    uint32_t hops;
    uint64_t cost_us; /* the sum of the link costs along the path */
};

/* The routes from one node to every node of a graph, sorted by destination name. Immutable:
 * keep the last one while the next one is computed. */
struct route_table;

/* Dijkstra (E. W. Dijkstra, "A note on two problems in connexion with graphs", 1959) from
 * `self` over the links that count (see above). MESH_ENOTFOUND when self is not in the graph
 * (self need not be marked alive: a node is alive to itself), MESH_ENOMEM. */
int route_compute(const struct route_graph *g, const char *self, struct route_table **ret,
                  struct mesh_err *err);
void route_table_free(struct route_table *t); /* accepts NULL */

size_t route_table_count(const struct route_table *t);
const struct route_entry *route_table_at(const struct route_table *t, size_t i);
/* NULL when dest is not a node of the table. */
const struct route_entry *route_table_lookup(const struct route_table *t, const char *dest);
const char *route_table_self(const struct route_table *t);

/* Picks one of n candidate nodes (the replicas of a service): among the reachable ones, those
 * whose cost is at most the best cost plus spread_pct percent of it (and plus spread_us) are
 * equally good; *cursor, advanced on each pick, takes them in turn (round robin) in name order.
 * The node itself costs 0, so a local replica is the only pick unless spread_us allows others.
 * Returns the index in cands, or MESH_ENOTFOUND when none is reachable (unknown names count as
 * unreachable). cursor may be NULL (always the first of the equally good ones). */
int route_pick(const struct route_table *t, const char *const *cands, size_t n, unsigned spread_pct,
               uint64_t spread_us, uint64_t *cursor);

#endif
