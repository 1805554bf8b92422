/* netlink/neighbours.h and netlink/relay.h on the simulated mesh (sim.h, sim_enable_routing):
 * every node runs SWIM, neighbour probing, link state and routing over simulated links and
 * virtual time. Routes converge; go around a cut link and come back when it heals; vanish
 * across a partition and come back; a relay never hands a tunnel back to the hop it came from
 * (it takes the direct link or refuses); routed calls are relayed hop by hop around a cut link
 * and answered. Each runs in milliseconds of real time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "neighbours.h"
#include "relay.h"
#include "sim.h"

static struct swim_config base_config(void)
{
    struct swim_config cfg;
    swim_config_init(&cfg);
    return cfg;
}

/* n nodes with routing; every node but 0 joins through node 0. */
static struct sim *mesh(uint64_t seed, size_t n)
{
    struct swim_config cfg = base_config();
    struct sim *sim = sim_new(seed, &cfg);
    sim_enable_routing(sim);
    for (size_t i = 0; i < n; i++)
        sim_add_node(sim, NULL, NULL);
    size_t seed_node = 0;
    for (size_t i = 1; i < n; i++)
        assert_int_equal(sim_join(sim, i, &seed_node, 1), 0);
    return sim;
}

static const struct route_entry *route(struct sim *sim, size_t from, size_t to)
{
    const struct route_table *t = nbrs_table(sim_nbrs(sim, from));
    return t ? route_table_lookup(t, sim_name(sim, to)) : NULL;
}

static bool reaches(struct sim *sim, size_t from, size_t to)
{
    const struct route_entry *e = route(sim, from, to);
    return e && e->reachable && e->next_hop;
}

/* The next hop's index, or -1. */
static long next_hop(struct sim *sim, size_t from, size_t to)
{
    const struct route_entry *e = route(sim, from, to);
    if (!e || !e->next_hop)
        return -1;
    for (size_t i = 0; i < sim_count(sim); i++)
        if (strcmp(sim_name(sim, i), e->next_hop) == 0)
            return (long)i;
    return -1;
}

/* Every node reaches every other directly (a full mesh without cuts). */
static bool all_direct(struct sim *sim, void *ctx)
{
    (void)ctx;
    for (size_t i = 0; i < sim_count(sim); i++)
        for (size_t j = 0; j < sim_count(sim); j++)
            if (i != j && (!reaches(sim, i, j) || next_hop(sim, i, j) != (long)j ||
                           route(sim, i, j)->hops != 1))
                return false;
    return true;
}

static void test_routes_converge(void **state)
{
    (void)state;
    struct sim *sim = mesh(1, 8);
    uint64_t took;
    assert_true(sim_run_until(sim, all_direct, NULL, 20000, 100, &took));
    print_message("8 nodes: every route direct after %llu ms (simulated)\n",
                  (unsigned long long)took);
    /* Every node advertised and tracks the seven others as up. */
    for (size_t i = 0; i < 8; i++) {
        size_t up = 0;
        struct nbrs_info b;
        for (size_t k = 0; k < NBRS_TRACK_MAX; k++)
            if (nbrs_at(sim_nbrs(sim, i), k, &b) && b.up && b.rtt_us > 0)
                up++;
        assert_int_equal(up, 7);
    }
    assert_true(sim_net_stats(sim)->ls_published >= 8);
    /* Calm: no more links going down or up. */
    uint64_t downs = sim_net_stats(sim)->links_down, ups = sim_net_stats(sim)->links_up;
    sim_run_for(sim, 30000);
    assert_int_equal(sim_net_stats(sim)->links_down, downs);
    assert_int_equal(sim_net_stats(sim)->links_up, ups);
    assert_true(all_direct(sim, NULL));
    sim_free(sim);
}

struct pair {
    size_t a, b;
};

/* a reaches b and b reaches a, both through another node (2 hops). */
static bool around(struct sim *sim, void *ctx)
{
    const struct pair *p = ctx;
    return reaches(sim, p->a, p->b) && reaches(sim, p->b, p->a) &&
           next_hop(sim, p->a, p->b) != (long)p->b && next_hop(sim, p->b, p->a) != (long)p->a &&
           route(sim, p->a, p->b)->hops == 2 && route(sim, p->b, p->a)->hops == 2;
}

static bool direct(struct sim *sim, void *ctx)
{
    const struct pair *p = ctx;
    return next_hop(sim, p->a, p->b) == (long)p->b && next_hop(sim, p->b, p->a) == (long)p->a;
}

