#include "sim.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlist.h"
#include "neighbours.h"

/* How long a push-pull to an unreachable (partitioned) node takes to fail: a TCP connect
 * timeout. To a dead node it fails after one latency (connection refused). */
#define SIM_CONNECT_TIMEOUT_MS 1000
#define SIM_PORT               7946

enum ev_kind {
    EV_PACKET,
    EV_PP_REQ,
    EV_PP_RESP,
    EV_PP_FAIL,
    EV_CALL_REQ,
    EV_CALL_RESP,
    EV_CALL_FAIL
};

struct sim_event {
    uint64_t at;
    uint64_t seq; /* tie-break: FIFO among equal times, for determinism */
    enum ev_kind kind;
    size_t from, to;
    uint32_t from_gen; /* the incarnation of the simulated process, not of SWIM */
    uint64_t req;
    uint8_t *data;
    size_t len;
    /* calls (EV_CALL_*): the caller's cookie, when it gives up, and what the callee serves */
    void *cookie;
    uint64_t give_up;
    enum sim_call_kind call;
};

struct sim_node {
    struct sim *sim;
    size_t idx;
    struct swim *s;
    char name[SWIM_NAME_MAX + 1];
    uint8_t id[SWIM_ID_LEN];
    struct mesh_addr addr;
    int group;
    uint32_t gen;
    uint64_t deadline;
    uint64_t paused_until; /* a stalled process: no ticks, input waits in the socket */
    bool join_done;
    int join_rc;
    char join_msg[MESH_ERRMSG_LEN];
    bool leave_done;
    int leave_rc;
    /* routing (sim_enable_routing) */
    struct nbrs *nbrs;
    uint64_t next_ping, next_route;
    void *call_ud;
};

/* A link with its own state (sim_cut_link, sim_set_link_latency): both directions. */
struct sim_link {
    size_t a, b; /* a < b */
    bool cut;
    uint32_t latency; /* 0: the network's */
};

struct sim {
    uint64_t now;
    uint64_t rng;
    uint32_t lat_min, lat_max;
    unsigned loss;
    struct swim_config base;
    struct sim_node **nodes;
    size_t n, cap;
    struct sim_event *heap;
    size_t hn, hcap;
    uint64_t ev_seq;
    sim_change_fn change_fn;
    void *change_ctx;
    struct sim_net_stats st;
    bool routing;
    struct sim_link *links;
    size_t nlinks, links_cap;
    sim_serve_fn serve_fn;
    sim_reply_fn reply_fn;
    void *serve_ctx;
    struct sim_call_req *reqs; /* served, not answered yet */
};

struct sim_call_req {
    struct sim_event ev; /* the answer, once given */
    struct sim_call_req *prev, *next;
};

/* splitmix64: small, good enough, deterministic. */
static uint64_t sim_rand64(struct sim *sim)
{
    uint64_t z = (sim->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t sim_latency(struct sim *sim)
{
    uint32_t span = sim->lat_max - sim->lat_min + 1;
    return sim->lat_min + (uint32_t)(sim_rand64(sim) % span);
}

/* ---- event heap ---- */

static bool ev_less(const struct sim_event *a, const struct sim_event *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void heap_push(struct sim *sim, struct sim_event ev)
{
    if (sim->hn == sim->hcap) {
        sim->hcap = sim->hcap ? 2 * sim->hcap : 1024;
        sim->heap = realloc(sim->heap, sim->hcap * sizeof *sim->heap);
        assert(sim->heap);
    }
    ev.seq = sim->ev_seq++;
    size_t i = sim->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(&ev, &sim->heap[p]))
            break;
        sim->heap[i] = sim->heap[p];
        i = p;
    }
    sim->heap[i] = ev;
}

static struct sim_event heap_pop(struct sim *sim)
{
    struct sim_event top = sim->heap[0];
    struct sim_event last = sim->heap[--sim->hn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= sim->hn)
            break;
        if (c + 1 < sim->hn && ev_less(&sim->heap[c + 1], &sim->heap[c]))
            c++;
        if (!ev_less(&sim->heap[c], &last))
            break;
        sim->heap[i] = sim->heap[c];
        i = c;
    }
    if (sim->hn)
        sim->heap[i] = last;
    return top;
}

/* ---- addressing ---- */

