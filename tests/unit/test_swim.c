/* SWIM + Lifeguard on the simulated network (tests/unit/sim.h). Times printed are simulated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sim.h"
#include "swim.h"
#include "swim_wire.h"
#include "wire.h"

/* ---- helpers ---- */

/* Transition counters over the whole run, per subject node. */
#define TRACK_MAX 256
struct track {
    struct sim *sim;
    unsigned to_suspect[TRACK_MAX];
    unsigned to_dead[TRACK_MAX];
};

static int idx_of(const char *name)
{
    if (name[0] != 'n')
        return -1;
    char *end;
    long v = strtol(name + 1, &end, 10);
    return (*end || v < 0 || v >= TRACK_MAX) ? -1 : (int)v;
}

static void on_change(void *ctx, size_t node, const struct swim_member *m,
                      enum swim_member_state old)
{
    struct track *t = ctx;
    (void)node;
    int i = idx_of(m->name);
    if (i < 0 || old == m->state)
        return;
    if (m->state == SWIM_SUSPECT)
        t->to_suspect[i]++;
    if (m->state == SWIM_DEAD)
        t->to_dead[i]++;
}

static struct swim_config base_config(void)
{
    struct swim_config cfg;
    swim_config_init(&cfg);
    return cfg;
}

/* Starts n nodes; every node but 0 joins through node 0 at the same instant. */
static struct sim *cluster(uint64_t seed, size_t n, const struct swim_config *cfg, struct track *t)
{
    struct sim *sim = sim_new(seed, cfg);
    if (t) {
        memset(t, 0, sizeof *t);
        t->sim = sim;
        sim_on_change(sim, on_change, t);
    }
    for (size_t i = 0; i < n; i++)
        sim_add_node(sim, NULL, NULL);
    size_t seed_node = 0;
    for (size_t i = 1; i < n; i++)
        assert_int_equal(sim_join(sim, i, &seed_node, 1), 0);
    return sim;
}

static enum swim_member_state seen_as(struct sim *sim, size_t viewer, size_t subject)
{
    const struct swim_member *m = swim_member_find(sim_swim(sim, viewer), sim_name(sim, subject));
    return m ? m->state : SWIM_NONE;
}

/* Every running node sees every running node alive, and nothing else as live. */
static bool all_alive(struct sim *sim, void *ctx)
{
    (void)ctx;
    size_t up = 0;
    for (size_t i = 0; i < sim_count(sim); i++)
        up += sim_swim(sim, i) != NULL;
    for (size_t i = 0; i < sim_count(sim); i++) {
        struct swim *s = sim_swim(sim, i);
        if (!s || swim_self(s)->state != SWIM_ALIVE)
            continue;
        struct swim_counts c;
        swim_counts(s, &c);
        if (c.alive != up || c.suspect != 0)
            return false;
        for (size_t j = 0; j < sim_count(sim); j++)
            if (sim_swim(sim, j) && seen_as(sim, i, j) != SWIM_ALIVE)
                return false;
    }
    return true;
}

struct seen_ctx {
    size_t subject;
    enum swim_member_state state;
};

/* Every other running node sees `subject` in `state`. */
static bool all_see(struct sim *sim, void *ctx)
{
    const struct seen_ctx *c = ctx;
    for (size_t i = 0; i < sim_count(sim); i++) {
        if (i == c->subject || !sim_swim(sim, i))
            continue;
        if (seen_as(sim, i, c->subject) != c->state)
            return false;
    }
    return true;
}

static uint64_t total_suspicions(const struct track *t, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += t->to_suspect[i];
    return sum;
}

static uint64_t total_deaths(const struct track *t, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += t->to_dead[i];
    return sum;
}

/* Builds a gossip packet from `name`/`id` carrying msgs. */
static size_t forge(uint8_t *buf, size_t cap, const char *name, const uint8_t id[SWIM_ID_LEN],
                    const struct swim_msg *msgs, uint32_t n)
{
    struct wire_wr w;
    struct swim_hdr h;
    memset(&h, 0, sizeof h);
    h.type = SWIM_PKT_GOSSIP;
    snprintf(h.name, sizeof h.name, "%s", name);
    memcpy(h.id, id, SWIM_ID_LEN);
    h.count = n;
    wire_wr_init(&w, buf, cap);
    assert_int_equal(swim_wire_pack_hdr(&w.pk, &h), 0);
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(swim_wire_pack_msg(&w.pk, &msgs[i]), 0);
    assert_false(w.overflow);
    return w.len;
}

/* ---- scenarios ---- */

