/* Routing (issue 6): which nodes this node can reach directly, how far they are, and the
 * shortest paths to every node over what all nodes report (netlink/route.h).
 *
 * Neighbours. Every second the node pings up to NBR_TRACK_MAX alive members over the mesh's
 * links (a CALL_PING call: dial, Noise handshake and all, so a neighbour is a node this one can
 * really reach, not merely one gossip has heard of). A reply gives a round-trip time, smoothed
 * (EWMA, 1/4 weight for the new sample, as TCP's SRTT uses 1/8); NBR_FAILS_DOWN failures in a
 * row and the neighbour is down. The NBR_ADVERTISE_MAX nearest neighbours that are up go into
 * this node's gossip metadata (as many as fit in it), republished when the set changes (at
 * once, from the ping's answer or failure) or an RTT moved by more than half (at the next ping
 * tick; at most every NBR_REPUBLISH_MS otherwise), so gossip carries link changes within a
 * second without churning on noise.
 *
 * Routes. Every ROUTE_TICK_MS the node builds the graph of the alive (or suspect) members and
 * their advertised neighbours and runs Dijkstra from itself; the table is replaced whole, so a
 * lookup sees either the old or the new one. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dlist.h"
#include "node.h"
#include "route.h"
#include "version.h"

#define NBR_TRACK_MAX     64 /* members pinged; the mesh may be larger (see choose_targets) */
#define NBR_ADVERTISE_MAX 16
#define NBR_PING_MS       1000
#define NBR_PING_TIMEOUT  2000
#define NBR_FAILS_DOWN    3 /* a link is down after ~3 s without an answer */
#define NBR_REPUBLISH_MS  10000
#define ROUTE_TICK_MS     500
#define RELAY_TIMEOUT_MS  10000

/* One tracked member. A slot whose member went away while its ping was in flight is not reused
 * until the ping's callback has come (`inflight` with `used` false). */
struct nbr {
    char name[SWIM_NAME_MAX + 1];
    struct mesh_addr addr;
    uint64_t gen; /* sent with the ping and echoed: the reply must carry it back */
    uint64_t sent_us;
    uint32_t rtt_us; /* smoothed; 0 until the first reply */
    unsigned fails;
    bool up;
    bool inflight;
    bool used;
};

struct ping_ctx {
    struct node_routes *r;
    size_t slot;
};

struct relay;