static bool addr_to_idx(const struct sim *sim, const struct mesh_addr *a, size_t *ret)
{
    if (a->family != 4 || a->ip[0] != 10 || a->ip[1] != 0 || a->port != SIM_PORT)
        return false;
    size_t i = ((size_t)a->ip[2] << 8) | a->ip[3];
    if (i >= sim->n)
        return false;
    *ret = i;
    return true;
}

static struct sim_link *link_of(const struct sim *sim, size_t a, size_t b)
{
    if (a > b) {
        size_t t = a;
        a = b;
        b = t;
    }
    for (size_t i = 0; i < sim->nlinks; i++)
        if (sim->links[i].a == a && sim->links[i].b == b)
            return &sim->links[i];
    return NULL;
}

static bool reachable(const struct sim *sim, size_t a, size_t b)
{
    const struct sim_link *l = link_of(sim, a, b);
    return sim->nodes[a]->group == sim->nodes[b]->group && !(l && l->cut);
}

/* The latency of one message from a to b. */
static uint32_t link_latency(struct sim *sim, size_t a, size_t b)
{
    const struct sim_link *l = link_of(sim, a, b);
    return l && l->latency ? l->latency : sim_latency(sim);
}

static void refresh(struct sim_node *nd)
{
    nd->deadline = nd->s ? swim_next_deadline(nd->s) : SWIM_NO_DEADLINE;
}

/* When the node's routing core is due (SWIM_NO_DEADLINE without one). */
static uint64_t routing_due(const struct sim_node *nd)
{
    if (!nd->nbrs)
        return SWIM_NO_DEADLINE;
    return nd->next_ping < nd->next_route ? nd->next_ping : nd->next_route;
}

/* ---- io callbacks ---- */

static int io_send(void *ud, const struct mesh_addr *to, const uint8_t *buf, size_t len)
{
    struct sim_node *nd = ud;
    struct sim *sim = nd->sim;
    size_t dst;
    sim->st.sent++;
    if (len > sim->base.max_packet) {
        fprintf(stderr, "sim: node %zu sent %zu bytes, over max_packet\n", nd->idx, len);
        abort();
    }
    if (!addr_to_idx(sim, to, &dst))
        return 0;
    if (sim->loss && sim_rand64(sim) % 100 < sim->loss) {
        sim->st.lost++;
        return 0;
    }
    struct sim_event ev = {.at = sim->now + link_latency(sim, nd->idx, dst),
                           .kind = EV_PACKET,
                           .from = nd->idx,
                           .to = dst,
                           .from_gen = nd->gen,
                           .len = len};
    ev.data = malloc(len ? len : 1);
    assert(ev.data);
    memcpy(ev.data, buf, len);
    heap_push(sim, ev);
    return 0;
}

static int io_pushpull(void *ud, uint64_t req, const struct mesh_addr *to, const uint8_t *state,
                       size_t len)
{
    struct sim_node *nd = ud;
    struct sim *sim = nd->sim;
    size_t dst;
    sim->st.pp_started++;
    struct sim_event ev = {
        .at = sim->now + sim_latency(sim), .from = nd->idx, .from_gen = nd->gen, .req = req};
    if (!addr_to_idx(sim, to, &dst)) {
        ev.kind = EV_PP_FAIL;
        heap_push(sim, ev);
        return 0;
    }
    ev.kind = EV_PP_REQ;
    ev.to = dst;
    ev.len = len;
    ev.data = malloc(len);
    assert(ev.data);
    memcpy(ev.data, state, len);
    heap_push(sim, ev);
    return 0;
}

static uint32_t io_random(void *ud)
{
    struct sim_node *nd = ud;
    return (uint32_t)(sim_rand64(nd->sim) >> 32);
}

static void io_changed(void *ud, const struct swim_member *m, enum swim_member_state old)
{
    struct sim_node *nd = ud;
    if (nd->sim->change_fn)
        nd->sim->change_fn(nd->sim->change_ctx, nd->idx, m, old);
}

static void io_join_done(void *ud, int rc, const struct mesh_err *err)
{
    struct sim_node *nd = ud;
    nd->join_done = true;
    nd->join_rc = rc;
    snprintf(nd->join_msg, sizeof nd->join_msg, "%s", err ? err->msg : "");
}

static void io_leave_done(void *ud, int rc)
{
    struct sim_node *nd = ud;
    nd->leave_done = true;
    nd->leave_rc = rc;
}