/* 128 nodes join through one seed; then a crash is detected while a node that is briefly cut
 * off (a false suspicion) refutes; then a graceful leave. */
static void test_join_detect_leave_128(void **state)
{
    (void)state;
    const size_t n = 128;
    struct swim_config cfg = base_config();
    static struct track t;
    struct sim *sim = cluster(1, n, &cfg, &t);
    uint64_t took;

    assert_true(sim_run_until(sim, all_alive, NULL, 60000, 100, &took));
    printf("# N=%zu: all see all alive after %.1f s\n", n, took / 1000.0);
    assert_true(took <= 30000);
    for (size_t i = 1; i < n; i++) {
        int rc;
        assert_true(sim_join_result(sim, i, &rc, NULL));
        assert_int_equal(rc, 0);
    }
    assert_int_equal(total_deaths(&t, n), 0);

    /* Crash n5; cut n7 off for 3 s (less than the minimum suspicion timeout). */
    const size_t dead = 5, twin = 7;
    sim_kill(sim, dead);
    sim_set_group(sim, twin, 1);
    sim_run_for(sim, 3000);
    /* Lifeguard §4.1: its own probes failed without nacks, so it trusts itself less. */
    unsigned health = swim_health_score(sim_swim(sim, twin));
    assert_true(health > 0);
    sim_heal(sim);
    struct seen_ctx dc = {dead, SWIM_DEAD};
    assert_true(sim_run_until(sim, all_see, &dc, 60000, 100, &took));
    took += 3000;
    printf("# N=%zu: crash seen dead by all after %.1f s; twin suspected %u times, dead %u\n", n,
           took / 1000.0, t.to_suspect[twin], t.to_dead[twin]);
    /* Expected: ~1 probe interval to first failure, suspicion min timeout
     * 4*log10(128)*1s = 8.4 s once 2 confirmations arrive, plus gossip. */
    assert_true(took <= 30000);
    assert_int_equal(t.to_dead[twin], 0);
    struct seen_ctx tc = {twin, SWIM_ALIVE};
    assert_true(sim_run_until(sim, all_see, &tc, 20000, 100, NULL));
    for (size_t i = 0; i < n; i++)
        if (i != dead)
            assert_int_equal(t.to_dead[i], 0);
    printf("# N=%zu: twin health score %u after 3 s cut off, %u after recovery\n", n, health,
           swim_health_score(sim_swim(sim, twin)));
    assert_true(swim_health_score(sim_swim(sim, twin)) < health);

    /* Graceful leave of n9. */
    const size_t leaver = 9;
    assert_int_equal(swim_leave(sim_swim(sim, leaver), sim_now(sim)), 0);
    assert_int_equal(swim_leave(sim_swim(sim, leaver), sim_now(sim)), MESH_ESTATE);
    struct seen_ctx lc = {leaver, SWIM_LEFT};
    assert_true(sim_run_until(sim, all_see, &lc, 20000, 100, &took));
    printf("# N=%zu: leave seen by all after %.1f s\n", n, took / 1000.0);
    int rc = 1;
    assert_true(sim_leave_result(sim, leaver, &rc));
    assert_int_equal(rc, 0);
    sim_kill(sim, leaver);
    sim_run_for(sim, 30000);
    assert_true(sim_run_until(sim, all_see, &lc, 1, 1, NULL)); /* left, never dead */
    assert_int_equal(t.to_dead[leaver], 0);
    sim_free(sim);
}

static bool halves_see_other_dead(struct sim *sim, void *ctx)
{
    size_t n = *(size_t *)ctx;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if ((i < n / 2) != (j < n / 2) && seen_as(sim, i, j) != SWIM_DEAD)
                return false;
    return true;
}

