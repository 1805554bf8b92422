#include "feed.h"

#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <sodium.h>

#include "wire.h"

static const char digest_domain[] = "fogmesh feed digest v1";

struct ring_ent {
    uint64_t rev_before, rev_after;
    uint8_t *cmd;
    size_t len;
};

struct source {
    char addr[FEED_ADDR_MAX];
    uint64_t revision;
    uint64_t retry_at; /* set aside until then */
    unsigned fails;    /* consecutive, for the backoff */
    bool used;
};

struct feed {
    struct feed_io io;
    struct fsm *fsm;
    bool pulling;
    /* The digest of the fsm at digest_rev (valid when digest_ok): recomputed lazily. */
    bool digest_ok;
    uint64_t digest_rev;
    uint8_t digest[FEED_DIGEST_LEN];
    /* Ring of the last commands: ring[(head + i) % FEED_RING_MAX], i < ring_n. */
    struct ring_ent ring[FEED_RING_MAX];
    size_t ring_head, ring_n, ring_bytes;
    struct source src[FEED_SOURCES_MAX];
    /* The pull in flight (pull_src >= 0). */
    int pull_src;
    uint64_t pull_id, pull_deadline;
    bool want_snapshot;
    uint64_t armed;
    struct feed_stats st;
};

static void digest_of(const uint8_t *snap, size_t len, uint8_t out[static FEED_DIGEST_LEN])
{
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, FEED_DIGEST_LEN);
    crypto_generichash_update(&h, (const uint8_t *)digest_domain, sizeof digest_domain - 1);
    crypto_generichash_update(&h, snap, len);
    crypto_generichash_final(&h, out, FEED_DIGEST_LEN);
}

int feed_new(const struct feed_io *io, struct fsm *fsm, struct feed **ret)
{
    struct feed *f = calloc(1, sizeof *f);
    if (!f)
        return MESH_ENOMEM;
    f->io = *io;
    f->fsm = fsm;
    f->pulling = true;
    f->pull_src = -1;
    f->armed = FEED_NO_DEADLINE;
    *ret = f;
    return 0;
}

static void ring_clear(struct feed *f)
{
    for (size_t i = 0; i < f->ring_n; i++)
        free(f->ring[(f->ring_head + i) % FEED_RING_MAX].cmd);
    f->ring_head = f->ring_n = f->ring_bytes = 0;
}

void feed_free(struct feed *feed)
{
    if (!feed)
        return;
    ring_clear(feed);
    free(feed);
}

void feed_set_pulling(struct feed *feed, bool pulling)
{
    feed->pulling = pulling;
}

struct feed_stats feed_get_stats(const struct feed *feed)
{
    return feed->st;
}

bool feed_pulling_now(const struct feed *feed)
{
    return feed->pull_src >= 0;
}

int feed_digest(struct feed *feed, uint8_t ret_digest[static FEED_DIGEST_LEN])
{
    uint64_t rev = fsm_revision(feed->fsm);
    if (!feed->digest_ok || feed->digest_rev != rev) {
        struct raft_buffer b;
        if (fsm_snapshot_encode(feed->fsm, &b) != 0)
            return MESH_ENOMEM;
        digest_of(b.base, b.len, feed->digest);
        raft_free(b.base);
        feed->digest_ok = true;
        feed->digest_rev = rev;
    }
    memcpy(ret_digest, feed->digest, FEED_DIGEST_LEN);
    return 0;
}

size_t feed_advert(struct feed *feed, uint8_t *buf, size_t cap)
{
    uint8_t d[FEED_DIGEST_LEN];
    if (feed_digest(feed, d) != 0)
        return 0;
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, 3);
    msgpack_pack_uint64(&w.pk, FEED_WIRE_VERSION);
    msgpack_pack_uint64(&w.pk, fsm_revision(feed->fsm));
    wire_pack_bin(&w.pk, d, sizeof d);
    return w.overflow ? 0 : w.len;
}

