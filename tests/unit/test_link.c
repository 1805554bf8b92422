/* Two links back to back in memory, with simulated time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "err.h"
#include "link.h"
#include "noise.h"

#define MAXCH 8

struct end {
    struct link *l;
    const char *name;
    uint8_t priv[32], pub[32];
    int handshakes;
    int reject;
    uint8_t peer_pub[32];
    uint8_t peer_payload[LINK_HS_PAYLOAD_MAX];
    size_t peer_payload_len;
    bool auto_consume;
    uint32_t refuse_open; /* reason returned by on_channel_open */
    /* events */
    uint32_t opened_id;
    uint16_t opened_type;
    char opened_payload[LINK_OPEN_PAYLOAD_MAX + 1];
    int opens, closes, resets, writables;
    uint32_t last_reset_reason, last_closed;
    /* data received (all channels, in order) */
    uint8_t *data;
    size_t data_len, data_cap;
    uint32_t data_ch[4096];
    size_t data_off[4096];
    size_t n_chunks;
    int outputs;
};

struct pair {
    struct end a, b; /* a = initiator, b = responder */
    uint64_t now;
    int rc_a, rc_b;
};

static int cb_handshake(void *ud, const uint8_t peer[32], const uint8_t *payload, size_t len)
{
    struct end *e = ud;
    e->handshakes++;
    memcpy(e->peer_pub, peer, 32);
    memcpy(e->peer_payload, payload, len);
    e->peer_payload_len = len;
    return e->reject;
}

static uint32_t cb_open(void *ud, uint32_t id, uint16_t type, const uint8_t *p, size_t len)
{
    struct end *e = ud;
    e->opens++;
    e->opened_id = id;
    e->opened_type = type;
    memcpy(e->opened_payload, p, len);
    e->opened_payload[len] = 0;
    return e->refuse_open;
}

static void cb_data(void *ud, uint32_t id, const uint8_t *d, size_t len)
{
    struct end *e = ud;
    if (e->data_len + len > e->data_cap) {
        e->data_cap = (e->data_len + len) * 2;
        e->data = realloc(e->data, e->data_cap);
        assert_non_null(e->data);
    }
    if (e->n_chunks < 4096) {
        e->data_ch[e->n_chunks] = id;
        e->data_off[e->n_chunks] = e->data_len;
        e->n_chunks++;
    }
    memcpy(e->data + e->data_len, d, len);
    e->data_len += len;
    if (e->auto_consume)
        assert_int_equal(link_channel_consume(e->l, id, len), 0);
}

static void cb_writable(void *ud, uint32_t id)
{
    struct end *e = ud;
    (void)id;
    e->writables++;
}

static void cb_closed(void *ud, uint32_t id)
{
    struct end *e = ud;
    e->closes++;
    e->last_closed = id;
}

static void cb_reset(void *ud, uint32_t id, uint32_t reason)
{
    struct end *e = ud;
    (void)id;
    e->resets++;
    e->last_reset_reason = reason;
}

static void cb_output(void *ud)
{
    struct end *e = ud;
    e->outputs++;
}

static const struct link_callbacks cbs = {
    .on_handshake = cb_handshake,
    .on_channel_open = cb_open,
    .on_channel_data = cb_data,
    .on_channel_writable = cb_writable,
    .on_channel_closed = cb_closed,
    .on_channel_reset = cb_reset,
    .on_output = cb_output,
};

static const uint8_t key1[32] = {1, 1, 1}, key2[32] = {2, 2, 2}, key3[32] = {3, 3, 3};

static void base_config(struct link_config *c, struct end *e, bool initiator)
{
    link_config_init(c);
    c->initiator = initiator;
    memcpy(c->static_priv, e->priv, 32);
    memcpy(c->psks[0], key1, 32);
    c->n_psks = 1;
    c->payload = (const uint8_t *)e->name;
    c->payload_len = strlen(e->name);
}

static void pair_init(struct pair *p)
{
    memset(p, 0, sizeof *p);
    p->a.name = "node-a v1";
    p->b.name = "node-b v1";
    crypto_box_keypair(p->a.pub, p->a.priv);
    crypto_box_keypair(p->b.pub, p->b.priv);
    p->a.auto_consume = p->b.auto_consume = true;
    p->now = 1000000;
}

static void pair_create(struct pair *p, const struct link_config *ca, const struct link_config *cb)
{
    assert_int_equal(link_new(ca, &cbs, &p->a, &p->a.l), 0);
    assert_int_equal(link_new(cb, &cbs, &p->b, &p->b.l), 0);
}

/* Moves bytes both ways until both are quiet or one fails. max_chunk splits deliveries; with
 * seed, deliveries have pseudo-random sizes and go through link_input_space/commit (checking
 * that the input always has room for a whole record) instead of link_feed. */
static void pump_with(struct pair *p, size_t max_chunk, uint32_t *seed)
{
    for (int guard = 0; guard < 1000000; guard++) {
        bool moved = false;
        struct end *src[2] = {&p->a, &p->b};
        struct end *dst[2] = {&p->b, &p->a};
        int *rc[2] = {&p->rc_b, &p->rc_a};
        for (int i = 0; i < 2; i++) {
            const uint8_t *ptr;
            size_t len;
            link_output_peek(src[i]->l, &ptr, &len);
            if (len == 0)
                continue;
            if (len > max_chunk)
                len = max_chunk;
            moved = true;
            if (*rc[i] != 0) {
                link_output_consume(src[i]->l, len); /* dropped: receiver is dead */
            } else if (seed) {
                uint8_t *room;
                size_t space = link_input_space(dst[i]->l, &room);
                assert_true(space >= 4 + LINK_FRAME_OVERHEAD + LINK_DEFAULT_MAX_FRAME);
                *seed = *seed * 1103515245u + 12345u;
                size_t take = 1 + (*seed >> 8) % (3 * LINK_DEFAULT_MAX_FRAME / 2);
                take = take < len ? take : len;
                take = take < space ? take : space;
                memcpy(room, ptr, take);
                link_output_consume(src[i]->l, take);
                *rc[i] = link_input_commit(dst[i]->l, take, p->now);
            } else {
                uint8_t *copy = malloc(len);
                memcpy(copy, ptr, len);
                link_output_consume(src[i]->l, len);
                *rc[i] = link_feed(dst[i]->l, copy, len, p->now);
                free(copy);
            }
        }
        if (!moved)
            return;
    }
    fail_msg("pump did not settle");
}

static void pump_chunked(struct pair *p, size_t max_chunk)
{
    pump_with(p, max_chunk, NULL);
}

