/* netlink/route: the link-state record (sizes, round trip, every refusal), shortest paths on
 * small graphs (line, ring, diamond, partition, dead nodes, one-sided reports) with their
 * tie-breaks, the replica pick, the bounds, and a 200-node random graph checked against
 * Floyd-Warshall. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "route.h"

/* ---- helpers ---- */

static struct route_graph *graph(size_t n, const char *const *names)
{
    struct route_graph *g;
    assert_int_equal(route_graph_new(0, &g), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(route_graph_add_node(g, names[i], true), 0);
    return g;
}

/* Both ends report the link. */
static void link2(struct route_graph *g, const char *a, const char *b, uint32_t rtt)
{
    assert_int_equal(route_graph_add_edge(g, a, b, rtt), 0);
    assert_int_equal(route_graph_add_edge(g, b, a, rtt), 0);
}

static struct route_table *compute(struct route_graph *g, const char *self)
{
    struct route_table *t;
    struct mesh_err err = {0};
    if (route_compute(g, self, &t, &err) < 0)
        fail_msg("route_compute: %s", err.msg);
    return t;
}

static void expect(const struct route_table *t, const char *dest, const char *nh, uint32_t hops,
                   uint64_t cost)
{
    const struct route_entry *e = route_table_lookup(t, dest);
    assert_non_null(e);
    assert_string_equal(e->dest, dest);
    if (!nh) {
        assert_false(e->reachable);
        assert_null(e->next_hop);
        return;
    }
    assert_true(e->reachable);
    assert_non_null(e->next_hop);
    if (strcmp(e->next_hop, nh) != 0)
        fail_msg("to %s: next hop %s, expected %s", dest, e->next_hop, nh);
    assert_int_equal(e->hops, hops);
    assert_int_equal(e->cost_us, cost);
}

/* ---- the link-state record ---- */

static void ls_roundtrip_and_size(void **state)
{
    (void)state;
    struct route_nbr in[16], out[ROUTE_NBR_MAX];
    uint8_t buf[ROUTE_LS_MAX];
    size_t n;
    char name[40];
    for (int i = 0; i < 16; i++) {
        /* 32-byte names, as the budget says */
        snprintf(name, sizeof name, "node-%027d", i);
        assert_int_equal(strlen(name), 32);
        in[i].id = route_node_id(name, strlen(name));
        in[i].rtt_us = 40000u + (uint32_t)i * 1000u; /* under 65 ms */
    }
    int len = route_ls_encode(in, 16, buf, sizeof buf);
    assert_true(len > 0);
    assert_true(len < 300);
    assert_int_equal(route_ls_decode(buf, (size_t)len, out, &n), 0);
    assert_int_equal(n, 16);
    /* Sorted by id, and each one found. */
    for (size_t i = 1; i < n; i++)
        assert_true(out[i - 1].id < out[i].id);
    for (int i = 0; i < 16; i++) {
        bool found = false;
        for (size_t j = 0; j < n; j++)
            if (out[j].id == in[i].id && out[j].rtt_us == in[i].rtt_us)
                found = true;
        assert_true(found);
    }
    /* The worst case fits the documented maximum. */
    struct route_nbr big[ROUTE_NBR_MAX];
    for (int i = 0; i < ROUTE_NBR_MAX; i++)
        big[i] = (struct route_nbr){UINT64_MAX - (uint64_t)i, UINT32_MAX};
    len = route_ls_encode(big, ROUTE_NBR_MAX, buf, sizeof buf);
    assert_int_equal(len, ROUTE_LS_MAX);
    assert_int_equal(route_ls_decode(buf, (size_t)len, out, &n), 0);
    assert_int_equal(n, ROUTE_NBR_MAX);
    /* Empty list. */
    len = route_ls_encode(NULL, 0, buf, sizeof buf);
    assert_int_equal(len, 3);
    assert_int_equal(route_ls_decode(buf, (size_t)len, out, &n), 0);
    assert_int_equal(n, 0);
}

static void ls_refusals(void **state)
{
    (void)state;
    struct route_nbr in[ROUTE_NBR_MAX + 1], out[ROUTE_NBR_MAX];
    uint8_t buf[ROUTE_LS_MAX + 32];
    size_t n = 77;
    for (int i = 0; i <= ROUTE_NBR_MAX; i++)
        in[i] = (struct route_nbr){(uint64_t)i + 1, 5};
    assert_int_equal(route_ls_encode(in, ROUTE_NBR_MAX + 1, buf, sizeof buf), MESH_EINVAL);
    in[1].id = in[0].id;
    assert_int_equal(route_ls_encode(in, 2, buf, sizeof buf), MESH_EINVAL);
    in[1].id = 2;
    assert_int_equal(route_ls_encode(in, 4, buf, 8), MESH_ETOOBIG);

    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
        int rc;
    } bad[] = {
        {"empty", "", 0, MESH_EMALFORMED},
        {"not an array", "\x01", 1, MESH_EMALFORMED},
        {"one element", "\x91\x01", 2, MESH_EMALFORMED},
        {"version 2", "\x92\x02\x90", 3, MESH_EUNSUPPORTED},
        {"version as string", "\x92\xa1\x31\x90", 4, MESH_EMALFORMED},
        {"odd list", "\x92\x01\x91\x05", 4, MESH_EMALFORMED},
        {"ids not increasing", "\x92\x01\x94\x05\x01\x05\x01", 7, MESH_EMALFORMED},
        {"ids decreasing", "\x92\x01\x94\x06\x01\x05\x01", 7, MESH_EMALFORMED},
        {"rtt beyond 32 bits", "\x92\x01\x92\x05\xcf\x00\x00\x00\x01\x00\x00\x00\x00", 13,
         MESH_EMALFORMED},
        {"truncated", "\x92\x01\x94\x05\x01\x06", 6, MESH_EMALFORMED},
        {"trailing bytes", "\x92\x01\x90\x00", 4, MESH_EMALFORMED},
        {"negative rtt", "\x92\x01\x92\x05\xff", 5, MESH_EMALFORMED},
        {"lying array count", "\x92\x01\xdd\xff\xff\xff\xfe", 7, MESH_EMALFORMED},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        out[0].id = 42;
        int rc = route_ls_decode((const uint8_t *)bad[i].bytes, bad[i].len, out, &n);
        if (rc != bad[i].rc)
            fail_msg("%s: %d, expected %d", bad[i].what, rc, bad[i].rc);
        assert_int_equal(n, 77); /* untouched */
        assert_int_equal(out[0].id, 42);
    }
    /* Too many neighbours on the wire. */
    struct wire_like {
        uint8_t b[ROUTE_LS_MAX + 32];
        size_t len;
    } w = {.len = 0};
    w.b[w.len++] = 0x92;
    w.b[w.len++] = 0x01;
    w.b[w.len++] = 0xdc;
    w.b[w.len++] = 0;
    w.b[w.len++] = 2 * (ROUTE_NBR_MAX + 1);
    for (int i = 0; i < ROUTE_NBR_MAX + 1; i++) {
        w.b[w.len++] = (uint8_t)(i + 1);
        w.b[w.len++] = 1;
    }
    assert_int_equal(route_ls_decode(w.b, w.len, out, &n), MESH_EMALFORMED);
    /* A later version's extra elements after the list are skipped. */
    assert_int_equal(route_ls_decode((const uint8_t *)"\x93\x01\x92\x05\x07\xa2hi", 8, out, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].id, 5);
    assert_int_equal(out[0].rtt_us, 7);
}