/* ---- routing io (netlink/neighbours.h) ---- */

static size_t nio_member_count(void *ud)
{
    struct sim_node *nd = ud;
    return swim_member_count(nd->s);
}

static void member_view(const struct swim_member *m, struct nbrs_member *ret)
{
    ret->name = m->name;
    ret->addr = m->addr;
    ret->alive = m->state == SWIM_ALIVE || m->state == SWIM_SUSPECT;
}

static void nio_member_at(void *ud, size_t i, struct nbrs_member *ret)
{
    struct sim_node *nd = ud;
    member_view(swim_member_at(nd->s, i), ret);
}

static bool nio_member_find(void *ud, const char *name, struct nbrs_member *ret)
{
    struct sim_node *nd = ud;
    const struct swim_member *m = swim_member_find(nd->s, name);
    if (!m)
        return false;
    member_view(m, ret);
    return true;
}

/* The metadata of a simulated node is its link-state record alone. */
static int nio_member_ls(void *ud, size_t i, const uint8_t **ret_ls)
{
    struct sim_node *nd = ud;
    const struct swim_member *m = swim_member_at(nd->s, i);
    if (m->meta_len == 0)
        return MESH_ENOTFOUND;
    *ret_ls = m->meta;
    return (int)m->meta_len;
}

static int nio_publish(void *ud, const uint8_t *ls, size_t len)
{
    struct sim_node *nd = ud;
    if (len > SWIM_META_MAX)
        return MESH_ETOOBIG;
    nd->sim->st.ls_published++;
    swim_set_meta(nd->s, ls, len, nd->sim->now);
    refresh(nd);
    return 0;
}

static void nio_link(void *ud, const char *name, const struct mesh_addr *addr, bool up,
                     uint32_t rtt_us)
{
    struct sim_node *nd = ud;
    (void)name;
    (void)addr;
    (void)rtt_us;
    if (up)
        nd->sim->st.links_up++;
    else
        nd->sim->st.links_down++;
}

/* Starts a call from node `from`: it arrives after the link's latency when the link works, and
 * fails at the caller after timeout_ms when it does not (a TCP connect or call timing out). */
static int call_start(struct sim *sim, size_t from, const struct mesh_addr *to,
                      enum sim_call_kind kind, const uint8_t *buf, size_t len, uint64_t timeout_ms,
                      void *cookie)
{
    struct sim_node *nd = sim->nodes[from];
    size_t dst;
    sim->st.calls++;
    struct sim_event ev = {.from = from,
                           .from_gen = nd->gen,
                           .cookie = cookie,
                           .give_up = sim->now + timeout_ms,
                           .call = kind};
    if (!addr_to_idx(sim, to, &dst) || !reachable(sim, from, dst)) {
        ev.kind = EV_CALL_FAIL;
        ev.at = ev.give_up;
        heap_push(sim, ev);
        return 0;
    }
    ev.kind = EV_CALL_REQ;
    ev.to = dst;
    ev.at = sim->now + link_latency(sim, from, dst);
    ev.len = len;
    ev.data = malloc(len ? len : 1);
    assert(ev.data);
    if (len)
        memcpy(ev.data, buf, len);
    heap_push(sim, ev);
    return 0;
}

static int nio_ping(void *ud, const struct mesh_addr *to, const uint8_t *buf, size_t len,
                    uint64_t timeout_ms, void *cookie)
{
    struct sim_node *nd = ud;
    return call_start(nd->sim, nd->idx, to, SIM_CALL_PING, buf, len, timeout_ms, cookie);
}

int sim_call(struct sim *sim, size_t from, const struct mesh_addr *to, const uint8_t *buf,
             size_t len, uint64_t timeout_ms, void *cookie)
{
    return call_start(sim, from, to, SIM_CALL_USER, buf, len, timeout_ms, cookie);
}

static void routing_start(struct sim *sim, struct sim_node *nd)
{
    struct nbrs_config cfg = {.name = nd->name};
    struct nbrs_io io = {
        .data = nd,
        .member_count = nio_member_count,
        .member_at = nio_member_at,
        .member_find = nio_member_find,
        .member_ls = nio_member_ls,
        .ping = nio_ping,
        .publish = nio_publish,
        .link = nio_link,
    };
    int rc = nbrs_new(&cfg, &io, &nd->nbrs);
    if (rc) {
        fprintf(stderr, "sim: nbrs_new: %d\n", rc);
        abort();
    }
    nd->next_ping = sim->now + NBRS_PING_MS;
    nd->next_route = sim->now + NBRS_ROUTE_MS;
}

