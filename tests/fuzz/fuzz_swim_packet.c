/* libFuzzer harness for the SWIM input surfaces: UDP payloads (swim_recv), push-pull requests
 * (swim_pushpull_recv) and push-pull replies (swim_pushpull_merge), each fed to a node that
 * already knows a few members, is probing one and has a join in flight. The first input byte
 * picks the surface; the rest is the payload.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon -Imeshd \
 *       tests/fuzz/fuzz_swim_packet.c meshd/swim.c meshd/swim_wire.c common/wire.c \
 *       common/err.c common/addr.c -lmsgpackc -lm -o fuzz_swim_packet */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "swim.h"
#include "swim_wire.h"
#include "wire.h"

struct fz {
    uint32_t rng;
    uint64_t req;
};

static int fz_send(void *ud, const struct mesh_addr *to, const uint8_t *buf, size_t len)
{
    (void)ud;
    (void)to;
    (void)buf;
    (void)len;
    return 0;
}

static int fz_pushpull(void *ud, uint64_t req, const struct mesh_addr *to, const uint8_t *state,
                       size_t len)
{
    struct fz *f = ud;
    (void)to;
    (void)state;
    (void)len;
    f->req = req;
    return 0;
}

static uint32_t fz_random(void *ud)
{
    struct fz *f = ud;
    f->rng = f->rng * 1103515245u + 12345u;
    return f->rng >> 8;
}

static struct mesh_addr addr_of(unsigned i)
{
    struct mesh_addr a;
    memset(&a, 0, sizeof a);
    a.family = 4;
    a.ip[0] = 10;
    a.ip[3] = (uint8_t)i;
    a.port = 7946;
    return a;
}

/* Teaches s about members m1..m4 with one gossip packet. */
static void seed_members(struct swim *s, uint64_t now)
{
    uint8_t buf[1400];
    struct wire_wr w;
    struct swim_hdr h;
    memset(&h, 0, sizeof h);
    h.type = SWIM_PKT_GOSSIP;
    strcpy(h.name, "m1");
    h.id[0] = 1;
    h.count = 4;
    wire_wr_init(&w, buf, sizeof buf);
    swim_wire_pack_hdr(&w.pk, &h);
    for (int i = 1; i <= 4; i++) {
        struct swim_msg m;
        memset(&m, 0, sizeof m);
        m.type = SWIM_MSG_ALIVE;
        m.name[0] = 'm';
        m.name[1] = (char)('0' + i);
        m.id[0] = (uint8_t)i;
        m.addr = addr_of((unsigned)i);
        m.incarnation = (uint64_t)i;
        m.meta = (const uint8_t *)"meta";
        m.meta_len = 4;
        swim_wire_pack_msg(&w.pk, &m);
    }
    struct mesh_addr from = addr_of(1);
    swim_recv(s, &from, buf, w.len, now);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct fz f = {.rng = 1};
    struct swim_io io = {
        .data = &f, .send_packet = fz_send, .pushpull = fz_pushpull, .random = fz_random};
    struct swim_config cfg;
    swim_config_init(&cfg);
    cfg.name = "self";
    cfg.id[0] = 0xaa;
    cfg.addr = addr_of(100);
    cfg.max_members = 16;
    cfg.max_broadcasts = 16;
    struct swim *s;
    uint64_t now = 1000;
    if (swim_new(&cfg, &io, now, &s, NULL) != 0)
        return 0;
    seed_members(s, now);
    struct mesh_addr seed = addr_of(1);
    swim_join(s, &seed, 1, now);
    /* Let a probe start and time out, so acks, nacks and suspicions have something to hit. */
    for (int i = 0; i < 4; i++) {
        now += 600;
        swim_tick(s, now);
    }

    const uint8_t *p = data + 1;
    size_t n = size - 1;
    struct mesh_addr from = addr_of(2);
    switch (data[0] % 3) {
    case 0:
        swim_recv(s, &from, p, n, now);
        break;
    case 1: {
        uint8_t *reply = NULL;
        size_t rlen = 0;
        struct mesh_err err;
        int rc = swim_pushpull_recv(s, &from, p, n, now, &reply, &rlen, &err);
        if (rc == 0 || rc == MESH_EEXISTS)
            free(reply);
        break;
    }
    default: {
        struct mesh_err err;
        swim_pushpull_merge(s, f.req, p, n, now, &err);
        break;
    }
    }
    /* Whatever was accepted must not upset the timers. */
    for (int i = 0; i < 8; i++) {
        uint64_t d = swim_next_deadline(s);
        if (d == SWIM_NO_DEADLINE)
            break;
        now = d > now ? d : now + 1;
        swim_tick(s, now);
    }
    if (swim_member_count(s) > cfg.max_members)
        abort();
    swim_free(s);
    return 0;
}
