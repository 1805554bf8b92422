/* libFuzzer harness for sealed gossip packets (netlink/keyring.h) and what lies behind them.
 * The first input byte picks a mode; the rest is the body:
 *   0: the body as a packet on the wire: seal_open with a fixed two-key ring (the outer parser;
 *      it fails authentication unless the body is a seed sealed with a key of the ring, which
 *      then goes on to swim_recv).
 *   1: the body as the payload of a validly sealed packet (with the primary key, or with the
 *      second key of the ring as a peer that rotated first): it must open to exactly the same
 *      bytes and inner header; then replay_check (a second check must be a replay) and swim_recv
 *      of a SWIM node, so the gossip decoder behind the crypto is reached.
 *   2: a validly sealed packet with one bit flipped where the body's first two bytes say: it
 *      must not open.
 *   3: the body as records [u8 sender][u8 epoch][u16 seq] for one replay table, checked against
 *      a model: no (sender, epoch, seq) is ever accepted twice, nor an epoch older than one
 *      already accepted for that sender (the table holds every sender: no eviction).
 * Nonces are random, but no outcome depends on them.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon -Inetlink -Imeshd \
 *       tests/fuzz/fuzz_gossip_seal.c netlink/keyring.c netlink/identity.c meshd/swim.c \
 *       meshd/swim_wire.c common/err.c common/addr.c common/wire.c \
 *       common/meshkey.c -lsodium -lmsgpackc -lm -o fuzz_gossip_seal */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keyring.h"
#include "swim.h"

static const uint8_t key_a[MESH_KEY_LEN] = {0x6d, 0x65, 0x73, 0x68, 1};
static const uint8_t key_b[MESH_KEY_LEN] = {0x6d, 0x65, 0x73, 0x68, 2};

static struct keyring ring;    /* key_a primary, key_b installed */
static struct keyring ring_b;  /* key_b primary, key_a installed: a peer that rotated first */
static struct keyring ring_no; /* an unrelated key */

static int io_send(void *ud, const struct mesh_addr *to, const uint8_t *buf, size_t len)
{
    (void)ud, (void)to, (void)buf, (void)len;
    return 0;
}

static int io_pushpull(void *ud, uint64_t req, const struct mesh_addr *to, const uint8_t *state,
                       size_t len)
{
    (void)ud, (void)req, (void)to, (void)state, (void)len;
    return 0;
}

static uint32_t io_random(void *ud)
{
    uint32_t *rng = ud;
    *rng = *rng * 1103515245u + 12345u;
    return *rng >> 8;
}

static void setup(void)
{
    static bool done;
    if (done)
        return;
    if (sodium_init() < 0)
        abort();
    keyring_init(&ring, key_a);
    if (keyring_install(&ring, key_b) < 0)
        abort();
    keyring_init(&ring_b, key_b);
    if (keyring_install(&ring_b, key_a) < 0)
        abort();
    uint8_t other[MESH_KEY_LEN];
    memset(other, 0x77, sizeof other);
    keyring_init(&ring_no, other);
    done = true;
}

static void swim_feed(const uint8_t *payload, size_t len)
{
    uint32_t rng = 1;
    struct swim_io io = {
        .data = &rng, .send_packet = io_send, .pushpull = io_pushpull, .random = io_random};
    struct swim_config cfg;
    struct swim *s;
    swim_config_init(&cfg);
    cfg.name = "self";
    cfg.id[0] = 0xaa;
    cfg.addr.family = 4;
    cfg.addr.ip[0] = 10;
    cfg.addr.ip[3] = 100;
    cfg.addr.port = 7946;
    cfg.max_members = 16;
    cfg.max_broadcasts = 16;
    if (swim_new(&cfg, &io, 1000, &s, NULL) != 0)
        abort();
    struct mesh_addr from = cfg.addr;
    from.ip[3] = 2;
    swim_recv(s, &from, payload, len, 1000);
    swim_tick(s, 2000);
    if (swim_member_count(s) > cfg.max_members)
        abort();
    swim_free(s);
}

static void mode_open_raw(const uint8_t *p, size_t n)
{
    uint8_t out[SEAL_MAX_PACKET];
    struct seal_inner in;
    const uint8_t *payload;
    int rc = seal_open(&ring, p, n, out, sizeof out, &in, &payload);
    if (rc >= 0) /* only from a seed: a fuzzer does not forge tags */
        swim_feed(payload, (size_t)rc);
    else if (rc != MESH_EMALFORMED && rc != MESH_EAUTH)
        abort();
}