/* ---- nodes ---- */

static void node_start(struct sim *sim, struct sim_node *nd)
{
    struct swim_config cfg = sim->base;
    struct swim_io io = {
        .data = nd,
        .send_packet = io_send,
        .pushpull = io_pushpull,
        .random = io_random,
        .member_changed = io_changed,
        .join_done = io_join_done,
        .leave_done = io_leave_done,
    };
    struct mesh_err err;
    cfg.name = nd->name;
    memcpy(cfg.id, nd->id, SWIM_ID_LEN);
    cfg.addr = nd->addr;
    nd->join_done = false;
    nd->leave_done = false;
    int rc = swim_new(&cfg, &io, sim->now, &nd->s, &err);
    if (rc) {
        fprintf(stderr, "sim: swim_new: %s\n", err.msg);
        abort();
    }
    refresh(nd);
    if (sim->routing)
        routing_start(sim, nd);
}

void sim_enable_routing(struct sim *sim)
{
    if (sim->routing)
        return;
    sim->routing = true;
    for (size_t i = 0; i < sim->n; i++)
        if (sim->nodes[i]->s)
            routing_start(sim, sim->nodes[i]);
}

struct nbrs *sim_nbrs(struct sim *sim, size_t i)
{
    return sim->nodes[i]->nbrs;
}

void sim_on_call(struct sim *sim, sim_serve_fn serve, sim_reply_fn reply, void *ctx)
{
    sim->serve_fn = serve;
    sim->reply_fn = reply;
    sim->serve_ctx = ctx;
}

void sim_call_respond(struct sim *sim, struct sim_call_req *q, int rc, const uint8_t *reply,
                      size_t len)
{
    struct sim_event r = q->ev;
    DLIST_REMOVE(sim->reqs, q);
    free(q);
    r.req = (uint64_t)(int64_t)rc;
    r.len = len;
    r.data = malloc(len ? len : 1);
    assert(r.data);
    if (len)
        memcpy(r.data, reply, len);
    r.at = sim->now + link_latency(sim, r.from, r.to);
    heap_push(sim, r);
}

static struct sim_link *link_add(struct sim *sim, size_t a, size_t b)
{
    struct sim_link *l = link_of(sim, a, b);
    if (l)
        return l;
    if (sim->nlinks == sim->links_cap) {
        sim->links_cap = sim->links_cap ? 2 * sim->links_cap : 16;
        sim->links = realloc(sim->links, sim->links_cap * sizeof *sim->links);
        assert(sim->links);
    }
    l = &sim->links[sim->nlinks++];
    *l = (struct sim_link){.a = a < b ? a : b, .b = a < b ? b : a};
    return l;
}

void sim_cut_link(struct sim *sim, size_t a, size_t b, bool cut)
{
    link_add(sim, a, b)->cut = cut;
}

void sim_set_link_latency(struct sim *sim, size_t a, size_t b, uint32_t ms)
{
    link_add(sim, a, b)->latency = ms;
}

struct sim *sim_new(uint64_t seed, const struct swim_config *base)
{
    struct sim *sim = calloc(1, sizeof *sim);
    assert(sim);
    sim->rng = seed;
    sim->base = *base;
    sim->lat_min = 1;
    sim->lat_max = 5;
    sim->now = 1000000; /* not 0: catches code that treats 0 as "unset" */
    return sim;
}

void sim_free(struct sim *sim)
{
    if (!sim)
        return;
    for (size_t i = 0; i < sim->n; i++) {
        nbrs_free(sim->nodes[i]->nbrs);
        swim_free(sim->nodes[i]->s);
        free(sim->nodes[i]);
    }
    free(sim->links);
    while (sim->reqs) {
        struct sim_call_req *q = sim->reqs;
        DLIST_REMOVE(sim->reqs, q);
        free(q);
    }
    for (size_t i = 0; i < sim->hn; i++)
        free(sim->heap[i].data);
    free(sim->heap);
    free(sim->nodes);
    free(sim);
}