static void pump(struct pair *p)
{
    pump_chunked(p, SIZE_MAX);
}

static void pair_handshake(struct pair *p)
{
    assert_int_equal(link_start(p->a.l, p->now), 0);
    assert_int_equal(link_start(p->b.l, p->now), 0);
    pump(p);
}

static void pair_establish(struct pair *p, void (*tweak)(struct link_config *, bool))
{
    struct link_config ca, cb;
    pair_init(p);
    base_config(&ca, &p->a, true);
    base_config(&cb, &p->b, false);
    if (tweak) {
        tweak(&ca, true);
        tweak(&cb, false);
    }
    pair_create(p, &ca, &cb);
    pair_handshake(p);
    assert_int_equal(p->rc_a, 0);
    assert_int_equal(p->rc_b, 0);
    assert_int_equal(link_state(p->a.l), LINK_STATE_ESTABLISHED);
    assert_int_equal(link_state(p->b.l), LINK_STATE_ESTABLISHED);
}

static void pair_free(struct pair *p)
{
    link_free(p->a.l);
    link_free(p->b.l);
    free(p->a.data);
    free(p->b.data);
}

/* ---- tests ---- */

static void test_handshake_ok(void **state)
{
    struct pair p;
    (void)state;
    pair_establish(&p, NULL);
    assert_int_equal(p.a.handshakes, 1);
    assert_int_equal(p.b.handshakes, 1);
    assert_memory_equal(p.a.peer_pub, p.b.pub, 32);
    assert_memory_equal(p.b.peer_pub, p.a.pub, 32);
    assert_int_equal(p.a.peer_payload_len, strlen("node-b v1"));
    assert_memory_equal(p.a.peer_payload, "node-b v1", p.a.peer_payload_len);
    assert_memory_equal(p.b.peer_payload, "node-a v1", p.b.peer_payload_len);
    assert_true(p.a.outputs > 0);
    assert_true(link_output_idle(p.a.l));
    assert_int_equal(link_stats(p.b.l)->frames_out, 1); /* HELLO */
    uint8_t k[32];
    assert_true(link_peer_static(p.a.l, k));
    assert_memory_equal(k, p.b.pub, 32);
    pair_free(&p);
}

static void test_handshake_split_bytes(void **state)
{
    /* Deliver one byte at a time: framing must not depend on read boundaries. */
    struct pair p;
    struct link_config ca, cb;
    (void)state;
    pair_init(&p);
    base_config(&ca, &p.a, true);
    base_config(&cb, &p.b, false);
    pair_create(&p, &ca, &cb);
    assert_int_equal(link_start(p.a.l, p.now), 0);
    assert_int_equal(link_start(p.b.l, p.now), 0);
    pump_chunked(&p, 1);
    assert_int_equal(p.rc_a, 0);
    assert_int_equal(p.rc_b, 0);
    assert_int_equal(p.a.handshakes, 1);
    assert_int_equal(p.b.handshakes, 1);
    pair_free(&p);
}

static void test_handshake_wrong_psk(void **state)
{
    struct pair p;
    struct link_config ca, cb;
    (void)state;
    pair_init(&p);
    base_config(&ca, &p.a, true);
    base_config(&cb, &p.b, false);
    memcpy(cb.psks[0], key2, 32);
    pair_create(&p, &ca, &cb);
    pair_handshake(&p);
    assert_int_equal(p.rc_b, MESH_EAUTH);
    assert_int_equal(p.rc_a, MESH_EAUTH);
    print_message("responder: %s\ninitiator: %s\n", link_error(p.b.l)->msg, link_error(p.a.l)->msg);
    assert_non_null(strstr(link_error(p.b.l)->msg, "different mesh key"));
    assert_non_null(strstr(link_error(p.a.l)->msg, "different mesh key"));
    assert_int_equal(p.a.handshakes, 0);
    assert_int_equal(p.b.handshakes, 0);
    assert_int_equal(link_state(p.a.l), LINK_STATE_DEAD);
    assert_int_equal(link_state(p.b.l), LINK_STATE_DEAD);
    assert_int_equal(link_stats(p.b.l)->auth_failures, 1);
    assert_int_equal(link_channel_open(p.a.l, 1, NULL, 0, &(uint32_t){0}), MESH_ESTATE);
    pair_free(&p);
}

static void test_handshake_key_ring(void **state)
{
    struct pair p;
    struct link_config ca, cb;
    (void)state;
    pair_init(&p);
    base_config(&ca, &p.a, true);
    base_config(&cb, &p.b, false);
    memcpy(cb.psks[0], key2, 32);
    memcpy(cb.psks[1], key3, 32);
    memcpy(cb.psks[2], key1, 32);
    cb.n_psks = 3;
    pair_create(&p, &ca, &cb);
    pair_handshake(&p);
    assert_int_equal(p.rc_a, 0);
    assert_int_equal(p.rc_b, 0);
    assert_int_equal(p.a.handshakes, 1);
    assert_int_equal(p.b.handshakes, 1);
    assert_int_equal(link_state(p.a.l), LINK_STATE_ESTABLISHED);
    pair_free(&p);
}

static void test_handshake_rejected(void **state)
{
    struct pair p;
    struct link_config ca, cb;
    (void)state;
    pair_init(&p);
    base_config(&ca, &p.a, true);
    base_config(&cb, &p.b, false);
    p.b.reject = -1;
    pair_create(&p, &ca, &cb);
    pair_handshake(&p);
    assert_int_equal(p.rc_b, MESH_EAUTH);
    assert_int_equal(p.rc_a, MESH_EAUTH);
    assert_non_null(strstr(link_error(p.a.l)->msg, "rejected"));
    pair_free(&p);
}

static void test_handshake_timeout(void **state)
{
    struct pair p;
    struct link_config ca, cb;
    (void)state;
    pair_init(&p);
    base_config(&ca, &p.a, true);
    base_config(&cb, &p.b, false);
    pair_create(&p, &ca, &cb);
    assert_int_equal(link_start(p.a.l, p.now), 0);
    assert_int_equal(link_next_deadline(p.a.l), p.now + LINK_DEFAULT_HS_TIMEOUT);
    assert_int_equal(link_tick(p.a.l, p.now + 4999), 0);
    assert_int_equal(link_tick(p.a.l, p.now + 5000), MESH_EIO);
    assert_non_null(strstr(link_error(p.a.l)->msg, "timed out"));
    /* EOF in the middle of the handshake */
    assert_int_equal(link_start(p.b.l, p.now), 0);
    assert_int_equal(link_feed(p.b.l, (const uint8_t *)"\0\0", 2, p.now), 0);
    assert_int_equal(link_feed_eof(p.b.l, p.now), MESH_ECLOSED);
    assert_non_null(strstr(link_error(p.b.l)->msg, "middle of a record"));
    pair_free(&p);
}