static void test_partition_heal(void **state)
{
    (void)state;
    size_t n = 32;
    struct swim_config cfg = base_config();
    static struct track t;
    struct sim *sim = cluster(2, n, &cfg, &t);
    uint64_t took;
    assert_true(sim_run_until(sim, all_alive, NULL, 60000, 100, NULL));

    for (size_t i = n / 2; i < n; i++)
        sim_set_group(sim, i, 1);
    assert_true(sim_run_until(sim, halves_see_other_dead, &n, 120000, 200, &took));
    printf("# N=%zu partition: each half sees the other dead after %.1f s\n", n, took / 1000.0);
    /* Within a half, nobody was declared dead. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if ((i < n / 2) == (j < n / 2))
                assert_int_equal(seen_as(sim, i, j), SWIM_ALIVE);

    /* Let the 30 s of gossip-to-the-dead run out, so only a rejoin can heal it. */
    sim_run_for(sim, 40000);
    sim_heal(sim);
    size_t seed = n / 2;
    assert_int_equal(sim_join(sim, 0, &seed, 1), 0);
    assert_true(sim_run_until(sim, all_alive, NULL, 60000, 100, &took));
    printf("# N=%zu partition: converged alive %.1f s after heal + one rejoin\n", n, took / 1000.0);

    /* Again, and this time nobody joins: reconnect (push-pull with a random dead member, as
     * Serf does) finds the other side. */
    for (size_t i = n / 2; i < n; i++)
        sim_set_group(sim, i, 1);
    assert_true(sim_run_until(sim, halves_see_other_dead, &n, 120000, 200, NULL));
    sim_run_for(sim, 40000);
    sim_heal(sim);
    assert_true(sim_run_until(sim, all_alive, NULL, 90000, 100, &took));
    printf("# N=%zu partition: converged alive %.1f s after heal, without a join\n", n,
           took / 1000.0);
    /* Deaths only across the cut: twice, each of n nodes saw n/2 others die. */
    assert_int_equal(total_deaths(&t, n), 2 * n * (n / 2));
    sim_free(sim);
}

static void loss_run(uint64_t seed)
{
    const size_t n = 32;
    struct swim_config cfg = base_config();
    static struct track t;
    struct sim *sim = cluster(seed, n, &cfg, &t);
    assert_true(sim_run_until(sim, all_alive, NULL, 60000, 100, NULL));
    uint64_t susp0 = total_suspicions(&t, n);

    sim_set_loss(sim, 10);
    sim_run_for(sim, 60000);
    sim_set_loss(sim, 0);
    uint64_t susp = total_suspicions(&t, n) - susp0;
    uint64_t refutes = 0;
    unsigned max_health = 0;
    for (size_t i = 0; i < n; i++) {
        refutes += swim_stats(sim_swim(sim, i))->refutes;
        unsigned h = swim_health_score(sim_swim(sim, i));
        max_health = h > max_health ? h : max_health;
    }
    printf("# seed %llu: N=%zu, 10%% loss for 60 s: %llu suspicions (member views), %llu refutes, "
           "%llu false deaths, %llu packets lost, max health score %u\n",
           (unsigned long long)seed, n, (unsigned long long)susp, (unsigned long long)refutes,
           (unsigned long long)total_deaths(&t, n), (unsigned long long)sim_net_stats(sim)->lost,
           max_health);
    assert_int_equal(total_deaths(&t, n), 0);
    assert_true(sim_run_until(sim, all_alive, NULL, 30000, 100, NULL));
    sim_free(sim);
}

static void test_loss_no_false_dead(void **state)
{
    (void)state;
    for (uint64_t seed = 3; seed < 8; seed++)
        loss_run(seed);
}

/* Lifeguard's motivating case: a node whose process stalls must neither be declared dead for a
 * pause shorter than the suspicion timeout, nor declare others dead when it wakes up. */
static void test_stall(void **state)
{
    (void)state;
    const size_t n = 16;
    struct swim_config cfg = base_config();
    static struct track t;
    struct sim *sim = cluster(12, n, &cfg, &t);
    assert_true(sim_run_until(sim, all_alive, NULL, 30000, 100, NULL));
    for (int round = 0; round < 5; round++) {
        sim_pause(sim, 3 + (size_t)round, 3000);
        sim_run_for(sim, 10000);
    }
    printf("# N=%zu: 5 stalls of 3 s: %llu suspicions, %llu deaths\n", n,
           (unsigned long long)total_suspicions(&t, n), (unsigned long long)total_deaths(&t, n));
    assert_int_equal(total_deaths(&t, n), 0);
    assert_true(sim_run_until(sim, all_alive, NULL, 30000, 100, NULL));
    sim_free(sim);
}

static bool gone(struct sim *sim, void *ctx)
{
    size_t subject = *(size_t *)ctx;
    for (size_t i = 0; i < sim_count(sim); i++)
        if (sim_swim(sim, i) && i != subject && seen_as(sim, i, subject) != SWIM_NONE)
            return false;
    return true;
}