/* ---- shortest paths ---- */

static void line(void **state)
{
    (void)state;
    static const char *const names[] = {"a", "b", "c", "d"};
    struct route_graph *g = graph(4, names);
    link2(g, "a", "b", 100);
    link2(g, "b", "c", 200);
    link2(g, "c", "d", 300);
    struct route_table *t = compute(g, "a");
    assert_int_equal(route_table_count(t), 4);
    assert_string_equal(route_table_self(t), "a");
    const struct route_entry *self = route_table_lookup(t, "a");
    assert_true(self->reachable);
    assert_null(self->next_hop);
    assert_int_equal(self->hops, 0);
    assert_int_equal(self->cost_us, 0);
    expect(t, "b", "b", 1, 100);
    expect(t, "c", "b", 2, 300);
    expect(t, "d", "b", 3, 600);
    assert_null(route_table_lookup(t, "e"));
    assert_null(route_table_lookup(t, NULL));
    /* Entries come in name order. */
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(route_table_at(t, i)->dest, names[i]);
    assert_null(route_table_at(t, 4));
    route_table_free(t);

    t = compute(g, "c");
    expect(t, "a", "b", 2, 300);
    expect(t, "d", "d", 1, 300);
    route_table_free(t);
    route_graph_free(g);
}

static void ring_ties(void **state)
{
    (void)state;
    static const char *const names[] = {"n0", "n1", "n2", "n3", "n4", "n5"};
    struct route_graph *g = graph(6, names);
    for (int i = 0; i < 6; i++)
        link2(g, names[i], names[(i + 1) % 6], 10);
    struct route_table *t = compute(g, "n0");
    expect(t, "n1", "n1", 1, 10);
    expect(t, "n2", "n1", 2, 20);
    expect(t, "n3", "n1", 3, 30); /* two equal ways: the next hop named first wins */
    expect(t, "n4", "n5", 2, 20);
    expect(t, "n5", "n5", 1, 10);
    route_table_free(t);
    /* The same from the other side of the tie. */
    t = compute(g, "n3");
    expect(t, "n0", "n2", 3, 30);
    route_table_free(t);
    route_graph_free(g);
}

