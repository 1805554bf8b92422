/* Routing (issue 6), the wiring: the neighbour probing, link state and routes of
 * netlink/neighbours.h and the routed calls of netlink/relay.h, fed from this node's gossip
 * membership and its links.
 *
 * Neighbours. Every NBRS_PING_MS the node pings the members over the mesh's links (a CALL_PING
 * call: dial, Noise handshake and all, so a neighbour is a node this one can really reach, not
 * merely one gossip has heard of); the advertised neighbours travel in this node's gossip
 * metadata (n->meta.ls, as many as fit). A neighbour that stops answering has its links
 * dropped, so that traffic for it dials afresh (and works at once when the path is back,
 * rather than after TCP's retransmission backoff).
 *
 * Routes. Every NBRS_ROUTE_MS the node recomputes the table over what the alive (or suspect)
 * members advertise; a lookup sees either the old or the new one.
 *
 * Routed calls. A call to a node this one may not reach directly (a follower's write
 * forwarded to the leader, a read index) travels hop by hop as CALL_RELAY calls
 * (netlink/relay.h); only raft's forwarded writes and read indexes are relayed. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "neighbours.h"
#include "node.h"
#include "relay.h"
#include "route.h"
#include "version.h"

struct node_routes {
    struct node *n;
    struct nbrs *nbrs;
    struct relay *relay;
    struct node_meta scratch; /* member_ls's decoded metadata */
    struct event *ping_timer, *route_timer;
};

static uint64_t mono_us(void)
{
    return mesh_now_ns() / 1000u;
}

/* ---- neighbours: the io ------------------------------------------------------------------- */

static void member_view(const struct swim_member *m, struct nbrs_member *ret)
{
    ret->name = m->name;
    ret->addr = m->addr;
    ret->alive = m->state == SWIM_ALIVE || m->state == SWIM_SUSPECT;
}

static size_t io_member_count(void *ud)
{
    struct node_routes *r = ud;
    return swim_member_count(gossip_swim(r->n->gossip));
}

static void io_member_at(void *ud, size_t i, struct nbrs_member *ret)
{
    struct node_routes *r = ud;
    member_view(swim_member_at(gossip_swim(r->n->gossip), i), ret);
}

static bool io_member_find(void *ud, const char *name, struct nbrs_member *ret)
{
    struct node_routes *r = ud;
    const struct swim_member *m = swim_member_find(gossip_swim(r->n->gossip), name);
    if (!m)
        return false;
    member_view(m, ret);
    return true;
}

static int io_member_ls(void *ud, size_t i, const uint8_t **ret_ls)
{
    struct node_routes *r = ud;
    const struct swim_member *m = swim_member_at(gossip_swim(r->n->gossip), i);
    if (nodemeta_decode(m->meta, m->meta_len, &r->scratch) < 0 || r->scratch.ls_len == 0)
        return MESH_ENOTFOUND;
    *ret_ls = r->scratch.ls;
    return (int)r->scratch.ls_len;
}

static void on_pong(void *ud, int rc, const uint8_t *reply, size_t len, const struct mesh_err *err)
{
    (void)err;
    nbrs_pong(ud, rc, reply, len, mono_us());
}

static int io_ping(void *ud, const struct mesh_addr *to, const uint8_t *buf, size_t len,
                   uint64_t timeout_ms, void *cookie)
{
    struct node_routes *r = ud;
    return peers_call(r->n->peers, to, CALL_PING, buf, len, len, timeout_ms, on_pong, cookie);
}

static int io_publish(void *ud, const uint8_t *ls, size_t len)
{
    struct node_routes *r = ud;
    struct node *n = r->n;
    uint8_t meta[SWIM_META_MAX];
    if (len > sizeof n->meta.ls)
        return MESH_ETOOBIG;
    if (len)
        memcpy(n->meta.ls, ls, len);
    n->meta.ls_len = len;
    if (len && nodemeta_encode(&n->meta, meta, sizeof meta) < 0)
        return MESH_ETOOBIG; /* tried again with fewer neighbours */
    node_meta_publish(n);
    return 0;
}