static void test_reap(void **state)
{
    (void)state;
    struct swim_config cfg = base_config();
    cfg.dead_reap_ms = 60000;
    cfg.left_reap_ms = 60000;
    struct sim *sim = cluster(10, 6, &cfg, NULL);
    assert_true(sim_run_until(sim, all_alive, NULL, 30000, 100, NULL));
    size_t victim = 2, leaver = 3;
    sim_kill(sim, victim);
    assert_int_equal(swim_leave(sim_swim(sim, leaver), sim_now(sim)), 0);
    sim_run_for(sim, 2000);
    sim_kill(sim, leaver);
    struct seen_ctx dc = {victim, SWIM_DEAD};
    assert_true(sim_run_until(sim, all_see, &dc, 60000, 100, NULL));
    /* Tombstones stay for dead_reap_ms, then go; the table shrinks back. */
    sim_run_for(sim, 30000);
    assert_int_equal(seen_as(sim, 0, victim), SWIM_DEAD);
    assert_int_equal(seen_as(sim, 0, leaver), SWIM_LEFT);
    assert_true(sim_run_until(sim, gone, &victim, 60000, 1000, NULL));
    assert_true(sim_run_until(sim, gone, &leaver, 60000, 1000, NULL));
    assert_int_equal(swim_member_count(sim_swim(sim, 0)), 4);
    sim_free(sim);
}

static void test_restart_same_id(void **state)
{
    (void)state;
    const size_t n = 16;
    struct swim_config cfg = base_config();
    struct sim *sim = cluster(4, n, &cfg, NULL);
    assert_true(sim_run_until(sim, all_alive, NULL, 60000, 100, NULL));

    const size_t r = 3;
    assert_int_equal(swim_set_meta(sim_swim(sim, r), (const uint8_t *)"a", 1, sim_now(sim)), 0);
    assert_int_equal(swim_set_meta(sim_swim(sim, r), (const uint8_t *)"b", 1, sim_now(sim)), 0);
    uint64_t old_inc = swim_incarnation(sim_swim(sim, r));
    assert_int_equal(old_inc, 2);
    sim_run_for(sim, 5000);
    sim_kill(sim, r);
    struct seen_ctx dc = {r, SWIM_DEAD};
    assert_true(sim_run_until(sim, all_see, &dc, 60000, 100, NULL));
    assert_int_equal(swim_member_find(sim_swim(sim, 0), "n3")->incarnation, old_inc);

    /* Back with the same name and id, incarnation 0: lower than everyone remembers. */
    sim_restart(sim, r);
    assert_int_equal(swim_incarnation(sim_swim(sim, r)), 0);
    size_t seed = 0;
    assert_int_equal(sim_join(sim, r, &seed, 1), 0);
    uint64_t took;
    assert_true(sim_run_until(sim, all_alive, NULL, 30000, 100, &took));
    printf("# restart with same id: alive everywhere %.1f s after rejoin, incarnation %llu\n",
           took / 1000.0, (unsigned long long)swim_incarnation(sim_swim(sim, r)));
    assert_true(swim_incarnation(sim_swim(sim, r)) > old_inc);
    assert_int_equal(swim_member_find(sim_swim(sim, 9), "n3")->meta_len, 0);

    /* A quick restart, before anyone noticed: also fine. */
    sim_kill(sim, r);
    sim_restart(sim, r);
    assert_int_equal(sim_join(sim, r, &seed, 1), 0);
    assert_true(sim_run_until(sim, all_alive, NULL, 30000, 100, NULL));
    sim_free(sim);
}

static void test_name_conflict(void **state)
{
    (void)state;
    const size_t n = 8;
    struct swim_config cfg = base_config();
    struct sim *sim = cluster(5, n, &cfg, NULL);
    assert_true(sim_run_until(sim, all_alive, NULL, 30000, 100, NULL));

    uint8_t other_id[SWIM_ID_LEN];
    memset(other_id, 0x77, sizeof other_id);
    size_t imp = sim_add_node(sim, "n2", other_id);
    size_t seed = 0;
    assert_int_equal(sim_join(sim, imp, &seed, 1), 0);
    sim_run_for(sim, 1000);
    int rc = 0;
    const char *msg = NULL;
    assert_true(sim_join_result(sim, imp, &rc, &msg));
    printf("# conflict: join failed: %s\n", msg);
    assert_int_equal(rc, MESH_EEXISTS);
    assert_non_null(strstr(msg, "name \"n2\" is taken by node "));
    assert_int_equal(swim_stats(sim_swim(sim, 0))->pushpull_refused, 1);
    sim_kill(sim, imp);

    /* The impostor's alive gossip is ignored and counted. */
    struct swim_msg a;
    memset(&a, 0, sizeof a);
    a.type = SWIM_MSG_ALIVE;
    snprintf(a.name, sizeof a.name, "n2");
    memcpy(a.id, other_id, SWIM_ID_LEN);
    a.addr = *sim_addr(sim, imp);
    a.incarnation = 100;
    uint8_t buf[1400];
    size_t len = forge(buf, sizeof buf, "n2", other_id, &a, 1);
    struct swim *s1 = sim_swim(sim, 1);
    uint64_t before = swim_stats(s1)->impostor;
    sim_inject(sim, 1, sim_addr(sim, imp), buf, len);
    assert_int_equal(swim_stats(s1)->impostor, before + 1);
    const struct swim_member *m = swim_member_find(s1, "n2");
    assert_memory_equal(m->id, swim_self(sim_swim(sim, 2))->id, SWIM_ID_LEN);
    assert_int_equal(m->incarnation, 0);
    sim_free(sim);
}

