/* SWIM + Lifeguard membership state machine. See swim.h for the sources; section references
 * below are to the SWIM paper (DSN 2002) and the Lifeguard paper (arXiv:1707.00788). */
#include "swim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* Independent suspicion confirmations we track (k = suspicion_mult - 2 is 2 by default). */
#define SUSP_K_MAX 16
/* How often to look for dead/left members to reap. */
#define REAP_CHECK_MS 10000
/* memberlist's pushPullScaleThreshold: above this many members, push-pull less often. */
#define PUSHPULL_SCALE_THRESHOLD 32
/* Largest number of messages we put in one packet. */
#define PKT_MSGS_MAX 255
/* Upper bound of one push-pull entry: fixarray, name, id, addr, incarnation, state, meta. */
#define PP_ENTRY_MAX (1 + 66 + 18 + 21 + 9 + 1 + 515)
#define PP_HDR_MAX   512
/* After a join, the first anti-entropy push-pull comes within 1-2 of these (ms). */
#define JOIN_SETTLE_MS 2000

/* Lifeguard §4.2 (and memberlist suspicion.go): a suspicion whose timeout starts at `max` and
 * shrinks towards `min` as independent members confirm it. Confirmers are remembered by a hash
 * of their name: a collision only costs one confirmation, and keeps this fixed-size. */
struct susp {
    bool active;
    uint32_t n; /* confirmations so far, not counting the first suspecter */
    uint32_t k; /* confirmations expected */
    uint32_t nconf;
    uint64_t start, min, max, deadline;
    uint64_t conf[SUSP_K_MAX + 1];
};

struct member {
    struct swim_member pub;
    struct susp susp;
};

/* One queued state message (memberlist's TransmitLimitedQueue entry). */
struct bcast {
    char name[SWIM_NAME_MAX + 1]; /* the member it is about: newer messages replace older */
    uint64_t id;                  /* insertion order: newer first among equal transmits */
    uint32_t transmits;
    bool leave; /* our own "left": swim_leave waits for it */
    size_t len;
    uint8_t data[SWIM_MSG_MAX];
};

/* A ping-req we relay (SWIM §3.1): we ping the target with our own seq and answer the origin
 * with an ack, or with a nack when the target stays silent (Lifeguard §4.1). */
struct relay {
    bool used;
    bool nack;
    uint32_t seq;
    uint32_t origin_seq;
    struct mesh_addr origin;
    uint64_t deadline;
};

struct probe {
    bool active;
    bool indirect; /* ping-reqs sent */
    uint32_t seq;
    char target[SWIM_NAME_MAX + 1];
    uint8_t target_id[SWIM_ID_LEN];
    uint64_t timeout_at; /* direct ack expected by then, else ping-req */
    uint64_t end_at;     /* any ack expected by then, else suspect */
    uint32_t expected_nacks, nacks;
};

/* What a link proved about a member (swim_prove). */
struct proof {
    uint8_t id[SWIM_ID_LEN];
    char name[SWIM_NAME_MAX + 1];
    struct mesh_addr addr;
    uint64_t at; /* 0: free */
};

struct swim {
    struct swim_config cfg;
    char name[SWIM_NAME_MAX + 1];
    struct swim_io io;
    struct swim_stats stats;

    struct member *self;
    struct member **members; /* shuffled: probe order (SWIM §4.3) */
    size_t n;
    struct member **index; /* open addressing by name hash */
    size_t index_mask;
    struct member **scratch;
    size_t counts[5]; /* by enum swim_member_state */
    size_t n_unverified;
    struct proof proofs[SWIM_PROOFS_MAX];

    size_t probe_idx;
    uint32_t seq;
    unsigned awareness; /* Lifeguard local health score */
    struct probe probe;
    uint64_t next_probe, next_gossip, next_pushpull, next_reap, next_reconnect;

    struct bcast **bq; /* sorted: fewest transmits first, then newest first */
    size_t bq_n;
    uint64_t bq_next_id;

    struct relay *relays;

    size_t n_susp;
    uint64_t susp_min; /* never later than the earliest suspicion deadline */

    uint64_t next_req;
    uint64_t join_req; /* push-pull request ids in flight, 0 = none */
    uint64_t pp_req;
    uint64_t rc_req; /* reconnect */
    bool joining;
    struct mesh_addr seeds[SWIM_MAX_SEEDS];
    size_t nseeds, seed_idx;
    int join_last_rc;

    bool leaving, leave_sent, leave_reported;
    uint64_t leave_deadline;

    size_t hdr_base; /* header size with a one-byte array header */
    uint8_t *pkt;
};

/* ---- small helpers ---- */

const char *swim_state_name(enum swim_member_state st)
{
    switch (st) {
    case SWIM_NONE:
        return "none";
    case SWIM_ALIVE:
        return "alive";
    case SWIM_SUSPECT:
        return "suspect";
    case SWIM_DEAD:
        return "dead";
    case SWIM_LEFT:
        return "left";
    }
    return "?";
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static uint32_t rnd(struct swim *s)
{
    return s->io.random(s->io.data);
}

static void id_hex(const uint8_t id[static SWIM_ID_LEN], char out[static 2 * SWIM_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < SWIM_ID_LEN; i++) {
        out[2 * i] = hex[id[i] >> 4];
        out[2 * i + 1] = hex[id[i] & 15];
    }
    out[2 * SWIM_ID_LEN] = '\0';
}

static bool is_live(const struct member *m)
{
    return m->pub.state == SWIM_ALIVE || m->pub.state == SWIM_SUSPECT;
}

static void notify(struct swim *s, const struct member *m, enum swim_member_state old)
{
    if (s->io.member_changed)
        s->io.member_changed(s->io.data, &m->pub, old);
}

/* Lifeguard §4.1: timeouts grow with the local health score, so a node that is itself slow (CPU
 * starved, dropping packets) waits longer before blaming others. */
static uint64_t scaled(const struct swim *s, uint64_t t)
{
    return t * (s->awareness + 1);
}

static void awareness_delta(struct swim *s, int d)
{
    int v = (int)s->awareness + d;
    int max = (int)s->cfg.awareness_max - 1;
    s->awareness = (unsigned)(v < 0 ? 0 : v > max ? max : v);
}

/* ---- member table ---- */

static struct member *find(const struct swim *s, const char *name)
{
    size_t i = name_hash(name) & s->index_mask;
    while (s->index[i]) {
        if (strcmp(s->index[i]->pub.name, name) == 0)
            return s->index[i];
        i = (i + 1) & s->index_mask;
    }
    return NULL;
}

static void index_put(struct swim *s, struct member *m)
{
    size_t i = name_hash(m->pub.name) & s->index_mask;
    while (s->index[i])
        i = (i + 1) & s->index_mask;
    s->index[i] = m;
}

static void index_rebuild(struct swim *s)
{
    memset(s->index, 0, (s->index_mask + 1) * sizeof *s->index);
    for (size_t i = 0; i < s->n; i++)
        index_put(s, s->members[i]);
}

static void susp_clear(struct swim *s, struct member *m)
{
    if (m->susp.active) {
        m->susp.active = false;
        s->n_susp--;
    }
}

static void set_state(struct swim *s, struct member *m, enum swim_member_state st, uint64_t now)
{
    enum swim_member_state old = m->pub.state;
    if (old != st) {
        s->counts[old]--;
        s->counts[st]++;
        m->pub.state = st;
        m->pub.state_change = now;
    }
    if (st != SWIM_SUSPECT)
        susp_clear(s, m);
    notify(s, m, old);
}

static bool proven(const struct swim *s, const struct swim_member *m)
{
    for (size_t i = 0; i < SWIM_PROOFS_MAX; i++) {
        const struct proof *p = &s->proofs[i];
        if (p->at && memcmp(p->id, m->id, SWIM_ID_LEN) == 0 && strcmp(p->name, m->name) == 0 &&
            mesh_addr_equal(&p->addr, &m->addr))
            return true;
    }
    return false;
}

static void set_verified(struct swim *s, struct member *m, bool v)
{
    if (m->pub.verified == v)
        return;
    m->pub.verified = v;
    if (v)
        s->n_unverified--;
    else
        s->n_unverified++;
}

/* Removes members[i]; the name index must be rebuilt afterwards (index_rebuild), once for a
 * batch. */
static void member_drop(struct swim *s, size_t i)
{
    struct member *m = s->members[i];
    enum swim_member_state old = m->pub.state;
    susp_clear(s, m);
    s->counts[old]--;
    if (!m->pub.verified)
        s->n_unverified--;
    m->pub.state = SWIM_NONE;
    notify(s, m, old);
    free(m);
    s->members[i] = s->members[--s->n];
}

/* Makes room by evicting the oldest dead or left member (a tombstone), only an unverified one
 * when `unverified`. */
static bool evict_one(struct swim *s, bool unverified)
{
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < s->n; i++) {
        const struct member *m = s->members[i];
        if (m == s->self || is_live(m) || (unverified && m->pub.verified))
            continue;
        if (best == SIZE_MAX || m->pub.state_change < s->members[best]->pub.state_change)
            best = i;
    }
    if (best == SIZE_MAX)
        return false;
    member_drop(s, best);
    index_rebuild(s);
    return true;
}

