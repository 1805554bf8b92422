/* consensus/transport.h: canonical/raft (raft_uv, real disk I/O in temp dirs) over mesh streams.
 * Three nodes in one process on one mesh_loop (libevent with libuv embedded), each with peers,
 * the transport and a raft with a counting FSM: bootstrap a 3-voter configuration, elect a
 * leader, commit entries on all; stop the leader and the other two elect a new one and keep
 * committing; a rogue mesh node sending garbage on the raft channel is refused or reset while
 * the cluster goes on. Then everything closes cleanly (no leaks under ASan). The framing check
 * and the handshake codec are also tested on their own. Relays: on a line 0 - 1 - 2 where 0 and
 * 2 refuse each other's links, raft elects and commits with the connections between 0 and 2
 * relayed by 1 (a next-hop hook as meshd's routes give); a raw connect/accept round trip
 * through 1; a relay refuses malformed payloads, exhausted hops, unknown routes and routes
 * back to the sender, and the destination's framing check still resets garbage. Every wait runs the
 * loop until a condition holds, under a deadline. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <raft.h>
#include <raft/uv.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "peers_harness.h"
#include "addr.h"
#include "err.h"
#include "keyring.h"
#include "loop.h"
#include "peers.h"
#include "transport.h"

#define NNODES      3
#define ROGUE       NNODES /* index of the node without raft */
#define DEADLINE_MS 15000

struct env;
struct pump_env;

struct tnode {
    struct env *env;
    int idx;
    struct keyring kr;
    struct mesh_addr addr;
    char address[MESH_ADDR_STRLEN];
    struct peers *p;
    bool has_raft;
    bool running; /* raft started and not closing */
    bool closed;  /* raft's close callback fired */
    struct raft_uv_transport tr;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    char dir[300];
    uint64_t applied, sum;
};

struct env {
    struct mesh_loop loop;
    struct event *tick;
    uint64_t deadline;
    bool (*cond)(struct env *e, const void *arg);
    const void *cond_arg;
    char root[256];
    struct tnode n[NNODES + 1];
    int applies_done, applies_failed;
    struct pump_env *pump;
    bool line; /* nodes 0 and 2 have no link: raft between them goes through node 1 */
};

static const uint8_t key1[MESH_KEY_LEN] = {7, 7, 7};

/* ---- the line A - B - C: A and C refuse each other's links; routes go through B ---------- */

static int node_index(const struct env *e, const struct mesh_addr *a)
{
    for (int i = 0; i <= NNODES; i++)
        if (mesh_addr_equal(&e->n[i].addr, a))
            return i;
    return -1;
}

static int line_hs_hook(void *ud, const uint8_t peer_static[LINK_KEY_LEN], const uint8_t *payload,
                        size_t len, struct mesh_addr *ret_adv)
{
    const struct tnode *n = ud;
    struct mesh_addr adv;
    int rc = harness_hs_hook(NULL, peer_static, payload, len, &adv);
    if (rc < 0)
        return rc;
    int peer = node_index(n->env, &adv);
    if (n->env->line && ((n->idx == 0 && peer == 2) || (n->idx == 2 && peer == 0)))
        return MESH_EAUTH;
    *ret_adv = adv;
    return 0;
}

/* The next-hop hook of the line: 0 and 2 reach each other through 1; everything else known
 * is direct; unknown addresses have no route. */
static int line_next_hop(void *ud, const struct mesh_addr *dest, struct mesh_addr *ret_hop)
{
    const struct tnode *n = ud;
    int d = node_index(n->env, dest);
    if (d < 0)
        return MESH_ENOTFOUND;
    if ((n->idx == 0 && d == 2) || (n->idx == 2 && d == 0))
        d = 1;
    *ret_hop = n->env->n[d].addr;
    return 0;
}

/* ---- the FSM: counts entries and sums their first word ----------------------------------- */

static uint64_t le64(const void *p)
{
    const uint8_t *b = p;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct tnode *n = fsm->data;
    assert_true(buf->len >= 8);
    n->applied++;
    n->sum += le64(buf->base);
    *result = NULL;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct tnode *n = fsm->data;
    *bufs = raft_malloc(sizeof **bufs);
    assert_non_null(*bufs);
    (*bufs)[0].base = raft_malloc(16);
    assert_non_null((*bufs)[0].base);
    (*bufs)[0].len = 16;
    memcpy((*bufs)[0].base, &n->applied, 8);
    memcpy((uint8_t *)(*bufs)[0].base + 8, &n->sum, 8);
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct tnode *n = fsm->data;
    memcpy(&n->applied, buf->base, 8);
    memcpy(&n->sum, (uint8_t *)buf->base + 8, 8);
    raft_free(buf->base);
    return 0;
}

/* ---- nodes ------------------------------------------------------------------------------- */

static void node_peers(struct env *e, struct tnode *n, int idx)
{
    uint8_t priv[LINK_KEY_LEN];
    struct mesh_err err = {0};
    n->env = e;
    n->idx = idx;
    keyring_init(&n->kr, key1);
    randombytes_buf(priv, sizeof priv);
    int fd = harness_listen_socket(&n->addr);
    mesh_addr_format(&n->addr, n->address, sizeof n->address);
    struct peers_config cfg = {.static_priv = priv,
                               .kr = &n->kr,
                               .payload = (const uint8_t *)&n->addr,
                               .payload_len = sizeof n->addr};
    struct peers_hooks hooks = {.ud = n, .on_handshake = line_hs_hook};
    if (peers_new(e->loop.base, fd, &cfg, &hooks, &n->p, &err) < 0)
        fail_msg("peers_new: %s", err.msg);
    sodium_memzero(priv, sizeof priv);
}

static void node_raft(struct env *e, struct tnode *n)
{
    struct mesh_err err = {0};
    snprintf(n->dir, sizeof n->dir, "%s/n%d", e->root, n->idx);
    assert_int_equal(mkdir(n->dir, 0700), 0);
    struct transport_config tc = {.base = e->loop.base, .loop = &e->loop.uv, .peers = n->p};
    if (e->line) {
        tc.next_hop = line_next_hop;
        tc.next_hop_ud = n;
    }
    if (transport_init(&n->tr, &tc, &err) < 0)
        fail_msg("transport_init: %s", err.msg);
    assert_int_equal(raft_uv_init(&n->io, &e->loop.uv, n->dir, &n->tr), 0);
    n->fsm.version = 1;
    n->fsm.data = n;
    n->fsm.apply = fsm_apply;
    n->fsm.snapshot = fsm_snapshot;
    n->fsm.restore = fsm_restore;
    assert_int_equal(raft_init(&n->raft, &n->io, &n->fsm, (raft_id)(n->idx + 1), n->address), 0);
    raft_set_election_timeout(&n->raft, 400);
    raft_set_heartbeat_timeout(&n->raft, 50);
    n->has_raft = true;
}

