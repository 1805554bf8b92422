/* libFuzzer: arbitrary bytes into a link in the middle of the handshake.
 * The first input byte picks where: 0 a fresh responder (bytes are message 1 onwards), 1 a
 * responder that got a valid message 1 (bytes are message 3 onwards), 2 an initiator that sent
 * message 1 (bytes are message 2 onwards). The rest is fed in chunks whose sizes come from the
 * input too, so record reassembly is exercised.
 * Modes 3 and 4 reach the parser of what the handshake decrypts (the cipher byte, link.h
 * "Cipher negotiation"): a Noise peer made here with noise.h completes the handshake with the
 * link, and the rest of the input is the payload of its message 3 (3: the link is the
 * responder) or message 2 (4: the link is the initiator). Keys and ephemerals are fixed:
 * deterministic. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "link.h"
#include "noise.h"

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

static void feed_record(struct link *l, const uint8_t *body, size_t n, uint64_t now)
{
    uint8_t hdr[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    if (link_feed(l, hdr, 4, now) == 0)
        (void)link_feed(l, body, n, now);
}

/* The body of the first record of l's output (the link's next handshake message). */
static size_t take_record(struct link *l, uint8_t *out, size_t cap)
{
    const uint8_t *p;
    size_t n, len;
    link_output_peek(l, &p, &n);
    if (n < 4)
        return 0;
    len = ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
    if (len > n - 4 || len > cap)
        return 0;
    memcpy(out, p + 4, len);
    link_output_consume(l, 4 + len);
    return len;
}

/* Modes 3 and 4: a Noise peer completes the handshake with payload as its message 3 or 2. */
static void with_noise_peer(struct link *l, bool link_initiator, const uint8_t *payload,
                            size_t plen, uint64_t now)
{
    static const char prologue[] = LINK_PROLOGUE;
    uint8_t s_priv[32], eph[32], psk[32], m[LINK_HS_MSG_MAX + 64], pt[LINK_HS_MSG_MAX];
    struct noise_handshake hs;
    size_t n, k;

    memset(s_priv, 11, sizeof s_priv);
    memset(eph, 12, sizeof eph);
    memset(psk, 0x42, sizeof psk);
    struct noise_params np = {.pattern = NOISE_PATTERN_XXPSK3,
                              .initiator = !link_initiator,
                              .prologue = (const uint8_t *)prologue,
                              .prologue_len = sizeof prologue - 1,
                              .s_priv = s_priv,
                              .psk = psk,
                              .test_ephemeral = eph};
    if (plen > LINK_HS_MSG_MAX - 128)
        plen = LINK_HS_MSG_MAX - 128;
    if (noise_handshake_init(&hs, &np) != 0)
        __builtin_trap();
    if (!link_initiator) {
        if (noise_handshake_write(&hs, NULL, 0, m, sizeof m, &n) != 0)
            __builtin_trap();
        feed_record(l, m, n, now);
    }
    n = take_record(l, m, sizeof m); /* message 2 (or 1) */
    if (noise_handshake_read(&hs, m, n, pt, sizeof pt, &k) != 0)
        __builtin_trap(); /* the link's own messages are always valid */
    if (noise_handshake_write(&hs, payload, plen, m, sizeof m, &n) != 0)
        __builtin_trap();
    feed_record(l, m, n, now);
    noise_handshake_wipe(&hs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct link *l, *peer = NULL;
    const uint8_t *p;
    size_t n;
    uint64_t now = 1000;

    if (size < 1 || sodium_init() < 0)
        return 0;
    uint8_t mode = data[0] % 5;
    data++, size--;

    make(&l, mode == 2 || mode == 4, 7);
    (void)link_start(l, now);
    if (mode >= 3) {
        with_noise_peer(l, mode == 4, data, size, now);
        size = 0;
    }
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