static void member_fill(struct swim *s, struct member *m, const struct swim_msg *a)
{
    memcpy(m->pub.id, a->id, SWIM_ID_LEN);
    m->pub.addr = a->addr;
    m->pub.incarnation = a->incarnation;
    m->pub.meta_len = a->meta_len;
    if (a->meta_len)
        memcpy(m->pub.meta, a->meta, a->meta_len);
    if (s->self && m != s->self) /* s->self is NULL while swim_new adds us */
        set_verified(s, m, proven(s, &m->pub));
}

/* Adds an alive member; NULL when the table is full of live members (the bound a peer cannot
 * push us past), when it is unverified and max_unverified live ones are there, or out of
 * memory. */
static struct member *member_add(struct swim *s, const struct swim_msg *a, uint64_t now)
{
    bool is_self = s->self == NULL; /* swim_new adds us first */
    if (!is_self && s->cfg.max_unverified && s->n_unverified >= s->cfg.max_unverified) {
        struct swim_member probe;
        memcpy(probe.id, a->id, SWIM_ID_LEN);
        snprintf(probe.name, sizeof probe.name, "%s", a->name);
        probe.addr = a->addr;
        if (!proven(s, &probe) && !evict_one(s, true)) {
            s->stats.unverified_full++;
            return NULL;
        }
    }
    if (s->n >= s->cfg.max_members && !evict_one(s, false)) {
        s->stats.table_full++;
        return NULL;
    }
    struct member *m = calloc(1, sizeof *m);
    if (!m) {
        s->stats.table_full++;
        return NULL;
    }
    snprintf(m->pub.name, sizeof m->pub.name, "%s", a->name);
    /* Counted unverified until member_fill finds a proof. */
    s->n_unverified++;
    if (is_self) {
        m->pub.verified = true;
        s->n_unverified--;
    } else {
        m->pub.verified = false;
    }
    member_fill(s, m, a);
    m->pub.state = SWIM_ALIVE;
    m->pub.state_change = now;
    /* Insert at a random position so a new member is not always probed last (memberlist). */
    s->members[s->n] = m;
    size_t j = s->n > 0 ? rnd(s) % (s->n + 1) : 0;
    s->members[s->n] = s->members[j];
    s->members[j] = m;
    s->n++;
    index_put(s, m);
    s->counts[SWIM_ALIVE]++;
    notify(s, m, SWIM_NONE);
    return m;
}

/* ---- broadcast queue (SWIM §4.1 piggybacking, memberlist TransmitLimitedQueue) ---- */

/* SWIM §4.1 / memberlist: each message goes out retransmit_mult * ceil(log10(N+1)) times, enough
 * for an infection-style spread to reach everyone with high probability. */
static uint32_t retransmit_limit(const struct swim *s)
{
    uint32_t d = 0;
    for (uint64_t p = 1; p < (uint64_t)s->n + 1; p *= 10)
        d++;
    return s->cfg.retransmit_mult * (d ? d : 1);
}

static bool bq_before(const struct bcast *a, const struct bcast *b)
{
    return a->transmits < b->transmits || (a->transmits == b->transmits && a->id > b->id);
}

static void bq_finish(struct swim *s, struct bcast *b)
{
    if (b->leave)
        s->leave_sent = true;
    free(b);
}

static void bq_remove_at(struct swim *s, size_t i)
{
    bq_finish(s, s->bq[i]);
    memmove(s->bq + i, s->bq + i + 1, (s->bq_n - i - 1) * sizeof *s->bq);
    s->bq_n--;
}

/* Queues a state message about member `name`; it replaces any older message about the same
 * member, since the newer one carries all a receiver needs. */
static void bq_push(struct swim *s, const char *name, const struct swim_msg *msg, bool leave)
{
    struct bcast *b = malloc(sizeof *b);
    if (!b) {
        s->stats.bcast_dropped++;
        return;
    }
    b->len = swim_wire_encode_msg(msg, b->data, sizeof b->data);
    if (b->len == 0) {
        free(b);
        s->stats.bcast_dropped++;
        return;
    }
    snprintf(b->name, sizeof b->name, "%s", name);
    b->id = ++s->bq_next_id;
    b->transmits = 0;
    b->leave = leave;
    for (size_t i = 0; i < s->bq_n; i++) {
        if (strcmp(s->bq[i]->name, name) == 0) {
            bq_remove_at(s, i);
            break;
        }
    }
    if (s->bq_n >= s->cfg.max_broadcasts) {
        /* The last one has been sent the most: dropping it costs the least. */
        bq_remove_at(s, s->bq_n - 1);
        s->stats.bcast_dropped++;
    }
    memmove(s->bq + 1, s->bq, s->bq_n * sizeof *s->bq);
    s->bq[0] = b;
    s->bq_n++;
}

/* After a packet took some broadcasts: drop the ones sent often enough, restore the order. */
static void bq_after_send(struct swim *s)
{
    uint32_t limit = retransmit_limit(s);
    size_t j = 0;
    for (size_t i = 0; i < s->bq_n; i++) {
        if (s->bq[i]->transmits >= limit)
            bq_finish(s, s->bq[i]);
        else
            s->bq[j++] = s->bq[i];
    }
    s->bq_n = j;
    for (size_t i = 1; i < s->bq_n; i++) { /* nearly sorted: insertion sort */
        struct bcast *b = s->bq[i];
        size_t k = i;
        while (k > 0 && bq_before(b, s->bq[k - 1])) {
            s->bq[k] = s->bq[k - 1];
            k--;
        }
        s->bq[k] = b;
    }
}

static void bcast_member(struct swim *s, const struct member *m, uint8_t type, const char *from)
{
    struct swim_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.type = type;
    snprintf(msg.name, sizeof msg.name, "%s", m->pub.name);
    memcpy(msg.id, m->pub.id, SWIM_ID_LEN);
    msg.addr = m->pub.addr;
    msg.incarnation = m->pub.incarnation;
    msg.meta = m->pub.meta;
    msg.meta_len = m->pub.meta_len;
    if (from)
        snprintf(msg.from, sizeof msg.from, "%s", from);
    bq_push(s, m->pub.name, &msg, type == SWIM_MSG_LEFT && m == s->self);
}

