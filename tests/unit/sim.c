#include "sim.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long a push-pull to an unreachable (partitioned) node takes to fail: a TCP connect
 * timeout. To a dead node it fails after one latency (connection refused). */
#define SIM_CONNECT_TIMEOUT_MS 1000
#define SIM_PORT               7946

enum ev_kind { EV_PACKET, EV_PP_REQ, EV_PP_RESP, EV_PP_FAIL };

struct sim_event {
    uint64_t at;
    uint64_t seq; /* tie-break: FIFO among equal times, for determinism */
    enum ev_kind kind;
    size_t from, to;
    uint32_t from_gen; /* the incarnation of the simulated process, not of SWIM */
    uint64_t req;
    uint8_t *data;
    size_t len;
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

static bool reachable(const struct sim *sim, size_t a, size_t b)
{
    return sim->nodes[a]->group == sim->nodes[b]->group;
}

static void refresh(struct sim_node *nd)
{
    nd->deadline = nd->s ? swim_next_deadline(nd->s) : SWIM_NO_DEADLINE;
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
    struct sim_event ev = {.at = sim->now + sim_latency(sim),
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
        swim_free(sim->nodes[i]->s);
        free(sim->nodes[i]);
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
    size_t rcpt = (ev->kind == EV_PACKET || ev->kind == EV_PP_REQ) ? ev->to : ev->from;
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
    }
    free(ev->data);
}

/* Processes the earliest pending thing if it is due by `until`. Returns false if none. */
static bool step(struct sim *sim, uint64_t until)
{
    uint64_t tn = SWIM_NO_DEADLINE;
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < sim->n; i++) {
        uint64_t d = sim->nodes[i]->deadline;
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