struct node_routes {
    struct node *n;
    struct relay *relays; /* calls relayed by this node, waiting for their reply */
    size_t nrelays;
    struct nbr nbrs[NBR_TRACK_MAX];
    struct ping_ctx pctx[NBR_TRACK_MAX]; /* peers_call's ud, one per slot */
    uint64_t next_gen;
    struct route_graph *graph;
    struct route_table *table;
    struct event *ping_timer, *route_timer;
    /* what was last advertised */
    struct route_nbr adv[NBR_ADVERTISE_MAX];
    size_t nadv;
    uint64_t adv_at;
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static struct nbr *nbr_find(struct node_routes *r, const char *name)
{
    for (size_t i = 0; i < NBR_TRACK_MAX; i++)
        if (r->nbrs[i].used && strcmp(r->nbrs[i].name, name) == 0)
            return &r->nbrs[i];
    return NULL;
}

static void recompute(struct node_routes *r);
static void advertise(struct node_routes *r);

/* ---- neighbours --------------------------------------------------------------------------- */

static void serve_ping(void *ud, struct peers_req *req)
{
    (void)ud;
    peers_respond(req, 0, req->data, req->len, NULL);
}

static void on_pong(void *ud, int rc, const uint8_t *reply, size_t len, const struct mesh_err *err)
{
    struct ping_ctx *c = ud;
    struct node_routes *r = c->r;
    struct nbr *b = &r->nbrs[c->slot];
    (void)err;
    b->inflight = false;
    if (!b->used)
        return; /* the member went away meanwhile: the slot is free now */
    if (rc == 0 && len == sizeof b->gen && memcmp(reply, &b->gen, sizeof b->gen) == 0) {
        uint64_t rtt = mono_us() - b->sent_us;
        if (rtt == 0)
            rtt = 1;
        if (rtt > UINT32_MAX)
            rtt = UINT32_MAX;
        b->rtt_us = b->rtt_us ? (uint32_t)((3 * (uint64_t)b->rtt_us + rtt) / 4) : (uint32_t)rtt;
        b->fails = 0;
        if (!b->up) {
            log_debug(&r->n->log, "route: neighbour %s up, rtt %u us", b->name, b->rtt_us);
            b->up = true;
            /* Tell the others at once, not at the next tick: our own table changes now, and
             * while theirs still has the old link, a relay may hand a tunnel back to us. */
            advertise(r);
            recompute(r); /* a new link is usable at once, not at the next tick */
        }
    } else if (++b->fails >= NBR_FAILS_DOWN && b->up) {
        b->up = false;
        log_info(&r->n->log, "route: neighbour %s unreachable directly", b->name);
        /* Its link is a black hole: drop it, so that traffic for it dials afresh (and works at
         * once when the path is back, rather than after TCP's retransmission backoff). */
        peers_close_links_to(r->n->peers, &b->addr);
        advertise(r); /* at once, as above */
        recompute(r);
    }
}

/* The members to ping: every alive or suspect one while they fit in NBR_TRACK_MAX; in a larger
 * mesh, the ones already tracked stay and free slots go to members not tracked yet, in
 * membership order. */
static void track_members(struct node_routes *r)
{
    struct node *n = r->n;
    const struct swim *sw = gossip_swim(n->gossip);
    /* Forget members that are gone or dead. */
    for (size_t i = 0; i < NBR_TRACK_MAX; i++) {
        struct nbr *b = &r->nbrs[i];
        if (!b->used)
            continue;
        const struct swim_member *m = swim_member_find(sw, b->name);
        if (!m || (m->state != SWIM_ALIVE && m->state != SWIM_SUSPECT) ||
            !mesh_addr_equal(&m->addr, &b->addr))
            b->used = false; /* reusable once no ping is in flight */
    }
    for (size_t i = 0; i < swim_member_count(sw); i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        if (m == swim_self(sw) || (m->state != SWIM_ALIVE && m->state != SWIM_SUSPECT) ||
            nbr_find(r, m->name))
            continue;
        size_t k = 0;
        while (k < NBR_TRACK_MAX && (r->nbrs[k].used || r->nbrs[k].inflight))
            k++;
        if (k == NBR_TRACK_MAX)
            break;
        struct nbr *b = &r->nbrs[k];
        memset(b, 0, sizeof *b);
        b->used = true;
        snprintf(b->name, sizeof b->name, "%s", m->name);
        b->addr = m->addr;
    }
}

static int cmp_adv(const void *a, const void *b)
{
    const struct route_nbr *x = a, *y = b;
    return x->rtt_us < y->rtt_us ? -1 : x->rtt_us > y->rtt_us;
}

/* Advertises the nearest neighbours that are up, when that changed enough. */
static void advertise(struct node_routes *r)
{
    struct node *n = r->n;
    struct route_nbr up[NBR_TRACK_MAX];
    size_t nup = 0;
    for (size_t i = 0; i < NBR_TRACK_MAX; i++) {
        const struct nbr *b = &r->nbrs[i];
        if (b->used && b->up)
            up[nup++] = (struct route_nbr){route_node_id(b->name, strlen(b->name)), b->rtt_us};
    }
    qsort(up, nup, sizeof up[0], cmp_adv);
    if (nup > NBR_ADVERTISE_MAX)
        nup = NBR_ADVERTISE_MAX;
    /* Changed? The same ids (in any order) and every RTT within half of the advertised one. */
    bool same = nup == r->nadv;
    for (size_t i = 0; same && i < nup; i++) {
        size_t k = 0;
        while (k < r->nadv && r->adv[k].id != up[i].id)
            k++;
        if (k == r->nadv) {
            same = false;
            break;
        }
        uint32_t a = r->adv[k].rtt_us, b = up[i].rtt_us;
        uint32_t diff = a > b ? a - b : b - a;
        if (diff > a / 2 && diff > 200)
            same = false;
    }
    uint64_t now = mesh_now_ms();
    if (same && now - r->adv_at < NBR_REPUBLISH_MS)
        return;
    if (same && nup == 0)
        return;
    /* As many as fit in the metadata, nearest first. */
    size_t k = nup;
    for (;;) {
        int len = route_ls_encode(up, k, n->meta.ls, sizeof n->meta.ls);
        uint8_t meta[SWIM_META_MAX];
        if (len >= 0) {
            n->meta.ls_len = (size_t)len;
            if (nodemeta_encode(&n->meta, meta, sizeof meta) >= 0)
                break;
        }
        if (k == 0) {
            n->meta.ls_len = 0;
            break;
        }
        k--;
    }
    /* Remember what was wanted (all nup), so that a list trimmed to fit does not look changed
     * at every tick. */
    memcpy(r->adv, up, nup * sizeof up[0]);
    r->nadv = nup;
    r->adv_at = now;
    node_meta_publish(n);
}

static void on_ping_timer(evutil_socket_t fd, short what, void *arg)
{
    struct node_routes *r = arg;
    struct node *n = r->n;
    (void)fd;
    (void)what;
    if (!n->joined)
        return;
    track_members(r);
    for (size_t i = 0; i < NBR_TRACK_MAX; i++) {
        struct nbr *b = &r->nbrs[i];
        if (!b->used || b->inflight)
            continue;
        r->pctx[i] = (struct ping_ctx){r, i};
        b->gen = ++r->next_gen;
        b->sent_us = mono_us();
        if (peers_call(n->peers, &b->addr, CALL_PING, (const uint8_t *)&b->gen, sizeof b->gen,
                       sizeof b->gen, NBR_PING_TIMEOUT, on_pong, &r->pctx[i]) == 0) {
            b->inflight = true;
        } else {
            /* Refused at once (no route to the host, tables full): a failed ping too. */
            b->inflight = true;
            on_pong(&r->pctx[i], MESH_EIO, NULL, 0, NULL);
        }
    }
    advertise(r);
}

/* ---- routes ----------------------------------------------------------------------------- */

static void recompute(struct node_routes *r)
{
    struct node *n = r->n;
    const struct swim *sw = gossip_swim(n->gossip);
    route_graph_clear(r->graph);
    for (size_t i = 0; i < swim_member_count(sw); i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        bool alive = m->state == SWIM_ALIVE || m->state == SWIM_SUSPECT;
        route_graph_add_node(r->graph, m->name, alive);
    }
    for (size_t i = 0; i < swim_member_count(sw); i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        struct node_meta meta;
        struct route_nbr nb[ROUTE_NBR_MAX];
        size_t nn;
        if (m == swim_self(sw)) {
            /* Our own view, fresher than what we last gossiped. */
            nn = 0;
            for (size_t k = 0; k < NBR_TRACK_MAX && nn < ROUTE_NBR_MAX; k++) {
                const struct nbr *b = &r->nbrs[k];
                if (b->used && b->up)
                    nb[nn++] =
                        (struct route_nbr){route_node_id(b->name, strlen(b->name)), b->rtt_us};
            }
            route_graph_set_nbrs(r->graph, m->name, nb, nn);
            continue;
        }
        if (nodemeta_decode(m->meta, m->meta_len, &meta) < 0 || meta.ls_len == 0 ||
            route_ls_decode(meta.ls, meta.ls_len, nb, &nn) < 0)
            continue;
        route_graph_set_nbrs(r->graph, m->name, nb, nn);
    }
    struct route_table *t = NULL;
    struct mesh_err err = {0};
    if (route_compute(r->graph, n->cfg.name, &t, &err) == 0) {
        route_table_free(r->table);
        r->table = t;
    }
}

static void on_route_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    recompute(arg);
}