static void diamond_costs(void **state)
{
    (void)state;
    static const char *const names[] = {"a", "b", "c", "d", "e"};
    struct route_graph *g = graph(5, names);
    /* a-b-d costs 11, a-c-d costs 21: the cheaper path, though both are 2 hops. */
    link2(g, "a", "b", 10);
    link2(g, "a", "c", 1);
    link2(g, "b", "d", 1);
    link2(g, "c", "d", 20);
    struct route_table *t = compute(g, "a");
    expect(t, "d", "b", 2, 11);
    expect(t, "c", "c", 1, 1);
    route_table_free(t);
    /* A direct a-d link of the same cost: fewer hops win. */
    link2(g, "a", "d", 11);
    t = compute(g, "a");
    expect(t, "d", "d", 1, 11);
    route_table_free(t);
    /* More expensive direct link: the 2-hop path wins again; a cheap long path beats both. */
    link2(g, "a", "d", 50);
    link2(g, "c", "e", 1);
    link2(g, "e", "d", 1);
    t = compute(g, "a");
    expect(t, "d", "c", 3, 3);
    expect(t, "e", "c", 2, 2);
    route_table_free(t);
    route_graph_free(g);
}

static void both_ends_and_max_rtt(void **state)
{
    (void)state;
    static const char *const names[] = {"a", "b", "c"};
    struct route_graph *g = graph(3, names);
    /* b reports a, a does not report b: no link. */
    assert_int_equal(route_graph_add_edge(g, "b", "a", 5), 0);
    assert_int_equal(route_graph_add_edge(g, "a", "c", 7), 0);
    assert_int_equal(route_graph_add_edge(g, "c", "a", 30), 0);
    struct route_table *t = compute(g, "a");
    expect(t, "b", NULL, 0, 0);
    expect(t, "c", "c", 1, 30); /* the larger of the two RTTs, both ways */
    route_table_free(t);
    t = compute(g, "c");
    expect(t, "a", "a", 1, 30);
    route_table_free(t);
    /* A report of RTT 0 costs 1, and a later report replaces the earlier one. */
    assert_int_equal(route_graph_add_edge(g, "a", "b", 0), 0);
    assert_int_equal(route_graph_add_edge(g, "b", "a", 0), 0);
    assert_int_equal(route_graph_add_edge(g, "c", "a", 7), 0);
    t = compute(g, "a");
    expect(t, "b", "b", 1, 1);
    expect(t, "c", "c", 1, 7);
    route_table_free(t);
    route_graph_free(g);
}

static void partition_and_dead(void **state)
{
    (void)state;
    static const char *const names[] = {"a", "b", "c", "d", "x", "y"};
    struct route_graph *g = graph(6, names);
    link2(g, "a", "b", 10);
    link2(g, "b", "d", 10);
    link2(g, "a", "c", 30);
    link2(g, "c", "d", 30);
    link2(g, "x", "y", 1); /* another island */
    struct route_table *t = compute(g, "a");
    expect(t, "d", "b", 2, 20);
    expect(t, "x", NULL, 0, 0);
    expect(t, "y", NULL, 0, 0);
    route_table_free(t);
    /* b dies: its reports (and the others' stale reports of it) stop counting. */
    assert_int_equal(route_graph_add_node(g, "b", false), 0);
    t = compute(g, "a");
    expect(t, "d", "c", 2, 60);
    expect(t, "b", NULL, 0, 0);
    route_table_free(t);
    /* c too: d is cut off. */
    assert_int_equal(route_graph_add_node(g, "c", false), 0);
    t = compute(g, "a");
    expect(t, "d", NULL, 0, 0);
    route_table_free(t);
    /* A node is alive to itself, even when gossip says otherwise. */
    assert_int_equal(route_graph_add_node(g, "b", true), 0);
    assert_int_equal(route_graph_add_node(g, "a", false), 0);
    t = compute(g, "a");
    expect(t, "d", "b", 2, 20);
    route_table_free(t);
    /* b's view: a is not alive, so no path through it. */
    t = compute(g, "b");
    expect(t, "a", NULL, 0, 0);
    expect(t, "d", "d", 1, 10);
    route_table_free(t);
    route_graph_free(g);
}