static void test_channels(void **state)
{
    struct pair p;
    uint32_t id, id2;
    (void)state;
    pair_establish(&p, NULL);

    assert_int_equal(link_channel_open(p.a.l, 0x8001, (const uint8_t *)"raft", 4, &id), 0);
    assert_int_equal(id % 2, 1);
    assert_int_equal(link_channel_send(p.a.l, id, (const uint8_t *)"x", 1), 0); /* no credit */
    pump(&p);
    assert_int_equal(p.b.opens, 1);
    assert_int_equal(p.b.opened_id, id);
    assert_int_equal(p.b.opened_type, 0x8001);
    assert_string_equal(p.b.opened_payload, "raft");
    assert_int_equal(p.a.writables, 1); /* credit arrived after the blocked send */

    assert_int_equal(link_channel_send(p.a.l, id, (const uint8_t *)"hello", 5), 5);
    pump(&p);
    assert_int_equal(p.b.data_len, 5);
    assert_memory_equal(p.b.data, "hello", 5);
    assert_int_equal(link_channel_send(p.b.l, id, (const uint8_t *)"world", 5), 5);
    pump(&p);
    assert_int_equal(p.a.data_len, 5);
    assert_memory_equal(p.a.data, "world", 5);

    /* half-close from a: b may still send */
    assert_int_equal(link_channel_close(p.a.l, id), 0);
    assert_int_equal(link_channel_send(p.a.l, id, (const uint8_t *)"z", 1), MESH_ESTATE);
    pump(&p);
    assert_int_equal(p.b.closes, 1);
    assert_int_equal(link_channel_send(p.b.l, id, (const uint8_t *)"more", 4), 4);
    pump(&p);
    assert_int_equal(p.a.data_len, 9);
    assert_int_equal(link_channel_close(p.b.l, id), 0);
    pump(&p);
    assert_int_equal(p.a.closes, 1);
    assert_int_equal(link_channel_count(p.a.l), 0);
    assert_int_equal(link_channel_count(p.b.l), 0);

    /* reset from b on a channel a opened */
    assert_int_equal(link_channel_open(p.b.l, 7, NULL, 0, &id2), 0);
    assert_int_equal(id2 % 2, 0);
    pump(&p);
    assert_int_equal(p.a.opens, 1);
    assert_int_equal(link_channel_send(p.a.l, id2, (const uint8_t *)"abc", 3), 3);
    assert_int_equal(link_channel_reset(p.b.l, id2, 42), 0);
    pump(&p); /* the DATA crossing the RESET is ignored */
    assert_int_equal(p.rc_a, 0);
    assert_int_equal(p.rc_b, 0);
    assert_int_equal(p.a.resets, 1);
    assert_int_equal(p.a.last_reset_reason, 42);
    assert_int_equal(link_channel_count(p.a.l), 0);
    assert_int_equal(link_channel_count(p.b.l), 0);
    assert_int_equal(link_channel_send(p.a.l, id2, (const uint8_t *)"x", 1), MESH_ENOTFOUND);

    /* refused by the application */
    p.b.refuse_open = 99;
    assert_int_equal(link_channel_open(p.a.l, 3, NULL, 0, &id), 0);
    pump(&p);
    assert_int_equal(p.a.resets, 2);
    assert_int_equal(p.a.last_reset_reason, 99);
    assert_int_equal(link_channel_count(p.a.l), 0);
    assert_int_equal(link_channel_count(p.b.l), 0);
    assert_int_equal(p.rc_a, 0);
    assert_int_equal(p.rc_b, 0);

    /* graceful link close */
    assert_int_equal(link_close(p.a.l), 0);
    assert_int_equal(link_state(p.a.l), LINK_STATE_CLOSING);
    pump(&p);
    assert_int_equal(p.rc_b, MESH_ECLOSED);
    assert_true(link_output_idle(p.a.l));
    pair_free(&p);
}

/* link_channel_reserve/commit and link_input_space/commit: the zero-copy paths move a few MiB
 * intact, and their bounds hold. */
static void test_zero_copy(void **state)
{
    struct pair p;
    uint32_t id, seed = 7;
    uint8_t *room;
    (void)state;
    pair_establish(&p, NULL);

    assert_int_equal(link_channel_open(p.a.l, 5, NULL, 0, &id), 0);
    assert_int_equal(link_channel_reserve(p.a.l, id, 100, &room), 0); /* no credit yet */
    assert_int_equal(link_channel_reserve(p.a.l, id + 2, 100, &room), MESH_ENOTFOUND);
    pump_with(&p, SIZE_MAX, &seed);
    assert_int_equal(p.b.opens, 1);

    const size_t total = 6u << 20;
    size_t sent = 0;
    uint8_t x = 0;
    for (int guard = 0; sent < total && guard < 100000; guard++) {
        long n = link_channel_reserve(p.a.l, id, total - sent, &room);
        assert_true(n >= 0);
        if (n > 0) {
            /* more than reserved is refused, and nothing is queued by that */
            if ((size_t)n < total - sent)
                assert_int_equal(link_channel_commit(p.a.l, id, (size_t)n + 1), MESH_EINVAL);
            seed = seed * 1103515245u + 12345u;
            size_t k = 1 + (seed >> 8) % (size_t)n; /* commit part of it */
            for (size_t j = 0; j < k; j++)
                room[j] = (uint8_t)(x + j);
            x = (uint8_t)(x + k);
            assert_int_equal(link_channel_commit(p.a.l, id, k), 0);
            sent += k;
        }
        pump_with(&p, SIZE_MAX, &seed);
    }
    assert_int_equal(sent, total);
    assert_int_equal(p.b.data_len, total);
    for (size_t j = 0; j < total; j++)
        if (p.b.data[j] != (uint8_t)j)
            fail_msg("byte %zu differs", j);
    assert_int_equal(p.rc_a, 0);
    assert_int_equal(p.rc_b, 0);

    assert_int_equal(link_channel_close(p.a.l, id), 0);
    assert_int_equal(link_channel_reserve(p.a.l, id, 1, &room), MESH_ESTATE);
    assert_int_equal(link_channel_commit(p.a.l, id, 1), MESH_ESTATE);
    pair_free(&p);
}