static void on_raft_closed(struct raft *r)
{
    struct tnode *n = r->data;
    n->closed = true;
}

static void node_close_raft(struct tnode *n)
{
    if (!n->has_raft || n->closed || !n->running)
        return;
    n->running = false;
    n->raft.data = n;
    raft_close(&n->raft, on_raft_closed);
}

/* ---- the loop ---------------------------------------------------------------------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct env *e = arg;
    (void)fd;
    (void)what;
    if (getenv("TRANSPORT_TRACE")) {
        static int last[NNODES];
        for (int i = 0; i < NNODES; i++) {
            int st = e->n[i].running ? raft_state(&e->n[i].raft) : -1;
            if (st != last[i])
                fprintf(stderr, "%llu node %d state %d term %llu\n",
                        (unsigned long long)mesh_now_ms() % 100000, i, st,
                        e->n[i].running ? (unsigned long long)e->n[i].raft.current_term : 0);
            last[i] = st;
        }
    }
    if (e->cond(e, e->cond_arg) || mesh_now_ms() > e->deadline)
        mesh_loop_stop(&e->loop);
}

static bool run_until(struct env *e, bool (*cond)(struct env *, const void *), const void *arg,
                      uint64_t ms)
{
    if (cond(e, arg))
        return true;
    e->cond = cond;
    e->cond_arg = arg;
    e->deadline = mesh_now_ms() + ms;
    struct timeval tv = {0, 2000};
    event_add(e->tick, &tv);
    assert_int_equal(mesh_loop_run(&e->loop), 0);
    event_del(e->tick);
    return cond(e, arg);
}

static bool one_leader(struct env *e, const void *arg)
{
    (void)arg;
    int leaders = 0;
    raft_id lid = 0;
    for (int i = 0; i < NNODES; i++) {
        struct tnode *n = &e->n[i];
        if (!n->running)
            continue;
        if (raft_state(&n->raft) == RAFT_LEADER) {
            leaders++;
            lid = n->raft.id;
        }
    }
    if (leaders != 1)
        return false;
    for (int i = 0; i < NNODES; i++) {
        struct tnode *n = &e->n[i];
        raft_id id;
        const char *addr;
        if (!n->running)
            continue;
        raft_leader(&n->raft, &id, &addr);
        if (id != lid)
            return false;
    }
    return true;
}

static struct tnode *leader(struct env *e)
{
    for (int i = 0; i < NNODES; i++)
        if (e->n[i].running && raft_state(&e->n[i].raft) == RAFT_LEADER)
            return &e->n[i];
    return NULL;
}

static bool all_applied(struct env *e, const void *arg)
{
    uint64_t want = *(const uint64_t *)arg;
    for (int i = 0; i < NNODES; i++)
        if (e->n[i].running && e->n[i].applied < want)
            return false;
    return true;
}

static bool all_closed(struct env *e, const void *arg)
{
    (void)arg;
    for (int i = 0; i < NNODES; i++)
        if (e->n[i].has_raft && !e->n[i].closed && !e->n[i].running)
            return false;
    return true;
}

struct apply_req {
    struct raft_apply req;
    struct env *e;
};

static void on_applied(struct raft_apply *req, int status, void *result)
{
    struct apply_req *a = req->data;
    (void)result;
    if (status == 0)
        a->e->applies_done++;
    else
        a->e->applies_failed++;
    free(a);
}

/* Proposes count entries on the leader: each one 8 bytes holding its value. */
static void apply_entries(struct env *e, struct tnode *l, int count, uint64_t value)
{
    for (int i = 0; i < count; i++) {
        struct raft_buffer buf = {.base = raft_malloc(8), .len = 8};
        assert_non_null(buf.base);
        for (int b = 0; b < 8; b++)
            ((uint8_t *)buf.base)[b] = (uint8_t)(value >> (8 * b));
        struct apply_req *a = calloc(1, sizeof *a);
        assert_non_null(a);
        a->e = e;
        a->req.data = a;
        assert_int_equal(raft_apply(&l->raft, &a->req, &buf, 1, on_applied), 0);
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup_env(void **state, bool line)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->line = line;
    assert_int_equal(mesh_loop_init(&e->loop), 0);
    e->tick = event_new(e->loop.base, -1, EV_PERSIST, on_tick, e);
    assert_non_null(e->tick);
    snprintf(e->root, sizeof e->root, "/tmp/fogmesh-transport-XXXXXX");
    assert_non_null(mkdtemp(e->root));
    for (int i = 0; i <= NNODES; i++)
        node_peers(e, &e->n[i], i);
    for (int i = 0; i < NNODES; i++)
        node_raft(e, &e->n[i]);
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (int i = 0; i < NNODES; i++)
        assert_int_equal(
            raft_configuration_add(&conf, (raft_id)(i + 1), e->n[i].address, RAFT_VOTER), 0);
    for (int i = 0; i < NNODES; i++)
        assert_int_equal(raft_bootstrap(&e->n[i].raft, &conf), 0);
    raft_configuration_close(&conf);
    *state = e;
    return 0;
}

static int setup(void **state)
{
    return setup_env(state, false);
}

static int setup_line(void **state)
{
    return setup_env(state, true);
}

static int teardown(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < NNODES; i++)
        node_close_raft(&e->n[i]);
    assert_true(run_until(e, all_closed, NULL, DEADLINE_MS));
    for (int i = 0; i < NNODES; i++) {
        struct tnode *n = &e->n[i];
        if (!n->has_raft)
            continue;
        raft_uv_close(&n->io);
        transport_free(&n->tr);
    }
    for (int i = 0; i <= NNODES; i++) {
        peers_free(e->n[i].p);
        keyring_wipe(&e->n[i].kr);
    }
    event_free(e->tick);
    mesh_loop_close(&e->loop);
    nftw(e->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(e);
    return 0;
}

static void start_all(struct env *e)
{
    for (int i = 0; i < NNODES; i++) {
        assert_int_equal(raft_start(&e->n[i].raft), 0);
        e->n[i].running = true;
    }
}

/* ---- a rogue mesh node on the raft channel ----------------------------------------------- */

struct rogue {
    struct peers_stream *s;
    int connected, ends, end_code;
    const uint8_t *garbage;
    size_t garbage_len;
};

static void rg_connected(void *ud, struct peers_stream *s)
{
    struct rogue *r = ud;
    r->connected++;
    if (r->garbage_len)
        assert_true(peers_stream_send(s, r->garbage, r->garbage_len) > 0);
}

static void rg_end(void *ud, struct peers_stream *s, const struct mesh_err *err)
{
    struct rogue *r = ud;
    (void)s;
    r->ends++;
    r->end_code = err->code;
}

static const struct peers_stream_cb rogue_cb = {.on_connected = rg_connected, .on_end = rg_end};

static bool rogue_ended(struct env *e, const void *arg)
{
    (void)e;
    return ((const struct rogue *)arg)->ends > 0;
}

static void rogue_try(struct env *e, struct tnode *target, const uint8_t *payload, size_t plen,
                      const void *garbage, size_t glen, struct rogue *r)
{
    memset(r, 0, sizeof *r);
    r->garbage = garbage;
    r->garbage_len = glen;
    assert_int_equal(peers_stream_open(e->n[ROGUE].p, &target->addr, TRANSPORT_CHAN_RAFT, payload,
                                       plen, 2000, &rogue_cb, r, &r->s),
                     0);
    assert_true(run_until(e, rogue_ended, r, DEADLINE_MS));
    assert_true(r->end_code != 0);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_elect_commit_failover(void **state)
{
    struct env *e = *state;
    uint64_t t0 = mesh_now_ms();
    start_all(e);
    assert_true(run_until(e, one_leader, NULL, DEADLINE_MS));
    uint64_t t_elect = mesh_now_ms() - t0;
    struct tnode *l = leader(e);
    assert_non_null(l);
    print_message("leader elected in %llu ms (node %d)\n", (unsigned long long)t_elect, l->idx);

    /* The bootstrap configuration is entry 1; the leader's barrier is not applied to the FSM. */
    apply_entries(e, l, 5, 3);
    uint64_t want = 5;
    t0 = mesh_now_ms();
    assert_true(run_until(e, all_applied, &want, DEADLINE_MS));
    print_message("5 entries committed and applied on all in %llu ms\n",
                  (unsigned long long)(mesh_now_ms() - t0));
    for (int i = 0; i < NNODES; i++)
        assert_int_equal(e->n[i].sum, 15);
    assert_int_equal(e->applies_done, 5);

    /* Stop the leader: the other two elect a new one and keep committing. */
    struct tnode *old = l;
    node_close_raft(old);
    t0 = mesh_now_ms();
    assert_true(run_until(e, one_leader, NULL, DEADLINE_MS));
    print_message("new leader after the old one stopped: %llu ms\n",
                  (unsigned long long)(mesh_now_ms() - t0));
    l = leader(e);
    assert_non_null(l);
    assert_ptr_not_equal(l, old);
    apply_entries(e, l, 4, 10);
    want = 9;
    assert_true(run_until(e, all_applied, &want, DEADLINE_MS));
    for (int i = 0; i < NNODES; i++)
        if (e->n[i].running)
            assert_int_equal(e->n[i].sum, 55);
    assert_true(old->closed);

    for (int i = 0; i < NNODES; i++) {
        const struct transport_stats *st = transport_stats(&e->n[i].tr);
        assert_true(st->connects > 0);
        assert_true(st->accepted > 0);
        assert_int_equal(st->bad_frames, 0);
    }
}

static void test_garbage_on_raft_channel(void **state)
{
    struct env *e = *state;
    start_all(e);
    assert_true(run_until(e, one_leader, NULL, DEADLINE_MS));
    struct tnode *l = leader(e);
    struct tnode *target = &e->n[(l->idx + 1) % NNODES]; /* a follower */
    struct tnode *rogue = &e->n[ROGUE];
    struct rogue r;
    uint8_t hs[LINK_OPEN_PAYLOAD_MAX];
    size_t hl;

    /* Not a handshake. */
    rogue_try(e, target, (const uint8_t *)"xyz", 3, NULL, 0, &r);
    assert_int_equal(r.connected, 0);
    /* A handshake claiming another node's address. */
    hl = transport_handshake_encode(77, l->address, hs, sizeof hs);
    assert_true(hl > 0);
    rogue_try(e, target, hs, hl, NULL, 0, &r);
    assert_int_equal(r.connected, 0);
    /* Id 0. */
    hl = transport_handshake_encode(0, rogue->address, hs, sizeof hs);
    rogue_try(e, target, hs, hl, NULL, 0, &r);
    assert_int_equal(r.connected, 0);
    uint64_t refused = transport_stats(&target->tr)->refused;
    assert_int_equal(refused, 3);

    /* A good handshake for its own address, then garbage raft messages. */
    hl = transport_handshake_encode(77, rogue->address, hs, sizeof hs);
    static const uint8_t type0[16] = {0, 0, 0, 0, 0, 0, 0, 0, 8};
    static const uint8_t vote_short[24] = {3, 0, 0, 0, 0, 0, 0, 0, 8}; /* RequestVote, 8 bytes */
    static const uint8_t huge[16] = {1,    0,    0,    0,    0,    0,    0,    0,
                                     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    uint8_t entries[16 + 48] = {1, 0, 0, 0, 0, 0, 0, 0, 48}; /* AppendEntries, n = 1000 */
    entries[16 + 32] = 0xe8;
    entries[16 + 33] = 0x03;
    uint8_t noise[4096];
    randombytes_buf(noise, sizeof noise);
    noise[0] = 9; /* never a valid type */
    const struct {
        const void *d;
        size_t n;
    } cases[] = {{type0, sizeof type0},
                 {vote_short, sizeof vote_short},
                 {huge, sizeof huge},
                 {entries, sizeof entries},
                 {noise, sizeof noise}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rogue_try(e, target, hs, hl, cases[i].d, cases[i].n, &r);
        assert_int_equal(r.connected, 1);
        assert_int_equal(r.end_code, MESH_ECLOSED); /* reset by the transport */
    }
    assert_int_equal(transport_stats(&target->tr)->bad_frames, 5);

    /* Without a next-hop hook, relay streams are not taken at all. */
    uint8_t pl[LINK_OPEN_PAYLOAD_MAX];
    size_t pn = transport_relay_encode(3, &target->addr, hs, hl, pl, sizeof pl);
    assert_true(pn > 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(peers_stream_open(rogue->p, &target->addr, TRANSPORT_CHAN_RAFT_RELAY, pl, pn,
                                       2000, &rogue_cb, &r, &r.s),
                     0);
    assert_true(run_until(e, rogue_ended, &r, DEADLINE_MS));
    assert_int_equal(r.connected, 0);
    assert_int_equal(transport_stats(&target->tr)->accepted_relayed, 0);

    /* The cluster did not notice. */
    l = leader(e);
    assert_non_null(l);
    apply_entries(e, l, 3, 1);
    uint64_t want = 3;
    assert_true(run_until(e, all_applied, &want, DEADLINE_MS));
    assert_true(one_leader(e, NULL));
}

static void test_framecheck(void **state)
{
    (void)state;
    struct transport_framecheck f;
    /* A heartbeat (AppendEntries, no entries), then one with two entries and their payload,
     * then a RequestVote, fed one byte at a time. */
    uint8_t msg[512];
    size_t n = 0;
    memset(msg, 0, sizeof msg);
    msg[n] = 1;
    msg[n + 8] = 48;
    n += 16 + 48;
    msg[n] = 1;
    msg[n + 8] = 48 + 32;
    msg[n + 16 + 32] = 2;      /* n entries */
    msg[n + 16 + 40 + 8] = 1;  /* entry 0: command */
    msg[n + 16 + 40 + 12] = 8; /* 8 bytes */
    msg[n + 16 + 56 + 8] = 2;  /* entry 1: barrier */
    msg[n + 16 + 56 + 12] = 3; /* 3 bytes */
    n += 16 + 80 + 11;
    msg[n] = 3;
    msg[n + 8] = 40;
    n += 16 + 40;
    transport_framecheck_init(&f, 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(transport_framecheck_feed(&f, msg + i, 1), 0);
    assert_int_equal(f.phase, 0);
    /* All at once too. */
    transport_framecheck_fini(&f);
    transport_framecheck_init(&f, 0);
    assert_int_equal(transport_framecheck_feed(&f, msg, n), 0);
    /* An entry of an unknown type. */
    uint8_t bad[16 + 56] = {1, 0, 0, 0, 0, 0, 0, 0, 56};
    bad[16 + 32] = 1;
    bad[16 + 40 + 8] = 9;
    assert_int_equal(transport_framecheck_feed(&f, bad, sizeof bad), MESH_EMALFORMED);
    assert_int_equal(transport_framecheck_feed(&f, msg, 16), MESH_EMALFORMED); /* sticky */
    transport_framecheck_fini(&f);
    /* Payload larger than allowed. */
    transport_framecheck_init(&f, 4);
    uint8_t big[16 + 56] = {1, 0, 0, 0, 0, 0, 0, 0, 56};
    big[16 + 32] = 1;
    big[16 + 40 + 8] = 1;
    big[16 + 40 + 12] = 5;
    assert_int_equal(transport_framecheck_feed(&f, big, sizeof big), MESH_ETOOBIG);
    transport_framecheck_fini(&f);
    /* InstallSnapshot with a configuration of one server, then a bad configuration. */
    uint8_t snap[16 + 80] = {5, 0, 0, 0, 0, 0, 0, 0, 80};
    uint8_t *h = snap + 16;
    h[32] = 32; /* configuration length */
    h[40] = 1;  /* format */
    h[41] = 1;  /* one server */
    h[49] = 2;  /* its id */
    memcpy(h + 57, "1.2.3.4:5", 10);
    h[67] = 1; /* role; zeros pad to 32 bytes, then the data length (0) */
    transport_framecheck_init(&f, 0);
    assert_int_equal(transport_framecheck_feed(&f, snap, sizeof snap), 0);
    transport_framecheck_fini(&f);
    h[41] = 3; /* three servers in 24 bytes */
    transport_framecheck_init(&f, 0);
    assert_int_equal(transport_framecheck_feed(&f, snap, sizeof snap), MESH_EMALFORMED);
    transport_framecheck_fini(&f);
}

static void test_handshake_codec(void **state)
{
    (void)state;
    uint8_t buf[LINK_OPEN_PAYLOAD_MAX];
    char addr[64];
    uint64_t id;
    size_t n = transport_handshake_encode(42, "127.0.0.1:7946", buf, sizeof buf);
    assert_int_equal(n, 24 + 16);
    /* raft's own bytes: protocol 1, id, padded address length, little-endian */
    assert_int_equal(buf[0], 1);
    assert_int_equal(buf[8], 42);
    assert_int_equal(buf[16], 16);
    assert_int_equal(transport_handshake_decode(buf, n, &id, addr, sizeof addr), 0);
    assert_int_equal(id, 42);
    assert_string_equal(addr, "127.0.0.1:7946");
    assert_int_equal(transport_handshake_decode(buf, n - 1, &id, addr, sizeof addr),
                     MESH_EMALFORMED);
    assert_int_equal(transport_handshake_decode(buf, n, &id, addr, 8), MESH_EMALFORMED);
    buf[0] = 2;
    assert_int_equal(transport_handshake_decode(buf, n, &id, addr, sizeof addr), MESH_EMALFORMED);
    char longaddr[300];
    memset(longaddr, 'a', sizeof longaddr - 1);
    longaddr[sizeof longaddr - 1] = 0;
    assert_int_equal(transport_handshake_encode(1, longaddr, buf, sizeof buf), 0);
}

/* ---- the pump without raft: backpressure both ways, close semantics ---------------------- */

#define PUMP_MSGS  4
#define PUMP_ENTRY (1u << 20)
#define PUMP_MSG   (16 + 64 + PUMP_ENTRY)

struct pump_env {
    struct env *e;
    uv_stream_t *out, *in; /* connector's and acceptor's pipes */
    int connect_status, connects;
    bool write_done;
    int write_status;
    uv_write_t wreq;
    uint8_t *msg;
    uint8_t *got;
    size_t got_len;
    bool in_eof;
    int closes_cb;
    int cancels_at_close0; /* cancels seen when node 0's transport reported closed */
    struct raft_uv_connect req, req2;
    int cancel_status, cancels;
};

static void pump_connect_cb(struct raft_uv_connect *req, struct uv_stream_s *stream, int status)
{
    struct pump_env *pe = req->data;
    pe->connects++;
    pe->connect_status = status;
    pe->out = stream;
}

static void pump_accept_cb(struct raft_uv_transport *t, raft_id id, const char *address,
                           struct uv_stream_s *stream)
{
    struct tnode *n = t->data;
    assert_int_equal(id, 1);
    assert_string_equal(address, n->env->n[0].address);
    n->env->pump->in = stream;
}

static void pump_write_cb(uv_write_t *req, int status)
{
    struct pump_env *pe = req->data;
    pe->write_done = true;
    pe->write_status = status;
}

static void pump_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct pump_env *pe = h->data;
    (void)suggested;
    buf->base = (char *)pe->got + pe->got_len;
    buf->len = PUMP_MSGS * PUMP_MSG - pe->got_len;
    if (buf->len == 0) {
        static char sink[64];
        buf->base = sink;
        buf->len = sizeof sink;
    }
}

static void pump_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct pump_env *pe = s->data;
    (void)buf;
    if (nread > 0)
        pe->got_len += (size_t)nread;
    else if (nread < 0)
        pe->in_eof = true;
}

static void free_handle(uv_handle_t *h)
{
    raft_free(h);
}

static void pump_transport_closed(struct raft_uv_transport *t)
{
    struct tnode *n = t->data;
    struct pump_env *pe = n->env->pump;
    pe->closes_cb++;
    if (n->idx == 0)
        pe->cancels_at_close0 = pe->cancels;
}

static void pump_cancel_cb(struct raft_uv_connect *req, struct uv_stream_s *stream, int status)
{
    struct pump_env *pe = req->data;
    assert_null(stream);
    pe->cancels++;
    pe->cancel_status = status;
}

static bool pump_cond_connected(struct env *e, const void *arg)
{
    (void)e;
    const struct pump_env *pe = arg;
    return pe->connects > 0 && pe->in != NULL;
}

static bool pump_cond_stalled(struct env *e, const void *arg)
{
    const struct pump_env *pe = arg;
    /* The acceptor's pump has written what raft's end of the socketpair holds, and the rest
     * waits in flow control. */
    return transport_stats(&e->n[1].tr)->bytes_to_raft > 0 && !pe->write_done &&
           mesh_now_ms() > e->deadline - DEADLINE_MS + 300;
}

static bool pump_cond_all_in(struct env *e, const void *arg)
{
    (void)e;
    const struct pump_env *pe = arg;
    return pe->got_len == PUMP_MSGS * PUMP_MSG && pe->write_done;
}

static bool pump_cond_eof(struct env *e, const void *arg)
{
    (void)e;
    return ((const struct pump_env *)arg)->in_eof;
}

static bool pump_cond_closed(struct env *e, const void *arg)
{
    const struct pump_env *pe = arg;
    return pe->closes_cb == 2 && pe->cancels == 1 && peers_stream_count(e->n[0].p) == 0 &&
           peers_stream_count(e->n[1].p) == 0;
}

static int setup_pump(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    assert_int_equal(mesh_loop_init(&e->loop), 0);
    e->tick = event_new(e->loop.base, -1, EV_PERSIST, on_tick, e);
    assert_non_null(e->tick);
    for (int i = 0; i <= NNODES; i++)
        node_peers(e, &e->n[i], i);
    for (int i = 0; i < 2; i++) {
        struct tnode *n = &e->n[i];
        struct mesh_err err;
        struct transport_config tc = {.base = e->loop.base, .loop = &e->loop.uv, .peers = n->p};
        n->tr.data = n;
        assert_int_equal(transport_init(&n->tr, &tc, &err), 0);
        assert_ptr_equal(n->tr.data, n);
        assert_int_equal(n->tr.init(&n->tr, (raft_id)(i + 1), n->address), 0);
        assert_int_equal(n->tr.listen(&n->tr, pump_accept_cb), 0);
    }
    *state = e;
    return 0;
}

static int teardown_pump(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < 2; i++)
        transport_free(&e->n[i].tr);
    for (int i = 0; i <= NNODES; i++) {
        peers_free(e->n[i].p);
        keyring_wipe(&e->n[i].kr);
    }
    event_free(e->tick);
    mesh_loop_close(&e->loop);
    free(e);
    return 0;
}

static void test_pump_backpressure_and_close(void **state)
{
    struct env *e = *state;
    struct pump_env pe = {.e = e};
    e->pump = &pe;

    /* PUMP_MSGS AppendEntries messages, each with one entry of PUMP_ENTRY bytes. */
    pe.msg = malloc(PUMP_MSG);
    pe.got = malloc((size_t)PUMP_MSGS * PUMP_MSG);
    assert_non_null(pe.msg);
    assert_non_null(pe.got);
    memset(pe.msg, 0, 16 + 64);
    pe.msg[0] = 1;
    pe.msg[8] = 64;
    pe.msg[16 + 32] = 1;
    pe.msg[16 + 40 + 8] = 1;
    pe.msg[16 + 40 + 12 + 2] = PUMP_ENTRY >> 16;
    for (size_t i = 0; i < PUMP_ENTRY; i++)
        pe.msg[16 + 64 + i] = (uint8_t)(i * 13 + (i >> 9));

    pe.req.data = &pe;
    assert_int_equal(e->n[0].tr.connect(&e->n[0].tr, &pe.req, 2, e->n[1].address, pump_connect_cb),
                     0);
    assert_int_equal(pe.connects, 0); /* never from inside connect */
    assert_true(run_until(e, pump_cond_connected, &pe, DEADLINE_MS));
    assert_int_equal(pe.connect_status, 0);

    uv_buf_t bufs[PUMP_MSGS];
    for (int i = 0; i < PUMP_MSGS; i++)
        bufs[i] = uv_buf_init((char *)pe.msg, PUMP_MSG);
    pe.wreq.data = &pe;
    assert_int_equal(uv_write(&pe.wreq, pe.out, bufs, PUMP_MSGS, pump_write_cb), 0);

    /* The acceptor does not read: the writer stalls; what is in flight stays bounded. */
    assert_true(run_until(e, pump_cond_stalled, &pe, DEADLINE_MS));
    uint64_t held = transport_stats(&e->n[1].tr)->bytes_to_raft;
    uint64_t sent = transport_stats(&e->n[0].tr)->bytes_from_raft;
    print_message("stalled: %llu bytes read from raft, %llu written to raft (of %u)\n",
                  (unsigned long long)sent, (unsigned long long)held, PUMP_MSGS * PUMP_MSG);
    assert_false(pe.write_done);
    assert_true(sent < (uint64_t)PUMP_MSGS * PUMP_MSG / 2);

    /* Now read: everything arrives intact and the write completes. */
    pe.in->data = &pe;
    assert_int_equal(uv_read_start(pe.in, pump_alloc, pump_read), 0);
    assert_true(run_until(e, pump_cond_all_in, &pe, DEADLINE_MS));
    assert_int_equal(pe.write_status, 0);
    for (int i = 0; i < PUMP_MSGS; i++)
        assert_memory_equal(pe.got + (size_t)i * PUMP_MSG, pe.msg, PUMP_MSG);

    /* The connector closes its pipe: the acceptor reads EOF. */
    uv_close((uv_handle_t *)pe.out, free_handle);
    assert_true(run_until(e, pump_cond_eof, &pe, DEADLINE_MS));
    uv_close((uv_handle_t *)pe.in, free_handle);

    /* A connect that cannot complete (nothing accepts links there), then close: the connect
     * is canceled before close_cb, and close_cb fires once per transport. */
    struct mesh_addr dead;
    char dead_s[MESH_ADDR_STRLEN];
    int dead_fd = harness_listen_socket(&dead);
    mesh_addr_format(&dead, dead_s, sizeof dead_s);
    pe.req2.data = &pe;
    assert_int_equal(e->n[0].tr.connect(&e->n[0].tr, &pe.req2, 9, dead_s, pump_cancel_cb), 0);
    for (int i = 0; i < 2; i++)
        e->n[i].tr.close(&e->n[i].tr, pump_transport_closed);
    assert_int_equal(pe.cancels, 0);
    assert_int_equal(pe.closes_cb, 0);
    assert_true(run_until(e, pump_cond_closed, &pe, DEADLINE_MS));
    assert_int_equal(pe.cancel_status, RAFT_CANCELED);
    assert_int_equal(pe.cancels_at_close0, 1); /* the cancel came before close_cb */
    close(dead_fd);
    free(pe.msg);
    free(pe.got);
    e->pump = NULL;
}

/* ---- relays ------------------------------------------------------------------------------ */

static void test_relay_codec(void **state)
{
    (void)state;
    uint8_t hs[LINK_OPEN_PAYLOAD_MAX], buf[LINK_OPEN_PAYLOAD_MAX];
    struct mesh_addr dest;
    struct transport_relay r, untouched;
    assert_int_equal(mesh_addr_parse("10.1.2.3:7946", 0, &dest), 0);
    size_t hl = transport_handshake_encode(42, "127.0.0.1:7000", hs, sizeof hs);
    size_t n = transport_relay_encode(5, &dest, hs, hl, buf, sizeof buf);
    assert_int_equal(n, TRANSPORT_RELAY_HEADER + hl);
    assert_int_equal(buf[0], TRANSPORT_RELAY_VERSION);
    assert_int_equal(transport_relay_decode(buf, n, &r), 0);
    assert_int_equal(r.hops_left, 5);
    assert_true(mesh_addr_equal(&r.dest, &dest));
    assert_int_equal(r.id, 42);
    assert_string_equal(r.address, "127.0.0.1:7000");
    assert_ptr_equal(r.hs, buf + TRANSPORT_RELAY_HEADER);
    assert_int_equal(r.hs_len, hl);
    /* IPv6 */
    assert_int_equal(mesh_addr_parse("[fd00::1]:7946", 0, &dest), 0);
    n = transport_relay_encode(1, &dest, hs, hl, buf, sizeof buf);
    assert_int_equal(transport_relay_decode(buf, n, &r), 0);
    assert_true(mesh_addr_equal(&r.dest, &dest));
    /* Does not fit. */
    assert_int_equal(transport_relay_encode(1, &dest, hs, hl, buf, n - 1), 0);
    /* Refusals leave ret untouched. */
    memset(&r, 0x5a, sizeof r);
    untouched = r;
    assert_int_equal(transport_relay_decode(buf, TRANSPORT_RELAY_HEADER - 1, &r), MESH_EMALFORMED);
    assert_int_equal(transport_relay_decode(buf, n - 1, &r), MESH_EMALFORMED); /* handshake */
    assert_int_equal(transport_relay_decode(buf, 0, &r), MESH_EMALFORMED);
    buf[3] = 1; /* a call type: relayed streams have none (netlink/relay.h) */
    assert_int_equal(transport_relay_decode(buf, n, &r), MESH_EMALFORMED);
    buf[3] = 0;
    buf[7] = 1; /* a reply bound */
    assert_int_equal(transport_relay_decode(buf, n, &r), MESH_EMALFORMED);
    buf[7] = 0;
    buf[8] = 5; /* family */
    assert_int_equal(transport_relay_decode(buf, n, &r), MESH_EMALFORMED);
    buf[8] = 4; /* IPv4 with bytes past the first four */
    assert_int_equal(transport_relay_decode(buf, n, &r), MESH_EMALFORMED);
    buf[8] = 6;
    buf[25] = buf[26] = 0; /* port 0 */
    assert_int_equal(transport_relay_decode(buf, n, &r), MESH_EMALFORMED);
    buf[0] = 2;
    assert_int_equal(transport_relay_decode(buf, n, &r), MESH_EUNSUPPORTED);
    assert_memory_equal(&r, &untouched, sizeof r);
}

struct transfer {
    struct raft_transfer req;
    bool done;
};

static void on_transferred(struct raft_transfer *req)
{
    ((struct transfer *)req->data)->done = true;
}

static bool node0_leads(struct env *e, const void *arg)
{
    const struct transfer *t = arg;
    return t->done && one_leader(e, NULL) && leader(e) == &e->n[0];
}

/* Raft over the line: 0 and 2 cannot link, yet the three elect a leader and commit on all,
 * the connections between 0 and 2 going through 1. */
static void test_line_elect_commit(void **state)
{
    struct env *e = *state;
    start_all(e);
    assert_true(run_until(e, one_leader, NULL, DEADLINE_MS));
    struct tnode *l = leader(e);
    assert_non_null(l);
    /* 0 leads (the middle one would need no relay): hand leadership over if another won; from
     * 2, even the transfer (TimeoutNow) goes through 1. */
    print_message("node %d won the election\n", l->idx);
    if (l != &e->n[0]) {
        struct transfer t = {0};
        t.req.data = &t;
        assert_int_equal(raft_transfer(&l->raft, &t.req, 1, on_transferred), 0);
        assert_true(run_until(e, node0_leads, &t, DEADLINE_MS));
        l = leader(e);
    }
    apply_entries(e, l, 5, 3);
    uint64_t want = 5;
    assert_true(run_until(e, all_applied, &want, DEADLINE_MS));
    for (int i = 0; i < NNODES; i++)
        assert_int_equal(e->n[i].sum, 15);

    const struct transport_stats *s0 = transport_stats(&e->n[0].tr);
    const struct transport_stats *s1 = transport_stats(&e->n[1].tr);
    const struct transport_stats *s2 = transport_stats(&e->n[2].tr);
    print_message("relayed: connects %llu + %llu, via node 1 %llu, accepted %llu + %llu\n",
                  (unsigned long long)s0->connects_relayed,
                  (unsigned long long)s2->connects_relayed, (unsigned long long)s1->relayed,
                  (unsigned long long)s0->accepted_relayed,
                  (unsigned long long)s2->accepted_relayed);
    /* The leader, 0, sent its entries to 2 through 1. */
    assert_true(s0->connects_relayed > 0 && s2->accepted_relayed > 0);
    assert_true(s1->relayed >= 1);
    assert_int_equal(s1->connects_relayed, 0); /* its routes are direct */
    for (int i = 0; i < NNODES; i++)
        assert_int_equal(transport_stats(&e->n[i].tr)->bad_frames, 0);
}

struct relay_env {
    uv_stream_t *out, *in;
    int connects, connect_status, accepts, closes;
    raft_id accepted_id;
    char accepted_address[MESH_ADDR_STRLEN];
    uint8_t got[256];
    size_t got_len;
    uv_write_t wreq;
    bool write_done;
    struct raft_uv_connect req;
};

static struct relay_env *relay_env_of(struct env *e)
{
    return (struct relay_env *)e->pump;
}

static void relay_connect_cb(struct raft_uv_connect *req, struct uv_stream_s *stream, int status)
{
    struct relay_env *re = req->data;
    re->connects++;
    re->connect_status = status;
    re->out = stream;
}

static void relay_accept_cb(struct raft_uv_transport *t, raft_id id, const char *address,
                            struct uv_stream_s *stream)
{
    struct tnode *n = t->data;
    struct relay_env *re = relay_env_of(n->env);
    re->accepts++;
    re->accepted_id = id;
    snprintf(re->accepted_address, sizeof re->accepted_address, "%s", address);
    if (re->in) { /* only the first one is read in this test */
        uv_close((uv_handle_t *)stream, free_handle);
        return;
    }
    re->in = stream;
}

static void relay_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct relay_env *re = h->data;
    (void)suggested;
    buf->base = (char *)re->got + re->got_len;
    buf->len = sizeof re->got - re->got_len;
}

static void relay_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct relay_env *re = s->data;
    (void)buf;
    if (nread > 0)
        re->got_len += (size_t)nread;
}