size_t sim_add_node(struct sim *sim, const char *name, const uint8_t *id)
{
    assert(sim->n < 65536);
    if (sim->n == sim->cap) {
        sim->cap = sim->cap ? 2 * sim->cap : 16;
        sim->nodes = realloc(sim->nodes, sim->cap * sizeof *sim->nodes);
        assert(sim->nodes);
    }
    struct sim_node *nd = calloc(1, sizeof *nd);
    assert(nd);
    size_t i = sim->n++;
    sim->nodes[i] = nd;
    nd->sim = sim;
    nd->idx = i;
    if (name)
        snprintf(nd->name, sizeof nd->name, "%s", name);
    else
        snprintf(nd->name, sizeof nd->name, "n%zu", i);
    if (id) {
        memcpy(nd->id, id, SWIM_ID_LEN);
    } else {
        for (size_t k = 0; k < SWIM_ID_LEN; k++)
            nd->id[k] = (uint8_t)(0xa5 ^ (k * 31) ^ (i >> (8 * (k % 2))));
        nd->id[0] = (uint8_t)i;
        nd->id[1] = (uint8_t)(i >> 8);
    }
    nd->addr.family = 4;
    nd->addr.ip[0] = 10;
    nd->addr.ip[2] = (uint8_t)(i >> 8);
    nd->addr.ip[3] = (uint8_t)i;
    nd->addr.port = SIM_PORT;
    node_start(sim, nd);
    return i;
}

size_t sim_count(const struct sim *sim)
{
    return sim->n;
}

struct swim *sim_swim(struct sim *sim, size_t i)
{
    return sim->nodes[i]->s;
}

const struct mesh_addr *sim_addr(const struct sim *sim, size_t i)
{
    return &sim->nodes[i]->addr;
}

const char *sim_name(const struct sim *sim, size_t i)
{
    return sim->nodes[i]->name;
}

int sim_join(struct sim *sim, size_t i, const size_t *seeds, size_t nseeds)
{
    struct mesh_addr addrs[SWIM_MAX_SEEDS];
    if (nseeds > SWIM_MAX_SEEDS)
        return MESH_EINVAL;
    for (size_t k = 0; k < nseeds; k++)
        addrs[k] = sim->nodes[seeds[k]]->addr;
    struct sim_node *nd = sim->nodes[i];
    nd->join_done = false;
    int rc = swim_join(nd->s, addrs, nseeds, sim->now);
    refresh(nd);
    return rc;
}

bool sim_join_result(const struct sim *sim, size_t i, int *ret_rc, const char **ret_msg)
{
    const struct sim_node *nd = sim->nodes[i];
    if (!nd->join_done)
        return false;
    if (ret_rc)
        *ret_rc = nd->join_rc;
    if (ret_msg)
        *ret_msg = nd->join_msg;
    return true;
}

bool sim_leave_result(const struct sim *sim, size_t i, int *ret_rc)
{
    const struct sim_node *nd = sim->nodes[i];
    if (!nd->leave_done)
        return false;
    if (ret_rc)
        *ret_rc = nd->leave_rc;
    return true;
}

void sim_kill(struct sim *sim, size_t i)
{
    struct sim_node *nd = sim->nodes[i];
    nbrs_free(nd->nbrs); /* its pings' answers are dropped: gen changes */
    nd->nbrs = NULL;
    swim_free(nd->s);
    nd->s = NULL;
    nd->gen++;
    refresh(nd);
}

void sim_restart(struct sim *sim, size_t i)
{
    struct sim_node *nd = sim->nodes[i];
    if (nd->s)
        sim_kill(sim, i);
    node_start(sim, nd);
}

void sim_pause(struct sim *sim, size_t i, uint64_t ms)
{
    sim->nodes[i]->paused_until = sim->now + ms;
}

void sim_set_latency(struct sim *sim, uint32_t min_ms, uint32_t max_ms)
{
    sim->lat_min = min_ms;
    sim->lat_max = max_ms < min_ms ? min_ms : max_ms;
}

void sim_set_loss(struct sim *sim, unsigned percent)
{
    sim->loss = percent > 100 ? 100 : percent;
}

void sim_set_group(struct sim *sim, size_t i, int group)
{
    sim->nodes[i]->group = group;
}

void sim_heal(struct sim *sim)
{
    for (size_t i = 0; i < sim->n; i++)
        sim->nodes[i]->group = 0;
}

void sim_on_change(struct sim *sim, sim_change_fn fn, void *ctx)
{
    sim->change_fn = fn;
    sim->change_ctx = ctx;
}