/* [version, ...]: the version element is read first so that a newer one is told apart. */
static int rd_head(struct wire_rd *r, uint32_t want_n, uint32_t *ret_n)
{
    uint32_t n;
    uint64_t v;
    if (wire_rd_array(r, &n) || n < 1 || wire_rd_uint(r, &v))
        return MESH_EMALFORMED;
    if (v != FEED_WIRE_VERSION)
        return MESH_EUNSUPPORTED;
    if (want_n && n != want_n)
        return MESH_EMALFORMED;
    *ret_n = n;
    return 0;
}

static int rd_digest(struct wire_rd *r, uint8_t out[static FEED_DIGEST_LEN])
{
    const uint8_t *b;
    uint32_t n;
    if (wire_rd_bin(r, &b, &n) || n != FEED_DIGEST_LEN)
        return MESH_EMALFORMED;
    memcpy(out, b, FEED_DIGEST_LEN);
    return 0;
}

int feed_advert_decode(const uint8_t *buf, size_t len, uint64_t *ret_revision,
                       uint8_t ret_digest[static FEED_DIGEST_LEN])
{
    struct wire_rd r;
    uint32_t n;
    uint64_t rev;
    uint8_t d[FEED_DIGEST_LEN];
    int rc;
    wire_rd_init(&r, buf, len);
    if ((rc = rd_head(&r, 3, &n)) != 0)
        return rc;
    if (wire_rd_uint(&r, &rev) || rd_digest(&r, d) || wire_rd_left(&r) != 0)
        return MESH_EMALFORMED;
    *ret_revision = rev;
    memcpy(ret_digest, d, sizeof d);
    return 0;
}

size_t feed_request_encode(uint64_t from_revision, bool want_snapshot, uint8_t *buf, size_t cap)
{
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, 4);
    msgpack_pack_uint64(&w.pk, FEED_WIRE_VERSION);
    msgpack_pack_uint64(&w.pk, FEED_MSG_PULL);
    msgpack_pack_uint64(&w.pk, from_revision);
    if (want_snapshot)
        msgpack_pack_true(&w.pk);
    else
        msgpack_pack_false(&w.pk);
    return w.overflow ? 0 : w.len;
}

int feed_request_decode(const uint8_t *buf, size_t len, uint64_t *ret_from, bool *ret_snapshot)
{
    struct wire_rd r;
    uint32_t n;
    uint64_t type, from;
    bool snap;
    int rc;
    wire_rd_init(&r, buf, len);
    if ((rc = rd_head(&r, 4, &n)) != 0)
        return rc;
    if (wire_rd_uint(&r, &type) || wire_rd_uint(&r, &from) || wire_rd_bool(&r, &snap) ||
        wire_rd_left(&r) != 0)
        return MESH_EMALFORMED;
    if (type != FEED_MSG_PULL)
        return MESH_EUNSUPPORTED;
    *ret_from = from;
    *ret_snapshot = snap;
    return 0;
}

int feed_reply_decode(const uint8_t *buf, size_t len, struct feed_reply *ret)
{
    struct wire_rd r;
    struct feed_reply out = {0};
    uint32_t n;
    uint64_t type, kind;
    int rc;
    wire_rd_init(&r, buf, len);
    if ((rc = rd_head(&r, 6, &n)) != 0)
        return rc;
    if (wire_rd_uint(&r, &type) || type != FEED_MSG_STATE || wire_rd_uint(&r, &kind) ||
        wire_rd_uint(&r, &out.revision) || rd_digest(&r, out.digest))
        return MESH_EMALFORMED;
    out.kind = (unsigned)kind;
    if (kind == FEED_REPLY_SNAPSHOT) {
        const uint8_t *b;
        uint32_t bl;
        if (wire_rd_bin(&r, &b, &bl) || bl == 0 || bl > FEED_SNAPSHOT_MAX)
            return MESH_EMALFORMED;
        out.snapshot = b;
        out.snapshot_len = bl;
    } else if (kind == FEED_REPLY_DELTAS || kind == FEED_REPLY_NONE) {
        uint32_t nc;
        if (wire_rd_array(&r, &nc) || nc > FEED_RING_MAX || (kind == FEED_REPLY_NONE && nc != 0) ||
            (kind == FEED_REPLY_DELTAS && nc == 0))
            return MESH_EMALFORMED;
        out.ncmds = nc;
        out.cmds = buf + r.off;
        size_t start = r.off, total = 0;
        for (uint32_t i = 0; i < nc; i++) {
            const uint8_t *b;
            uint32_t bl;
            if (wire_rd_bin(&r, &b, &bl) || bl == 0 || bl > FEED_CMD_MAX)
                return MESH_EMALFORMED;
            total += bl;
        }
        if (total > FEED_RING_BYTES)
            return MESH_EMALFORMED;
        out.cmds_len = r.off - start;
    } else {
        return MESH_EMALFORMED;
    }
    if (r.err || wire_rd_left(&r) != 0)
        return MESH_EMALFORMED;
    *ret = out;
    return 0;
}

