/* The desired-state feed (consensus/feed.h) on the simulated network (sim.c): 3 "replicas"
 * take the writes (as raft would apply them: fsm_apply_cmd + feed_record), every other node
 * pulls. The adverts travel as gossip metadata would: every FEED_T_ROUND_MS each node sees the
 * adverts of a fixed set of neighbours (a ring plus random ones, as the bounded link graph);
 * pulls are sim_call's. Liars forge adverts and replies in the driver. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <unistd.h>

#include "atomicfile.h"
#include "err.h"
#include "feed.h"
#include "fsm.h"
#include "sim.h"

#define FEED_T_ROUND_MS 200
#define FEED_T_NBRS     6
#define FEED_T_REPLICAS 3

/* GARBAGE, SILENT and FORGE advertise revision UINT64_MAX; GARBAGE answers random bytes, SILENT
 * fails every call, FORGE serves what it really holds; DIGEST advertises what it holds and
 * serves it with one digest byte flipped. */
enum liar { HONEST, LIAR_GARBAGE, LIAR_DIGEST, LIAR_SILENT, LIAR_FORGE };

struct tnode {
    struct fsm *fsm;
    struct feed *feed;
    uint64_t timer;
    size_t nbrs[FEED_T_NBRS];
    enum liar liar;
    size_t idx;
    struct fdrv *d;
};

struct fdrv {
    struct sim *sim;
    size_t n;
    struct tnode *nodes;
    uint64_t rng;
    uint64_t last_round;
};

static uint64_t rnd(struct fdrv *d)
{
    d->rng ^= d->rng << 13;
    d->rng ^= d->rng >> 7;
    d->rng ^= d->rng << 17;
    return d->rng;
}

static uint64_t io_now(void *ud)
{
    struct tnode *t = ud;
    return sim_now(t->d->sim);
}
static uint64_t io_random(void *ud)
{
    struct tnode *t = ud;
    return rnd(t->d);
}
static void io_timer(void *ud, uint64_t at)
{
    struct tnode *t = ud;
    t->timer = at;
}
static int io_call(void *ud, const char *address, const uint8_t *buf, size_t len, size_t max_reply,
                   uint64_t timeout_ms, uint64_t id)
{
    struct tnode *t = ud;
    (void)max_reply;
    size_t to = strtoul(address + 1, NULL, 10);
    return sim_call(t->d->sim, t->idx, sim_addr(t->d->sim, to), buf, len, timeout_ms,
                    (void *)(uintptr_t)id);
}

static void serve(void *ctx, size_t node, size_t from, struct sim_call_req *req,
                  const uint8_t *data, size_t len)
{
    struct fdrv *d = ctx;
    struct tnode *t = &d->nodes[node];
    (void)from;
    if (t->liar == LIAR_SILENT)
        return sim_call_respond(d->sim, req, MESH_EIO, NULL, 0);
    if (t->liar == LIAR_GARBAGE) {
        uint8_t junk[64];
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (uint8_t)rnd(d);
        return sim_call_respond(d->sim, req, 0, junk, 1 + rnd(d) % sizeof junk);
    }
    uint8_t *reply;
    size_t rlen;
    int rc = feed_serve(t->feed, data, len, &reply, &rlen);
    if (rc != 0)
        return sim_call_respond(d->sim, req, rc, NULL, 0);
    if (t->liar == LIAR_DIGEST) {
        /* A well-formed reply whose revision claims the forged advert's and whose digest is
         * wrong: the reply's header is [1, 2, kind, rev, bin8 32 digest..]; flip a digest byte. */
        struct feed_reply rp;
        assert_int_equal(feed_reply_decode(reply, rlen, &rp), 0);
        for (size_t i = 0; i + FEED_DIGEST_LEN <= rlen; i++)
            if (memcmp(reply + i, rp.digest, FEED_DIGEST_LEN) == 0) {
                reply[i] ^= 1;
                break;
            }
    }
    sim_call_respond(d->sim, req, 0, reply, rlen);
    free(reply);
}

static void reply_cb(void *ctx, size_t node, void *cookie, int rc, const uint8_t *reply, size_t len)
{
    struct fdrv *d = ctx;
    feed_pull_done(d->nodes[node].feed, (uint64_t)(uintptr_t)cookie, rc, reply, len);
}