/* ---- sending ---- */

/* Sends `prim` (nprim encoded messages) to `to`, filling the rest of the packet with queued
 * broadcasts, newest and least-sent first (SWIM §4.1). With nprim == 0 nothing is sent unless
 * there is something to gossip. Returns whether a packet went out. */
static bool send_msgs(struct swim *s, const struct mesh_addr *to, const uint8_t *prim,
                      size_t prim_len, uint32_t nprim)
{
    size_t room = s->cfg.max_packet - (s->hdr_base + 2);
    if (prim_len > room)
        return false;
    room -= prim_len;
    size_t sel[PKT_MSGS_MAX];
    size_t nsel = 0;
    for (size_t i = 0; i < s->bq_n && nprim + nsel < PKT_MSGS_MAX && room > 2; i++) {
        if (s->bq[i]->len <= room) {
            sel[nsel++] = i;
            room -= s->bq[i]->len;
        }
    }
    if (nprim == 0 && nsel == 0)
        return false;

    struct wire_wr w;
    struct swim_hdr h;
    memset(&h, 0, sizeof h);
    h.type = SWIM_PKT_GOSSIP;
    memcpy(h.name, s->name, sizeof h.name);
    memcpy(h.id, s->cfg.id, SWIM_ID_LEN);
    h.count = nprim + (uint32_t)nsel;
    wire_wr_init(&w, s->pkt, s->cfg.max_packet);
    if (swim_wire_pack_hdr(&w.pk, &h) != 0 || w.overflow)
        return false;
    if (prim_len)
        memcpy(s->pkt + w.len, prim, prim_len);
    w.len += prim_len;
    for (size_t i = 0; i < nsel; i++) {
        struct bcast *b = s->bq[sel[i]];
        memcpy(s->pkt + w.len, b->data, b->len);
        w.len += b->len;
        b->transmits++;
    }
    if (nsel)
        bq_after_send(s);
    s->stats.pkts_sent++;
    if (s->io.send_packet(s->io.data, to, s->pkt, w.len) != 0)
        s->stats.send_errors++;
    return true;
}

static void send_one(struct swim *s, const struct mesh_addr *to, const struct swim_msg *msg)
{
    uint8_t buf[SWIM_MSG_MAX];
    size_t len = swim_wire_encode_msg(msg, buf, sizeof buf);
    if (len)
        send_msgs(s, to, buf, len, 1);
}

static void send_seq(struct swim *s, const struct mesh_addr *to, uint8_t type, uint32_t seq)
{
    struct swim_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.type = type;
    msg.seq = seq;
    send_one(s, to, &msg);
}

/* ---- random member selection (memberlist kRandomNodes) ---- */

enum pick { PICK_ALIVE, PICK_GOSSIP, PICK_DEAD };

/* Up to k distinct random members other than ourselves and `exclude`, into s->scratch. */
static size_t pick_random(struct swim *s, size_t k, enum pick how, const struct member *exclude,
                          uint64_t now)
{
    size_t c = 0;
    for (size_t i = 0; i < s->n; i++) {
        struct member *m = s->members[i];
        if (m == s->self || m == exclude)
            continue;
        bool ok;
        if (how == PICK_ALIVE)
            ok = m->pub.state == SWIM_ALIVE;
        else if (how == PICK_DEAD)
            ok = m->pub.state == SWIM_DEAD;
        else /* gossip also goes to the recently dead, so they learn it and refute (memberlist) */
            ok = is_live(m) || (m->pub.state == SWIM_DEAD &&
                                now - m->pub.state_change <= s->cfg.gossip_to_dead_ms);
        if (ok)
            s->scratch[c++] = m;
    }
    if (k > c)
        k = c;
    for (size_t i = 0; i < k; i++) { /* partial Fisher-Yates */
        size_t j = i + rnd(s) % (c - i);
        struct member *t = s->scratch[i];
        s->scratch[i] = s->scratch[j];
        s->scratch[j] = t;
    }
    return k;
}

/* ---- state changes (SWIM §4.2 with memberlist's rules) ---- */

/* SWIM §4.2: only the member itself may raise its incarnation. Hearing itself accused at
 * incarnation i, it announces alive with an incarnation above i, which overrides the suspicion
 * everywhere. Also used after a restart, when others remember a higher incarnation than ours. */
static void refute(struct swim *s, uint64_t accused)
{
    uint64_t inc = s->self->pub.incarnation + 1;
    if (accused >= inc)
        inc = accused + 1;
    s->self->pub.incarnation = inc;
    s->stats.refutes++;
    /* Lifeguard §4.1: being suspected hints that we are the slow one. */
    awareness_delta(s, 1);
    bcast_member(s, s->self, SWIM_MSG_ALIVE, NULL);
    notify(s, s->self, s->self->pub.state);
}

static void susp_start(struct swim *s, struct member *m, const char *from, uint64_t now)
{
    struct susp *p = &m->susp;
    /* memberlist: min = suspicion_mult * max(1, log10(max(1, N))) * probe_interval, max =
     * suspicion_max_mult * min; k = suspicion_mult - 2 confirmations expected, none in a
     * cluster too small to provide them. */
    double scale = log10(s->n > 1 ? (double)s->n : 1.0);
    if (scale < 1.0)
        scale = 1.0;
    uint64_t min = (uint64_t)(s->cfg.suspicion_mult * scale * s->cfg.probe_interval_ms);
    uint64_t max = s->cfg.suspicion_max_mult * min;
    if (max < min)
        max = min;
    uint32_t k = s->cfg.suspicion_mult > 2 ? s->cfg.suspicion_mult - 2 : 0;
    if ((uint64_t)s->n < (uint64_t)k + 2)
        k = 0;
    if (k > SUSP_K_MAX)
        k = SUSP_K_MAX;
    if (!p->active)
        s->n_susp++;
    memset(p, 0, sizeof *p);
    p->active = true;
    p->k = k;
    p->start = now;
    p->min = min;
    p->max = max;
    p->deadline = now + (k < 1 ? min : max);
    p->conf[0] = name_hash(from);
    p->nconf = 1;
    s->susp_min = min_u64(s->susp_min, p->deadline);
}

/* Lifeguard §4.2: each independent confirmation shortens the timeout logarithmically,
 * timeout = max - (max - min) * log(n + 1) / log(k + 1), never below min. */
static bool susp_confirm(struct swim *s, struct member *m, const char *from)
{
    struct susp *p = &m->susp;
    if (!p->active || p->n >= p->k)
        return false;
    uint64_t h = name_hash(from);
    for (uint32_t i = 0; i < p->nconf; i++)
        if (p->conf[i] == h)
            return false;
    p->conf[p->nconf++] = h;
    p->n++;
    double frac = log((double)p->n + 1.0) / log((double)p->k + 1.0);
    double raw = (double)p->max - frac * (double)(p->max - p->min);
    uint64_t t = raw < (double)p->min ? p->min : (uint64_t)floor(raw);
    p->deadline = p->start + t;
    s->susp_min = min_u64(s->susp_min, p->deadline);
    return true;
}

static bool same_id(const struct member *m, const uint8_t id[static SWIM_ID_LEN])
{
    return memcmp(m->pub.id, id, SWIM_ID_LEN) == 0;
}