static void io_link(void *ud, const char *name, const struct mesh_addr *addr, bool up,
                    uint32_t rtt_us)
{
    struct node_routes *r = ud;
    if (up) {
        log_debug(&r->n->log, "route: neighbour %s up, rtt %u us", name, rtt_us);
        return;
    }
    log_info(&r->n->log, "route: neighbour %s unreachable directly", name);
    /* Its link is a black hole: drop it (see the top of this file). */
    peers_close_links_to(r->n->peers, addr);
}

static void serve_ping(void *ud, struct peers_req *req)
{
    (void)ud;
    peers_respond(req, 0, req->data, req->len, NULL);
}

static void on_ping_timer(evutil_socket_t fd, short what, void *arg)
{
    struct node_routes *r = arg;
    (void)fd;
    (void)what;
    if (!r->n->joined)
        return;
    nbrs_tick(r->nbrs, mono_us());
}

static void on_route_timer(evutil_socket_t fd, short what, void *arg)
{
    struct node_routes *r = arg;
    (void)fd;
    (void)what;
    nbrs_recompute(r->nbrs);
}

const struct route_table *node_routes_table(struct node *n)
{
    return n->routes ? nbrs_table(n->routes->nbrs) : NULL;
}

int node_routes_next_hop_addr(struct node *n, const struct mesh_addr *dest,
                              struct mesh_addr *ret_hop)
{
    if (!n->routes || !n->gossip)
        return MESH_ENOTFOUND;
    return nbrs_next_hop(n->routes->nbrs, dest, ret_hop);
}

int node_routes_relay_hop(struct node *n, const char *dest, const struct mesh_addr *from,
                          struct mesh_addr *ret_hop)
{
    if (!n->routes || !n->gossip)
        return MESH_ENOTFOUND;
    return nbrs_relay_hop(n->routes->nbrs, dest, from, ret_hop);
}

/* ---- routed calls: the io ----------------------------------------------------------------- */

static int relay_io_next_hop(void *ud, const struct mesh_addr *dest, struct mesh_addr *ret_hop)
{
    struct node_routes *r = ud;
    return node_routes_next_hop_addr(r->n, dest, ret_hop);
}

static int relay_io_call(void *ud, const struct mesh_addr *to, uint16_t type, const uint8_t *req,
                         size_t len, size_t max_reply, uint64_t timeout_ms, peers_reply_fn cb,
                         void *cb_ud)
{
    struct node_routes *r = ud;
    return peers_call(r->n->peers, to, type, req, len, max_reply, timeout_ms, cb, cb_ud);
}

static void relay_io_respond(void *ud, void *req, int rc, const uint8_t *reply, size_t len,
                             const char *msg)
{
    (void)ud;
    peers_respond(req, rc, reply, len, msg);
}

int node_call_routed(struct node *n, const struct mesh_addr *dest, uint16_t type,
                     const uint8_t *req, size_t len, size_t max_reply, uint64_t timeout_ms,
                     peers_reply_fn cb, void *ud)
{
    if (!n->routes)
        return peers_call(n->peers, dest, type, req, len, max_reply, timeout_ms, cb, ud);
    return relay_call(n->routes->relay, dest, type, req, len, max_reply, timeout_ms, cb, ud);
}

static void serve_relay(void *ud, struct peers_req *req)
{
    struct node_routes *r = ud;
    relay_serve(r->relay, req, req->data, req->len);
}

/* ---- API -------------------------------------------------------------------------------- */