static void gossip_ids(void **state)
{
    (void)state;
    static const char *const names[] = {"edge-1", "edge-2", "edge-3"};
    struct route_graph *g = graph(3, names);
    struct route_nbr n1[] = {
        {route_node_id("edge-2", 6), 100},
        {route_node_id("edge-9", 6), 5}, /* not a node (yet) */
        {route_node_id("edge-1", 6), 5}, /* itself */
    };
    struct route_nbr n2[] = {{route_node_id("edge-1", 6), 120}, {route_node_id("edge-3", 6), 50}};
    struct route_nbr n3[] = {{route_node_id("edge-2", 6), 40}};
    assert_int_equal(route_graph_set_nbrs(g, "edge-1", n1, 3), 2);
    assert_int_equal(route_graph_set_nbrs(g, "edge-2", n2, 2), 0);
    assert_int_equal(route_graph_set_nbrs(g, "edge-3", n3, 1), 0);
    assert_int_equal(route_graph_set_nbrs(g, "edge-4", n3, 1), MESH_ENOTFOUND);
    struct route_table *t = compute(g, "edge-1");
    expect(t, "edge-3", "edge-2", 2, 170);
    route_table_free(t);
    /* A new list replaces the old one: edge-1 no longer reports edge-2. */
    assert_int_equal(route_graph_set_nbrs(g, "edge-1", NULL, 0), 0);
    t = compute(g, "edge-1");
    expect(t, "edge-2", NULL, 0, 0);
    route_table_free(t);
    /* Clear forgets everything. */
    route_graph_clear(g);
    assert_int_equal(route_graph_count(g), 0);
    struct route_table *t2;
    struct mesh_err err = {0};
    assert_int_equal(route_compute(g, "edge-1", &t2, &err), MESH_ENOTFOUND);
    assert_non_null(strstr(err.msg, "edge-1"));
    route_graph_free(g);
}

static void bounds_and_errors(void **state)
{
    (void)state;
    struct route_graph *g;
    char name[16];
    assert_int_equal(route_graph_new(40, &g), 0);
    assert_int_equal(route_graph_add_node(g, "", true), MESH_EINVAL);
    assert_int_equal(route_graph_add_node(g, NULL, true), MESH_EINVAL);
    assert_int_equal(route_graph_add_node(g, "-bad", true), MESH_EINVAL);
    assert_int_equal(route_graph_add_node(g, "has space", true), MESH_EINVAL);
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "n%d", i);
        assert_int_equal(route_graph_add_node(g, name, true), 0);
    }
    assert_int_equal(route_graph_add_node(g, "n40", true), MESH_EFULL);
    assert_int_equal(route_graph_add_node(g, "n3", false), 0); /* known: only the flag */
    assert_int_equal(route_graph_count(g), 40);
    assert_int_equal(route_graph_add_edge(g, "n1", "n1", 1), MESH_EINVAL);
    assert_int_equal(route_graph_add_edge(g, "n1", "zz", 1), MESH_ENOTFOUND);
    assert_int_equal(route_graph_add_edge(g, "zz", "n1", 1), MESH_ENOTFOUND);
    for (int i = 1; i <= ROUTE_NBR_MAX; i++) {
        snprintf(name, sizeof name, "n%d", i);
        assert_int_equal(route_graph_add_edge(g, "n0", name, 1), 0);
    }
    snprintf(name, sizeof name, "n%d", ROUTE_NBR_MAX + 1);
    assert_int_equal(route_graph_add_edge(g, "n0", name, 1), MESH_EFULL);
    assert_int_equal(route_graph_add_edge(g, "n0", "n1", 9), 0); /* replacing is fine */
    struct route_nbr many[ROUTE_NBR_MAX + 1] = {0};
    assert_int_equal(route_graph_set_nbrs(g, "n0", many, ROUTE_NBR_MAX + 1), MESH_EINVAL);
    route_graph_free(g);
    route_graph_free(NULL);
    route_table_free(NULL);
}