static void small_window(struct link_config *c, bool initiator)
{
    (void)initiator;
    c->chan_window = 1024;
}

static void test_flow_control(void **state)
{
    struct pair p;
    uint32_t id;
    uint8_t buf[4096];
    long n;
    (void)state;
    pair_establish(&p, small_window);
    p.b.auto_consume = false;
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)i;

    assert_int_equal(link_channel_open(p.a.l, 1, NULL, 0, &id), 0);
    pump(&p);
    n = link_channel_send(p.a.l, id, buf, sizeof buf);
    assert_int_equal(n, 1024);
    assert_int_equal(link_channel_send(p.a.l, id, buf + n, sizeof buf - (size_t)n), 0);
    pump(&p);
    assert_int_equal(p.b.data_len, 1024);
    assert_int_equal(link_channel_send(p.a.l, id, buf + n, sizeof buf - (size_t)n), 0);
    int w = p.a.writables;
    /* consuming less than half a window sends no WINDOW */
    assert_int_equal(link_channel_consume(p.b.l, id, 100), 0);
    pump(&p);
    assert_int_equal(p.a.writables, w);
    assert_int_equal(link_channel_consume(p.b.l, id, 1024 - 100), 0);
    assert_int_equal(link_channel_consume(p.b.l, id, 1), MESH_EINVAL);
    pump(&p);
    assert_int_equal(p.a.writables, w + 1);
    n = link_channel_send(p.a.l, id, buf + 1024, sizeof buf - 1024);
    assert_int_equal(n, 1024);
    pump(&p);
    assert_int_equal(p.b.data_len, 2048);
    assert_memory_equal(p.b.data, buf, 2048);

    /* A peer that ignores the window kills the link. */
    uint8_t raw[6 + 1100] = {18, 0};
    raw[2] = (uint8_t)(id >> 24), raw[3] = (uint8_t)(id >> 16), raw[4] = (uint8_t)(id >> 8);
    raw[5] = (uint8_t)id;
    assert_int_equal(link_test_send_raw(p.a.l, raw, sizeof raw), 0);
    pump(&p);
    assert_int_equal(p.rc_b, MESH_EPROTO);
    assert_non_null(strstr(link_error(p.b.l)->msg, "credit"));
    assert_int_equal(link_stats(p.b.l)->protocol_errors, 1);
    /* b's GOAWAY tells a */
    assert_int_equal(p.rc_a, MESH_EPROTO);
    pair_free(&p);
}

static void test_priority(void **state)
{
    struct pair p;
    uint32_t bulk, ctrl;
    static uint8_t big[200000];
    (void)state;
    pair_establish(&p, NULL);
    memset(big, 'b', sizeof big);
    assert_int_equal(link_channel_open(p.a.l, 5, NULL, 0, &bulk), 0);
    assert_int_equal(link_channel_open(p.a.l, LINK_CHAN_CONTROL | 5, NULL, 0, &ctrl), 0);
    pump(&p);
    assert_int_equal(link_channel_send(p.a.l, bulk, big, sizeof big), sizeof big);
    /* The transport takes one bulk frame, then control data is queued. */
    const uint8_t *ptr;
    size_t len;
    link_output_peek(p.a.l, &ptr, &len);
    assert_true(len <= LINK_BULK_CHUNK + LINK_FRAME_OVERHEAD + 64);
    assert_int_equal(link_channel_send(p.a.l, ctrl, (const uint8_t *)"VOTE", 4), 4);
    pump(&p);
    assert_int_equal(p.b.data_len, sizeof big + 4);
    size_t pos = SIZE_MAX;
    for (size_t i = 0; i < p.b.n_chunks; i++)
        if (p.b.data_ch[i] == ctrl)
            pos = p.b.data_off[i];
    assert_true(pos != SIZE_MAX);
    print_message("control data arrived after %zu bulk bytes\n", pos);
    assert_true(pos <= LINK_BULK_CHUNK);
    assert_memory_equal(p.b.data + pos, "VOTE", 4);
    pair_free(&p);
}

/* Bulk channels that fill the link's queue (out_cap) are refused more, control channels are
 * not: bulk data never holds a Raft or RPC message back. */
static void test_control_beyond_bulk_cap(void **state)
{
    struct pair p;
    uint32_t bulk[5], ctl;
    static uint8_t buf[LINK_DEFAULT_SNDBUF];
    (void)state;
    pair_establish(&p, NULL);
    for (int i = 0; i < 5; i++)
        assert_int_equal(link_channel_open(p.a.l, 5, NULL, 0, &bulk[i]), 0);
    assert_int_equal(link_channel_open(p.a.l, 0x8001, NULL, 0, &ctl), 0);
    pump(&p); /* credit for all */
    size_t queued = 0;
    long n = 0;
    for (int i = 0; i < 5 && n >= 0; i++) {
        n = link_channel_send(p.a.l, bulk[i], buf, sizeof buf);
        if (n > 0)
            queued += (size_t)n;
    }
    assert_int_equal(n, MESH_EAGAIN); /* the bulk limit is reached */
    assert_true(queued >= LINK_DEFAULT_OUT_CAP - LINK_DEFAULT_SNDBUF);
    assert_int_equal(link_channel_send(p.a.l, ctl, (const uint8_t *)"vote", 4), 4);
    pump(&p);
    assert_int_equal(p.b.data_len, queued + 4);
    assert_int_equal(p.rc_a, 0);
    assert_int_equal(p.rc_b, 0);
    pair_free(&p);
}

static void rekey_bytes(struct link_config *c, bool initiator)
{
    (void)initiator;
    c->rekey_bytes = 5000;
    c->rekey_ms = 1000;
}