/* ---- the ring ---- */

int feed_record(struct feed *feed, uint64_t rev_before, uint64_t rev_after, const uint8_t *cmd,
                size_t len)
{
    if (rev_after == rev_before)
        return 0; /* nothing changed: the chain goes on */
    if (rev_after < rev_before || len == 0 || len > FEED_CMD_MAX) {
        ring_clear(feed); /* not a chain the ring can serve */
        return 0;
    }
    if (feed->ring_n) {
        struct ring_ent *last = &feed->ring[(feed->ring_head + feed->ring_n - 1) % FEED_RING_MAX];
        if (last->rev_after != rev_before)
            ring_clear(feed);
    }
    uint8_t *c = malloc(len);
    if (!c) {
        ring_clear(feed);
        return MESH_ENOMEM;
    }
    memcpy(c, cmd, len);
    /* Evict the oldest until the new one fits both bounds: the whole ring must fit one reply. */
    while (feed->ring_n &&
           (feed->ring_n == FEED_RING_MAX || feed->ring_bytes + len > FEED_RING_BYTES)) {
        struct ring_ent *o = &feed->ring[feed->ring_head];
        feed->ring_bytes -= o->len;
        free(o->cmd);
        feed->ring_head = (feed->ring_head + 1) % FEED_RING_MAX;
        feed->ring_n--;
    }
    struct ring_ent *e = &feed->ring[(feed->ring_head + feed->ring_n) % FEED_RING_MAX];
    *e = (struct ring_ent){rev_before, rev_after, c, len};
    feed->ring_n++;
    feed->ring_bytes += len;
    return 0;
}

/* ---- serving ---- */

/* Returns non-zero when a write into the sbuffer failed (out of memory). */
static int reply_begin(msgpack_packer *pk, unsigned kind, uint64_t rev, const uint8_t *digest)
{
    return msgpack_pack_array(pk, 6) | msgpack_pack_uint64(pk, FEED_WIRE_VERSION) |
           msgpack_pack_uint64(pk, FEED_MSG_STATE) | msgpack_pack_uint64(pk, kind) |
           msgpack_pack_uint64(pk, rev) | wire_pack_bin(pk, digest, FEED_DIGEST_LEN);
}

/* Hands the sbuffer's bytes out, unless a write into it failed (bad: a partial message). */
static int sbuf_out(msgpack_sbuffer *sb, int bad, uint8_t **ret_reply, size_t *ret_len)
{
    if (bad || !sb->data) {
        msgpack_sbuffer_destroy(sb);
        return MESH_ENOMEM;
    }
    *ret_reply = (uint8_t *)sb->data;
    *ret_len = sb->size;
    return 0;
}