static void test_routes_go_around_a_cut_link_and_come_back(void **state)
{
    (void)state;
    struct sim *sim = mesh(2, 5);
    assert_true(sim_run_until(sim, all_direct, NULL, 20000, 100, NULL));
    struct pair p = {0, 1};
    sim_cut_link(sim, 0, 1, true);
    uint64_t took;
    assert_true(sim_run_until(sim, around, &p, 20000, 50, &took));
    print_message("cut 0-1: both go around after %llu ms\n", (unsigned long long)took);
    /* NBRS_FAILS_DOWN pings timing out (NBRS_PING_TIMEOUT_MS each, one ping in flight at a
     * time), then gossip: well under 10 s. */
    assert_true(took <= 10000);
    /* The others still reach both directly, and calls follow the route. */
    for (size_t i = 2; i < 5; i++)
        assert_int_equal(next_hop(sim, i, 0), 0);
    struct mesh_addr hop;
    assert_int_equal(nbrs_next_hop(sim_nbrs(sim, 0), sim_addr(sim, 1), &hop), 0);
    assert_false(mesh_addr_equal(&hop, sim_addr(sim, 1)));
    /* Stable while the cut lasts. */
    sim_run_for(sim, 10000);
    assert_true(around(sim, &p));
    sim_cut_link(sim, 0, 1, false);
    assert_true(sim_run_until(sim, direct, &p, 10000, 50, &took));
    print_message("healed: direct again after %llu ms\n", (unsigned long long)took);
    assert_int_equal(nbrs_next_hop(sim_nbrs(sim, 0), sim_addr(sim, 1), &hop), 0);
    assert_true(mesh_addr_equal(&hop, sim_addr(sim, 1)));
    sim_free(sim);
}

struct split {
    size_t n, cut; /* nodes [0, cut) and [cut, n) */
    bool want;     /* every route across reachable (true) or none (false) */
};

static bool across(struct sim *sim, void *ctx)
{
    const struct split *s = ctx;
    for (size_t i = 0; i < s->n; i++)
        for (size_t j = 0; j < s->n; j++)
            if ((i < s->cut) != (j < s->cut) && reaches(sim, i, j) != s->want)
                return false;
    return true;
}

static void test_partition_and_heal(void **state)
{
    (void)state;
    struct sim *sim = mesh(3, 6);
    assert_true(sim_run_until(sim, all_direct, NULL, 20000, 100, NULL));
    for (size_t i = 3; i < 6; i++)
        sim_set_group(sim, i, 1);
    struct split s = {6, 3, false};
    uint64_t took;
    assert_true(sim_run_until(sim, across, &s, 30000, 100, &took));
    print_message("partition 3|3: no route across after %llu ms\n", (unsigned long long)took);
    /* Each side still routes within itself directly. */
    assert_int_equal(next_hop(sim, 0, 2), 2);
    assert_int_equal(next_hop(sim, 4, 5), 5);
    sim_heal(sim);
    s.want = true;
    assert_true(sim_run_until(sim, across, &s, 60000, 100, &took));
    print_message("healed: every route across back after %llu ms\n", (unsigned long long)took);
    assert_true(sim_run_until(sim, all_direct, NULL, 30000, 100, NULL));
    sim_free(sim);
}

/* A relay's choice for a tunnel to `dest` that came from `from`. */
static int relay_hop(struct sim *sim, size_t at, size_t dest, size_t from, long *ret)
{
    struct mesh_addr to;
    int rc = nbrs_relay_hop(sim_nbrs(sim, at), sim_name(sim, dest), sim_addr(sim, from), &to);
    *ret = -1;
    for (size_t i = 0; rc == 0 && i < sim_count(sim); i++)
        if (mesh_addr_equal(&to, sim_addr(sim, i)))
            *ret = (long)i;
    return rc;
}

static bool b_goes_through_a(struct sim *sim, void *ctx)
{
    (void)ctx;
    return next_hop(sim, 1, 2) == 0 && next_hop(sim, 0, 2) == 2 && next_hop(sim, 0, 1) == 1;
}