static void test_rekey(void **state)
{
    struct pair p;
    uint32_t id;
    static uint8_t buf[300000];
    size_t sent = 0;
    (void)state;
    pair_establish(&p, rekey_bytes);
    randombytes_buf(buf, sizeof buf);
    assert_int_equal(link_channel_open(p.a.l, 1, NULL, 0, &id), 0);
    pump(&p);
    while (sent < sizeof buf) {
        long n = link_channel_send(p.a.l, id, buf + sent, sizeof buf - sent);
        assert_true(n >= 0);
        sent += (size_t)n;
        pump(&p);
    }
    assert_int_equal(p.b.data_len, sizeof buf);
    assert_memory_equal(p.b.data, buf, sizeof buf);
    const struct link_stats *sa = link_stats(p.a.l), *sb = link_stats(p.b.l);
    print_message("rekeys by bytes: %llu\n", (unsigned long long)sa->rekeys_tx);
    assert_true(sa->rekeys_tx >= sizeof buf / LINK_BULK_CHUNK); /* every frame > 5000 bytes */
    assert_int_equal(sa->rekeys_tx, sb->rekeys_rx);

    /* by time: nothing else to send, the REKEY goes alone; data still flows */
    uint64_t before = sb->rekeys_tx;
    p.now += 1500;
    assert_int_equal(link_tick(p.b.l, p.now), 0);
    pump(&p);
    assert_int_equal(sb->rekeys_tx, before + 1);
    assert_int_equal(link_stats(p.a.l)->rekeys_rx, before + 1);
    assert_int_equal(link_channel_send(p.b.l, id, (const uint8_t *)"after", 5), 5);
    pump(&p);
    assert_int_equal(p.rc_a, 0);
    assert_int_equal(p.a.data_len, 5);
    assert_memory_equal(p.a.data, "after", 5);
    pair_free(&p);
}

static void test_keepalive(void **state)
{
    struct pair p;
    (void)state;
    pair_establish(&p, NULL);
    uint64_t t0 = p.now;
    assert_int_equal(link_next_deadline(p.a.l), t0 + LINK_DEFAULT_KEEPALIVE_MS);
    p.now = t0 + LINK_DEFAULT_KEEPALIVE_MS;
    assert_int_equal(link_tick(p.a.l, p.now), 0);
    pump(&p); /* PING, PONG */
    assert_int_equal(link_stats(p.a.l)->pongs_rx, 1);
    /* now the peer goes silent: three PINGs, then dead */
    const uint8_t *ptr;
    size_t len;
    for (int i = 1; i <= 3; i++) {
        p.now += LINK_DEFAULT_KEEPALIVE_MS;
        assert_int_equal(link_tick(p.a.l, p.now), 0);
        link_output_peek(p.a.l, &ptr, &len);
        link_output_consume(p.a.l, len); /* lost */
    }
    assert_int_equal(link_stats(p.a.l)->pings_tx, 4);
    p.now += LINK_DEFAULT_KEEPALIVE_MS;
    assert_int_equal(link_next_deadline(p.a.l), p.now);
    assert_int_equal(link_tick(p.a.l, p.now), MESH_EIO);
    assert_non_null(strstr(link_error(p.a.l)->msg, "silent"));
    pair_free(&p);
}

/* Takes the next whole frame a has produced. */
static size_t take_frame(struct pair *p, uint8_t *out, size_t cap)
{
    const uint8_t *ptr;
    size_t len, n;
    link_output_peek(p->a.l, &ptr, &len);
    assert_true(len >= 4);
    n = 4 + (((size_t)ptr[0] << 24) | ((size_t)ptr[1] << 16) | ((size_t)ptr[2] << 8) | ptr[3]);
    assert_true(n <= len && n <= cap);
    memcpy(out, ptr, n);
    link_output_consume(p->a.l, n);
    return n;
}

static void test_bad_frames(void **state)
{
    uint8_t f[256], g[256];
    uint32_t id;
    size_t n;
    (void)state;

    /* garbage */
    {
        struct pair p;
        uint8_t junk[300];
        pair_establish(&p, NULL);
        randombytes_buf(junk, sizeof junk);
        junk[0] = 0, junk[1] = 0, junk[2] = 0, junk[3] = 100;
        assert_int_equal(link_feed(p.b.l, junk, sizeof junk, p.now), MESH_EAUTH);
        assert_int_equal(link_state(p.b.l), LINK_STATE_DEAD);
        assert_int_equal(link_feed(p.b.l, junk, sizeof junk, p.now), MESH_ESTATE);
        /* b's last words: a GOAWAY(AUTH) that a can read */
        pump(&p);
        assert_int_equal(p.rc_a, MESH_EAUTH);
        pair_free(&p);
    }
    /* huge length field */
    {
        struct pair p;
        pair_establish(&p, NULL);
        assert_int_equal(link_feed(p.b.l, (const uint8_t *)"\x7f\0\0\0", 4, p.now), MESH_ETOOBIG);
        pair_free(&p);
    }
    /* bit flip, truncation, replay */
    for (int mode = 0; mode < 4; mode++) {
        struct pair p;
        pair_establish(&p, NULL);
        assert_int_equal(link_channel_open(p.a.l, 1, (const uint8_t *)"svc", 3, &id), 0);
        n = take_frame(&p, f, sizeof f); /* OPEN */
        assert_int_equal(link_feed(p.b.l, f, n, p.now), 0);
        switch (mode) {
        case 0:                              /* flipped bit in the ciphertext */
            n = take_frame(&p, g, sizeof g); /* WINDOW */
            g[n - 3] ^= 0x10;
            assert_int_equal(link_feed(p.b.l, g, n, p.now), MESH_EAUTH);
            break;
        case 1: /* shortened record: length and bytes */
            n = take_frame(&p, g, sizeof g);
            g[3]--;
            assert_int_equal(link_feed(p.b.l, g, n - 1, p.now), MESH_EAUTH);
            break;
        case 2: /* replay of the OPEN */
            assert_int_equal(link_feed(p.b.l, f, n, p.now), MESH_EAUTH);
            assert_non_null(strstr(link_error(p.b.l)->msg, "replayed"));
            break;
        case 3: /* truncated then EOF */
            n = take_frame(&p, g, sizeof g);
            assert_int_equal(link_feed(p.b.l, g, n - 5, p.now), 0);
            assert_int_equal(link_feed_eof(p.b.l, p.now), MESH_ECLOSED);
            break;
        }
        assert_int_equal(link_state(p.b.l), LINK_STATE_DEAD);
        if (mode != 3)
            assert_int_equal(link_stats(p.b.l)->auth_failures, 1);
        pair_free(&p);
    }
}

static void limits(struct link_config *c, bool initiator)
{
    c->max_frame_payload = 1024;
    c->max_channels = initiator ? 3 : 2;
}