int feed_serve(struct feed *feed, const uint8_t *req, size_t len, uint8_t **ret_reply,
               size_t *ret_len)
{
    uint64_t from;
    bool want_snapshot;
    int rc = feed_request_decode(req, len, &from, &want_snapshot);
    if (rc != 0)
        return rc;
    uint8_t d[FEED_DIGEST_LEN];
    if (feed_digest(feed, d) != 0)
        return MESH_ENOMEM;
    uint64_t rev = fsm_revision(feed->fsm);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (from >= rev) {
        int bad = reply_begin(&pk, FEED_REPLY_NONE, rev, d) | msgpack_pack_array(&pk, 0);
        return sbuf_out(&sb, bad, ret_reply, ret_len);
    }
    /* Deltas when the ring holds a chain from `from` up to the state held now. */
    size_t first = feed->ring_n;
    if (!want_snapshot && feed->ring_n &&
        feed->ring[(feed->ring_head + feed->ring_n - 1) % FEED_RING_MAX].rev_after == rev) {
        for (size_t i = 0; i < feed->ring_n; i++)
            if (feed->ring[(feed->ring_head + i) % FEED_RING_MAX].rev_before == from) {
                first = i;
                break;
            }
    }
    if (first < feed->ring_n) {
        int bad = reply_begin(&pk, FEED_REPLY_DELTAS, rev, d) |
                  msgpack_pack_array(&pk, (uint32_t)(feed->ring_n - first));
        for (size_t i = first; i < feed->ring_n; i++) {
            const struct ring_ent *e = &feed->ring[(feed->ring_head + i) % FEED_RING_MAX];
            bad |= wire_pack_bin(&pk, e->cmd, e->len);
        }
        feed->st.served_deltas++;
        return sbuf_out(&sb, bad, ret_reply, ret_len);
    }
    struct raft_buffer snap;
    if (fsm_snapshot_encode(feed->fsm, &snap) != 0) {
        msgpack_sbuffer_destroy(&sb);
        return MESH_ENOMEM;
    }
    int bad =
        reply_begin(&pk, FEED_REPLY_SNAPSHOT, rev, d) | wire_pack_bin(&pk, snap.base, snap.len);
    raft_free(snap.base);
    feed->st.served_snapshots++;
    return sbuf_out(&sb, bad, ret_reply, ret_len);
}

/* ---- pulling ---- */

static void arm(struct feed *f, uint64_t at)
{
    if (at != f->armed) {
        f->armed = at;
        f->io.timer(f->io.data, at);
    }
}

static void set_aside(struct feed *f, int i)
{
    struct source *s = &f->src[i];
    uint64_t back = FEED_BACKOFF_MIN_MS;
    for (unsigned k = 0; k < s->fails && back < FEED_BACKOFF_MAX_MS; k++)
        back *= 2;
    if (back > FEED_BACKOFF_MAX_MS)
        back = FEED_BACKOFF_MAX_MS;
    /* Jitter up to a quarter, so sources set aside together do not come back together. */
    back += f->io.random(f->io.data) % (back / 4 + 1);
    s->retry_at = f->io.now(f->io.data) + back;
    if (s->fails < 32)
        s->fails++;
    f->st.set_aside++;
}

/* Starts a pull when none is out and a usable source is ahead of us; arms the timer for the
 * next moment something can change (the deadline, or a source coming back from backoff). */
static void try_pull(struct feed *f)
{
    uint64_t now = f->io.now(f->io.data);
    if (f->pull_src >= 0) {
        arm(f, f->pull_deadline);
        return;
    }
    if (!f->pulling) {
        arm(f, FEED_NO_DEADLINE);
        return;
    }
    uint64_t have = fsm_revision(f->fsm), next = FEED_NO_DEADLINE;
    int best = -1;
    uint64_t ties = 0;
    for (int i = 0; i < FEED_SOURCES_MAX; i++) {
        struct source *s = &f->src[i];
        if (!s->used || s->revision <= have)
            continue;
        if (s->retry_at > now) {
            if (s->retry_at < next)
                next = s->retry_at;
            continue;
        }
        if (best < 0 || s->revision > f->src[best].revision) {
            best = i;
            ties = 1;
        } else if (s->revision == f->src[best].revision && f->io.random(f->io.data) % ++ties == 0) {
            best = i; /* reservoir sampling: each of the equal sources with the same chance */
        }
    }
    if (best < 0) {
        arm(f, next);
        return;
    }
    uint8_t req[FEED_REQUEST_MAX];
    size_t n = feed_request_encode(have, f->want_snapshot, req, sizeof req);
    uint64_t id = ++f->pull_id;
    f->st.pulls++;
    if (n == 0 || f->io.call(f->io.data, f->src[best].addr, req, n, FEED_REPLY_MAX,
                             FEED_PULL_TIMEOUT_MS, id) != 0) {
        f->st.failed++;
        set_aside(f, best);
        try_pull(f); /* terminates: best is now in backoff */
        return;
    }
    f->pull_src = best;
    f->pull_deadline = now + FEED_PULL_TIMEOUT_MS;
    arm(f, f->pull_deadline);
}

