/* libFuzzer: arbitrary bytes into a link in the middle of the handshake.
 * The first input byte picks where: 0 a fresh responder (bytes are message 1 onwards), 1 a
 * responder that got a valid message 1 (bytes are message 3 onwards), 2 an initiator that sent
 * message 1 (bytes are message 2 onwards). The rest is fed in chunks whose sizes come from the
 * input too, so record reassembly is exercised. Keys and ephemerals are fixed: deterministic. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "link.h"

static int on_handshake(void *ud, const uint8_t peer[LINK_KEY_LEN], const uint8_t *p, size_t n)
{
    (void)ud, (void)peer, (void)p, (void)n;
    return 0;
}

static const struct link_callbacks cbs = {.on_handshake = on_handshake};

static void make(struct link **ret, bool initiator, uint8_t seed)
{
    struct link_config c;
    uint8_t eph[32];
    link_config_init(&c);
    c.initiator = initiator;
    memset(c.static_priv, seed, sizeof c.static_priv);
    memset(c.psks[0], 0x42, 32);
    memset(c.psks[1], 0x43, 32);
    c.n_psks = initiator ? 1 : 2;
    c.payload = (const uint8_t *)"fuzz";
    c.payload_len = 4;
    memset(eph, seed + 1, sizeof eph);
    c.test_ephemeral = eph;
    if (link_new(&c, &cbs, NULL, ret) != 0)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct link *l, *peer = NULL;
    const uint8_t *p;
    size_t n;
    uint64_t now = 1000;

    if (size < 1 || sodium_init() < 0)
        return 0;
    uint8_t mode = data[0] % 3;
    data++, size--;

    make(&l, mode == 2, 7);
    (void)link_start(l, now);
    if (mode == 1) {
        /* a real initiator's message 1 first */
        make(&peer, true, 9);
        (void)link_start(peer, now);
        link_output_peek(peer, &p, &n);
        if (link_feed(l, p, n, now) != 0)
            __builtin_trap();
    }
    while (size > 0) {
        size_t chunk = (size_t)data[0] % 64 + 1;
        data++, size--;
        if (chunk > size)
            chunk = size;
        if (link_feed(l, data, chunk, ++now) != 0)
            break;
        data += chunk, size -= chunk;
        link_output_peek(l, &p, &n);
        link_output_consume(l, n);
    }
    (void)link_tick(l, now + 10000);
    link_output_peek(l, &p, &n);
    link_output_consume(l, n);
    link_free(l);
    link_free(peer);
    return 0;
}