static void mode_sealed(uint8_t mode, const uint8_t *p, size_t n)
{
    uint8_t pkt[SEAL_MAX_PACKET], out[SEAL_MAX_PACKET];
    struct seal_inner in = {.epoch = 3, .seq = 7}, got;
    const uint8_t *payload;
    if (n > SEAL_MAX_PAYLOAD)
        n = SEAL_MAX_PAYLOAD;
    memset(in.sender, 0x42, sizeof in.sender);
    in.sender[0] = mode;
    const struct keyring *sealer = (mode & 0x10) ? &ring_b : &ring;
    int len = seal_packet(sealer, &in, n ? p : (const uint8_t *)"", n, pkt, sizeof pkt);
    if (len != (int)(SEAL_OVERHEAD + n))
        abort();
    int rc = seal_open(&ring, pkt, (size_t)len, out, sizeof out, &got, &payload);
    if (rc != (int)n || memcmp(&got, &in, sizeof got) != 0 || (n && memcmp(payload, p, n) != 0))
        abort();
    if (seal_open(&ring_no, pkt, (size_t)len, out, sizeof out, &got, &payload) != MESH_EAUTH)
        abort();
    /* Opened again after the failed attempt: the output buffer was reused. */
    rc = seal_open(&ring, pkt, (size_t)len, out, sizeof out, &got, &payload);
    if (rc != (int)n)
        abort();

    struct replay_table t;
    if (replay_init(&t, 4) < 0)
        abort();
    if (replay_check(&t, &got, NULL) != 0 || replay_check(&t, &got, NULL) != MESH_EREPLAY)
        abort();
    replay_free(&t);

    swim_feed(payload, (size_t)rc);
}

static void mode_tampered(const uint8_t *p, size_t n)
{
    uint8_t pkt[SEAL_MAX_PACKET], out[SEAL_MAX_PACKET];
    struct seal_inner in = {.epoch = 1, .seq = 1}, got;
    const uint8_t *payload;
    if (n < 2)
        return;
    size_t pos = (size_t)p[0] << 8 | p[1];
    p += 2;
    n -= 2;
    if (n > SEAL_MAX_PAYLOAD)
        n = SEAL_MAX_PAYLOAD;
    int len = seal_packet(&ring, &in, n ? p : (const uint8_t *)"", n, pkt, sizeof pkt);
    if (len < 0)
        abort();
    pos %= (size_t)len * 8;
    pkt[pos / 8] ^= (uint8_t)(1u << (pos % 8));
    if (seal_open(&ring, pkt, (size_t)len, out, sizeof out, &got, &payload) >= 0)
        abort();
}

#define MAX_RECORDS 512

struct seen {
    uint8_t sender;
    uint8_t epoch;
    uint16_t seq;
};

static void mode_replay(const uint8_t *p, size_t n)
{
    static struct seen seen[MAX_RECORDS];
    size_t nseen = 0;
    int first_epoch[8]; /* each sender's current epoch: the first one accepted */
    struct replay_table t;
    for (int i = 0; i < 8; i++)
        first_epoch[i] = -1;
    if (replay_init(&t, 8) < 0)
        abort();
    for (size_t off = 0; off + 4 <= n && nseen < MAX_RECORDS; off += 4) {
        struct seen r = {.sender = p[off] % 8,
                         .epoch = p[off + 1] % 4,
                         .seq = (uint16_t)(p[off + 2] << 8 | p[off + 3])};
        struct seal_inner in = {.epoch = r.epoch, .seq = r.seq};
        memset(in.sender, 0, sizeof in.sender);
        in.sender[0] = r.sender;
        int rc = replay_check(&t, &in, NULL);
        if (rc != 0 && rc != MESH_EREPLAY)
            abort();
        if (rc != 0)
            continue;
        if ((int)r.epoch < first_epoch[r.sender])
            abort(); /* an epoch older than the sender's current one */
        /* The current epoch's window is never given up (a newer, perhaps forged, epoch gets
         * a window of its own), so nothing in it is accepted twice; the windows of newer
         * epochs are few and may be recycled. */
        if (first_epoch[r.sender] < 0 || (int)r.epoch == first_epoch[r.sender])
            for (size_t i = 0; i < nseen; i++)
                if (seen[i].sender == r.sender && seen[i].epoch == r.epoch && seen[i].seq == r.seq)
                    abort(); /* accepted twice */
        if (first_epoch[r.sender] < 0)
            first_epoch[r.sender] = r.epoch;
        seen[nseen++] = r;
    }
    replay_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    setup();
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0:
        mode_open_raw(p, n);
        break;
    case 1:
        mode_sealed(data[0], p, n);
        break;
    case 2:
        mode_tampered(p, n);
        break;
    default:
        mode_replay(p, n);
        break;
    }
    return 0;
}