static struct fdrv *drv_new(uint64_t seed, size_t n)
{
    struct fdrv *d = calloc(1, sizeof *d);
    assert_non_null(d);
    struct swim_config cfg;
    swim_config_init(&cfg);
    d->sim = sim_new(seed, &cfg);
    d->n = n;
    d->rng = seed * 2654435761u + 1;
    d->nodes = calloc(n, sizeof *d->nodes);
    assert_non_null(d->nodes);
    sim_on_call(d->sim, serve, reply_cb, d);
    for (size_t i = 0; i < n; i++) {
        struct tnode *t = &d->nodes[i];
        sim_add_node(d->sim, NULL, NULL);
        t->idx = i;
        t->d = d;
        t->timer = FEED_NO_DEADLINE;
        assert_int_equal(fsm_new(&t->fsm), 0);
        struct feed_io io = {
            .data = t, .now = io_now, .random = io_random, .timer = io_timer, .call = io_call};
        assert_int_equal(feed_new(&io, t->fsm, &t->feed), 0);
        if (i < FEED_T_REPLICAS)
            feed_set_pulling(t->feed, false);
        t->nbrs[0] = (i + 1) % n;
        t->nbrs[1] = (i + n - 1) % n;
        for (size_t k = 2; k < FEED_T_NBRS; k++)
            t->nbrs[k] = rnd(d) % n;
    }
    return d;
}

static void drv_free(struct fdrv *d)
{
    for (size_t i = 0; i < d->n; i++) {
        feed_free(d->nodes[i].feed);
        fsm_free(d->nodes[i].fsm);
    }
    sim_free(d->sim);
    free(d->nodes);
    free(d);
}

/* A write committed on the replicas. */
static void write_rec(struct fdrv *d, unsigned k)
{
    char key[32], val[48];
    snprintf(key, sizeof key, "k%u", k % 500);
    snprintf(val, sizeof val, "value %u", k);
    struct raft_buffer b;
    assert_int_equal(fsm_cmd_put_rec(key, val, strlen(val), &b), 0);
    for (size_t i = 0; i < FEED_T_REPLICAS; i++) {
        struct tnode *t = &d->nodes[i];
        uint64_t before = fsm_revision(t->fsm);
        assert_int_equal(fsm_apply_cmd(t->fsm, b.base, b.len, NULL), 0);
        assert_int_equal(feed_record(t->feed, before, fsm_revision(t->fsm), b.base, b.len), 0);
    }
    raft_free(b.base);
}

static void gossip_round(struct fdrv *d)
{
    for (size_t i = 0; i < d->n; i++) {
        struct tnode *t = &d->nodes[i];
        for (size_t k = 0; k < FEED_T_NBRS; k++) {
            size_t j = t->nbrs[k];
            if (j == i)
                continue;
            struct tnode *o = &d->nodes[j];
            uint8_t adv[FEED_ADVERT_MAX];
            size_t n;
            if (o->liar == LIAR_GARBAGE || o->liar == LIAR_SILENT || o->liar == LIAR_FORGE) {
                /* A forged advert: the highest revision there is. (LIAR_DIGEST advertises what it
                 * holds, then serves it with a wrong digest.) */
                uint8_t fake[FEED_ADVERT_MAX] = {0x93, 0x01, 0xcf, 0xff, 0xff, 0xff, 0xff,
                                                 0xff, 0xff, 0xff, 0xff, 0xc4, 0x20};
                memcpy(adv, fake, sizeof fake);
                n = 13 + FEED_DIGEST_LEN;
            } else {
                n = feed_advert(o->feed, adv, sizeof adv);
                assert_true(n > 0);
            }
            char addr[16];
            snprintf(addr, sizeof addr, "n%zu", j);
            assert_int_equal(feed_observe(t->feed, addr, adv, n), 0);
        }
    }
}

static void step(struct fdrv *d, uint64_t ms)
{
    sim_run_for(d->sim, ms);
    uint64_t now = sim_now(d->sim);
    for (size_t i = 0; i < d->n; i++)
        if (d->nodes[i].timer <= now)
            feed_tick(d->nodes[i].feed);
    if (now - d->last_round >= FEED_T_ROUND_MS) {
        d->last_round = now;
        gossip_round(d);
    }
}