static void relay_write_cb(uv_write_t *req, int status)
{
    struct relay_env *re = req->data;
    assert_int_equal(status, 0);
    re->write_done = true;
}

static bool relay_cond_connected(struct env *e, const void *arg)
{
    (void)e;
    const struct relay_env *re = arg;
    return re->connects > 0 && re->in != NULL;
}

static bool relay_cond_read(struct env *e, const void *arg)
{
    (void)e;
    const struct relay_env *re = arg;
    return re->write_done && re->got_len == 16 + 48;
}

static bool relay_cond_no_streams(struct env *e, const void *arg)
{
    (void)arg;
    for (int i = 0; i <= NNODES; i++)
        if (peers_stream_count(e->n[i].p) != 0)
            return false;
    return true;
}

static void relay_transport_closed(struct raft_uv_transport *t)
{
    struct tnode *n = t->data;
    relay_env_of(n->env)->closes++;
}

static bool relay_cond_closed_and_reset(struct env *e, const void *arg)
{
    const struct relay_env *re = arg;
    return re->closes == 1 && peers_stream_count(e->n[0].p) == 0 &&
           peers_stream_count(e->n[1].p) == 0 && peers_stream_count(e->n[2].p) == 0;
}

static int setup_relay(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->line = true;
    assert_int_equal(mesh_loop_init(&e->loop), 0);
    e->tick = event_new(e->loop.base, -1, EV_PERSIST, on_tick, e);
    assert_non_null(e->tick);
    for (int i = 0; i <= NNODES; i++)
        node_peers(e, &e->n[i], i);
    for (int i = 0; i < NNODES; i++) {
        struct tnode *n = &e->n[i];
        struct mesh_err err;
        struct transport_config tc = {.base = e->loop.base,
                                      .loop = &e->loop.uv,
                                      .peers = n->p,
                                      .next_hop = line_next_hop,
                                      .next_hop_ud = n};
        n->tr.data = n;
        assert_int_equal(transport_init(&n->tr, &tc, &err), 0);
        assert_int_equal(n->tr.init(&n->tr, (raft_id)(i + 1), n->address), 0);
        assert_int_equal(n->tr.listen(&n->tr, relay_accept_cb), 0);
    }
    *state = e;
    return 0;
}