struct meta_ctx {
    size_t subject;
    const char *meta;
};

static bool all_see_meta(struct sim *sim, void *ctx)
{
    const struct meta_ctx *c = ctx;
    size_t len = strlen(c->meta);
    for (size_t i = 0; i < sim_count(sim); i++) {
        const struct swim_member *m = swim_member_find(sim_swim(sim, i), sim_name(sim, c->subject));
        if (!m || m->meta_len != len || memcmp(m->meta, c->meta, len) != 0)
            return false;
    }
    return true;
}

static void test_meta_propagates(void **state)
{
    (void)state;
    const size_t n = 16;
    struct swim_config cfg = base_config();
    struct sim *sim = cluster(6, n, &cfg, NULL);
    assert_true(sim_run_until(sim, all_alive, NULL, 30000, 100, NULL));
    struct meta_ctx mc = {4, "arch=arm64;cpus=4;ver=2"};
    assert_int_equal(
        swim_set_meta(sim_swim(sim, 4), (const uint8_t *)mc.meta, strlen(mc.meta), sim_now(sim)),
        0);
    uint64_t took;
    assert_true(sim_run_until(sim, all_see_meta, &mc, 10000, 50, &took));
    printf("# N=%zu: metadata update seen by all after %.2f s\n", n, took / 1000.0);
    uint8_t big[SWIM_META_MAX + 1] = {0};
    assert_int_equal(swim_set_meta(sim_swim(sim, 4), big, sizeof big, sim_now(sim)), MESH_ETOOBIG);
    /* Full-size metadata still fits a packet. */
    memset(big, 'x', SWIM_META_MAX);
    big[SWIM_META_MAX] = '\0';
    mc.meta = (const char *)big;
    assert_int_equal(swim_set_meta(sim_swim(sim, 4), big, SWIM_META_MAX, sim_now(sim)), 0);
    assert_true(sim_run_until(sim, all_see_meta, &mc, 10000, 50, NULL));
    sim_free(sim);
}

static void test_table_bound(void **state)
{
    (void)state;
    struct swim_config cfg = base_config();
    cfg.max_members = 64;
    struct sim *sim = sim_new(7, &cfg);
    sim_add_node(sim, NULL, NULL);
    sim_add_node(sim, NULL, NULL);
    size_t seed = 0;
    sim_join(sim, 1, &seed, 1);
    sim_run_for(sim, 2000);
    struct swim *s = sim_swim(sim, 0);

    /* A peer floods alive messages about 2000 made-up members, 10 per packet. */
    uint8_t id[SWIM_ID_LEN] = {1, 2, 3};
    uint8_t buf[1400];
    for (int p = 0; p < 200; p++) {
        struct swim_msg msgs[10];
        for (int k = 0; k < 10; k++) {
            memset(&msgs[k], 0, sizeof msgs[k]);
            msgs[k].type = SWIM_MSG_ALIVE;
            snprintf(msgs[k].name, sizeof msgs[k].name, "fake-%d", p * 10 + k);
            msgs[k].id[0] = (uint8_t)k;
            msgs[k].addr = *sim_addr(sim, 1);
            msgs[k].addr.port = (uint16_t)(1000 + p);
        }
        size_t len = forge(buf, sizeof buf, "flooder", id, msgs, 10);
        sim_inject(sim, 0, sim_addr(sim, 1), buf, len);
    }
    assert_true(swim_member_count(s) <= 64);
    assert_true(swim_stats(s)->table_full >= 2000 - 64);
    assert_non_null(swim_member_find(s, "n1"));

    /* The same through push-pull: a state with 1000 entries. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    struct swim_hdr h;
    memset(&h, 0, sizeof h);
    h.type = SWIM_PKT_PP_REQ;
    snprintf(h.name, sizeof h.name, "flooder");
    h.count = 1000;
    assert_int_equal(swim_wire_pack_hdr(&pk, &h), 0);
    for (int i = 0; i < 1000; i++) {
        struct swim_msg e;
        memset(&e, 0, sizeof e);
        snprintf(e.name, sizeof e.name, "pp-%d", i);
        e.addr = *sim_addr(sim, 1);
        e.state = SWIM_ALIVE;
        assert_int_equal(swim_wire_pack_entry(&pk, &e), 0);
    }
    uint8_t *reply = NULL;
    size_t rlen = 0;
    assert_int_equal(swim_pushpull_recv(s, sim_addr(sim, 1), (const uint8_t *)sb.data, sb.size,
                                        sim_now(sim), &reply, &rlen, NULL),
                     0);
    free(reply);
    msgpack_sbuffer_destroy(&sb);
    assert_true(swim_member_count(s) <= 64);
    /* And the machine keeps working. */
    sim_run_for(sim, 10000);
    assert_true(swim_member_count(s) <= 64);
    assert_int_equal(seen_as(sim, 0, 1), SWIM_ALIVE);
    sim_free(sim);
}