static void test_limits(void **state)
{
    struct pair p;
    uint32_t ids[4];
    static uint8_t buf[5000];
    (void)state;
    pair_establish(&p, limits);

    /* our own limit */
    for (int i = 0; i < 3; i++)
        assert_int_equal(link_channel_open(p.a.l, 1, NULL, 0, &ids[i]), 0);
    assert_int_equal(link_channel_open(p.a.l, 1, NULL, 0, &ids[3]), MESH_EFULL);
    assert_int_equal(link_channel_open(p.a.l, 1, NULL, 300, &ids[3]), MESH_EINVAL);
    pump(&p);
    /* the peer's limit: its third OPEN is refused with RESET */
    assert_int_equal(p.b.opens, 2);
    assert_int_equal(p.a.resets, 1);
    assert_int_equal(p.a.last_reset_reason, LINK_RESET_REFUSED);
    assert_int_equal(link_channel_count(p.a.l), 2);
    assert_int_equal(link_stats(p.b.l)->channels_refused, 1);

    /* frames respect max_frame_payload: 5000 bytes go in 5 frames */
    uint64_t before = link_stats(p.b.l)->frames_in;
    assert_int_equal(link_channel_send(p.a.l, ids[0], buf, sizeof buf), sizeof buf);
    pump(&p);
    assert_int_equal(p.b.data_len, sizeof buf);
    assert_true(link_stats(p.b.l)->frames_in - before >= 5);

    /* an oversized frame kills the receiver */
    uint8_t raw[6 + 2000] = {18, 0, 0, 0, 0, 1};
    assert_int_equal(link_test_send_raw(p.a.l, raw, sizeof raw), 0);
    pump(&p);
    assert_int_equal(p.rc_b, MESH_ETOOBIG);
    print_message("%s\n", link_error(p.b.l)->msg);
    pair_free(&p);
}