uint64_t sim_now(const struct sim *sim)
{
    return sim->now;
}

const struct sim_net_stats *sim_net_stats(const struct sim *sim)
{
    return &sim->st;
}

void sim_inject(struct sim *sim, size_t i, const struct mesh_addr *from, const uint8_t *buf,
                size_t len)
{
    struct sim_node *nd = sim->nodes[i];
    if (!nd->s)
        return;
    swim_recv(nd->s, from, buf, len, sim->now);
    refresh(nd);
}

/* ---- stepping ---- */

static void fail_pp(struct sim *sim, const struct sim_event *ev, uint64_t delay)
{
    struct sim_event f = {.at = sim->now + delay,
                          .kind = EV_PP_FAIL,
                          .from = ev->from,
                          .from_gen = ev->from_gen,
                          .req = ev->req};
    heap_push(sim, f);
}

static void deliver(struct sim *sim, struct sim_event *ev)
{
    struct sim_node *src = sim->nodes[ev->from];
    size_t rcpt = (ev->kind == EV_PACKET || ev->kind == EV_PP_REQ || ev->kind == EV_CALL_REQ)
                      ? ev->to
                      : ev->from;
    if (sim->nodes[rcpt]->paused_until > sim->now) {
        ev->at = sim->nodes[rcpt]->paused_until;
        heap_push(sim, *ev); /* keeps ev->data */
        return;
    }
    switch (ev->kind) {
    case EV_PACKET: {
        struct sim_node *dst = sim->nodes[ev->to];
        if (!dst->s) {
            sim->st.to_down++;
        } else if (!reachable(sim, ev->from, ev->to)) {
            sim->st.cut++;
        } else {
            sim->st.delivered++;
            swim_recv(dst->s, &src->addr, ev->data, ev->len, sim->now);
            refresh(dst);
        }
        break;
    }
    case EV_PP_REQ: {
        struct sim_node *dst = sim->nodes[ev->to];
        if (!dst->s) {
            fail_pp(sim, ev, sim_latency(sim));
            break;
        }
        if (!reachable(sim, ev->from, ev->to)) {
            fail_pp(sim, ev, SIM_CONNECT_TIMEOUT_MS);
            break;
        }
        uint8_t *reply = NULL;
        size_t rlen = 0;
        int rc = swim_pushpull_recv(dst->s, &src->addr, ev->data, ev->len, sim->now, &reply, &rlen,
                                    NULL);
        refresh(dst);
        if (rc != 0 && rc != MESH_EEXISTS) {
            fail_pp(sim, ev, sim_latency(sim));
            break;
        }
        struct sim_event r = {.at = sim->now + sim_latency(sim),
                              .kind = EV_PP_RESP,
                              .from = ev->from,
                              .to = ev->to,
                              .from_gen = ev->from_gen,
                              .req = ev->req,
                              .data = reply,
                              .len = rlen};
        heap_push(sim, r);
        break;
    }
    case EV_PP_RESP:
        if (!src->s || src->gen != ev->from_gen)
            break;
        if (!reachable(sim, ev->from, ev->to)) {
            sim->st.pp_failed++;
            swim_pushpull_failed(src->s, ev->req, sim->now);
        } else if (swim_pushpull_merge(src->s, ev->req, ev->data, ev->len, sim->now, NULL) == 0) {
            sim->st.pp_ok++;
        } else {
            sim->st.pp_failed++;
        }
        refresh(src);
        break;
    case EV_PP_FAIL:
        if (!src->s || src->gen != ev->from_gen)
            break;
        sim->st.pp_failed++;
        swim_pushpull_failed(src->s, ev->req, sim->now);
        refresh(src);
        break;
    case EV_CALL_REQ: {
        struct sim_node *dst = sim->nodes[ev->to];
        struct sim_event r = *ev;
        r.data = NULL;
        r.len = 0;
        if (!dst->s || !reachable(sim, ev->from, ev->to)) {
            r.kind = EV_CALL_FAIL;
            r.at = ev->give_up > sim->now ? ev->give_up : sim->now;
            heap_push(sim, r);
            break;
        }
        r.kind = EV_CALL_RESP;
        if (ev->call == SIM_CALL_PING) {
            /* A ping is echoed. */
            r.data = ev->data;
            r.len = ev->len;
            ev->data = NULL;
            r.at = sim->now + link_latency(sim, ev->from, ev->to);
            heap_push(sim, r);
            break;
        }
        /* Other calls go to the test's handler, which answers now or later
         * (sim_call_respond). */
        assert(sim->serve_fn);
        struct sim_call_req *q = calloc(1, sizeof *q);
        assert(q);
        q->ev = r;
        DLIST_PUSH(sim->reqs, q);
        sim->serve_fn(sim->serve_ctx, ev->to, ev->from, q, ev->data, ev->len);
        break;
    }
    case EV_CALL_RESP:
    case EV_CALL_FAIL: {
        if (!src->s || src->gen != ev->from_gen)
            break;
        if (ev->kind == EV_CALL_RESP && !reachable(sim, ev->from, ev->to)) {
            /* The answer is lost on the way: the caller gives up at its deadline. */
            struct sim_event f = *ev;
            f.kind = EV_CALL_FAIL;
            f.data = NULL;
            f.at = ev->give_up > sim->now ? ev->give_up : sim->now;
            heap_push(sim, f);
            break;
        }
        if (ev->kind == EV_CALL_RESP && ev->at > ev->give_up) {
            ev->kind = EV_CALL_FAIL; /* too late: the caller gave up first */
        }
        int rc = ev->kind == EV_CALL_FAIL ? MESH_EIO : (int)(int64_t)ev->req;
        if (rc == 0)
            sim->st.calls_ok++;
        if (ev->call == SIM_CALL_PING) {
            if (src->nbrs)
                nbrs_pong(ev->cookie, rc, ev->data, ev->len, sim->now * 1000);
        } else if (sim->reply_fn) {
            sim->reply_fn(sim->serve_ctx, ev->from, ev->cookie, rc, ev->data, ev->len);
        }
        break;
    }
    }
    free(ev->data);
}

