/* libFuzzer: arbitrary post-handshake input to an established link (b).
 * A pair a (initiator) <-> b (responder) is established deterministically in memory for each
 * input; then the input is a list of commands [u8 op][u8 len][len bytes]:
 *   op % 5 == 0: raw bytes on the wire to b (mostly fails authentication: the outer parser)
 *   op % 5 == 1: a plaintext frame, encrypted by a (link_test_send_raw), so b's frame parser
 *                sees valid ciphertext with arbitrary content
 *   op % 5 == 2: b's application: open/send/consume/close/reset on some channel
 *   op % 5 == 3: time passes, both tick
 *   op % 5 == 4: a's application (so that b sees real OPEN/DATA/FIN/RESET sequences)
 * Output is pumped both ways after each command. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "link.h"

struct side {
    struct link *l;
    uint32_t last_id;
    uint64_t unconsumed;
};

static int on_handshake(void *ud, const uint8_t peer[LINK_KEY_LEN], const uint8_t *p, size_t n)
{
    (void)ud, (void)peer, (void)p, (void)n;
    return 0;
}

static uint32_t on_open(void *ud, uint32_t id, uint16_t type, const uint8_t *p, size_t n)
{
    struct side *s = ud;
    (void)p, (void)n;
    s->last_id = id;
    return (type & 1) ? 0 : 5; /* refuse even types */
}

static void on_data(void *ud, uint32_t id, const uint8_t *d, size_t n)
{
    struct side *s = ud;
    (void)d;
    s->last_id = id;
    if (n & 1)
        (void)link_channel_consume(s->l, id, n);
}

static void on_writable(void *ud, uint32_t id)
{
    struct side *s = ud;
    (void)link_channel_send(s->l, id, (const uint8_t *)"w", 1);
}

static void on_closed(void *ud, uint32_t id)
{
    struct side *s = ud;
    (void)link_channel_close(s->l, id);
}

static void on_reset(void *ud, uint32_t id, uint32_t reason)
{
    (void)ud, (void)id, (void)reason;
}

static const struct link_callbacks cbs = {
    .on_handshake = on_handshake,
    .on_channel_open = on_open,
    .on_channel_data = on_data,
    .on_channel_writable = on_writable,
    .on_channel_closed = on_closed,
    .on_channel_reset = on_reset,
};

static void make(struct side *s, bool initiator, uint8_t seed)
{
    struct link_config c;
    uint8_t eph[32];
    link_config_init(&c);
    c.initiator = initiator;
    memset(c.static_priv, seed, sizeof c.static_priv);
    memset(c.psks[0], 0x42, 32);
    c.n_psks = 1;
    memset(eph, seed + 1, sizeof eph);
    c.test_ephemeral = eph;
    /* small limits so that the fuzzer reaches them */
    c.max_frame_payload = 512;
    c.max_channels = 4;
    c.chan_window = 2048;
    c.chan_sndbuf = 4096;
    c.rekey_bytes = 3000;
    c.rekey_ms = 5000;
    memset(s, 0, sizeof *s);
    if (link_new(&c, &cbs, s, &s->l) != 0)
        __builtin_trap();
}

/* Moves output both ways; returns b's status. */
static int pump(struct side *a, struct side *b, uint64_t now, int *rc_a)
{
    int rc_b = 0;
    for (int i = 0; i < 1000; i++) {
        const uint8_t *p;
        size_t n, moved = 0;
        link_output_peek(a->l, &p, &n);
        if (n && rc_b == 0)
            rc_b = link_feed(b->l, p, n, now);
        link_output_consume(a->l, n);
        moved += n;
        link_output_peek(b->l, &p, &n);
        if (n && *rc_a == 0)
            *rc_a = link_feed(a->l, p, n, now);
        link_output_consume(b->l, n);
        moved += n;
        if (!moved)
            break;
    }
    return rc_b;
}

static void app(struct side *s, const uint8_t *d, size_t n)
{
    uint8_t op = n ? d[0] : 0;
    uint32_t id = s->last_id;
    if (n > 1)
        id = d[1] % 16;
    switch (op % 6) {
    case 0:
        if (link_channel_open(s->l, (uint16_t)(n > 2 ? d[2] | 1 : 1), d, n > 8 ? 8 : n, &id) == 0)
            s->last_id = id;
        break;
    case 1:
        (void)link_channel_send(s->l, id, d, n);
        break;
    case 2:
        (void)link_channel_consume(s->l, id, n * 16);
        break;
    case 3:
        (void)link_channel_close(s->l, id);
        break;
    case 4:
        (void)link_channel_reset(s->l, id, op);
        break;
    default: {
        uint8_t big[8192] = {0};
        (void)link_channel_send(s->l, id, big, sizeof big);
        break;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct side sa, sb, *a = &sa, *b = &sb;
    uint64_t now = 1000;
    int rc_a = 0, rc_b;

    if (sodium_init() < 0)
        return 0;
    make(a, true, 3);
    make(b, false, 5);
    (void)link_start(a->l, now);
    (void)link_start(b->l, now);
    if (pump(a, b, now, &rc_a) != 0 || rc_a != 0 || link_state(b->l) != LINK_STATE_ESTABLISHED)
        __builtin_trap(); /* the deterministic handshake must work */

    rc_b = 0;
    while (size >= 2 && rc_b == 0) {
        uint8_t op = data[0], len = data[1];
        data += 2, size -= 2;
        if (len > size)
            len = (uint8_t)size;
        switch (op % 5) {
        case 0:
            rc_b = link_feed(b->l, data, len, now);
            break;
        case 1:
            (void)link_test_send_raw(a->l, data, len);
            break;
        case 2:
            app(b, data, len);
            break;
        case 3:
            now += (uint64_t)len * 1000;
            (void)link_tick(a->l, now);
            rc_b = link_tick(b->l, now);
            break;
        default:
            app(a, data, len);
            break;
        }
        data += len, size -= len;
        if (rc_b == 0)
            rc_b = pump(a, b, now, &rc_a);
    }
    if (rc_b != 0 && link_state(b->l) != LINK_STATE_DEAD)
        __builtin_trap();
    link_free(a->l);
    link_free(b->l);
    return 0;
}