static void on_alive(struct swim *s, const struct swim_msg *a, uint64_t now)
{
    struct member *m = find(s, a->name);
    if (!m) {
        m = member_add(s, a, now);
        if (m)
            bcast_member(s, m, SWIM_MSG_ALIVE, NULL);
        return;
    }
    if (m == s->self) {
        if (!same_id(m, a->id)) {
            s->stats.impostor++;
            return;
        }
        if (s->leaving || a->incarnation < m->pub.incarnation)
            return;
        if (a->incarnation == m->pub.incarnation && mesh_addr_equal(&a->addr, &m->pub.addr) &&
            a->meta_len == m->pub.meta_len && memcmp(a->meta, m->pub.meta, a->meta_len) == 0)
            return;
        /* Someone holds a newer or different picture of us, e.g. from before a restart. */
        refute(s, a->incarnation);
        return;
    }
    if (!same_id(m, a->id)) {
        /* Names are unique: while the holder lives, another id claiming the name is an
         * impostor. Once the holder is dead or left, the name is free again. */
        if (is_live(m)) {
            s->stats.impostor++;
            return;
        }
        member_fill(s, m, a);
        set_state(s, m, SWIM_ALIVE, now);
        bcast_member(s, m, SWIM_MSG_ALIVE, NULL);
        return;
    }
    /* SWIM §4.2: alive overrides suspect/dead only with a higher incarnation. */
    if (a->incarnation <= m->pub.incarnation)
        return;
    member_fill(s, m, a);
    set_state(s, m, SWIM_ALIVE, now);
    bcast_member(s, m, SWIM_MSG_ALIVE, NULL);
}

static void on_suspect(struct swim *s, const struct swim_msg *msg, uint64_t now)
{
    struct member *m = find(s, msg->name);
    if (!m || !same_id(m, msg->id) || msg->incarnation < m->pub.incarnation)
        return;
    if (m->pub.state == SWIM_SUSPECT) {
        /* Pass on a new independent confirmation so others shorten their timeouts too. */
        if (susp_confirm(s, m, msg->from))
            bq_push(s, m->pub.name, msg, false);
        return;
    }
    if (m->pub.state != SWIM_ALIVE)
        return;
    if (m == s->self) {
        if (!s->leaving)
            refute(s, msg->incarnation);
        return;
    }
    m->pub.incarnation = msg->incarnation;
    susp_start(s, m, msg->from, now);
    s->stats.suspicions++;
    set_state(s, m, SWIM_SUSPECT, now);
    bq_push(s, m->pub.name, msg, false);
}

static void on_dead(struct swim *s, const struct swim_msg *msg, uint64_t now)
{
    struct member *m = find(s, msg->name);
    if (!m || !same_id(m, msg->id) || msg->incarnation < m->pub.incarnation)
        return;
    bool left = msg->type == SWIM_MSG_LEFT;
    if (m->pub.state == SWIM_LEFT || (!left && m->pub.state == SWIM_DEAD))
        return;
    if (m == s->self) {
        if (!s->leaving)
            refute(s, msg->incarnation);
        return;
    }
    m->pub.incarnation = msg->incarnation;
    if (!left)
        s->stats.deaths++;
    set_state(s, m, left ? SWIM_LEFT : SWIM_DEAD, now);
    bq_push(s, m->pub.name, msg, false);
}

/* ---- probing (SWIM §3.1, §4.3; Lifeguard §4.1, §4.3) ---- */

static void shuffle_members(struct swim *s)
{
    for (size_t i = s->n; i > 1; i--) {
        size_t j = rnd(s) % i;
        struct member *t = s->members[i - 1];
        s->members[i - 1] = s->members[j];
        s->members[j] = t;
    }
}

/* SWIM §4.3: round-robin over a list shuffled at the end of each pass bounds the time until
 * every member is probed, which pure random choice does not. */
static struct member *probe_pick(struct swim *s)
{
    for (size_t tries = 0; tries <= s->n; tries++) {
        if (s->probe_idx >= s->n) {
            shuffle_members(s);
            s->probe_idx = 0;
        }
        struct member *m = s->members[s->probe_idx++];
        if (m != s->self && is_live(m))
            return m;
    }
    return NULL;
}

static void msg_about(struct swim_msg *msg, uint8_t type, const struct member *m)
{
    memset(msg, 0, sizeof *msg);
    msg->type = type;
    snprintf(msg->name, sizeof msg->name, "%s", m->pub.name);
    memcpy(msg->id, m->pub.id, SWIM_ID_LEN);
    msg->addr = m->pub.addr;
    msg->incarnation = m->pub.incarnation;
}

static void probe_start(struct swim *s, uint64_t now)
{
    uint64_t interval = scaled(s, s->cfg.probe_interval_ms);
    s->next_probe = now + interval;
    struct member *m = probe_pick(s);
    if (!m)
        return;
    struct probe *p = &s->probe;
    memset(p, 0, sizeof *p);
    p->active = true;
    p->seq = ++s->seq;
    snprintf(p->target, sizeof p->target, "%s", m->pub.name);
    memcpy(p->target_id, m->pub.id, SWIM_ID_LEN);
    p->timeout_at = now + scaled(s, s->cfg.probe_timeout_ms);
    p->end_at = now + interval;
    s->stats.probes++;

    uint8_t buf[2 * SWIM_MSG_MAX];
    struct swim_msg msg;
    msg_about(&msg, SWIM_MSG_PING, m);
    msg.seq = p->seq;
    size_t len = swim_wire_encode_msg(&msg, buf, SWIM_MSG_MAX);
    uint32_t nmsg = 1;
    if (m->pub.state == SWIM_SUSPECT) {
        /* Lifeguard §4.3 buddy system: tell a suspect member directly, so it can refute at
         * once instead of waiting for the rumour to reach it. */
        msg_about(&msg, SWIM_MSG_SUSPECT, m);
        snprintf(msg.from, sizeof msg.from, "%s", s->name);
        size_t l2 = swim_wire_encode_msg(&msg, buf + len, SWIM_MSG_MAX);
        if (l2) {
            len += l2;
            nmsg++;
        }
    }
    if (len)
        send_msgs(s, &m->pub.addr, buf, len, nmsg);
}

static void probe_indirect(struct swim *s, uint64_t now)
{
    struct probe *p = &s->probe;
    p->indirect = true;
    struct member *target = find(s, p->target);
    if (!target || !same_id(target, p->target_id))
        return;
    size_t k = pick_random(s, s->cfg.indirect_checks, PICK_ALIVE, target, now);
    struct swim_msg msg;
    msg_about(&msg, SWIM_MSG_PING_REQ, target);
    msg.seq = p->seq;
    msg.nack = true;
    uint8_t buf[SWIM_MSG_MAX];
    size_t len = swim_wire_encode_msg(&msg, buf, sizeof buf);
    if (!len)
        return;
    struct member *helpers[SUSP_K_MAX * 4];
    if (k > sizeof helpers / sizeof helpers[0])
        k = sizeof helpers / sizeof helpers[0];
    memcpy(helpers, s->scratch, k * sizeof *helpers);
    for (size_t i = 0; i < k; i++) {
        send_msgs(s, &helpers[i]->pub.addr, buf, len, 1);
        p->expected_nacks++;
    }
    if (k)
        s->stats.indirect_probes++;
}

static void probe_fail(struct swim *s, uint64_t now)
{
    struct probe *p = &s->probe;
    p->active = false;
    s->stats.probe_failures++;
    /* Lifeguard §4.1: a relay that did not even send a nack suggests the problem is on our
     * side; without relays, any failed probe counts against us (memberlist probeNode). */
    if (p->expected_nacks > 0)
        awareness_delta(s, p->nacks < p->expected_nacks ? (int)(p->expected_nacks - p->nacks) : 0);
    else
        awareness_delta(s, 1);
    struct member *m = find(s, p->target);
    if (!m || !same_id(m, p->target_id) || !is_live(m))
        return;
    struct swim_msg msg;
    msg_about(&msg, SWIM_MSG_SUSPECT, m);
    snprintf(msg.from, sizeof msg.from, "%s", s->name);
    on_suspect(s, &msg, now);
}