/* ---- picking a replica ---- */

static void pick_replicas(void **state)
{
    (void)state;
    static const char *const names[] = {"a", "b", "c", "d", "e"};
    struct route_graph *g = graph(5, names);
    link2(g, "a", "b", 100);
    link2(g, "a", "c", 100);
    link2(g, "a", "d", 105);
    link2(g, "a", "e", 500);
    struct route_table *t = compute(g, "a");
    uint64_t cur = 0;
    const char *const reps[] = {"e", "d", "c", "b", "zz"};
    /* Exactly equal: b and c in turn, in name order. */
    assert_int_equal(route_pick(t, reps, 5, 0, 0, &cur), 3);
    assert_int_equal(route_pick(t, reps, 5, 0, 0, &cur), 2);
    assert_int_equal(route_pick(t, reps, 5, 0, 0, &cur), 3);
    /* Within 10%: d joins. */
    cur = 0;
    assert_int_equal(route_pick(t, reps, 5, 10, 0, &cur), 3);
    assert_int_equal(route_pick(t, reps, 5, 10, 0, &cur), 2);
    assert_int_equal(route_pick(t, reps, 5, 10, 0, &cur), 1);
    assert_int_equal(route_pick(t, reps, 5, 10, 0, &cur), 3);
    /* No cursor: always the first. */
    assert_int_equal(route_pick(t, reps, 5, 10, 0, NULL), 3);
    /* A local replica wins unless an absolute slack lets others in. */
    const char *const local[] = {"c", "a", "b"};
    cur = 0;
    assert_int_equal(route_pick(t, local, 3, 50, 0, &cur), 1);
    assert_int_equal(route_pick(t, local, 3, 50, 0, &cur), 1);
    cur = 0;
    assert_int_equal(route_pick(t, local, 3, 0, 100, &cur), 1);
    assert_int_equal(route_pick(t, local, 3, 0, 100, &cur), 2);
    assert_int_equal(route_pick(t, local, 3, 0, 100, &cur), 0);
    /* Duplicates count once. */
    const char *const dup[] = {"b", "b", "c"};
    cur = 0;
    assert_int_equal(route_pick(t, dup, 3, 0, 0, &cur), 0);
    assert_int_equal(route_pick(t, dup, 3, 0, 0, &cur), 2);
    assert_int_equal(route_pick(t, dup, 3, 0, 0, &cur), 0);
    /* None reachable. */
    route_table_free(t);
    assert_int_equal(route_graph_add_node(g, "b", false), 0);
    t = compute(g, "a");
    const char *const gone[] = {"b", "zz"};
    assert_int_equal(route_pick(t, gone, 2, 0, 0, &cur), MESH_ENOTFOUND);
    assert_int_equal(route_pick(t, gone, 0, 0, 0, &cur), MESH_ENOTFOUND);
    route_table_free(t);
    route_graph_free(g);
}

/* ---- against Floyd-Warshall ---- */