static bool converged(struct fdrv *d)
{
    uint8_t want[FEED_DIGEST_LEN], got[FEED_DIGEST_LEN];
    assert_int_equal(feed_digest(d->nodes[0].feed, want), 0);
    uint64_t rev = fsm_revision(d->nodes[0].fsm);
    for (size_t i = 0; i < d->n; i++) {
        if (d->nodes[i].liar != HONEST || sim_swim(d->sim, i) == NULL)
            continue;
        if (fsm_revision(d->nodes[i].fsm) != rev)
            return false;
        assert_int_equal(feed_digest(d->nodes[i].feed, got), 0);
        if (memcmp(got, want, sizeof want) != 0)
            return false;
    }
    return true;
}

/* Runs until converged; returns the virtual ms it took (fails beyond max_ms). */
static uint64_t run_converge(struct fdrv *d, uint64_t max_ms)
{
    uint64_t t0 = sim_now(d->sim);
    while (!converged(d)) {
        assert_true(sim_now(d->sim) - t0 < max_ms);
        step(d, 10);
    }
    return sim_now(d->sim) - t0;
}

static void converge_n(size_t n)
{
    struct fdrv *d = drv_new(7 + n, n);
    for (unsigned k = 0; k < 20; k++)
        write_rec(d, k);
    /* Bounded: 20 gossip rounds, whatever N (the spread is epidemic, ~log N rounds). */
    uint64_t ms = run_converge(d, 20 * FEED_T_ROUND_MS);
    printf("# feed: N=%zu, 20 writes on 3 replicas: every node at revision %llu in %llu virtual "
           "ms\n",
           n, (unsigned long long)fsm_revision(d->nodes[0].fsm), (unsigned long long)ms);
    /* One more write spreads by deltas. */
    write_rec(d, 99);
    ms = run_converge(d, 20 * FEED_T_ROUND_MS);
    printf("# feed: N=%zu, one more write: converged in %llu virtual ms\n", n,
           (unsigned long long)ms);
    /* The last write went by deltas, and non-replicas served them onward (the epidemic). */
    uint64_t deltas = 0, relayed = 0;
    for (size_t i = 0; i < n; i++) {
        struct feed_stats st = feed_get_stats(d->nodes[i].feed);
        deltas += st.deltas;
        if (i >= FEED_T_REPLICAS)
            relayed += st.served_deltas;
    }
    assert_true(deltas >= n - FEED_T_REPLICAS);
    assert_true(relayed > 0);
    drv_free(d);
}

static void test_converge_100(void **state)
{
    (void)state;
    converge_n(100);
}

static void test_converge_1000(void **state)
{
    (void)state;
    converge_n(1000);
}

static void test_partition_catch_up(void **state)
{
    (void)state;
    struct fdrv *d = drv_new(11, 30);
    write_rec(d, 0);
    run_converge(d, 30000);
    /* A short partition: catches up by deltas. */
    sim_set_group(d->sim, 10, 1);
    for (unsigned k = 1; k <= 10; k++)
        write_rec(d, k);
    for (int i = 0; i < 50; i++)
        step(d, 10);
    struct feed_stats before = feed_get_stats(d->nodes[10].feed);
    sim_heal(d->sim);
    run_converge(d, 30000);
    struct feed_stats after = feed_get_stats(d->nodes[10].feed);
    assert_true(after.deltas > before.deltas);
    assert_int_equal(after.snapshots, before.snapshots);
    /* Far behind (more than the ring holds): by snapshot. */
    sim_set_group(d->sim, 20, 1);
    for (unsigned k = 100; k < 100 + FEED_RING_MAX + 20; k++)
        write_rec(d, k);
    for (int i = 0; i < 300; i++)
        step(d, 10);
    before = feed_get_stats(d->nodes[20].feed);
    sim_heal(d->sim);
    run_converge(d, 30000);
    after = feed_get_stats(d->nodes[20].feed);
    assert_true(after.snapshots > before.snapshots);
    drv_free(d);
}