/* Issue 10 item 3: members that no link proved are bounded, so a flood of made-up members
 * cannot take the table; proven members are marked and keep their place. */
static size_t unverified_count(const struct swim *s)
{
    size_t n = 0;
    for (size_t i = 0; i < swim_member_count(s); i++)
        n += !swim_member_at(s, i)->verified;
    return n;
}

static void test_unverified_bound(void **state)
{
    (void)state;
    struct swim_config cfg = base_config();
    cfg.max_members = 512;
    cfg.max_unverified = 32;
    struct sim *sim = sim_new(11, &cfg);
    sim_add_node(sim, NULL, NULL);
    sim_add_node(sim, NULL, NULL);
    size_t seed = 0;
    sim_join(sim, 1, &seed, 1);
    sim_run_for(sim, 2000);
    struct swim *s = sim_swim(sim, 0);
    const struct swim_member *n1 = swim_member_find(s, "n1");
    assert_non_null(n1);
    assert_false(n1->verified);
    assert_true(swim_self(s)->verified);
    /* A proof for n1's id at another address or under another name verifies nothing. */
    struct mesh_addr other = n1->addr;
    other.port++;
    swim_prove(s, n1->id, "n1", &other, sim_now(sim));
    assert_false(swim_member_find(s, "n1")->verified);
    swim_prove(s, n1->id, "n1-not", &n1->addr, sim_now(sim));
    assert_false(swim_member_find(s, "n1")->verified);
    swim_prove(s, n1->id, "n1", &n1->addr, sim_now(sim));
    assert_true(swim_member_find(s, "n1")->verified);

    uint8_t id[SWIM_ID_LEN] = {1, 2, 3};
    uint8_t buf[1400];
    for (int p = 0; p < 50; p++) {
        struct swim_msg msgs[10];
        for (int k = 0; k < 10; k++) {
            memset(&msgs[k], 0, sizeof msgs[k]);
            msgs[k].type = SWIM_MSG_ALIVE;
            snprintf(msgs[k].name, sizeof msgs[k].name, "fake-%d", p * 10 + k);
            msgs[k].id[0] = (uint8_t)k;
            msgs[k].id[1] = (uint8_t)p;
            msgs[k].addr = *sim_addr(sim, 1);
            msgs[k].addr.port = (uint16_t)(1000 + p);
        }
        size_t len = forge(buf, sizeof buf, "flooder", id, msgs, 10);
        sim_inject(sim, 0, sim_addr(sim, 1), buf, len);
    }
    assert_true(unverified_count(s) <= 32);
    assert_true(swim_stats(s)->unverified_full >= 500 - 32);
    assert_true(swim_member_find(s, "n1")->verified);
    /* Once the fakes are dead (nobody answers for them), new unverified members take the
     * places of their tombstones, so a real newcomer is not shut out for the reap time. */
    sim_run_for(sim, 60000);
    struct swim_msg late;
    memset(&late, 0, sizeof late);
    late.type = SWIM_MSG_ALIVE;
    snprintf(late.name, sizeof late.name, "newcomer");
    late.id[0] = 0xee;
    late.addr = *sim_addr(sim, 1);
    late.addr.port = 999;
    size_t len = forge(buf, sizeof buf, "flooder", id, &late, 1);
    sim_inject(sim, 0, sim_addr(sim, 1), buf, len);
    assert_non_null(swim_member_find(s, "newcomer"));
    assert_true(unverified_count(s) <= 32);
    sim_free(sim);
}