const struct route_table *node_routes_table(struct node *n)
{
    return n->routes ? n->routes->table : NULL;
}

int node_routes_next_hop_addr(struct node *n, const struct mesh_addr *dest,
                              struct mesh_addr *ret_hop)
{
    const struct route_table *t = node_routes_table(n);
    if (!t || !n->gossip)
        return MESH_ENOTFOUND;
    const struct swim *sw = gossip_swim(n->gossip);
    const struct swim_member *to = NULL;
    for (size_t i = 0; i < swim_member_count(sw) && !to; i++) {
        const struct swim_member *m = swim_member_at(sw, i);
        if (mesh_addr_equal(&m->addr, dest))
            to = m;
    }
    if (!to)
        return MESH_ENOTFOUND;
    /* A neighbour that answers directly is reached directly, even when a path through others
     * measures shorter: raft's connections move only when a link goes down or comes back, not
     * whenever the RTTs shift (each move costs a reconnect). */
    const struct nbr *b = nbr_find(n->routes, to->name);
    if (b && b->up) {
        *ret_hop = to->addr;
        return 0;
    }
    const struct route_entry *e = route_table_lookup(t, to->name);
    const struct swim_member *hop = e && e->next_hop ? swim_member_find(sw, e->next_hop) : NULL;
    if (!hop)
        return MESH_ENOTFOUND;
    *ret_hop = hop->addr;
    return 0;
}