static void test_relay_never_hands_a_tunnel_back(void **state)
{
    (void)state;
    long hop;
    /* a (0), b (1), d (2); b-d cut: b's route to d goes through a. A tunnel for d that comes
     * to b from a (a's route still went through b) must not go back to a: b does not reach d
     * directly either, so it refuses. */
    struct sim *sim = mesh(4, 3);
    sim_cut_link(sim, 1, 2, true);
    assert_true(sim_run_until(sim, b_goes_through_a, NULL, 20000, 50, NULL));
    assert_int_equal(relay_hop(sim, 1, 2, 0, &hop), MESH_EAGAIN);
    /* From anyone else, b passes it on along its route, to a. */
    assert_int_equal(relay_hop(sim, 1, 2, 2, &hop), 0);
    assert_int_equal(hop, 0);
    /* And a, whose route is direct, hands it to d even when it came from b. */
    assert_int_equal(relay_hop(sim, 0, 2, 1, &hop), 0);
    assert_int_equal(hop, 2);
    /* No route at all: not found. */
    assert_int_equal(
        nbrs_relay_hop(sim_nbrs(sim, 1), "nobody", sim_addr(sim, 0), &(struct mesh_addr){0}),
        MESH_ENOTFOUND);
    sim_free(sim);

    /* The same three with the b-d link up but slow (40 ms against 1 ms): b's shortest path to d
     * still goes through a, yet d answers b directly; a tunnel from a takes that link. */
    sim = mesh(5, 3);
    sim_set_latency(sim, 1, 1);
    sim_set_link_latency(sim, 1, 2, 40);
    assert_true(sim_run_until(sim, b_goes_through_a, NULL, 20000, 50, NULL));
    assert_int_equal(relay_hop(sim, 1, 2, 0, &hop), 0);
    assert_int_equal(hop, 2);
    /* A call from b to d also takes the direct link (raft's connections do not move with
     * RTTs). */
    struct mesh_addr to;
    assert_int_equal(nbrs_next_hop(sim_nbrs(sim, 1), sim_addr(sim, 2), &to), 0);
    assert_true(mesh_addr_equal(&to, sim_addr(sim, 2)));
    sim_free(sim);
}

/* ---- routed calls over the simulated mesh ----------------------------------------------- */

#define T_RELAY 0x47
#define T_APPLY 0x43
#define NODES   4

struct rnode;

struct renv {
    struct sim *sim;
    struct rnode *nodes[NODES];
    int served[NODES]; /* real calls served, per node */
    int done, done_rc;
    char reply[64];
};

struct rnode {
    struct renv *e;
    size_t idx;
    struct relay *r;
};

/* What a sim call carries: the call type, then the request. */
struct pending_call {
    peers_reply_fn cb;
    void *ud;
};

static int rio_next_hop(void *ud, const struct mesh_addr *dest, struct mesh_addr *ret_hop)
{
    struct rnode *x = ud;
    return nbrs_next_hop(sim_nbrs(x->e->sim, x->idx), dest, ret_hop);
}

static int rio_call(void *ud, const struct mesh_addr *to, uint16_t type, const uint8_t *req,
                    size_t len, size_t max_reply, uint64_t timeout_ms, peers_reply_fn cb,
                    void *cb_ud)
{
    struct rnode *x = ud;
    (void)max_reply;
    uint8_t *buf = malloc(2 + len);
    assert_non_null(buf);
    buf[0] = (uint8_t)(type >> 8);
    buf[1] = (uint8_t)type;
    if (len)
        memcpy(buf + 2, req, len);
    struct pending_call *pc = malloc(sizeof *pc);
    assert_non_null(pc);
    *pc = (struct pending_call){cb, cb_ud};
    int rc = sim_call(x->e->sim, x->idx, to, buf, 2 + len, timeout_ms, pc);
    free(buf);
    return rc;
}

static void rio_respond(void *ud, void *req, int rc, const uint8_t *reply, size_t len,
                        const char *msg)
{
    struct rnode *x = ud;
    (void)msg;
    sim_call_respond(x->e->sim, req, rc, reply, len);
}

static void serve(void *ctx, size_t node, size_t from, struct sim_call_req *req,
                  const uint8_t *data, size_t len)
{
    struct renv *e = ctx;
    (void)from;
    assert_true(len >= 2);
    uint16_t type = (uint16_t)(data[0] << 8 | data[1]);
    if (type == T_RELAY) {
        relay_serve(e->nodes[node]->r, req, data + 2, len - 2);
        return;
    }
    assert_int_equal(type, T_APPLY);
    e->served[node]++;
    char out[64];
    int n = snprintf(out, sizeof out, "%s got %.*s", sim_name(e->sim, node), (int)(len - 2),
                     (const char *)data + 2);
    sim_call_respond(e->sim, req, 0, (const uint8_t *)out, (size_t)n);
}

static void on_reply(void *ctx, size_t node, void *cookie, int rc, const uint8_t *reply, size_t len)
{
    (void)ctx;
    (void)node;
    struct pending_call *pc = cookie;
    pc->cb(pc->ud, rc, reply, len, NULL);
    free(pc);
}

static void on_done(void *ud, int rc, const uint8_t *reply, size_t len, const struct mesh_err *err)
{
    struct renv *e = ud;
    (void)err;
    e->done++;
    e->done_rc = rc;
    snprintf(e->reply, sizeof e->reply, "%.*s", (int)len, rc == 0 ? (const char *)reply : "");
}