static void check_roundtrip(const struct swim_msg *in)
{
    uint8_t buf[SWIM_MSG_MAX];
    size_t len = swim_wire_encode_msg(in, buf, sizeof buf);
    assert_true(len > 0);
    struct wire_rd r;
    struct swim_msg out;
    wire_rd_init(&r, buf, len);
    assert_int_equal(swim_wire_read_msg(&r, &out), 0);
    assert_int_equal(wire_rd_left(&r), 0);
    assert_int_equal(out.type, in->type);
    switch (in->type) {
    case SWIM_MSG_ACK:
    case SWIM_MSG_NACK:
        assert_int_equal(out.seq, in->seq);
        return;
    case SWIM_MSG_PING_REQ:
        assert_int_equal(out.nack, in->nack);
        assert_true(mesh_addr_equal(&out.addr, &in->addr));
        /* fall through */
    case SWIM_MSG_PING:
        assert_int_equal(out.seq, in->seq);
        break;
    case SWIM_MSG_ALIVE:
        assert_true(mesh_addr_equal(&out.addr, &in->addr));
        assert_int_equal(out.meta_len, in->meta_len);
        assert_memory_equal(out.meta, in->meta, in->meta_len);
        /* fall through */
    default:
        assert_int_equal(out.incarnation, in->incarnation);
        break;
    }
    if (in->type == SWIM_MSG_SUSPECT || in->type == SWIM_MSG_DEAD)
        assert_string_equal(out.from, in->from);
    assert_string_equal(out.name, in->name);
    assert_memory_equal(out.id, in->id, SWIM_ID_LEN);
    /* Every strict prefix is rejected. */
    for (size_t cut = 0; cut < len; cut++) {
        wire_rd_init(&r, buf, cut);
        assert_int_equal(swim_wire_read_msg(&r, &out), MESH_EMALFORMED);
    }
}

static void test_wire_roundtrip(void **state)
{
    (void)state;
    uint8_t meta[SWIM_META_MAX];
    for (size_t i = 0; i < sizeof meta; i++)
        meta[i] = (uint8_t)(i * 7);
    struct swim_msg m;
    memset(&m, 0, sizeof m);
    memset(m.name, 'q', SWIM_NAME_MAX); /* longest name */
    m.name[SWIM_NAME_MAX] = '\0';
    memset(m.id, 0xee, SWIM_ID_LEN);
    snprintf(m.from, sizeof m.from, "accuser");
    assert_int_equal(mesh_addr_parse("[2001:db8::1]:7946", 0, &m.addr), 0);
    m.incarnation = UINT64_MAX;
    m.seq = UINT32_MAX;
    m.nack = true;
    m.meta = meta;
    m.meta_len = sizeof meta;
    for (uint8_t t = SWIM_MSG_PING; t <= SWIM_MSG_LEFT; t++) {
        m.type = t;
        check_roundtrip(&m);
    }
    assert_int_equal(mesh_addr_parse("192.0.2.9:1", 0, &m.addr), 0);
    m.type = SWIM_MSG_ALIVE;
    m.meta_len = 0;
    m.incarnation = 0;
    check_roundtrip(&m);

    /* A whole packet: header plus an unknown message type that is skipped. */
    uint8_t id[SWIM_ID_LEN] = {9};
    uint8_t buf[1400];
    struct swim_msg msgs[2];
    memset(msgs, 0, sizeof msgs);
    msgs[0].type = SWIM_MSG_ACK;
    msgs[0].seq = 42;
    msgs[1] = m;
    size_t len = forge(buf, sizeof buf, "peer", id, msgs, 2);
    struct wire_rd r;
    struct swim_hdr h;
    wire_rd_init(&r, buf, len);
    assert_int_equal(swim_wire_read_hdr(&r, &h), 0);
    assert_string_equal(h.name, "peer");
    assert_int_equal(h.count, 2);

    /* Unknown message type 99 with nested junk, then a valid ack. */
    struct wire_wr w;
    wire_wr_init(&w, buf, sizeof buf);
    memset(&h, 0, sizeof h);
    h.type = SWIM_PKT_GOSSIP;
    snprintf(h.name, sizeof h.name, "peer");
    h.count = 2;
    swim_wire_pack_hdr(&w.pk, &h);
    msgpack_pack_array(&w.pk, 3);
    msgpack_pack_uint8(&w.pk, 99);
    msgpack_pack_map(&w.pk, 1);
    msgpack_pack_str(&w.pk, 1);
    msgpack_pack_str_body(&w.pk, "k", 1);
    msgpack_pack_double(&w.pk, 1.5);
    msgpack_pack_nil(&w.pk);
    swim_wire_pack_msg(&w.pk, &msgs[0]);
    struct swim_config cfg = base_config();
    struct sim *sim = sim_new(8, &cfg);
    sim_add_node(sim, NULL, NULL);
    struct swim *s = sim_swim(sim, 0);
    sim_inject(sim, 0, sim_addr(sim, 0), buf, w.len);
    assert_int_equal(swim_stats(s)->unknown_type, 1);
    assert_int_equal(swim_stats(s)->malformed, 0);
    /* Each truncation of that packet is dropped as malformed. */
    for (size_t cut = 0; cut < w.len; cut++)
        sim_inject(sim, 0, sim_addr(sim, 0), buf, cut);
    assert_int_equal(swim_stats(s)->malformed, w.len);
    /* Another version is counted separately. */
    buf[1] = SWIM_WIRE_VERSION + 1;
    sim_inject(sim, 0, sim_addr(sim, 0), buf, w.len);
    assert_int_equal(swim_stats(s)->bad_version, 1);
    /* A lying array header asks for nothing. */
    static const uint8_t liar[] = {0x95, 0x01, 0x01, 0xa1, 'x',  0xc4, 0x10, 0,   0, 0,
                                   0,    0,    0,    0,    0,    0,    0,    0,   0, 0,
                                   0,    0,    0,    0xdd, 0xff, 0xff, 0xff, 0xff};
    sim_inject(sim, 0, sim_addr(sim, 0), liar, sizeof liar);
    assert_int_equal(swim_stats(s)->malformed, w.len + 1);

    /* Push-pull state round trip between two nodes. */
    sim_add_node(sim, NULL, NULL);
    size_t seed = 0;
    assert_int_equal(sim_join(sim, 1, &seed, 1), 0);
    sim_run_for(sim, 100);
    int rc;
    assert_true(sim_join_result(sim, 1, &rc, NULL));
    assert_int_equal(rc, 0);
    assert_int_equal(seen_as(sim, 0, 1), SWIM_ALIVE);
    assert_int_equal(seen_as(sim, 1, 0), SWIM_ALIVE);
    sim_free(sim);
}