static void test_protocol_errors(void **state)
{
    static const struct {
        uint8_t frame[16];
        size_t len;
        int code;
    } cases[] = {
        {{99, 0, 0, 0, 0, 0}, 6, MESH_EPROTO},                         /* unknown type */
        {{18, 0, 0, 0, 0, 9, 'x'}, 7, MESH_EPROTO},                    /* DATA, never opened */
        {{16, 0, 0, 0, 0, 2, 0, 1}, 8, MESH_EPROTO},                   /* OPEN with our parity */
        {{16, 0, 0, 0, 0, 0, 0, 1}, 8, MESH_EPROTO},                   /* OPEN on channel 0 */
        {{2, 0, 0, 0, 0, 0, 1}, 7, MESH_EPROTO},                       /* short PING */
        {{1, 0, 0, 0, 0, 0}, 6, MESH_EPROTO},                          /* late HELLO */
        {{2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 14, MESH_EPROTO}, /* flags */
        {{1, 0}, 2, MESH_EPROTO},                                      /* shorter than header */
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct pair p;
        pair_establish(&p, NULL);
        assert_int_equal(link_test_send_raw(p.a.l, cases[i].frame, cases[i].len), 0);
        pump(&p);
        print_message("case %zu: %s\n", i, link_error(p.b.l)->msg);
        if (i == 7)
            assert_int_equal(p.rc_b, MESH_EMALFORMED);
        else
            assert_int_equal(p.rc_b, cases[i].code);
        pair_free(&p);
    }
}

/* ---- transport cipher negotiation (link.h "Cipher negotiation") ---- */

static uint8_t cipher_a, cipher_b; /* link_config.ciphers of a and b for with_ciphers */

static void with_ciphers(struct link_config *c, bool initiator)
{
    c->ciphers = initiator ? cipher_a : cipher_b;
    c->rekey_bytes = 3000; /* rekey under the negotiated cipher too */
}

/* Data both ways on one channel, across several rekeys. */
static void check_data_flows(struct pair *p)
{
    static uint8_t buf[20000];
    uint32_t id;
    size_t base_a = p->a.data_len, base_b = p->b.data_len;

    randombytes_buf(buf, sizeof buf);
    assert_int_equal(link_channel_open(p->a.l, 1, NULL, 0, &id), 0);
    pump(p);
    for (size_t off = 0; off < sizeof buf; off += 2000) { /* one frame each: rekeys between */
        assert_int_equal(link_channel_send(p->a.l, id, buf + off, 2000), 2000);
        pump(p);
    }
    assert_int_equal(link_channel_send(p->b.l, id, buf, 5000), 5000);
    pump(p);
    assert_int_equal(p->rc_a, 0);
    assert_int_equal(p->rc_b, 0);
    assert_int_equal(p->b.data_len - base_b, sizeof buf);
    assert_memory_equal(p->b.data + base_b, buf, sizeof buf);
    assert_int_equal(p->a.data_len - base_a, 5000);
    assert_memory_equal(p->a.data + base_a, buf, 5000);
    assert_true(link_stats(p->a.l)->rekeys_tx >= 2);
    assert_int_equal(link_stats(p->a.l)->rekeys_tx, link_stats(p->b.l)->rekeys_rx);
}

static void negotiate(uint8_t a, uint8_t b, const char *want)
{
    struct pair p;
    cipher_a = a, cipher_b = b;
    print_message("a 0x%02x, b 0x%02x: %s\n", a, b, want);
    pair_establish(&p, with_ciphers);
    assert_string_equal(link_cipher_name(p.a.l), want);
    assert_string_equal(link_cipher_name(p.b.l), want);
    /* The cipher byte is the link's: the application sees its own payload only. */
    assert_int_equal(p.a.peer_payload_len, strlen("node-b v1"));
    assert_memory_equal(p.a.peer_payload, "node-b v1", p.a.peer_payload_len);
    assert_int_equal(p.b.peer_payload_len, strlen("node-a v1"));
    assert_memory_equal(p.b.peer_payload, "node-a v1", p.b.peer_payload_len);
    check_data_flows(&p);
    pair_free(&p);
}

static void test_cipher_negotiation(void **state)
{
    const uint8_t both = LINK_CIPHER_CHACHAPOLY | LINK_CIPHER_AESGCM;
    struct link *l;
    struct link_config c;
    struct end e = {.name = "x"};
    (void)state;

    /* The config must keep ChaChaPoly and name known ciphers only. */
    base_config(&c, &e, true);
    c.ciphers = LINK_CIPHER_AESGCM;
    assert_int_equal(link_new(&c, &cbs, &e, &l), MESH_EINVAL);
    c.ciphers = 0x04 | LINK_CIPHER_CHACHAPOLY;
    assert_int_equal(link_new(&c, &cbs, &e, &l), MESH_EINVAL);
    c.ciphers = LINK_CIPHER_AUTO;
    assert_int_equal(link_new(&c, &cbs, &e, &l), 0);
    assert_null(link_cipher_name(l)); /* not negotiated yet */
    link_free(l);

    /* Either side forbidding AES-GCM gives ChaCha20-Poly1305. */
    negotiate(LINK_CIPHER_CHACHAPOLY, LINK_CIPHER_CHACHAPOLY, "chacha20-poly1305");
    negotiate(LINK_CIPHER_CHACHAPOLY, LINK_CIPHER_AUTO, "chacha20-poly1305");
    negotiate(LINK_CIPHER_AUTO, LINK_CIPHER_CHACHAPOLY, "chacha20-poly1305");
    negotiate(both, LINK_CIPHER_CHACHAPOLY, "chacha20-poly1305");

    if (!link_aesgcm_available()) {
        print_message("AES-256-GCM is not available on this CPU\n");
        negotiate(LINK_CIPHER_AUTO, LINK_CIPHER_AUTO, "chacha20-poly1305");
        skip();
    }
    /* Both allow it (by default or explicitly): AES-256-GCM. */
    negotiate(LINK_CIPHER_AUTO, LINK_CIPHER_AUTO, "aes-256-gcm");
    negotiate(both, LINK_CIPHER_AUTO, "aes-256-gcm");
    negotiate(LINK_CIPHER_AUTO, both, "aes-256-gcm");
}

/* A hand-driven Noise peer for the link (the link's own messages are always well formed). */
struct raw_peer {
    struct noise_handshake hs;
    struct noise_cipher tx, rx;
    uint8_t priv[32];
};

static void raw_init(struct raw_peer *rp, bool initiator)
{
    static const char prologue[] = LINK_PROLOGUE;
    memset(rp, 0, sizeof *rp);
    randombytes_buf(rp->priv, sizeof rp->priv);
    struct noise_params np = {
        .pattern = NOISE_PATTERN_XXPSK3,
        .initiator = initiator,
        .prologue = (const uint8_t *)prologue,
        .prologue_len = strlen(prologue),
        .s_priv = rp->priv,
        .psk = key1,
    };
    assert_int_equal(noise_handshake_init(&rp->hs, &np), 0);
}

/* Takes one whole record from l's output: its body into out, returns its length. */
static size_t take_record(struct link *l, uint8_t *out, size_t cap)
{
    const uint8_t *ptr;
    size_t len, n;
    link_output_peek(l, &ptr, &len);
    assert_true(len >= 4);
    n = ((size_t)ptr[0] << 24) | ((size_t)ptr[1] << 16) | ((size_t)ptr[2] << 8) | ptr[3];
    assert_true(4 + n <= len && n <= cap);
    memcpy(out, ptr + 4, n);
    link_output_consume(l, 4 + n);
    return n;
}

static int feed_record(struct link *l, const uint8_t *body, size_t n, uint64_t now)
{
    uint8_t rec[4 + 2048];
    assert_true(n <= 2048);
    rec[0] = (uint8_t)(n >> 24), rec[1] = (uint8_t)(n >> 16), rec[2] = (uint8_t)(n >> 8);
    rec[3] = (uint8_t)n;
    memcpy(rec + 4, body, n);
    return link_feed(l, rec, 4 + n, now);
}

/* The responder link against a hand-made initiator: message 3's cipher byte decides, and the
 * HELLO that follows is encrypted with the negotiated AEAD on the wire. */
static void responder_gets_msg3(const uint8_t *payload, size_t plen, int want_rc,
                                const char *want_msg, const char *want_cipher)
{
    struct pair p;
    struct link_config cb;
    struct raw_peer ini;
    uint8_t m[2048], pt[1024];
    size_t n, k;

    pair_init(&p);
    base_config(&cb, &p.b, false);
    assert_int_equal(link_new(&cb, &cbs, &p.b, &p.b.l), 0);
    assert_int_equal(link_start(p.b.l, p.now), 0);
    raw_init(&ini, true);
    assert_int_equal(noise_handshake_write(&ini.hs, NULL, 0, m, sizeof m, &n), 0);
    assert_int_equal(feed_record(p.b.l, m, n, p.now), 0);
    n = take_record(p.b.l, m, sizeof m);
    assert_int_equal(noise_handshake_read(&ini.hs, m, n, pt, sizeof pt, &k), 0);
    /* message 2's payload: the responder's mask (bit 0, and bit 1 where AES-NI is), then its
     * application payload */
    assert_int_equal(k, 1 + strlen("node-b v1"));
    assert_int_equal(pt[0],
                     LINK_CIPHER_CHACHAPOLY | (link_aesgcm_available() ? LINK_CIPHER_AESGCM : 0));
    assert_memory_equal(pt + 1, "node-b v1", k - 1);

    assert_int_equal(noise_handshake_write(&ini.hs, payload, plen, m, sizeof m, &n), 0);
    int rc = feed_record(p.b.l, m, n, p.now);
    print_message("msg3 payload of %zu bytes, mask 0x%02x: %s\n", plen, plen ? payload[0] : 0,
                  rc ? link_error(p.b.l)->msg : link_cipher_name(p.b.l));
    assert_int_equal(rc, want_rc);
    if (want_rc) {
        assert_non_null(strstr(link_error(p.b.l)->msg, want_msg));
        assert_int_equal(link_state(p.b.l), LINK_STATE_DEAD);
        assert_int_equal(p.b.handshakes, 0);
        assert_int_equal(link_stats(p.b.l)->protocol_errors, 1);
        /* its last words: the plaintext abort notice, reason PROTO */
        const uint8_t *ptr;
        size_t len;
        link_output_peek(p.b.l, &ptr, &len);
        assert_int_equal(len, 4);
        assert_int_equal(ptr[3], LINK_GOAWAY_PROTO);
        assert_int_equal(ptr[0], 0xFF);
    } else {
        assert_string_equal(link_cipher_name(p.b.l), want_cipher);
        assert_int_equal(p.b.handshakes, 1);
        assert_int_equal(p.b.peer_payload_len, plen - 1);
        if (plen > 1)
            assert_memory_equal(p.b.peer_payload, payload + 1, plen - 1);
        assert_int_equal(noise_handshake_split(&ini.hs, &ini.tx, &ini.rx), 0);
        if (strcmp(want_cipher, "aes-256-gcm") == 0) {
            assert_int_equal(noise_cipher_use_aesgcm(&ini.rx), 0);
            assert_int_equal(noise_cipher_use_aesgcm(&ini.tx), 0);
        }
        n = take_record(p.b.l, m, sizeof m);
        assert_int_equal(n, LINK_FRAME_HDR_LEN + NOISE_TAGLEN);
        assert_int_equal(noise_cipher_decrypt(&ini.rx, NULL, 0, m, n, pt), 0);
        assert_int_equal(pt[0], 1); /* HELLO */
        /* and a PING from us, in the same cipher, gets its PONG */
        uint8_t ping[LINK_FRAME_HDR_LEN + 8] = {2, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8};
        assert_int_equal(noise_cipher_encrypt(&ini.tx, NULL, 0, ping, sizeof ping, m), 0);
        assert_int_equal(feed_record(p.b.l, m, sizeof ping + NOISE_TAGLEN, p.now), 0);
        n = take_record(p.b.l, m, sizeof m);
        assert_int_equal(noise_cipher_decrypt(&ini.rx, NULL, 0, m, n, pt), 0);
        assert_int_equal(pt[0], 3); /* PONG */
        assert_memory_equal(pt + LINK_FRAME_HDR_LEN, ping + LINK_FRAME_HDR_LEN, 8);
    }
    noise_handshake_wipe(&ini.hs);
    noise_cipher_wipe(&ini.tx), noise_cipher_wipe(&ini.rx);
    pair_free(&p);
}

/* The initiator link against a hand-made responder: message 2's cipher byte. */
static void initiator_gets_msg2(const uint8_t *payload, size_t plen, const char *want_msg)
{
    struct pair p;
    struct link_config ca;
    struct raw_peer res;
    uint8_t m[2048], pt[1024];
    size_t n, k;

    pair_init(&p);
    base_config(&ca, &p.a, true);
    assert_int_equal(link_new(&ca, &cbs, &p.a, &p.a.l), 0);
    assert_int_equal(link_start(p.a.l, p.now), 0);
    raw_init(&res, false);
    n = take_record(p.a.l, m, sizeof m);
    assert_int_equal(noise_handshake_read(&res.hs, m, n, pt, sizeof pt, &k), 0);
    assert_int_equal(noise_handshake_write(&res.hs, payload, plen, m, sizeof m, &n), 0);
    int rc = feed_record(p.a.l, m, n, p.now);
    print_message("msg2 payload of %zu bytes: %s\n", plen,
                  rc ? link_error(p.a.l)->msg : "accepted");
    if (!want_msg) {
        assert_int_equal(rc, 0);
        assert_int_equal(link_state(p.a.l), LINK_STATE_HANDSHAKE); /* message 3 sent */
        n = take_record(p.a.l, m, sizeof m);
        assert_int_equal(noise_handshake_read(&res.hs, m, n, pt, sizeof pt, &k), 0);
        assert_true(k >= 1 && (pt[0] & LINK_CIPHER_CHACHAPOLY));
        assert_memory_equal(pt + 1, "node-a v1", k - 1);
    } else {
        assert_int_equal(rc, MESH_EPROTO);
        assert_non_null(strstr(link_error(p.a.l)->msg, want_msg));
        assert_int_equal(link_state(p.a.l), LINK_STATE_DEAD);
        assert_int_equal(link_stats(p.a.l)->protocol_errors, 1);
    }
    noise_handshake_wipe(&res.hs);
    pair_free(&p);
}

static void test_cipher_byte(void **state)
{
    static const uint8_t chacha_only[] = {LINK_CIPHER_CHACHAPOLY, 'p', 'y'};
    static const uint8_t no_bit0[] = {LINK_CIPHER_AESGCM, 'p', 'y'};
    static const uint8_t zero[] = {0};
    static const uint8_t future[] = {0xFD}; /* unknown bits ignored, no AES-GCM */
    static const uint8_t both[] = {LINK_CIPHER_CHACHAPOLY | LINK_CIPHER_AESGCM, 'x'};
    static const uint8_t both_future[] = {0xFF, 'x'};
    (void)state;

    responder_gets_msg3(NULL, 0, MESH_EPROTO, "message 3: the payload has no cipher byte", NULL);
    responder_gets_msg3(no_bit0, sizeof no_bit0, MESH_EPROTO, "mask 0x02 lacks", NULL);
    responder_gets_msg3(zero, sizeof zero, MESH_EPROTO, "lacks ChaCha20-Poly1305", NULL);
    responder_gets_msg3(chacha_only, sizeof chacha_only, 0, NULL, "chacha20-poly1305");
    responder_gets_msg3(future, sizeof future, 0, NULL, "chacha20-poly1305");

    initiator_gets_msg2(NULL, 0, "message 2: the payload has no cipher byte");
    initiator_gets_msg2(no_bit0, sizeof no_bit0, "mask 0x02 lacks");
    initiator_gets_msg2(chacha_only, sizeof chacha_only, NULL);

    if (!link_aesgcm_available()) {
        responder_gets_msg3(both, sizeof both, 0, NULL, "chacha20-poly1305");
        skip();
    }
    responder_gets_msg3(both, sizeof both, 0, NULL, "aes-256-gcm");
    responder_gets_msg3(both_future, sizeof both_future, 0, NULL, "aes-256-gcm");
}

/* The largest application payload still fits once the cipher byte is added. */
static void test_max_payload(void **state)
{
    static uint8_t big_a[LINK_HS_PAYLOAD_MAX], big_b[LINK_HS_PAYLOAD_MAX];
    struct pair p;
    struct link_config ca, cb;
    (void)state;

    memset(big_a, 'a', sizeof big_a);
    memset(big_b, 'b', sizeof big_b);
    pair_init(&p);
    base_config(&ca, &p.a, true);
    base_config(&cb, &p.b, false);
    ca.payload = big_a, ca.payload_len = sizeof big_a;
    cb.payload = big_b, cb.payload_len = sizeof big_b;
    pair_create(&p, &ca, &cb);
    pair_handshake(&p);
    assert_int_equal(p.rc_a, 0);
    assert_int_equal(p.rc_b, 0);
    assert_int_equal(p.a.peer_payload_len, sizeof big_b);
    assert_memory_equal(p.a.peer_payload, big_b, sizeof big_b);
    assert_int_equal(p.b.peer_payload_len, sizeof big_a);
    assert_memory_equal(p.b.peer_payload, big_a, sizeof big_a);
    pair_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_ok),
        cmocka_unit_test(test_handshake_split_bytes),
        cmocka_unit_test(test_handshake_wrong_psk),
        cmocka_unit_test(test_handshake_key_ring),
        cmocka_unit_test(test_handshake_rejected),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_channels),
        cmocka_unit_test(test_zero_copy),
        cmocka_unit_test(test_flow_control),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_control_beyond_bulk_cap),
        cmocka_unit_test(test_rekey),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_cipher_negotiation),
        cmocka_unit_test(test_cipher_byte),
        cmocka_unit_test(test_max_payload),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