static void probe_acked(struct swim *s)
{
    s->probe.active = false;
    s->stats.probe_acks++;
    awareness_delta(s, -1);
}

static void on_ping_req(struct swim *s, const struct mesh_addr *from, const struct swim_msg *req,
                        uint64_t now)
{
    struct relay *r = NULL;
    for (size_t i = 0; i < s->cfg.max_relays; i++) {
        if (!s->relays[i].used) {
            r = &s->relays[i];
            break;
        }
    }
    if (!r) {
        s->stats.relay_full++;
        return;
    }
    r->used = true;
    r->nack = req->nack;
    r->seq = ++s->seq;
    r->origin_seq = req->seq;
    r->origin = *from;
    r->deadline = now + s->cfg.probe_timeout_ms;
    struct swim_msg ping = *req;
    ping.type = SWIM_MSG_PING;
    ping.seq = r->seq;
    send_one(s, &req->addr, &ping);
}

static void on_ack(struct swim *s, const struct swim_msg *msg)
{
    if (s->probe.active && msg->seq == s->probe.seq) {
        probe_acked(s);
        return;
    }
    for (size_t i = 0; i < s->cfg.max_relays; i++) {
        struct relay *r = &s->relays[i];
        if (r->used && r->seq == msg->seq) {
            r->used = false;
            send_seq(s, &r->origin, SWIM_MSG_ACK, r->origin_seq);
            return;
        }
    }
}

static void dispatch(struct swim *s, const struct mesh_addr *from, const struct swim_msg *msg,
                     uint64_t now)
{
    switch (msg->type) {
    case SWIM_MSG_PING:
        /* The name and id guard against address reuse: a node that took over the address of a
         * dead one must not answer for it (memberlist checks the name the same way). */
        if (strcmp(msg->name, s->name) != 0 || !same_id(s->self, msg->id)) {
            s->stats.misdirected++;
            return;
        }
        send_seq(s, from, SWIM_MSG_ACK, msg->seq);
        break;
    case SWIM_MSG_PING_REQ:
        on_ping_req(s, from, msg, now);
        break;
    case SWIM_MSG_ACK:
        on_ack(s, msg);
        break;
    case SWIM_MSG_NACK:
        if (s->probe.active && msg->seq == s->probe.seq) {
            s->probe.nacks++;
            s->stats.nacks_recv++;
        }
        break;
    case SWIM_MSG_ALIVE:
        on_alive(s, msg, now);
        break;
    case SWIM_MSG_SUSPECT:
        on_suspect(s, msg, now);
        break;
    case SWIM_MSG_DEAD:
    case SWIM_MSG_LEFT:
        on_dead(s, msg, now);
        break;
    default:
        break;
    }
}

int swim_recv(struct swim *s, const struct mesh_addr *from, const uint8_t *buf, size_t len,
              uint64_t now)
{
    struct wire_rd r;
    struct swim_hdr h;
    struct swim_msg msg;
    int rc;
    s->stats.pkts_recv++;

    /* First pass: validate everything, so a packet is applied whole or not at all. */
    wire_rd_init(&r, buf, len);
    rc = swim_wire_read_hdr(&r, &h);
    if (rc == MESH_EUNSUPPORTED) {
        s->stats.bad_version++;
        return rc;
    }
    if (rc || h.type != SWIM_PKT_GOSSIP)
        goto malformed;
    for (uint32_t i = 0; i < h.count; i++) {
        rc = swim_wire_read_msg(&r, &msg);
        if (rc == MESH_EMALFORMED)
            goto malformed;
    }
    if (wire_rd_left(&r) != 0)
        goto malformed;
    if (strcmp(h.name, s->name) == 0 && !same_id(s->self, h.id)) {
        /* Another node using our name. */
        s->stats.impostor++;
        return 0;
    }

    wire_rd_init(&r, buf, len);
    swim_wire_read_hdr(&r, &h);
    for (uint32_t i = 0; i < h.count; i++) {
        rc = swim_wire_read_msg(&r, &msg);
        if (rc == MESH_EUNSUPPORTED) {
            s->stats.unknown_type++;
            continue;
        }
        dispatch(s, from, &msg, now);
    }
    return 0;

malformed:
    s->stats.malformed++;
    return MESH_EMALFORMED;
}

/* ---- push-pull (memberlist's anti-entropy; SWIM itself has none) ---- */

static int encode_state(struct swim *s, uint8_t type, bool join, int err_code, const char *err_msg,
                        uint8_t **ret_buf, size_t *ret_len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    struct swim_hdr h;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    memset(&h, 0, sizeof h);
    h.type = type;
    memcpy(h.name, s->name, sizeof h.name);
    memcpy(h.id, s->cfg.id, SWIM_ID_LEN);
    h.join = join;
    h.err_code = err_code;
    if (err_msg)
        snprintf(h.err_msg, sizeof h.err_msg, "%s", err_msg);
    h.count = err_code ? 0 : (uint32_t)s->n;
    if (swim_wire_pack_hdr(&pk, &h) != 0)
        goto fail;
    for (size_t i = 0; i < h.count; i++) {
        const struct member *m = s->members[i];
        struct swim_msg e;
        msg_about(&e, 0, m);
        e.state = (uint8_t)m->pub.state;
        e.meta = m->pub.meta;
        e.meta_len = m->pub.meta_len;
        if (swim_wire_pack_entry(&pk, &e) != 0)
            goto fail;
    }
    *ret_buf = (uint8_t *)sb.data;
    *ret_len = sb.size;
    return 0;

fail:
    msgpack_sbuffer_destroy(&sb);
    return MESH_ENOMEM;
}

size_t swim_pushpull_max_len(const struct swim *s)
{
    return (size_t)s->cfg.max_members * PP_ENTRY_MAX + PP_HDR_MAX;
}

/* Validates a whole push-pull stream (so it is merged whole or not at all). */
static int pp_parse(struct swim *s, const uint8_t *buf, size_t len, struct swim_hdr *ret_h,
                    struct mesh_err *err)
{
    struct wire_rd r;
    struct swim_msg e;
    int rc;
    if (len > swim_pushpull_max_len(s)) {
        s->stats.malformed++;
        return mesh_errf(err, MESH_ETOOBIG, "push-pull state of %zu bytes", len);
    }
    wire_rd_init(&r, buf, len);
    rc = swim_wire_read_hdr(&r, ret_h);
    if (rc == MESH_EUNSUPPORTED) {
        s->stats.bad_version++;
        return mesh_errf(err, rc, "push-pull: unsupported wire version");
    }
    if (rc)
        goto malformed;
    for (uint32_t i = 0; i < ret_h->count; i++)
        if (swim_wire_read_entry(&r, &e))
            goto malformed;
    if (wire_rd_left(&r) != 0)
        goto malformed;
    return 0;

malformed:
    s->stats.malformed++;
    return mesh_errf(err, MESH_EMALFORMED, "push-pull: malformed state");
}

/* memberlist mergeRemoteState: remote "dead" becomes local "suspect", so one peer's stale view
 * cannot kill a member outright; it gets a chance to refute. */
static void pp_apply(struct swim *s, const uint8_t *buf, size_t len, uint64_t now)
{
    struct wire_rd r;
    struct swim_hdr h;
    struct swim_msg e;
    wire_rd_init(&r, buf, len);
    swim_wire_read_hdr(&r, &h);
    for (uint32_t i = 0; i < h.count; i++) {
        swim_wire_read_entry(&r, &e);
        switch (e.state) {
        case SWIM_ALIVE:
            e.type = SWIM_MSG_ALIVE;
            on_alive(s, &e, now);
            break;
        case SWIM_LEFT:
            e.type = SWIM_MSG_LEFT;
            on_dead(s, &e, now);
            break;
        default:
            e.type = SWIM_MSG_SUSPECT;
            snprintf(e.from, sizeof e.from, "%s", s->name);
            on_suspect(s, &e, now);
            break;
        }
    }
}