/* Same seed, same run. */
static void run_fingerprint(uint64_t seed, uint64_t out[4])
{
    struct swim_config cfg = base_config();
    struct sim *sim = cluster(seed, 12, &cfg, NULL);
    sim_set_loss(sim, 5);
    sim_run_for(sim, 20000);
    const struct sim_net_stats *st = sim_net_stats(sim);
    out[0] = st->sent;
    out[1] = st->delivered;
    out[2] = swim_stats(sim_swim(sim, 3))->probes;
    out[3] = swim_incarnation(sim_swim(sim, 5));
    sim_free(sim);
}

static void test_deterministic(void **state)
{
    (void)state;
    uint64_t a[4], b[4], c[4];
    run_fingerprint(11, a);
    run_fingerprint(11, b);
    run_fingerprint(12, c);
    assert_memory_equal(a, b, sizeof a);
    assert_true(memcmp(a, c, sizeof a) != 0);
}

static void test_join_errors(void **state)
{
    (void)state;
    struct swim_config cfg = base_config();
    struct sim *sim = sim_new(9, &cfg);
    sim_add_node(sim, NULL, NULL);
    sim_add_node(sim, NULL, NULL);
    sim_kill(sim, 1);
    size_t seeds[2] = {1, 1};
    assert_int_equal(sim_join(sim, 0, seeds, 2), 0);
    sim_run_for(sim, 1000);
    int rc;
    const char *msg;
    assert_true(sim_join_result(sim, 0, &rc, &msg));
    assert_int_equal(rc, MESH_EIO);
    printf("# join with no live seed: %s\n", msg);
    assert_int_equal(sim_join(sim, 0, seeds, 0), MESH_EINVAL);
    /* Bad configs are refused with a message. */
    struct swim *s = NULL;
    struct mesh_err err;
    struct swim_io io = {0};
    cfg.name = "";
    assert_int_equal(swim_new(&cfg, &io, 0, &s, &err), MESH_EINVAL);
    assert_null(s);
    swim_free(NULL);
    sim_free(sim);
}

int main(void)
{
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_roundtrip),
        cmocka_unit_test(test_join_errors),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_table_bound),
        cmocka_unit_test(test_unverified_bound),
        cmocka_unit_test(test_name_conflict),
        cmocka_unit_test(test_meta_propagates),
        cmocka_unit_test(test_restart_same_id),
        cmocka_unit_test(test_reap),
        cmocka_unit_test(test_stall),
        cmocka_unit_test(test_loss_no_false_dead),
        cmocka_unit_test(test_partition_heal),
        cmocka_unit_test(test_join_detect_leave_128),
    };
    /* clang-format on */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