static int teardown_relay(void **state)
{
    struct env *e = *state;
    for (int i = 0; i < NNODES; i++)
        transport_free(&e->n[i].tr);
    for (int i = 0; i <= NNODES; i++) {
        peers_free(e->n[i].p);
        keyring_wipe(&e->n[i].kr);
    }
    event_free(e->tick);
    mesh_loop_close(&e->loop);
    free(e);
    return 0;
}

/* The rogue (node 3, no raft) opens a relay stream with payload to target, sends garbage once
 * accepted, and waits for the end. */
static void rogue_relay(struct env *e, struct tnode *target, const uint8_t *payload, size_t plen,
                        const void *garbage, size_t glen, struct rogue *r)
{
    memset(r, 0, sizeof *r);
    r->garbage = garbage;
    r->garbage_len = glen;
    assert_int_equal(peers_stream_open(e->n[ROGUE].p, &target->addr, TRANSPORT_CHAN_RAFT_RELAY,
                                       payload, plen, 2000, &rogue_cb, r, &r->s),
                     0);
    assert_true(run_until(e, rogue_ended, r, DEADLINE_MS));
    assert_true(r->end_code != 0);
}

static void test_relay_round_trip_and_refusals(void **state)
{
    struct env *e = *state;
    struct relay_env re = {0};
    e->pump = (struct pump_env *)&re;

    /* 0 connects to 2's raft address: through 1. */
    re.req.data = &re;
    assert_int_equal(e->n[0].tr.connect(&e->n[0].tr, &re.req, 3, e->n[2].address, relay_connect_cb),
                     0);
    assert_true(run_until(e, relay_cond_connected, &re, DEADLINE_MS));
    assert_int_equal(re.connect_status, 0);
    assert_int_equal(re.accepted_id, 1);
    assert_string_equal(re.accepted_address, e->n[0].address);

    /* Raft's bytes (a heartbeat) go through and pass the destination's framing check. */
    uint8_t hb[16 + 48] = {1, 0, 0, 0, 0, 0, 0, 0, 48};
    hb[16] = 7; /* term */
    uv_buf_t b = uv_buf_init((char *)hb, sizeof hb);
    re.wreq.data = &re;
    re.in->data = &re;
    assert_int_equal(uv_read_start(re.in, relay_alloc, relay_read), 0);
    assert_int_equal(uv_write(&re.wreq, re.out, &b, 1, relay_write_cb), 0);
    assert_true(run_until(e, relay_cond_read, &re, DEADLINE_MS));
    assert_memory_equal(re.got, hb, sizeof hb);
    assert_int_equal(transport_stats(&e->n[0].tr)->connects_relayed, 1);
    assert_int_equal(transport_stats(&e->n[1].tr)->relayed, 1);
    assert_int_equal(transport_stats(&e->n[2].tr)->accepted_relayed, 1);
    assert_int_equal(transport_stats(&e->n[1].tr)->accepted, 0);
    /* 0 and 2 never linked: 0's only link is to 1. */
    assert_int_equal(peers_link_count(e->n[0].p), 1);
    uv_close((uv_handle_t *)re.out, free_handle);
    uv_close((uv_handle_t *)re.in, free_handle);
    assert_true(run_until(e, relay_cond_no_streams, NULL, DEADLINE_MS));

    /* Refusals at the relay (node 1), from the rogue. */
    struct tnode *rogue = &e->n[ROGUE];
    struct rogue r;
    uint8_t hs[LINK_OPEN_PAYLOAD_MAX], pl[LINK_OPEN_PAYLOAD_MAX];
    size_t hl = transport_handshake_encode(77, rogue->address, hs, sizeof hs), pn;
    uint64_t refused = transport_stats(&e->n[1].tr)->relay_refused;
    /* not a relay payload */
    rogue_relay(e, &e->n[1], (const uint8_t *)"xyz", 3, NULL, 0, &r);
    assert_int_equal(r.connected, 0);
    /* no hop left */
    pn = transport_relay_encode(0, &e->n[2].addr, hs, hl, pl, sizeof pl);
    rogue_relay(e, &e->n[1], pl, pn, NULL, 0, &r);
    assert_int_equal(r.connected, 0);
    /* no route */
    struct mesh_addr nowhere;
    assert_int_equal(mesh_addr_parse("127.0.0.1:1", 0, &nowhere), 0);
    pn = transport_relay_encode(3, &nowhere, hs, hl, pl, sizeof pl);
    rogue_relay(e, &e->n[1], pl, pn, NULL, 0, &r);
    assert_int_equal(r.connected, 0);
    /* the route leads back to where it came from */
    pn = transport_relay_encode(3, &rogue->addr, hs, hl, pl, sizeof pl);
    rogue_relay(e, &e->n[1], pl, pn, NULL, 0, &r);
    assert_int_equal(r.connected, 0);
    /* id 0 */
    hl = transport_handshake_encode(0, rogue->address, hs, sizeof hs);
    pn = transport_relay_encode(3, &e->n[2].addr, hs, hl, pl, sizeof pl);
    rogue_relay(e, &e->n[1], pl, pn, NULL, 0, &r);
    assert_int_equal(r.connected, 0);
    assert_int_equal(transport_stats(&e->n[1].tr)->relay_refused, refused + 5);
    assert_int_equal(transport_stats(&e->n[1].tr)->relayed, 1);

    /* A relayed stream to 2 that carries garbage: relayed, then reset by 2's framing check
     * (the reset travels back through the relay). */
    hl = transport_handshake_encode(77, rogue->address, hs, sizeof hs);
    pn = transport_relay_encode(3, &e->n[2].addr, hs, hl, pl, sizeof pl);
    static const uint8_t type0[16] = {0, 0, 0, 0, 0, 0, 0, 0, 8};
    rogue_relay(e, &e->n[1], pl, pn, type0, sizeof type0, &r);
    assert_int_equal(r.connected, 1);
    assert_int_equal(transport_stats(&e->n[1].tr)->relayed, 2);
    assert_int_equal(transport_stats(&e->n[2].tr)->bad_frames, 1);
    assert_int_equal(re.accepts, 2);
    assert_true(run_until(e, relay_cond_no_streams, NULL, DEADLINE_MS));

    /* The relay's raft closes its transport: the connections it carries for others end with it
     * (meshd frees the peers before the transport). */
    re.in = re.out = NULL;
    re.connects = 0;
    re.req.data = &re;
    assert_int_equal(e->n[0].tr.connect(&e->n[0].tr, &re.req, 3, e->n[2].address, relay_connect_cb),
                     0);
    assert_true(run_until(e, relay_cond_connected, &re, DEADLINE_MS));
    e->n[1].tr.close(&e->n[1].tr, relay_transport_closed);
    assert_true(run_until(e, relay_cond_closed_and_reset, &re, DEADLINE_MS));
    uv_close((uv_handle_t *)re.out, free_handle);
    uv_close((uv_handle_t *)re.in, free_handle);
    e->pump = NULL;
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    signal(SIGPIPE, SIG_IGN); /* as meshd: raft writes into pipes whose other end may go */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_codec),
        cmocka_unit_test(test_framecheck),
        cmocka_unit_test_setup_teardown(test_elect_commit_failover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_on_raft_channel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pump_backpressure_and_close, setup_pump,
                                        teardown_pump),
        cmocka_unit_test(test_relay_codec),
        cmocka_unit_test_setup_teardown(test_line_elect_commit, setup_line, teardown),
        cmocka_unit_test_setup_teardown(test_relay_round_trip_and_refusals, setup_relay,
                                        teardown_relay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