int feed_observe(struct feed *feed, const char *address, const uint8_t *advert, size_t len)
{
    uint64_t rev;
    uint8_t d[FEED_DIGEST_LEN];
    size_t alen = strlen(address);
    if (alen == 0 || alen >= FEED_ADDR_MAX)
        return MESH_EINVAL;
    if (feed_advert_decode(advert, len, &rev, d) != 0)
        return MESH_EMALFORMED;
    int slot = -1, lowest = -1;
    for (int i = 0; i < FEED_SOURCES_MAX; i++) {
        struct source *s = &feed->src[i];
        if (s->used && strcmp(s->addr, address) == 0) {
            slot = i;
            break;
        }
        if (!s->used) {
            if (lowest < 0 || feed->src[lowest].used)
                lowest = i;
        } else if (i != feed->pull_src &&
                   (lowest < 0 ||
                    (feed->src[lowest].used && s->revision < feed->src[lowest].revision)))
            lowest = i;
    }
    if (slot < 0) {
        /* A new source takes a free slot, or that of the least advanced one when it is ahead. */
        if (lowest < 0 || (feed->src[lowest].used && feed->src[lowest].revision >= rev))
            return MESH_EFULL;
        slot = lowest;
        feed->src[slot] = (struct source){.used = true};
        memcpy(feed->src[slot].addr, address, alen + 1);
    }
    struct source *s = &feed->src[slot];
    /* A source that advertises more than it delivered stays in backoff: a new advert does not
     * lift it (a liar would just re-advertise). */
    s->revision = rev;
    try_pull(feed);
    return 0;
}

void feed_forget(struct feed *feed, const char *address)
{
    for (int i = 0; i < FEED_SOURCES_MAX; i++)
        if (feed->src[i].used && strcmp(feed->src[i].addr, address) == 0) {
            if (i == feed->pull_src)
                feed->pull_src = -1; /* its answer, if any, is now stale */
            feed->src[i].used = false;
        }
    try_pull(feed);
}

/* Builds the new state aside from the reply and returns its snapshot encoding in *ret (raft
 * buffer); checks revision and digest. On success, the commands applied are in the ring. */
static int apply_reply(struct feed *f, const struct feed_reply *rp, struct raft_buffer *ret,
                       uint64_t *ret_applied, uint64_t revs[static FEED_RING_MAX + 1])
{
    struct fsm *tmp;
    struct raft_buffer cur;
    int rc;
    uint64_t have = fsm_revision(f->fsm), applied = 0;
    if ((rc = fsm_new(&tmp)) != 0)
        return rc;
    if (rp->kind == FEED_REPLY_SNAPSHOT) {
        if ((rc = fsm_restore_bytes(tmp, rp->snapshot, rp->snapshot_len)) != 0) {
            rc = rc == MESH_ENOMEM ? rc : MESH_EMALFORMED;
            goto tmp_made;
        }
    } else {
        if ((rc = fsm_snapshot_encode(f->fsm, &cur)) != 0)
            goto tmp_made;
        rc = fsm_restore_bytes(tmp, cur.base, cur.len);
        raft_free(cur.base);
        if (rc != 0)
            goto tmp_made;
        struct wire_rd r;
        wire_rd_init(&r, rp->cmds, rp->cmds_len);
        for (uint32_t i = 0; i < rp->ncmds; i++) {
            const uint8_t *c;
            uint32_t cl;
            struct fsm_result res;
            uint64_t before = fsm_revision(tmp);
            revs[i] = before;
            wire_rd_bin(&r, &c, &cl); /* checked by feed_reply_decode */
            if ((rc = fsm_apply_cmd(tmp, c, cl, &res)) != 0)
                goto tmp_made;
            /* Only commands that changed the state are served: anything else is not from an
             * honest ring. */
            if (res.revision <= before) {
                rc = MESH_EMALFORMED;
                goto tmp_made;
            }
            revs[i + 1] = res.revision;
            applied++;
        }
    }
    if (fsm_revision(tmp) != rp->revision || rp->revision <= have) {
        rc = MESH_EAUTH;
        goto tmp_made;
    }
    if ((rc = fsm_snapshot_encode(tmp, ret)) != 0)
        goto tmp_made;
    uint8_t d[FEED_DIGEST_LEN];
    digest_of(ret->base, ret->len, d);
    if (sodium_memcmp(d, rp->digest, sizeof d) != 0) {
        raft_free(ret->base);
        rc = MESH_EAUTH;
        goto tmp_made;
    }
    *ret_applied = applied;
    rc = 0;
tmp_made:
    fsm_free(tmp);
    return rc;
}