int swim_pushpull_recv(struct swim *s, const struct mesh_addr *from, const uint8_t *buf, size_t len,
                       uint64_t now, uint8_t **ret_reply, size_t *ret_len, struct mesh_err *err)
{
    struct swim_hdr h;
    uint8_t *reply;
    size_t reply_len;
    int rc;
    (void)from;
    rc = pp_parse(s, buf, len, &h, err);
    if (rc)
        return rc;
    if (h.type != SWIM_PKT_PP_REQ) {
        s->stats.malformed++;
        return mesh_errf(err, MESH_EMALFORMED, "push-pull: expected a request");
    }
    const struct member *m = find(s, h.name);
    if (m && (m == s->self || (is_live(m) && !same_id(m, h.id)))) {
        /* Names are unique: refuse, and say who holds the name. */
        char hex[2 * SWIM_ID_LEN + 1];
        char msg[SWIM_ERRMSG_MAX + 1];
        id_hex(m->pub.id, hex);
        snprintf(msg, sizeof msg, "name \"%s\" is taken by node %s", h.name, hex);
        s->stats.pushpull_refused++;
        rc = encode_state(s, SWIM_PKT_PP_RESP, false, MESH_EEXISTS, msg, &reply, &reply_len);
        if (rc)
            return mesh_errf(err, rc, "push-pull: encoding refusal");
        *ret_reply = reply;
        *ret_len = reply_len;
        return mesh_errf(err, MESH_EEXISTS, "%s", msg);
    }
    /* Merge first, then reply (memberlist replies first). The reply then carries our own
     * refutation if the peer believed us dead: after a long partition, when neither side
     * gossips to the other any more, that is what lets the joiner see us alive again, so its
     * own refutation and those of its side flow back to us. */
    pp_apply(s, buf, len, now);
    rc = encode_state(s, SWIM_PKT_PP_RESP, h.join, 0, NULL, &reply, &reply_len);
    if (rc)
        return mesh_errf(err, rc, "push-pull: encoding state");
    s->stats.pushpull_ok++;
    *ret_reply = reply;
    *ret_len = reply_len;
    return 0;
}

static int pushpull_start(struct swim *s, const struct mesh_addr *to, bool join, uint64_t *slot)
{
    uint8_t *buf;
    size_t len;
    int rc = encode_state(s, SWIM_PKT_PP_REQ, join, 0, NULL, &buf, &len);
    if (rc)
        return rc;
    uint64_t req = ++s->next_req;
    *slot = req;
    rc = s->io.pushpull(s->io.data, req, to, buf, len);
    free(buf);
    if (rc)
        *slot = 0;
    return rc;
}

/* Tries the remaining seeds; returns 0 once a push-pull is under way. */
static int join_next(struct swim *s)
{
    while (s->seed_idx < s->nseeds) {
        const struct mesh_addr *a = &s->seeds[s->seed_idx++];
        if (mesh_addr_equal(a, &s->self->pub.addr))
            continue;
        int rc = pushpull_start(s, a, true, &s->join_req);
        if (rc == 0)
            return 0;
        s->join_last_rc = rc;
    }
    s->joining = false;
    return s->join_last_rc ? s->join_last_rc : MESH_EINVAL;
}

static void join_finish(struct swim *s, int rc, const struct mesh_err *err)
{
    s->joining = false;
    s->join_req = 0;
    if (s->io.join_done)
        s->io.join_done(s->io.data, rc, err);
}

static void join_failed_one(struct swim *s, int rc)
{
    s->join_req = 0;
    s->join_last_rc = rc;
    if (join_next(s) == 0)
        return;
    struct mesh_err e;
    mesh_errf(&e, MESH_EIO, "join: none of %zu seeds answered (last: %s)", s->nseeds,
              mesh_strerror(s->join_last_rc));
    join_finish(s, MESH_EIO, &e);
}

int swim_pushpull_merge(struct swim *s, uint64_t req, const uint8_t *buf, size_t len, uint64_t now,
                        struct mesh_err *err)
{
    struct swim_hdr h;
    bool join;
    int rc;
    if (req != 0 && req == s->join_req)
        join = true;
    else if (req != 0 && (req == s->pp_req || req == s->rc_req))
        join = false;
    else
        return mesh_errf(err, MESH_ENOTFOUND, "push-pull: no request %llu in flight",
                         (unsigned long long)req);
    if (req == s->pp_req)
        s->pp_req = 0;
    if (req == s->rc_req)
        s->rc_req = 0;
    rc = pp_parse(s, buf, len, &h, err);
    if (rc == 0 && h.type != SWIM_PKT_PP_RESP) {
        s->stats.malformed++;
        rc = mesh_errf(err, MESH_EMALFORMED, "push-pull: expected a reply");
    }
    if (rc) {
        s->stats.pushpull_failed++;
        if (join)
            join_failed_one(s, rc);
        return rc;
    }
    if (h.err_code) {
        /* The peer refused us (our name is taken): joining elsewhere would not help. */
        struct mesh_err e;
        s->stats.pushpull_refused++;
        mesh_errf(&e, h.err_code, "%s", h.err_msg);
        if (err)
            *err = e;
        if (join) {
            mesh_err_wrapf(&e, "join");
            join_finish(s, h.err_code, &e);
        }
        return h.err_code;
    }
    pp_apply(s, buf, len, now);
    s->stats.pushpull_ok++;
    if (join) {
        /* Nodes that join at the same moment learn of each other only through gossip, which
         * a node can miss while many joins are in flight; one early full exchange with a
         * random member (instead of waiting a whole push-pull interval) closes that gap. */
        uint64_t soon = now + JOIN_SETTLE_MS + rnd(s) % JOIN_SETTLE_MS;
        if (soon < s->next_pushpull)
            s->next_pushpull = soon;
        join_finish(s, 0, NULL);
    }
    return 0;
}

int swim_pushpull_failed(struct swim *s, uint64_t req, uint64_t now)
{
    (void)now;
    if (req != 0 && req == s->join_req) {
        s->stats.pushpull_failed++;
        join_failed_one(s, MESH_EIO);
        return 0;
    }
    if (req != 0 && (req == s->pp_req || req == s->rc_req)) {
        s->stats.pushpull_failed++;
        if (req == s->pp_req)
            s->pp_req = 0;
        else
            s->rc_req = 0;
        return 0;
    }
    return MESH_ENOTFOUND;
}

int swim_join(struct swim *s, const struct mesh_addr *seeds, size_t n, uint64_t now)
{
    (void)now;
    if (n == 0 || n > SWIM_MAX_SEEDS)
        return MESH_EINVAL;
    if (s->joining || s->leaving)
        return MESH_ESTATE;
    memcpy(s->seeds, seeds, n * sizeof *seeds);
    s->nseeds = n;
    s->seed_idx = 0;
    s->join_last_rc = 0;
    s->joining = true;
    return join_next(s);
}

/* memberlist pushPullScale: beyond 32 members, push-pull less often, growing with log2(N), so
 * the total TCP state transfer stays bounded as the mesh grows. */
static uint64_t pushpull_interval(const struct swim *s)
{
    uint64_t iv = s->cfg.pushpull_interval_ms;
    size_t n = s->counts[SWIM_ALIVE] + s->counts[SWIM_SUSPECT];
    if (n <= PUSHPULL_SCALE_THRESHOLD)
        return iv;
    double mult = ceil(log2((double)n) - log2((double)PUSHPULL_SCALE_THRESHOLD)) + 1.0;
    return (uint64_t)mult * iv;
}