/* ---- routed calls ------------------------------------------------------------------------- */

/* A call to a node this one may not reach directly (a follower's write forwarded to the
 * leader, a read index) travels hop by hop: to the next hop on the route as a CALL_RELAY whose
 * request starts with RELAY_HDR bytes
 *     [u8 version 1, u8 hops_left, u16 type (big-endian), u32 max_reply (big-endian),
 *      u8 family, 16 bytes ip, u16 port (big-endian)]   (the destination)
 * then the request itself. The node whose next hop is the destination makes the real call;
 * each relay answers with what it got back (status and message included). Only the call types
 * in relayable() are carried; at most RELAY_MAX relays are in flight on one node. */
#define RELAY_HDR  27
#define RELAY_HOPS 8
#define RELAY_MAX  64

struct relay {
    struct node_routes *r;
    struct peers_req *req;
    struct relay *prev, *next;
};

static bool relayable(uint16_t type)
{
    return type == CALL_RAFT_APPLY || type == CALL_RAFT_READ_INDEX;
}

static void put_addr(uint8_t *p, const struct mesh_addr *a)
{
    p[0] = a->family;
    memcpy(p + 1, a->ip, 16);
    p[17] = (uint8_t)(a->port >> 8);
    p[18] = (uint8_t)a->port;
}

static int get_addr(const uint8_t *p, struct mesh_addr *a)
{
    memset(a, 0, sizeof *a);
    if (p[0] != 4 && p[0] != 6)
        return MESH_EMALFORMED;
    a->family = p[0];
    memcpy(a->ip, p + 1, 16);
    a->port = (uint16_t)(p[17] << 8 | p[18]);
    return a->port ? 0 : MESH_EMALFORMED;
}

/* Sends a call (or a relayed one) towards dest: directly when dest is the next hop or there is
 * no route, else through the next hop. */
static int call_towards(struct node *n, const struct mesh_addr *dest, uint16_t type,
                        uint8_t hops_left, const uint8_t *req, size_t len, size_t max_reply,
                        uint64_t timeout_ms, peers_reply_fn cb, void *ud)
{
    struct mesh_addr hop;
    if (node_routes_next_hop_addr(n, dest, &hop) < 0 || mesh_addr_equal(&hop, dest))
        return peers_call(n->peers, dest, type, req, len, max_reply, timeout_ms, cb, ud);
    if (hops_left == 0)
        return MESH_ETOOBIG; /* no hops left */
    uint8_t *buf = malloc(RELAY_HDR + len);
    if (!buf)
        return MESH_ENOMEM;
    buf[0] = 1;
    buf[1] = hops_left;
    buf[2] = (uint8_t)(type >> 8);
    buf[3] = (uint8_t)type;
    uint32_t mr = max_reply > UINT32_MAX ? UINT32_MAX : (uint32_t)max_reply;
    buf[4] = (uint8_t)(mr >> 24);
    buf[5] = (uint8_t)(mr >> 16);
    buf[6] = (uint8_t)(mr >> 8);
    buf[7] = (uint8_t)mr;
    put_addr(buf + 8, dest);
    if (len)
        memcpy(buf + RELAY_HDR, req, len);
    int rc =
        peers_call(n->peers, &hop, CALL_RELAY, buf, RELAY_HDR + len, max_reply, timeout_ms, cb, ud);
    free(buf);
    return rc;
}

int node_call_routed(struct node *n, const struct mesh_addr *dest, uint16_t type,
                     const uint8_t *req, size_t len, size_t max_reply, uint64_t timeout_ms,
                     peers_reply_fn cb, void *ud)
{
    return call_towards(n, dest, type, RELAY_HOPS, req, len, max_reply, timeout_ms, cb, ud);
}

static void relay_free(struct relay *x)
{
    struct node_routes *r = x->r;
    DLIST_REMOVE(r->relays, x);
    r->nrelays--;
    free(x);
}