/* The commands of a verified delta run go into this node's ring, so it serves them onward
 * (the epidemic); revs[i]..revs[i+1] are the steps apply_reply saw. */
static void record_deltas(struct feed *f, const struct feed_reply *rp, const uint64_t *revs)
{
    struct wire_rd r;
    wire_rd_init(&r, rp->cmds, rp->cmds_len);
    for (uint32_t i = 0; i < rp->ncmds; i++) {
        const uint8_t *c;
        uint32_t cl;
        wire_rd_bin(&r, &c, &cl);
        feed_record(f, revs[i], revs[i + 1], c, cl);
    }
}

void feed_pull_done(struct feed *feed, uint64_t id, int rc, const uint8_t *reply, size_t len)
{
    if (feed->pull_src < 0 || id != feed->pull_id)
        return;
    int src = feed->pull_src;
    uint64_t advertised = feed->src[src].revision;
    feed->pull_src = -1;
    struct feed_reply rp;
    if (rc != 0) {
        feed->st.failed++;
        set_aside(feed, src);
        goto next;
    }
    if (feed_reply_decode(reply, len, &rp) != 0) {
        feed->st.bad_reply++;
        set_aside(feed, src);
        goto next;
    }
    uint64_t have = fsm_revision(feed->fsm);
    if (rp.revision < advertised || rp.kind == FEED_REPLY_NONE) {
        /* Less than it advertised: a forged advert (or a source that went back, e.g. restarted
         * from an older disk state). Not trusted again for a while. */
        feed->st.not_honoured++;
        set_aside(feed, src);
        if (rp.revision > have && rp.kind != FEED_REPLY_NONE)
            feed->src[src].revision = rp.revision;
        goto next;
    }
    struct raft_buffer next_state;
    uint64_t applied = 0, revs[FEED_RING_MAX + 1];
    rc = apply_reply(feed, &rp, &next_state, &applied, revs);
    if (rc != 0) {
        if (rc == MESH_EAUTH)
            feed->st.mismatch++;
        else if (rc != MESH_ENOMEM)
            feed->st.bad_reply++;
        if (rp.kind == FEED_REPLY_DELTAS)
            feed->want_snapshot = true;
        set_aside(feed, src);
        goto next;
    }
    rc = fsm_restore_bytes(feed->fsm, next_state.base, next_state.len);
    raft_free(next_state.base);
    if (rc != 0) { /* ENOMEM: the held state is untouched; try again later */
        set_aside(feed, src);
        goto next;
    }
    /* The held state is the verified one: its digest is the claimed one. */
    memcpy(feed->digest, rp.digest, FEED_DIGEST_LEN);
    feed->digest_rev = rp.revision;
    feed->digest_ok = true;
    if (rp.kind == FEED_REPLY_DELTAS) {
        feed->st.deltas += applied;
        record_deltas(feed, &rp, revs);
    } else {
        feed->st.snapshots++;
        ring_clear(feed);
    }
    feed->want_snapshot = false;
    feed->src[src].fails = 0;
    feed->st.pulls_ok++;
    if (feed->io.changed)
        feed->io.changed(feed->io.data, rp.revision);
next:
    try_pull(feed);
}