/* ---- leave, meta ---- */

int swim_leave(struct swim *s, uint64_t now)
{
    if (s->leaving)
        return MESH_ESTATE;
    s->leaving = true;
    s->leave_sent = false;
    s->leave_reported = false;
    s->leave_deadline = now + s->cfg.leave_timeout_ms;
    s->probe.active = false;
    s->self->pub.incarnation++;
    set_state(s, s->self, SWIM_LEFT, now);
    bcast_member(s, s->self, SWIM_MSG_LEFT, NULL);
    return 0;
}

int swim_set_meta(struct swim *s, const uint8_t *meta, size_t len, uint64_t now)
{
    (void)now;
    if (len > SWIM_META_MAX)
        return MESH_ETOOBIG;
    if (s->leaving)
        return MESH_ESTATE;
    if (len)
        memcpy(s->self->pub.meta, meta, len);
    s->self->pub.meta_len = len;
    s->self->pub.incarnation++;
    bcast_member(s, s->self, SWIM_MSG_ALIVE, NULL);
    notify(s, s->self, s->self->pub.state);
    return 0;
}

/* ---- timers ---- */

static bool have_peers(const struct swim *s)
{
    size_t live = s->counts[SWIM_ALIVE] + s->counts[SWIM_SUSPECT];
    return live > (is_live(s->self) ? 1u : 0u);
}

static void susp_expire(struct swim *s, uint64_t now)
{
    uint64_t next = SWIM_NO_DEADLINE;
    for (size_t i = 0; i < s->n && s->n_susp > 0; i++) {
        struct member *m = s->members[i];
        if (!m->susp.active)
            continue;
        if (m->susp.deadline <= now && m->pub.state == SWIM_SUSPECT) {
            /* SWIM §4.2: an unrefuted suspicion becomes a confirmed failure. */
            struct swim_msg msg;
            msg_about(&msg, SWIM_MSG_DEAD, m);
            snprintf(msg.from, sizeof msg.from, "%s", s->name);
            on_dead(s, &msg, now);
        } else {
            next = min_u64(next, m->susp.deadline);
        }
    }
    s->susp_min = next;
}

static void reap(struct swim *s, uint64_t now)
{
    bool dropped = false;
    for (size_t i = s->n; i-- > 0;) {
        const struct member *m = s->members[i];
        if (m == s->self)
            continue;
        if ((m->pub.state == SWIM_DEAD && now - m->pub.state_change >= s->cfg.dead_reap_ms) ||
            (m->pub.state == SWIM_LEFT && now - m->pub.state_change >= s->cfg.left_reap_ms)) {
            member_drop(s, i);
            dropped = true;
        }
    }
    if (dropped)
        index_rebuild(s);
}

int swim_tick(struct swim *s, uint64_t now)
{
    if (!s->leaving) {
        struct probe *p = &s->probe;
        if (p->active && !p->indirect && now >= p->timeout_at) {
            /* Called late (our process stalled past the whole interval): the relays have not
             * had their chance yet, and Lifeguard's point is that a slow node must not blame
             * others for its own slowness. Give them the usual time from now. */
            if (now >= p->end_at)
                p->end_at = now + (p->end_at - p->timeout_at);
            probe_indirect(s, now);
        }
        if (p->active && now >= p->end_at)
            probe_fail(s, now);
        if (!p->active && now >= s->next_probe)
            probe_start(s, now);
    }
    for (size_t i = 0; i < s->cfg.max_relays; i++) {
        struct relay *r = &s->relays[i];
        if (r->used && now >= r->deadline) {
            r->used = false;
            if (r->nack)
                send_seq(s, &r->origin, SWIM_MSG_NACK, r->origin_seq);
        }
    }
    if (s->n_susp > 0 && now >= s->susp_min)
        susp_expire(s, now);
    if (now >= s->next_gossip) {
        s->next_gossip = now + s->cfg.gossip_interval_ms;
        if (s->bq_n > 0) {
            size_t k = pick_random(s, s->cfg.gossip_nodes, PICK_GOSSIP, NULL, now);
            for (size_t i = 0; i < k; i++) {
                const struct mesh_addr *to = &s->scratch[i]->pub.addr;
                if (!send_msgs(s, to, NULL, 0, 0))
                    break;
            }
        }
    }
    if (!s->leaving && now >= s->next_pushpull) {
        s->next_pushpull = now + pushpull_interval(s);
        if (s->pp_req == 0 && pick_random(s, 1, PICK_ALIVE, NULL, now) == 1)
            pushpull_start(s, &s->scratch[0]->pub.addr, false, &s->pp_req);
    }
    if (!s->leaving && s->cfg.reconnect_interval_ms && now >= s->next_reconnect) {
        s->next_reconnect = now + s->cfg.reconnect_interval_ms;
        if (s->rc_req == 0 && pick_random(s, 1, PICK_DEAD, NULL, now) == 1) {
            s->stats.reconnects++;
            pushpull_start(s, &s->scratch[0]->pub.addr, false, &s->rc_req);
        }
    }
    if (now >= s->next_reap) {
        s->next_reap = now + REAP_CHECK_MS;
        reap(s, now);
    }
    if (s->leaving && !s->leave_reported) {
        int rc = -1;
        if (s->leave_sent || !have_peers(s))
            rc = 0;
        else if (now >= s->leave_deadline)
            rc = -ETIMEDOUT;
        if (rc != -1) {
            s->leave_reported = true;
            if (s->io.leave_done)
                s->io.leave_done(s->io.data, rc);
        }
    }
    return 0;
}

uint64_t swim_next_deadline(const struct swim *s)
{
    uint64_t d = SWIM_NO_DEADLINE;
    if (!s->leaving) {
        const struct probe *p = &s->probe;
        if (p->active)
            d = p->indirect ? p->end_at : p->timeout_at;
        else if (have_peers(s))
            d = s->next_probe;
        if (have_peers(s))
            d = min_u64(d, s->next_pushpull);
        if (s->cfg.reconnect_interval_ms && s->counts[SWIM_DEAD] > 0)
            d = min_u64(d, s->next_reconnect);
    }
    for (size_t i = 0; i < s->cfg.max_relays; i++)
        if (s->relays[i].used)
            d = min_u64(d, s->relays[i].deadline);
    if (s->bq_n > 0)
        d = min_u64(d, s->next_gossip);
    if (s->n_susp > 0)
        d = min_u64(d, s->susp_min);
    if (s->counts[SWIM_DEAD] + s->counts[SWIM_LEFT] > (s->leaving ? 1u : 0u))
        d = min_u64(d, s->next_reap);
    if (s->leaving && !s->leave_reported)
        d = min_u64(d, (s->leave_sent || !have_peers(s)) ? 0 : s->leave_deadline);
    return d;
}

/* ---- proofs ---- */

void swim_prove(struct swim *s, const uint8_t id[static SWIM_ID_LEN], const char *name,
                const struct mesh_addr *addr, uint64_t now)
{
    struct proof *slot = NULL;
    for (size_t i = 0; i < SWIM_PROOFS_MAX; i++) {
        struct proof *p = &s->proofs[i];
        if (p->at && memcmp(p->id, id, SWIM_ID_LEN) == 0) {
            slot = p; /* one proof per id: the latest says where the key holder is */
            break;
        }
        if (!slot || (slot->at && p->at < slot->at))
            slot = p;
    }
    memcpy(slot->id, id, SWIM_ID_LEN);
    snprintf(slot->name, sizeof slot->name, "%s", name);
    slot->addr = *addr;
    slot->at = now ? now : 1;
    for (size_t i = 0; i < s->n; i++) {
        struct member *m = s->members[i];
        if (m != s->self)
            set_verified(s, m, proven(s, &m->pub));
    }
}