static void on_relayed(void *ud, int rc, const uint8_t *reply, size_t len,
                       const struct mesh_err *err)
{
    struct relay *x = ud;
    peers_respond(x->req, rc, reply, len, rc < 0 && err ? err->msg : NULL);
    relay_free(x);
}

static void serve_relay(void *ud, struct peers_req *req)
{
    struct node_routes *r = ud;
    struct node *n = r->n;
    struct mesh_addr dest;
    if (req->len < RELAY_HDR || req->data[0] != 1 || get_addr(req->data + 8, &dest) < 0) {
        peers_respond(req, MESH_EMALFORMED, NULL, 0, "malformed relayed call");
        return;
    }
    uint16_t type = (uint16_t)(req->data[2] << 8 | req->data[3]);
    uint32_t max_reply = (uint32_t)req->data[4] << 24 | (uint32_t)req->data[5] << 16 |
                         (uint32_t)req->data[6] << 8 | req->data[7];
    uint8_t hops = req->data[1];
    if (!relayable(type) || hops == 0 || mesh_addr_equal(&dest, &n->cfg.advertise) ||
        max_reply > (1u << 20)) {
        peers_respond(req, MESH_EINVAL, NULL, 0, "this call cannot be relayed here");
        return;
    }
    if (r->nrelays >= RELAY_MAX) {
        peers_respond(req, MESH_EFULL, NULL, 0, "too many relayed calls on this node");
        return;
    }
    struct relay *x = calloc(1, sizeof *x);
    if (!x) {
        peers_respond(req, MESH_ENOMEM, NULL, 0, "out of memory");
        return;
    }
    x->r = r;
    x->req = req;
    DLIST_PUSH(r->relays, x);
    r->nrelays++;
    int rc = call_towards(n, &dest, type, (uint8_t)(hops - 1), req->data + RELAY_HDR,
                          req->len - RELAY_HDR, max_reply, RELAY_TIMEOUT_MS, on_relayed, x);
    if (rc < 0) {
        relay_free(x);
        peers_respond(req, rc, NULL, 0, "cannot relay the call further");
    }
}

/* ---- API -------------------------------------------------------------------------------- */

static void h_routes(struct evhttp_request *req, const char *rest, void *ud)
{
    struct node *n = ud;
    (void)rest;
    struct node_routes *r = n->routes;
    json_t *routes = json_array(), *nbrs = json_array();
    const struct route_table *t = r ? r->table : NULL;
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
    for (size_t i = 0; r && i < NBR_TRACK_MAX; i++) {
        const struct nbr *b = &r->nbrs[i];
        if (!b->used)
            continue;
        /* The transport cipher of our link with it (link.h "Cipher negotiation"), if one is
         * up. */
        const char *cipher = n->peers ? peers_link_cipher(n->peers, &b->addr) : NULL;
        json_array_append_new(
            nbrs, json_pack("{s:s, s:b, s:o, s:o}", "node", b->name, "up", b->up, "rtt_ms",
                            b->rtt_us ? json_real((double)b->rtt_us / 1000.0) : json_null(),
                            "cipher", cipher ? json_string(cipher) : json_null()));
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
    if (route_graph_new(0, &r->graph) < 0)
        return mesh_errf(err, MESH_ENOMEM, "out of memory");
    static const struct api_route_def routes[] = {
        {"GET", FOGMESH_API_PREFIX "/routes", h_routes},
    };
    int rc = api_route_table(n->api, routes, 1, n, err);
    if (rc < 0)
        return rc;
    rc = peers_serve(n->peers, CALL_PING, 64, serve_ping, n);
    if (rc < 0)
        return mesh_errf(err, rc, "cannot register the ping service");
    rc = peers_serve(n->peers, CALL_RELAY, RELAY_HDR + NODE_RELAY_MAX_REQUEST, serve_relay, r);
    if (rc < 0)
        return mesh_errf(err, rc, "cannot register the relay service");
    r->ping_timer = event_new(n->loop.base, -1, EV_PERSIST, on_ping_timer, r);
    r->route_timer = event_new(n->loop.base, -1, EV_PERSIST, on_route_timer, r);
    struct timeval ping = {NBR_PING_MS / 1000, (NBR_PING_MS % 1000) * 1000};
    struct timeval tick = {0, ROUTE_TICK_MS * 1000};
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
    while (r->relays)
        relay_free(r->relays);
    route_table_free(r->table);
    route_graph_free(r->graph);
    free(r);
    n->routes = NULL;
}