/* Processes the earliest pending thing if it is due by `until`. Returns false if none. */
static bool step(struct sim *sim, uint64_t until)
{
    uint64_t tn = SWIM_NO_DEADLINE;
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < sim->n; i++) {
        uint64_t d = sim->nodes[i]->deadline, r = routing_due(sim->nodes[i]);
        if (r < d)
            d = r;
        if (d != SWIM_NO_DEADLINE && d < sim->nodes[i]->paused_until)
            d = sim->nodes[i]->paused_until;
        if (d < tn) {
            tn = d;
            best = i;
        }
    }
    uint64_t te = sim->hn ? sim->heap[0].at : SWIM_NO_DEADLINE;
    if (te <= tn) {
        if (te > until)
            return false;
        if (te > sim->now)
            sim->now = te;
        struct sim_event ev = heap_pop(sim);
        deliver(sim, &ev);
        return true;
    }
    if (tn > until)
        return false;
    if (tn > sim->now)
        sim->now = tn;
    struct sim_node *nd = sim->nodes[best];
    if (routing_due(nd) <= sim->now) {
        /* The caller's timers (meshd's ping and route timers), one at a time. */
        if (nd->next_ping <= sim->now) {
            nd->next_ping += NBRS_PING_MS;
            nbrs_tick(nd->nbrs, sim->now * 1000);
        } else {
            nd->next_route += NBRS_ROUTE_MS;
            nbrs_recompute(nd->nbrs);
        }
        refresh(nd);
        return true;
    }
    swim_tick(nd->s, sim->now);
    refresh(nd);
    if (nd->deadline <= sim->now) {
        fprintf(stderr, "sim: node %zu keeps asking for a tick at %llu\n", best,
                (unsigned long long)sim->now);
        abort();
    }
    return true;
}

void sim_run_for(struct sim *sim, uint64_t ms)
{
    uint64_t until = sim->now + ms;
    while (step(sim, until))
        ;
    sim->now = until;
}

bool sim_run_until(struct sim *sim, bool (*pred)(struct sim *, void *), void *ctx, uint64_t max_ms,
                   uint64_t step_ms, uint64_t *ret_elapsed)
{
    uint64_t start = sim->now;
    for (;;) {
        if (pred(sim, ctx)) {
            if (ret_elapsed)
                *ret_elapsed = sim->now - start;
            return true;
        }
        if (sim->now - start >= max_ms)
            break;
        sim_run_for(sim, step_ms);
    }
    if (ret_elapsed)
        *ret_elapsed = sim->now - start;
    return false;
}