static void h_routes(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    (void)rest;
    struct node_routes *r = n->routes;
    json_t *routes = json_array(), *nbrs = json_array();
    const struct route_table *t = r ? nbrs_table(r->nbrs) : NULL;
    for (size_t i = 0; t && i < route_table_count(t); i++) {
        const struct route_entry *e = route_table_at(t, i);
        if (strcmp(e->dest, n->cfg.name) == 0)
            continue;
        json_array_append_new(
            routes, json_pack("{s:s, s:o, s:b, s:o, s:o}", "node", e->dest, "next_hop",
                              e->next_hop ? json_string(e->next_hop) : json_null(), "reachable",
                              e->reachable && e->next_hop, "hops",
                              e->next_hop ? json_integer(e->hops) : json_null(), "cost_ms",
                              e->next_hop ? json_real((double)e->cost_us / 1000.0) : json_null()));
    }
    struct nbrs_info b;
    for (size_t i = 0; r && i < NBRS_TRACK_MAX; i++) {
        if (!nbrs_at(r->nbrs, i, &b))
            continue;
        /* The transport cipher of our link with it (link.h "Cipher negotiation"), if one is
         * up. */
        const char *cipher = n->peers ? peers_link_cipher(n->peers, &b.addr) : NULL;
        json_array_append_new(
            nbrs, json_pack("{s:s, s:b, s:o, s:o}", "node", b.name, "up", b.up, "rtt_ms",
                            b.rtt_us ? json_real((double)b.rtt_us / 1000.0) : json_null(), "cipher",
                            cipher ? json_string(cipher) : json_null()));
    }
    api_reply_json(
        req, 200,
        json_pack("{s:s, s:o, s:o}", "node", n->cfg.name, "routes", routes, "neighbours", nbrs));
}

int node_routes_start(struct node *n, struct mesh_err *err)
{
    struct node_routes *r = calloc(1, sizeof *r);
    if (!r)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    r->n = n;
    n->routes = r;
    struct nbrs_config ncfg = {.name = n->cfg.name};
    struct nbrs_io nio = {
        .data = r,
        .member_count = io_member_count,
        .member_at = io_member_at,
        .member_find = io_member_find,
        .member_ls = io_member_ls,
        .ping = io_ping,
        .publish = io_publish,
        .link = io_link,
    };
    int rc = nbrs_new(&ncfg, &nio, &r->nbrs);
    if (rc < 0)
        return mesh_errf(err, rc, "routes: %s", mesh_strerror(rc));
    struct relay_config rcfg = {
        .self = n->cfg.advertise,
        .types = {CALL_RAFT_APPLY, CALL_RAFT_READ_INDEX},
        .relay_type = CALL_RELAY,
    };
    struct relay_io rio = {
        .data = r,
        .next_hop = relay_io_next_hop,
        .call = relay_io_call,
        .respond = relay_io_respond,
    };
    rc = relay_new(&rcfg, &rio, &r->relay);
    if (rc < 0)
        return mesh_errf(err, rc, "routed calls: %s", mesh_strerror(rc));
    static const struct api_route_def routes[] = {
        {"GET", FOGMESH_API_PREFIX "/routes", h_routes},
    };
    rc = api_route_table(n->api, routes, 1, n, err);
    if (rc < 0)
        return rc;
    rc = peers_serve(n->peers, CALL_PING, 64, serve_ping, n);
    if (rc < 0)
        return mesh_errf(err, rc, "cannot register the ping service");
    rc = peers_serve(n->peers, CALL_RELAY, RELAY_HDR_LEN + NODE_RELAY_MAX_REQUEST, serve_relay, r);
    if (rc < 0)
        return mesh_errf(err, rc, "cannot register the relay service");
    r->ping_timer = event_new(n->loop.base, -1, EV_PERSIST, on_ping_timer, r);
    r->route_timer = event_new(n->loop.base, -1, EV_PERSIST, on_route_timer, r);
    struct timeval ping = mesh_ms_to_timeval(NBRS_PING_MS);
    struct timeval tick = mesh_ms_to_timeval(NBRS_ROUTE_MS);
    if (!r->ping_timer || !r->route_timer || event_add(r->ping_timer, &ping) != 0 ||
        event_add(r->route_timer, &tick) != 0)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    return 0;
}

void node_routes_stop(struct node *n)
{
    struct node_routes *r = n->routes;
    if (!r)
        return;
    if (r->ping_timer)
        event_free(r->ping_timer);
    if (r->route_timer)
        event_free(r->route_timer);
    /* After peers_free their callbacks never come: free what waits. */
    relay_free(r->relay);
    nbrs_free(r->nbrs);
    free(r);
    n->routes = NULL;
}