static void test_liars(void **state)
{
    (void)state;
    struct fdrv *d = drv_new(13, 100);
    d->nodes[50].liar = LIAR_GARBAGE;
    d->nodes[51].liar = LIAR_DIGEST;
    d->nodes[52].liar = LIAR_SILENT;
    d->nodes[53].liar = LIAR_FORGE;
    d->nodes[70].liar = LIAR_DIGEST;
    for (unsigned k = 0; k < 20; k++)
        write_rec(d, k);
    uint64_t ms = run_converge(d, 120000);
    printf("# feed: N=100 with 5 liars (UINT64_MAX adverts, garbage, bad digests, silence): "
           "converged in %llu virtual ms\n",
           (unsigned long long)ms);
    uint64_t bad = 0, mism = 0, failed = 0, nh = 0;
    for (size_t i = 0; i < d->n; i++) {
        struct feed_stats st = feed_get_stats(d->nodes[i].feed);
        bad += st.bad_reply;
        mism += st.mismatch;
        failed += st.failed;
        nh += st.not_honoured;
        if (d->nodes[i].liar == HONEST)
            assert_true(fsm_revision(d->nodes[i].fsm) == fsm_revision(d->nodes[0].fsm));
    }
    printf("# feed: refused: %llu bad replies, %llu digest/revision mismatches, %llu failed, "
           "%llu not honoured\n",
           (unsigned long long)bad, (unsigned long long)mism, (unsigned long long)failed,
           (unsigned long long)nh);
    assert_true(bad > 0 && failed > 0 && mism > 0 && nh > 0);
    drv_free(d);
}

static void test_store(void **state)
{
    (void)state;
    struct fsm *a, *b;
    assert_int_equal(fsm_new(&a), 0);
    assert_int_equal(fsm_new(&b), 0);
    for (unsigned k = 0; k < 5; k++) {
        struct raft_buffer c;
        char key[8];
        snprintf(key, sizeof key, "k%u", k);
        assert_int_equal(fsm_cmd_put_rec(key, "v", 1, &c), 0);
        assert_int_equal(fsm_apply_cmd(a, c.base, c.len, NULL), 0);
        raft_free(c.base);
    }
    uint8_t *buf;
    size_t len;
    assert_int_equal(feed_store_encode(a, &buf, &len), 0);
    char dir[] = "/tmp/fogmesh-feed.XXXXXX", path[64], tmp[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/desired", dir);
    snprintf(tmp, sizeof tmp, "%s/.desired.tmp", dir);
    struct mesh_err err;
    assert_int_equal(mesh_file_replace(tmp, path, buf, len, 0600, &err), 0);
    uint8_t back[4096];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    ssize_t got = read(fd, back, sizeof back);
    close(fd);
    assert_int_equal((size_t)got, len);
    assert_int_equal(feed_store_decode(b, back, (size_t)got, &err), 0);
    assert_int_equal(fsm_revision(b), 5);
    /* Truncated at every length, or one byte flipped anywhere: a clear error, b untouched. */
    for (size_t cut = 0; cut < len; cut++) {
        assert_int_equal(feed_store_decode(b, back, cut, &err), MESH_EMALFORMED);
        assert_true(strstr(err.msg, "desired state") != NULL);
    }
    for (size_t i = 0; i < len; i++) {
        back[i] ^= 0x40;
        int rc = feed_store_decode(b, back, len, &err);
        assert_true(rc == MESH_EMALFORMED || rc == MESH_EUNSUPPORTED || rc == 0);
        back[i] ^= 0x40;
        assert_int_equal(fsm_revision(b), 5);
    }
    printf("# feed: stored state: %s (the error a corrupt file gives)\n", err.msg);
    unlink(path);
    rmdir(dir);
    free(buf);
    fsm_free(a);
    fsm_free(b);
}

static void test_wire(void **state)
{
    (void)state;
    uint8_t buf[FEED_REQUEST_MAX];
    size_t n = feed_request_encode(UINT64_MAX, true, buf, sizeof buf);
    uint64_t from;
    bool snap;
    assert_int_equal(feed_request_decode(buf, n, &from, &snap), 0);
    assert_true(from == UINT64_MAX && snap);
    for (size_t cut = 0; cut < n; cut++)
        assert_true(feed_request_decode(buf, cut, &from, &snap) < 0);
    buf[1] = 2; /* a newer version */
    assert_int_equal(feed_request_decode(buf, n, &from, &snap), MESH_EUNSUPPORTED);
    struct feed_reply rp;
    const uint8_t huge[] = {0x96, 0x01, 0x02, 0x01, 0x00, 0xc4, 0x20};
    assert_int_equal(feed_reply_decode(huge, sizeof huge, &rp), MESH_EMALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire),         cmocka_unit_test(test_store),
        cmocka_unit_test(test_converge_100), cmocka_unit_test(test_partition_catch_up),
        cmocka_unit_test(test_liars),        cmocka_unit_test(test_converge_1000),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