void feed_tick(struct feed *feed)
{
    feed->armed = FEED_NO_DEADLINE;
    uint64_t now = feed->io.now(feed->io.data);
    if (feed->pull_src >= 0 && now >= feed->pull_deadline) {
        int src = feed->pull_src;
        feed->pull_src = -1; /* the late answer, if it comes, is stale */
        feed->st.failed++;
        set_aside(feed, src);
    }
    try_pull(feed);
}

/* ---- the held state on disk ---- */

int feed_store_encode(const struct fsm *fsm, uint8_t **ret_buf, size_t *ret_len)
{
    struct raft_buffer snap;
    if (fsm_snapshot_encode(fsm, &snap) != 0)
        return MESH_ENOMEM;
    uint8_t d[FEED_DIGEST_LEN];
    digest_of(snap.base, snap.len, d);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int bad = msgpack_pack_array(&pk, 5) |
              wire_pack_str(&pk, FEED_STORE_MAGIC, sizeof FEED_STORE_MAGIC - 1) |
              msgpack_pack_uint64(&pk, FEED_STORE_VERSION) |
              msgpack_pack_uint64(&pk, fsm_revision(fsm)) | wire_pack_bin(&pk, d, sizeof d) |
              wire_pack_bin(&pk, snap.base, snap.len);
    raft_free(snap.base);
    return sbuf_out(&sb, bad, ret_buf, ret_len);
}

int feed_store_decode(struct fsm *fsm, const uint8_t *buf, size_t len, struct mesh_err *err)
{
    struct wire_rd r;
    uint32_t n, ml, sl;
    const char *magic;
    const uint8_t *snap;
    uint64_t version, rev;
    uint8_t d[FEED_DIGEST_LEN], got[FEED_DIGEST_LEN];
    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &n) || n < 2 || wire_rd_str(&r, &magic, &ml) ||
        ml != sizeof FEED_STORE_MAGIC - 1 || memcmp(magic, FEED_STORE_MAGIC, ml) != 0)
        return mesh_errf(err, MESH_EMALFORMED, "not a stored desired state");
    if (wire_rd_uint(&r, &version))
        return mesh_errf(err, MESH_EMALFORMED, "stored desired state: truncated");
    if (version != FEED_STORE_VERSION)
        return mesh_errf(err, MESH_EUNSUPPORTED,
                         "stored desired state: format %llu (this node reads %d)",
                         (unsigned long long)version, FEED_STORE_VERSION);
    if (n != 5 || wire_rd_uint(&r, &rev) || rd_digest(&r, d) || wire_rd_bin(&r, &snap, &sl) ||
        wire_rd_left(&r) != 0)
        return mesh_errf(err, MESH_EMALFORMED, "stored desired state: truncated or malformed");
    digest_of(snap, sl, got);
    if (sodium_memcmp(got, d, sizeof d) != 0)
        return mesh_errf(err, MESH_EMALFORMED, "stored desired state: digest mismatch (corrupt)");
    struct fsm *tmp;
    int rc;
    if ((rc = fsm_new(&tmp)) != 0)
        return mesh_errf(err, rc, "stored desired state: out of memory");
    if ((rc = fsm_restore_bytes(tmp, snap, sl)) != 0 || fsm_revision(tmp) != rev) {
        fsm_free(tmp);
        return mesh_errf(err, rc == MESH_ENOMEM ? rc : MESH_EMALFORMED, "stored desired state: %s",
                         rc ? mesh_strerror(rc) : "revision mismatch");
    }
    fsm_free(tmp);
    /* Checked on a scratch copy first, so the restore below cannot fail on content. */
    if ((rc = fsm_restore_bytes(fsm, snap, sl)) != 0)
        return mesh_errf(err, rc, "stored desired state: %s", mesh_strerror(rc));
    return 0;
}