/* ---- lifecycle ---- */

void swim_config_init(struct swim_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->probe_interval_ms = 1000;
    cfg->probe_timeout_ms = 500;
    cfg->indirect_checks = 3;
    cfg->suspicion_mult = 4;
    cfg->suspicion_max_mult = 6;
    cfg->awareness_max = 8;
    cfg->gossip_interval_ms = 200;
    cfg->gossip_nodes = 3;
    cfg->gossip_to_dead_ms = 30000;
    cfg->retransmit_mult = 4;
    cfg->pushpull_interval_ms = 30000;
    cfg->reconnect_interval_ms = 30000;
    cfg->max_members = 4096;
    cfg->max_unverified = 1024;
    cfg->max_broadcasts = 1024;
    cfg->max_relays = 64;
    cfg->max_packet = 1400 - 64;
    cfg->leave_timeout_ms = 5000;
    cfg->dead_reap_ms = 24ull * 3600 * 1000;
    cfg->left_reap_ms = 24ull * 3600 * 1000;
}

static int check_config(const struct swim_config *c, const struct swim_io *io, struct mesh_err *err)
{
    if (!c->name || !swim_name_valid(c->name, strlen(c->name)))
        return mesh_errf(err, MESH_EINVAL, "swim: name must be 1..%d printable bytes",
                         SWIM_NAME_MAX);
    if (c->addr.family != 4 && c->addr.family != 6)
        return mesh_errf(err, MESH_EINVAL, "swim: address not set");
    if (c->meta_len > SWIM_META_MAX || (c->meta_len && !c->meta))
        return mesh_errf(err, MESH_EINVAL, "swim: metadata over %d bytes", SWIM_META_MAX);
    if (!io || !io->send_packet || !io->pushpull || !io->random)
        return mesh_errf(err, MESH_EINVAL, "swim: send_packet, pushpull and random are required");
    if (c->probe_interval_ms == 0 || c->probe_timeout_ms == 0 ||
        c->probe_timeout_ms > c->probe_interval_ms)
        return mesh_errf(err, MESH_EINVAL, "swim: need 0 < probe timeout <= probe interval");
    if (c->max_packet < 768 || c->max_packet > 65507)
        return mesh_errf(err, MESH_EINVAL, "swim: max_packet must be 768..65507");
    if (c->max_members < 1 || c->max_members > (1u << 24) || c->max_broadcasts < 1 ||
        c->max_relays < 1 || c->gossip_interval_ms == 0 || c->gossip_nodes == 0 ||
        c->awareness_max < 1 || c->suspicion_mult < 1 || c->retransmit_mult < 1 ||
        c->pushpull_interval_ms == 0 || c->indirect_checks > 4 * SUSP_K_MAX)
        return mesh_errf(err, MESH_EINVAL, "swim: invalid limits in config");
    return 0;
}

int swim_new(const struct swim_config *cfg, const struct swim_io *io, uint64_t now,
             struct swim **ret_s, struct mesh_err *err)
{
    int rc = check_config(cfg, io, err);
    if (rc)
        return rc;
    struct swim *s = calloc(1, sizeof *s);
    if (!s)
        return mesh_errf(err, MESH_ENOMEM, "swim: allocating state");
    s->cfg = *cfg;
    s->cfg.meta = NULL;
    s->cfg.meta_len = 0;
    snprintf(s->name, sizeof s->name, "%s", cfg->name);
    s->cfg.name = s->name;
    s->io = *io;
    size_t icap = 1;
    while (icap < 2 * (size_t)cfg->max_members)
        icap <<= 1;
    s->index_mask = icap - 1;
    s->members = calloc(cfg->max_members, sizeof *s->members);
    s->scratch = calloc(cfg->max_members, sizeof *s->scratch);
    s->index = calloc(icap, sizeof *s->index);
    s->bq = calloc(cfg->max_broadcasts, sizeof *s->bq);
    s->relays = calloc(cfg->max_relays, sizeof *s->relays);
    s->pkt = malloc(cfg->max_packet);
    if (!s->members || !s->scratch || !s->index || !s->bq || !s->relays || !s->pkt)
        goto nomem;

    struct swim_msg me;
    memset(&me, 0, sizeof me);
    snprintf(me.name, sizeof me.name, "%s", cfg->name);
    memcpy(me.id, cfg->id, SWIM_ID_LEN);
    me.addr = cfg->addr;
    me.meta = cfg->meta;
    me.meta_len = cfg->meta_len;
    s->self = member_add(s, &me, now);
    if (!s->self)
        goto nomem;

    /* Header size with a fixarray message count; a packet reserves 2 more bytes for array16. */
    struct swim_hdr h;
    struct wire_wr w;
    uint8_t tmp[SWIM_HDR_MAX];
    memset(&h, 0, sizeof h);
    h.type = SWIM_PKT_GOSSIP;
    memcpy(h.name, s->name, sizeof h.name);
    wire_wr_init(&w, tmp, sizeof tmp);
    swim_wire_pack_hdr(&w.pk, &h);
    s->hdr_base = w.len;

    /* Stagger the timers (memberlist does too) so nodes started together do not tick in step. */
    s->next_probe = now + rnd(s) % cfg->probe_interval_ms;
    s->next_gossip = now + rnd(s) % cfg->gossip_interval_ms;
    s->next_pushpull = now + cfg->pushpull_interval_ms + rnd(s) % cfg->pushpull_interval_ms;
    s->next_reap = now + REAP_CHECK_MS;
    if (cfg->reconnect_interval_ms)
        s->next_reconnect = now + rnd(s) % cfg->reconnect_interval_ms;
    s->susp_min = SWIM_NO_DEADLINE;
    /* Announce ourselves: piggybacked on our first packets. */
    bcast_member(s, s->self, SWIM_MSG_ALIVE, NULL);
    *ret_s = s;
    return 0;

nomem:
    swim_free(s);
    return mesh_errf(err, MESH_ENOMEM, "swim: allocating tables");
}

void swim_free(struct swim *s)
{
    if (!s)
        return;
    if (s->members)
        for (size_t i = 0; i < s->n; i++)
            free(s->members[i]);
    if (s->bq)
        for (size_t i = 0; i < s->bq_n; i++)
            free(s->bq[i]);
    free(s->members);
    free(s->scratch);
    free(s->index);
    free(s->bq);
    free(s->relays);
    free(s->pkt);
    free(s);
}

/* ---- accessors ---- */

size_t swim_member_count(const struct swim *s)
{
    return s->n;
}

const struct swim_member *swim_member_at(const struct swim *s, size_t i)
{
    return i < s->n ? &s->members[i]->pub : NULL;
}

const struct swim_member *swim_member_find(const struct swim *s, const char *name)
{
    const struct member *m = find(s, name);
    return m ? &m->pub : NULL;
}

const struct swim_member *swim_self(const struct swim *s)
{
    return &s->self->pub;
}

void swim_counts(const struct swim *s, struct swim_counts *ret_counts)
{
    ret_counts->alive = s->counts[SWIM_ALIVE];
    ret_counts->suspect = s->counts[SWIM_SUSPECT];
    ret_counts->dead = s->counts[SWIM_DEAD];
    ret_counts->left = s->counts[SWIM_LEFT];
}

const struct swim_stats *swim_stats(const struct swim *s)
{
    return &s->stats;
}

uint64_t swim_incarnation(const struct swim *s)
{
    return s->self->pub.incarnation;
}

unsigned swim_health_score(const struct swim *s)
{
    return s->awareness;
}