#define RN 200

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    /* xorshift64*: deterministic, so a failure reproduces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void random_vs_floyd_warshall(void **state)
{
    (void)state;
    static char names[RN][16];
    static uint32_t rep[RN][RN]; /* what i reports for j, +1 (0: no report) */
    static uint64_t dc[RN][RN];  /* FW cost */
    static uint32_t dh[RN][RN];  /* FW hops among the cheapest */
    static bool alive[RN];
    const uint64_t INF = UINT64_MAX / 4;
    struct route_graph *g;
    assert_int_equal(route_graph_new(RN, &g), 0);
    for (int i = 0; i < RN; i++) {
        /* names whose order differs from the index order */
        snprintf(names[i], sizeof names[i], "n%03d", (int)((i * 37) % RN));
        alive[i] = rnd() % 20 != 0;
        assert_int_equal(route_graph_add_node(g, names[i], alive[i]), 0);
    }
    memset(rep, 0, sizeof rep);
    for (int i = 0; i < RN; i++) {
        for (int k = 0; k < 6; k++) {
            int j = (int)(rnd() % RN);
            if (j == i || rep[i][j])
                continue;
            /* Small RTTs so that many ties happen. */
            uint32_t a = (uint32_t)(rnd() % 4), b = (uint32_t)(rnd() % 4);
            int kind = (int)(rnd() % 10);
            rep[i][j] = a + 1;
            if (kind > 0) /* one link in ten is reported by one end only */
                rep[j][i] = b + 1;
        }
    }
    for (int i = 0; i < RN; i++) {
        for (int j = 0; j < RN; j++) {
            if (!rep[i][j])
                continue;
            int rc = route_graph_add_edge(g, names[i], names[j], rep[i][j] - 1);
            if (rc == MESH_EFULL) {
                rep[i][j] = 0;
                continue;
            }
            assert_int_equal(rc, 0);
        }
    }
    /* Every node is alive to itself: the reference graph depends on the source. */
    for (int src = 0; src < RN; src += 7) {
        for (int i = 0; i < RN; i++) {
            for (int j = 0; j < RN; j++) {
                dc[i][j] = i == j ? 0 : INF;
                dh[i][j] = 0;
                bool ok = i != j && rep[i][j] && rep[j][i] && (alive[i] || i == src) &&
                          (alive[j] || j == src);
                if (ok) {
                    uint64_t c = rep[i][j] > rep[j][i] ? rep[i][j] - 1 : rep[j][i] - 1;
                    dc[i][j] = c ? c : 1;
                    dh[i][j] = 1;
                }
            }
        }
        /* Floyd-Warshall on (cost, hops) pairs, lexicographic. */
        for (int k = 0; k < RN; k++)
            for (int i = 0; i < RN; i++) {
                if (dc[i][k] >= INF)
                    continue;
                for (int j = 0; j < RN; j++) {
                    if (dc[k][j] >= INF)
                        continue;
                    uint64_t c = dc[i][k] + dc[k][j];
                    uint32_t h = dh[i][k] + dh[k][j];
                    if (c < dc[i][j] || (c == dc[i][j] && h < dh[i][j])) {
                        dc[i][j] = c;
                        dh[i][j] = h;
                    }
                }
            }
        struct route_table *t = compute(g, names[src]);
        size_t reachable = 0;
        for (int d = 0; d < RN; d++) {
            const struct route_entry *e = route_table_lookup(t, names[d]);
            assert_non_null(e);
            if (d == src) {
                assert_true(e->reachable);
                assert_int_equal(e->cost_us, 0);
                continue;
            }
            if (dc[src][d] >= INF) {
                assert_false(e->reachable);
                continue;
            }
            reachable++;
            assert_true(e->reachable);
            assert_int_equal(e->cost_us, dc[src][d]);
            assert_int_equal(e->hops, dh[src][d]);
            /* The next hop: the first-named neighbour on a cheapest, shortest path. */
            const char *want = NULL;
            for (int n = 0; n < RN; n++) {
                if (n == src || dh[src][n] != 1 || dc[src][n] >= INF)
                    continue;
                bool direct = rep[src][n] && rep[n][src] && (alive[n] || n == src);
                if (!direct)
                    continue;
                uint64_t c1 = rep[src][n] > rep[n][src] ? rep[src][n] - 1 : rep[n][src] - 1;
                c1 = c1 ? c1 : 1;
                if (c1 != dc[src][n])
                    continue; /* the direct link is not the cheapest way to n */
                uint64_t rest = n == d ? 0 : dc[n][d];
                uint32_t resth = n == d ? 0 : dh[n][d];
                if (rest >= INF || c1 + rest != dc[src][d] || 1 + resth != dh[src][d])
                    continue;
                if (!want || strcmp(names[n], want) < 0)
                    want = names[n];
            }
            assert_non_null(want);
            if (strcmp(e->next_hop, want) != 0)
                fail_msg("%s -> %s: next hop %s, expected %s", names[src], names[d], e->next_hop,
                         want);
        }
        assert_true(reachable > RN / 2); /* the graph is mostly connected */
        route_table_free(t);
    }
    route_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ls_roundtrip_and_size),
        cmocka_unit_test(ls_refusals),
        cmocka_unit_test(line),
        cmocka_unit_test(ring_ties),
        cmocka_unit_test(diamond_costs),
        cmocka_unit_test(both_ends_and_max_rtt),
        cmocka_unit_test(partition_and_dead),
        cmocka_unit_test(gossip_ids),
        cmocka_unit_test(bounds_and_errors),
        cmocka_unit_test(pick_replicas),
        cmocka_unit_test(random_vs_floyd_warshall),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