static bool line_routes(struct sim *sim, void *ctx)
{
    (void)ctx;
    /* 0 - 1 - 2 - 3 */
    return route(sim, 0, 3) && route(sim, 0, 3)->hops == 3 && route(sim, 3, 0) &&
           route(sim, 3, 0)->hops == 3;
}

/* (Re)creates every node's relay object with hops (0: the default). */
static void relays(struct renv *e, uint8_t hops)
{
    for (size_t i = 0; i < NODES; i++) {
        if (!e->nodes[i]) {
            e->nodes[i] = calloc(1, sizeof *e->nodes[i]);
            assert_non_null(e->nodes[i]);
            *e->nodes[i] = (struct rnode){e, i, NULL};
        }
        relay_free(e->nodes[i]->r);
        struct relay_config cfg = {
            .self = *sim_addr(e->sim, i), .types = {T_APPLY}, .relay_type = T_RELAY, .hops = hops};
        struct relay_io io = {.data = e->nodes[i],
                              .next_hop = rio_next_hop,
                              .call = rio_call,
                              .respond = rio_respond};
        assert_int_equal(relay_new(&cfg, &io, &e->nodes[i]->r), 0);
    }
}

static void test_routed_call_relayed_around_cut_links(void **state)
{
    (void)state;
    struct renv e = {0};
    e.sim = mesh(6, NODES);
    sim_on_call(e.sim, serve, on_reply, &e);
    relays(&e, 0);
    assert_true(sim_run_until(e.sim, all_direct, NULL, 20000, 100, NULL));
    /* A line: only 0-1, 1-2, 2-3 work (cut once joined: the joins go through 0). */
    sim_cut_link(e.sim, 0, 2, true);
    sim_cut_link(e.sim, 0, 3, true);
    sim_cut_link(e.sim, 1, 3, true);
    assert_true(sim_run_until(e.sim, line_routes, NULL, 30000, 100, NULL));

    assert_int_equal(relay_call(e.nodes[0]->r, sim_addr(e.sim, 3), T_APPLY, (const uint8_t *)"w1",
                                2, 1024, 5000, on_done, &e),
                     0);
    sim_run_for(e.sim, 200);
    assert_int_equal(e.done, 1);
    assert_int_equal(e.done_rc, 0);
    assert_string_equal(e.reply, "n3 got w1");
    assert_int_equal(e.served[3], 1);
    assert_int_equal(relay_stats(e.nodes[0]->r)->started, 1);
    assert_int_equal(relay_stats(e.nodes[1]->r)->relayed, 1); /* passed on to 2 */
    assert_int_equal(relay_stats(e.nodes[2]->r)->relayed, 1); /* made the real call */
    for (size_t i = 0; i < NODES; i++)
        assert_int_equal(relay_inflight(e.nodes[i]->r), 0);

    /* With too few hops for the line, the relay that runs out refuses and says so. */
    relays(&e, 1);
    assert_int_equal(relay_call(e.nodes[0]->r, sim_addr(e.sim, 3), T_APPLY, (const uint8_t *)"w2",
                                2, 1024, 5000, on_done, &e),
                     0);
    sim_run_for(e.sim, 200);
    assert_int_equal(e.done, 2);
    assert_int_equal(e.done_rc, MESH_ETOOBIG);
    assert_int_equal(e.served[3], 1);
    assert_int_equal(relay_stats(e.nodes[1]->r)->refused, 1);

    /* A link on the way cut before the routes know: the relay's own call fails (after its
     * timeout), the failure goes back to the caller, and nothing stays in flight. */
    relays(&e, 0);
    sim_cut_link(e.sim, 1, 2, true);
    assert_int_equal(relay_call(e.nodes[0]->r, sim_addr(e.sim, 3), T_APPLY, (const uint8_t *)"w3",
                                2, 1024, 15000, on_done, &e),
                     0);
    sim_run_for(e.sim, RELAY_DEFAULT_TIMEOUT_MS + 200);
    assert_int_equal(e.done, 3);
    assert_int_equal(e.done_rc, MESH_EIO);
    assert_int_equal(e.served[3], 1);
    for (size_t i = 0; i < NODES; i++)
        assert_int_equal(relay_inflight(e.nodes[i]->r), 0);
    /* And then the routes know: 0 reaches 3 no more. */
    assert_false(reaches(e.sim, 0, 3));

    for (size_t i = 0; i < NODES; i++) {
        relay_free(e.nodes[i]->r);
        free(e.nodes[i]);
    }
    sim_free(e.sim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_converge),
        cmocka_unit_test(test_routes_go_around_a_cut_link_and_come_back),
        cmocka_unit_test(test_partition_and_heal),
        cmocka_unit_test(test_relay_never_hands_a_tunnel_back),
        cmocka_unit_test(test_routed_call_relayed_around_cut_links),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
