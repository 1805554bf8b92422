/* Encrypted node-to-node link: sans-I/O state machine. The wire format and the rules it
 * follows are described in link.h. */
#include "link.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "noise.h"

enum frame_type {
    F_HELLO = 1,
    F_PING = 2,
    F_PONG = 3,
    F_REKEY = 4,
    F_GOAWAY = 5,
    F_OPEN = 16,
    F_WINDOW = 17,
    F_DATA = 18,
    F_FIN = 19,
    F_RESET = 20,
};

/* Where the handshake and the link are. */
enum phase {
    P_NEW,
    P_WAIT_MSG1,  /* responder */
    P_WAIT_MSG2,  /* initiator */
    P_WAIT_MSG3,  /* responder */
    P_WAIT_HELLO, /* initiator: keys split, waiting for the proof that the peer has the PSK */
    P_OPEN,
    P_DEAD,
};

#define REFUSED_MAX   64 /* refused OPENs waiting for their RESET; more kills the link */
#define MAX_FRAME_CAP (1u << 20)
#define CREDIT_MAX    (1ull << 40) /* a peer granting more than this is broken */
#define OUT_INITIAL   (16 * 1024)
/* >= LINK_FRAME_HDR_LEN (see struct chan). 64 rather than 8: a relay copies each frame's body
 * from the input buffer (10 bytes into a record) into a send buffer, and where both buffers start
 * at the same offset in a page, a destination 1..31 bytes ahead of the source modulo 4 KiB makes
 * glibc's memcpy 20x slower on AMD CPUs (rep movsb; bench/README.md, tunnel). */
#define SBUF_HEADROOM 64

struct chan;

/* Intrusive doubly-linked FIFO of channels. */
struct chan_list {
    struct chan *head, *tail;
};

struct chan_link {
    struct chan *prev, *next;
    bool on;
};

struct chan {
    uint32_t id;
    uint16_t type;
    bool local;        /* opened by us */
    bool open_pending; /* OPEN not sent yet */
    bool fin_pending;  /* link_channel_close called */
    bool fin_sent;
    bool fin_recv;
    bool reset_pending; /* link_channel_reset called; RESET not sent yet */
    bool want_writable; /* a send accepted less than asked */
    uint32_t reset_reason;
    uint64_t grant_pending; /* credit to return to the peer with WINDOW */
    uint64_t recv_avail;    /* bytes the peer may still send us */
    uint64_t unconsumed;    /* delivered to the application, not consumed yet */
    uint64_t send_credit;   /* bytes we may still send (not counting sbuf) */
    /* Accepted bytes not yet framed: sbuf[shead .. shead+slen), scap bytes in all. shead is at
     * least SBUF_HEADROOM, so that a DATA frame's header can be written right in front of its
     * body and the frame encrypted from there without copying the body (emit_chan_data). */
    uint8_t *sbuf;
    size_t scap, shead, slen;
    size_t open_len;
    uint8_t open_payload[LINK_OPEN_PAYLOAD_MAX];
    struct chan_link dirty; /* control frames to send */
    struct chan_link ready; /* data to send */
};

struct link {
    struct link_config cfg;
    struct link_callbacks cb;
    void *ud;
    uint8_t payload[LINK_HS_PAYLOAD_MAX];
    enum phase phase;
    bool in_handshake_cb;

    struct noise_handshake hs;
    struct noise_cipher tx, rx;
    bool have_keys;
    uint8_t peer_static[LINK_KEY_LEN];
    uint8_t peer_payload[1 + LINK_HS_PAYLOAD_MAX]; /* the cipher byte, then the application's */
    size_t peer_payload_len;
    uint8_t peer_ciphers;    /* the peer's cipher mask (link.h "Cipher negotiation") */
    const char *cipher_name; /* the negotiated cipher, once split */

    struct mesh_err err;
    struct link_stats st;

    /* Input: in[in_off .. in_len) received and not processed yet (at most one partial record
     * after link_input_commit). Room for two records, so that the rest of a partial record
     * always fits after at most one move (link_input_space); frames are decrypted in place. */
    uint8_t *in;
    size_t in_off, in_len, in_cap;
    size_t max_record;

    /* Output: encrypted bytes out[out_off .. out_len). */
    uint8_t *out;
    size_t out_off, out_len, out_alloc;
    bool out_signaled;

    /* Link-level frames waiting. */
    bool hello_pending, ping_pending, pong_pending, rekey_due, goaway_pending, goaway_sent;
    uint16_t goaway_reason;
    uint64_t ping_val, pong_val;
    uint32_t refused_id[REFUSED_MAX];
    uint32_t refused_reason[REFUSED_MAX];
    size_t n_refused;

    /* Time. */
    uint64_t now, hs_deadline, last_recv, last_ping, rekey_at;
    uint64_t tx_since_rekey;

    /* Channels: open-addressing table (linear probing, backward-shift deletion). */
    struct chan **tab;
    size_t tab_mask;
    size_t n_chans;
    size_t queued; /* sum of slen over channels */
    bool want_writable_any;
    uint32_t next_local_id, last_peer_id;
    struct chan_list dirty, ready_ctrl, ready_bulk;
};

/* ---- small helpers ---- */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return ((uint64_t)get32(p) << 32) | get32(p + 4);
}

static void list_push(struct chan_list *l, struct chan *c, struct chan_link *lk, size_t off)
{
    (void)off;
    if (lk->on)
        return;
    lk->on = true;
    lk->next = NULL;
    lk->prev = l->tail;
    if (l->tail)
        ((struct chan_link *)((char *)l->tail + off))->next = c;
    else
        l->head = c;
    l->tail = c;
}

static void list_remove(struct chan_list *l, struct chan *c, struct chan_link *lk, size_t off)
{
    if (!lk->on)
        return;
    if (lk->prev)
        ((struct chan_link *)((char *)lk->prev + off))->next = lk->next;
    else
        l->head = lk->next;
    if (lk->next)
        ((struct chan_link *)((char *)lk->next + off))->prev = lk->prev;
    else
        l->tail = lk->prev;
    lk->on = false;
    lk->prev = lk->next = NULL;
    (void)c;
}

#define DIRTY_OFF offsetof(struct chan, dirty)
#define READY_OFF offsetof(struct chan, ready)

static bool chan_is_ctrl(const struct chan *c)
{
    return (c->type & LINK_CHAN_CONTROL) != 0;
}

static struct chan_list *ready_list(struct link *l, const struct chan *c)
{
    return chan_is_ctrl(c) ? &l->ready_ctrl : &l->ready_bulk;
}

static void signal_output(struct link *l)
{
    if (!l->out_signaled && l->cb.on_output) {
        l->out_signaled = true;
        l->cb.on_output(l->ud);
    }
}

static void mark_dirty(struct link *l, struct chan *c)
{
    list_push(&l->dirty, c, &c->dirty, DIRTY_OFF);
    signal_output(l);
}

static void mark_ready(struct link *l, struct chan *c)
{
    list_push(ready_list(l, c), c, &c->ready, READY_OFF);
    signal_output(l);
}

/* ---- channel table ---- */

static size_t slot_of(const struct link *l, uint32_t id)
{
    return (size_t)((id * 2654435761u) & l->tab_mask); /* Knuth's multiplicative hash */
}

static struct chan *chan_find(const struct link *l, uint32_t id)
{
    for (size_t i = slot_of(l, id);; i = (i + 1) & l->tab_mask) {
        struct chan *c = l->tab[i];
        if (!c)
            return NULL;
        if (c->id == id)
            return c;
    }
}

static void chan_insert(struct link *l, struct chan *c)
{
    size_t i = slot_of(l, c->id);
    while (l->tab[i])
        i = (i + 1) & l->tab_mask;
    l->tab[i] = c;
    l->n_chans++;
}

static void chan_release(struct link *l, struct chan *c)
{
    size_t i = slot_of(l, c->id), j;

    while (l->tab[i] != c)
        i = (i + 1) & l->tab_mask;
    /* Backward-shift deletion keeps probe chains intact without tombstones. */
    l->tab[i] = NULL;
    for (j = (i + 1) & l->tab_mask; l->tab[j]; j = (j + 1) & l->tab_mask) {
        size_t home = slot_of(l, l->tab[j]->id);
        /* Move tab[j] into the hole at i when its home slot is not in (i, j]. */
        bool between = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!between) {
            l->tab[i] = l->tab[j];
            l->tab[j] = NULL;
            i = j;
        }
    }
    l->n_chans--;
    list_remove(&l->dirty, c, &c->dirty, DIRTY_OFF);
    list_remove(ready_list(l, c), c, &c->ready, READY_OFF);
    l->queued -= c->slen;
    free(c->sbuf);
    free(c);
}

static struct chan *chan_new(struct link *l, uint32_t id, uint16_t type, bool local)
{
    struct chan *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->id = id;
    c->type = type;
    c->local = local;
    chan_insert(l, c);
    return c;
}

/* A frame for an id that is not in the table: stale (ignore) or never opened (error). */
static bool id_is_stale(const struct link *l, uint32_t id)
{
    bool ours = (id & 1) == (l->cfg.initiator ? 1u : 0u);
    return ours ? id < l->next_local_id : id <= l->last_peer_id;
}

/* ---- errors ---- */

static void emit_raw_record(struct link *l, const uint8_t *rec, size_t len);
static int emit(struct link *l, uint8_t type, uint32_t ch, const uint8_t *b1, size_t l1,
                const uint8_t *b2, size_t l2);

/* Kills the link with code and a message; with notify, a last notice for the peer is queued:
 * GOAWAY when we have transport keys, else the plaintext abort record. Returns code. */
static int die(struct link *l, int code, enum link_goaway reason, bool notify, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int die(struct link *l, int code, enum link_goaway reason, bool notify, const char *fmt, ...)
{
    va_list ap;

    if (l->phase == P_DEAD)
        return l->err.code;
    va_start(ap, fmt);
    l->err.code = code;
    vsnprintf(l->err.msg, sizeof l->err.msg, fmt, ap);
    va_end(ap);
    if (code == MESH_EPROTO || code == MESH_EMALFORMED || code == MESH_ETOOBIG)
        l->st.protocol_errors++;
    if (notify) {
        if (l->have_keys) {
            uint8_t b[2];
            put16(b, (uint16_t)reason);
            (void)emit(l, F_GOAWAY, 0, b, 2, NULL, 0);
        } else {
            uint8_t rec[4];
            put32(rec, LINK_ABORT_MAGIC | (uint8_t)reason);
            emit_raw_record(l, rec, sizeof rec);
        }
        signal_output(l);
    }
    l->phase = P_DEAD;
    noise_handshake_wipe(&l->hs);
    noise_cipher_wipe(&l->tx);
    noise_cipher_wipe(&l->rx);
    l->have_keys = false;
    return code;
}

#define PROTO(l, ...) die((l), MESH_EPROTO, LINK_GOAWAY_PROTO, true, __VA_ARGS__)

static const char *reason_str(unsigned r)
{
    switch (r) {
    case LINK_GOAWAY_NORMAL:
        return "closed";
    case LINK_GOAWAY_AUTH:
        return "authentication failed (different mesh key?)";
    case LINK_GOAWAY_REJECTED:
        return "our identity was rejected";
    case LINK_GOAWAY_PROTO:
        return "protocol violation";
    case LINK_GOAWAY_TIMEOUT:
        return "timeout";
    default:
        return "unknown reason";
    }
}

static int reason_code(unsigned r)
{
    switch (r) {
    case LINK_GOAWAY_NORMAL:
        return MESH_ECLOSED;
    case LINK_GOAWAY_AUTH:
    case LINK_GOAWAY_REJECTED:
        return MESH_EAUTH;
    case LINK_GOAWAY_PROTO:
        return MESH_EPROTO;
    default:
        return MESH_ECLOSED;
    }
}

/* ---- output ---- */

static size_t out_pending(const struct link *l)
{
    return l->out_len - l->out_off;
}

/* Makes room for need more bytes at out+out_len. The buffer never grows beyond
 * out_cap + max_record (callers check the cap before emitting data). */
static int out_reserve(struct link *l, size_t need)
{
    if (l->out_off == l->out_len)
        l->out_off = l->out_len = 0;
    if (l->out_alloc - l->out_len >= need)
        return 0;
    if (l->out_off > 0) {
        memmove(l->out, l->out + l->out_off, out_pending(l));
        l->out_len -= l->out_off;
        l->out_off = 0;
        if (l->out_alloc - l->out_len >= need)
            return 0;
    }
    size_t n = l->out_alloc ? l->out_alloc : OUT_INITIAL;
    while (n - l->out_len < need)
        n *= 2;
    if (n > l->cfg.out_cap + 2 * l->max_record && n > l->out_len + need)
        n = l->out_len + need;
    uint8_t *p = realloc(l->out, n);
    if (!p)
        return MESH_ENOMEM;
    l->out = p;
    l->out_alloc = n;
    return 0;
}

/* A handshake record or abort notice (plaintext). Allocation failure here only loses the
 * notice, and the link dies anyway, so it is not reported. */
static void emit_raw_record(struct link *l, const uint8_t *rec, size_t len)
{
    if (out_reserve(l, len) < 0)
        return;
    memcpy(l->out + l->out_len, rec, len);
    l->out_len += len;
    l->st.bytes_out += len;
}

static void put_frame_hdr(uint8_t *h, uint8_t type, uint32_t ch)
{
    h[0] = type;
    h[1] = 0;
    put32(h + 2, ch);
}

/* Encrypts the plaintext frame f (header || body, plen bytes) into the output as one record.
 * f is either the record's own place in the output (in place) or a buffer outside it. */
static int seal(struct link *l, const uint8_t *f, size_t plen)
{
    size_t rlen = plen + NOISE_TAGLEN;
    uint8_t *p = l->out + l->out_len;
    put32(p, (uint32_t)rlen);
    int r = noise_cipher_encrypt(&l->tx, NULL, 0, f, plen, p + 4);
    if (r < 0)
        return r;
    l->out_len += 4 + rlen;
    l->st.frames_out++;
    l->st.bytes_out += 4 + rlen;
    l->tx_since_rekey += plen;
    return 0;
}

static int emit_one(struct link *l, uint8_t type, uint32_t ch, const uint8_t *b1, size_t l1,
                    const uint8_t *b2, size_t l2)
{
    size_t plen = LINK_FRAME_HDR_LEN + l1 + l2;
    uint8_t *p;
    int r;

    if (!l->have_keys)
        return MESH_ESTATE;
    r = out_reserve(l, 4 + plen + NOISE_TAGLEN);
    if (r < 0)
        return r;
    p = l->out + l->out_len + 4;
    put_frame_hdr(p, type, ch);
    if (l1)
        memcpy(p + LINK_FRAME_HDR_LEN, b1, l1);
    if (l2)
        memcpy(p + LINK_FRAME_HDR_LEN + l1, b2, l2);
    return seal(l, p, plen);
}

/* Encrypts one frame into the output, preceded by REKEY when our sending key is due (bytes or
 * time, see link.h). */
static int do_rekey(struct link *l)
{
    int r = emit_one(l, F_REKEY, 0, NULL, 0, NULL, 0);
    if (r < 0)
        return r;
    /* Section 11.3: the REKEY frame went out under the old key; every later frame uses the
     * new one (section 4.2 Rekey; n carries on). */
    noise_cipher_rekey(&l->tx);
    l->st.rekeys_tx++;
    l->rekey_due = false;
    l->tx_since_rekey = 0;
    l->rekey_at = l->now + l->cfg.rekey_ms;
    return 0;
}

/* Encrypts one frame into the output, preceded by REKEY when our sending key is due (bytes or
 * time, see link.h). */
static int rekey_if_due(struct link *l)
{
    if (l->have_keys && (l->rekey_due || l->tx_since_rekey >= l->cfg.rekey_bytes))
        return do_rekey(l);
    return 0;
}

static int emit(struct link *l, uint8_t type, uint32_t ch, const uint8_t *b1, size_t l1,
                const uint8_t *b2, size_t l2)
{
    int r = rekey_if_due(l);
    return r < 0 ? r : emit_one(l, type, ch, b1, l1, b2, l2);
}

static void maybe_release(struct link *l, struct chan *c)
{
    if (c->fin_sent && c->fin_recv && c->slen == 0)
        chan_release(l, c);
}

/* Control frames of one channel. May release it. */
static int emit_chan_ctrl(struct link *l, struct chan *c)
{
    uint8_t b[4];
    int r;

    list_remove(&l->dirty, c, &c->dirty, DIRTY_OFF);
    if (c->open_pending) {
        put16(b, c->type);
        r = emit(l, F_OPEN, c->id, b, 2, c->open_payload, c->open_len);
        if (r < 0)
            return r;
        c->open_pending = false;
    }
    if (c->reset_pending) {
        put32(b, c->reset_reason);
        r = emit(l, F_RESET, c->id, b, 4, NULL, 0);
        if (r < 0)
            return r;
        chan_release(l, c);
        return 0;
    }
    if (c->grant_pending && !c->fin_recv) {
        put32(b, (uint32_t)c->grant_pending);
        r = emit(l, F_WINDOW, c->id, b, 4, NULL, 0);
        if (r < 0)
            return r;
        c->grant_pending = 0;
    }
    if (c->fin_pending && !c->fin_sent && c->slen == 0) {
        r = emit(l, F_FIN, c->id, NULL, 0, NULL, 0);
        if (r < 0)
            return r;
        c->fin_sent = true;
        maybe_release(l, c);
    }
    return 0;
}

static size_t chan_space(const struct link *l, const struct chan *c)
{
    uint64_t lim = c->send_credit < l->cfg.chan_sndbuf ? c->send_credit : l->cfg.chan_sndbuf;
    return lim > c->slen ? (size_t)(lim - c->slen) : 0;
}

/* One DATA frame of at most max bytes from the channel's send buffer. */
static int emit_chan_data(struct link *l, struct chan *c, size_t max)
{
    size_t n = c->slen < max ? c->slen : max;
    int r;

    list_remove(ready_list(l, c), c, &c->ready, READY_OFF);
    r = rekey_if_due(l);
    if (r == 0)
        r = out_reserve(l, 4 + LINK_FRAME_HDR_LEN + n + NOISE_TAGLEN);
    if (r < 0)
        return r;
    /* The header goes into the bytes before the body (headroom or bytes already framed). */
    uint8_t *f = c->sbuf + c->shead - LINK_FRAME_HDR_LEN;
    put_frame_hdr(f, F_DATA, c->id);
    r = seal(l, f, LINK_FRAME_HDR_LEN + n);
    if (r < 0)
        return r;
    c->shead += n;
    c->slen -= n;
    c->send_credit -= n;
    l->queued -= n;
    if (c->slen == 0)
        c->shead = SBUF_HEADROOM;
    if (c->slen > 0)
        list_push(ready_list(l, c), c, &c->ready, READY_OFF); /* round robin */
    else if (c->fin_pending && !c->fin_sent)
        list_push(&l->dirty, c, &c->dirty, DIRTY_OFF);
    if (c->want_writable && chan_space(l, c) > 0) {
        c->want_writable = false;
        if (l->cb.on_channel_writable)
            l->cb.on_channel_writable(l->ud, c->id);
    }
    return 0;
}

/* Encrypts what is waiting, in priority order (link.h "Priorities"). */
static int fill(struct link *l)
{
    size_t room_needed = l->max_record + 4;
    size_t bulk_max =
        l->cfg.max_frame_payload < LINK_BULK_CHUNK ? l->cfg.max_frame_payload : LINK_BULK_CHUNK;
    uint8_t b[8];
    int r = 0;

    if (l->phase != P_OPEN || l->goaway_sent)
        return 0;
    while (r == 0 && out_pending(l) + room_needed <= l->cfg.out_cap) {
        if (l->hello_pending) {
            r = emit(l, F_HELLO, 0, NULL, 0, NULL, 0);
            l->hello_pending = false;
        } else if (l->pong_pending) {
            put64(b, l->pong_val);
            r = emit(l, F_PONG, 0, b, 8, NULL, 0);
            l->pong_pending = false;
        } else if (l->ping_pending) {
            put64(b, l->ping_val);
            r = emit(l, F_PING, 0, b, 8, NULL, 0);
            l->ping_pending = false;
            l->st.pings_tx++;
        } else if (l->n_refused > 0) {
            l->n_refused--;
            put32(b, l->refused_reason[l->n_refused]);
            r = emit(l, F_RESET, l->refused_id[l->n_refused], b, 4, NULL, 0);
        } else if (l->dirty.head) {
            r = emit_chan_ctrl(l, l->dirty.head);
        } else if (l->ready_ctrl.head) {
            r = emit_chan_data(l, l->ready_ctrl.head, l->cfg.max_frame_payload);
        } else if (l->ready_bulk.head && out_pending(l) == 0) {
            r = emit_chan_data(l, l->ready_bulk.head, bulk_max);
        } else if (l->goaway_pending) {
            put16(b, l->goaway_reason);
            r = emit(l, F_GOAWAY, 0, b, 2, NULL, 0);
            l->goaway_pending = false;
            l->goaway_sent = true;
            break;
        } else if (l->rekey_due) {
            r = do_rekey(l); /* time-based rekey with nothing else to send */
        } else {
            break;
        }
    }
    if (r < 0)
        return die(l, r, LINK_GOAWAY_PROTO, false, "encrypting output: %s", mesh_strerror(r));
    /* Room again for senders that hit the link-wide cap. */
    if (l->want_writable_any && l->queued + out_pending(l) < l->cfg.out_cap / 2) {
        l->want_writable_any = false;
        for (size_t i = 0; i <= l->tab_mask; i++) {
            struct chan *c = l->tab[i];
            if (c && c->want_writable && chan_space(l, c) > 0) {
                c->want_writable = false;
                if (l->cb.on_channel_writable)
                    l->cb.on_channel_writable(l->ud, c->id);
            }
        }
    }
    return 0;
}

void link_output_peek(struct link *l, const uint8_t **ptr, size_t *len)
{
    l->out_signaled = false;
    (void)fill(l);
    *ptr = l->out ? l->out + l->out_off : l->in; /* never NULL arithmetic; *len is 0 then */
    *len = out_pending(l);
}

void link_output_consume(struct link *l, size_t n)
{
    if (n > out_pending(l))
        n = out_pending(l);
    l->out_off += n;
    if (l->out_off == l->out_len)
        l->out_off = l->out_len = 0;
}

bool link_output_idle(const struct link *l)
{
    if (out_pending(l))
        return false;
    if (l->phase != P_OPEN || l->goaway_sent)
        return true;
    return !(l->hello_pending || l->pong_pending || l->ping_pending || l->n_refused ||
             l->dirty.head || l->ready_ctrl.head || l->ready_bulk.head || l->goaway_pending ||
             l->rekey_due);
}

/* ---- lifecycle ---- */

void link_config_init(struct link_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_frame_payload = LINK_DEFAULT_MAX_FRAME;
    cfg->max_channels = LINK_DEFAULT_MAX_CHANNELS;
    cfg->chan_window = LINK_DEFAULT_WINDOW;
    cfg->chan_sndbuf = LINK_DEFAULT_SNDBUF;
    cfg->out_cap = LINK_DEFAULT_OUT_CAP;
    cfg->rekey_bytes = LINK_DEFAULT_REKEY_BYTES;
    cfg->rekey_ms = LINK_DEFAULT_REKEY_MS;
    cfg->hs_timeout_ms = LINK_DEFAULT_HS_TIMEOUT;
    cfg->keepalive_ms = LINK_DEFAULT_KEEPALIVE_MS;
}

#define DEFAULT(field, value) \
    do {                      \
        if (!(field))         \
            (field) = value;  \
    } while (0)

int link_new(const struct link_config *cfg, const struct link_callbacks *cb, void *ud,
             struct link **ret)
{
    struct link *l;
    struct noise_params np;
    size_t body_max, tab_size = 4;
    int r;

    if (!cfg || !cb || !ret || !cb->on_handshake || cfg->n_psks < 1 ||
        cfg->n_psks > LINK_MAX_PSKS || cfg->payload_len > LINK_HS_PAYLOAD_MAX ||
        (cfg->payload_len && !cfg->payload) || cfg->max_frame_payload > MAX_FRAME_CAP)
        return MESH_EINVAL;
    if ((cfg->ciphers & ~(LINK_CIPHER_CHACHAPOLY | LINK_CIPHER_AESGCM)) ||
        (cfg->ciphers != LINK_CIPHER_AUTO && !(cfg->ciphers & LINK_CIPHER_CHACHAPOLY)))
        return MESH_EINVAL;
    l = calloc(1, sizeof *l);
    if (!l)
        return MESH_ENOMEM;
    l->cfg = *cfg;
    l->cb = *cb;
    l->ud = ud;
    if (cfg->payload_len)
        memcpy(l->payload, cfg->payload, cfg->payload_len);
    l->cfg.payload = l->payload;
    DEFAULT(l->cfg.max_frame_payload, LINK_DEFAULT_MAX_FRAME);
    DEFAULT(l->cfg.max_channels, LINK_DEFAULT_MAX_CHANNELS);
    DEFAULT(l->cfg.chan_window, LINK_DEFAULT_WINDOW);
    DEFAULT(l->cfg.chan_sndbuf, LINK_DEFAULT_SNDBUF);
    DEFAULT(l->cfg.out_cap, LINK_DEFAULT_OUT_CAP);
    DEFAULT(l->cfg.rekey_bytes, LINK_DEFAULT_REKEY_BYTES);
    DEFAULT(l->cfg.rekey_ms, LINK_DEFAULT_REKEY_MS);
    DEFAULT(l->cfg.hs_timeout_ms, LINK_DEFAULT_HS_TIMEOUT);
    DEFAULT(l->cfg.keepalive_ms, LINK_DEFAULT_KEEPALIVE_MS);
    /* The mask we send: what the config allows and this CPU can run. */
    DEFAULT(l->cfg.ciphers, LINK_CIPHER_CHACHAPOLY | LINK_CIPHER_AESGCM);
    if (!link_aesgcm_available())
        l->cfg.ciphers &= (uint8_t)~LINK_CIPHER_AESGCM;

    /* The largest frame body: DATA, or OPEN with its payload. */
    body_max = l->cfg.max_frame_payload;
    if (body_max < 2 + LINK_OPEN_PAYLOAD_MAX)
        body_max = 2 + LINK_OPEN_PAYLOAD_MAX;
    l->max_record = LINK_FRAME_HDR_LEN + body_max + NOISE_TAGLEN;
    if (l->max_record < LINK_HS_MSG_MAX)
        l->max_record = LINK_HS_MSG_MAX;
    if (l->cfg.out_cap < 2 * (l->max_record + 4))
        l->cfg.out_cap = 2 * (l->max_record + 4);
    l->in_cap = 2 * (4 + l->max_record);
    while (tab_size < 2 * l->cfg.max_channels)
        tab_size *= 2;
    l->tab_mask = tab_size - 1;
    l->next_local_id = cfg->initiator ? 1 : 2;

    l->in = malloc(l->in_cap);
    l->tab = calloc(tab_size, sizeof *l->tab);
    if (!l->in || !l->tab) {
        r = MESH_ENOMEM;
        goto fail_alloc;
    }

    memset(&np, 0, sizeof np);
    np.pattern = NOISE_PATTERN_XXPSK3;
    np.initiator = cfg->initiator;
    np.prologue = (const uint8_t *)LINK_PROLOGUE;
    np.prologue_len = strlen(LINK_PROLOGUE);
    np.s_priv = cfg->static_priv;
    /* The responder learns which PSK at message 3 (trial reads in read_msg3). */
    np.psk = cfg->initiator ? cfg->psks[0] : NULL;
    np.test_ephemeral = cfg->test_ephemeral;
    r = noise_handshake_init(&l->hs, &np);
    if (r < 0)
        goto fail_alloc;
    l->phase = P_NEW;
    *ret = l;
    return 0;

fail_alloc:
    link_free(l);
    return r;
}

void link_free(struct link *l)
{
    if (!l)
        return;
    if (l->tab) {
        for (size_t i = 0; i <= l->tab_mask; i++) {
            if (l->tab[i]) {
                free(l->tab[i]->sbuf);
                free(l->tab[i]);
            }
        }
        free(l->tab);
    }
    if (l->in)
        sodium_memzero(l->in, l->in_cap);
    free(l->in);
    free(l->out);
    sodium_memzero(l, sizeof *l);
    free(l);
}

enum link_state link_state(const struct link *l)
{
    switch (l->phase) {
    case P_NEW:
        return LINK_STATE_NEW;
    case P_OPEN:
        return (l->goaway_pending || l->goaway_sent) ? LINK_STATE_CLOSING : LINK_STATE_ESTABLISHED;
    case P_DEAD:
        return LINK_STATE_DEAD;
    default:
        return LINK_STATE_HANDSHAKE;
    }
}

const struct mesh_err *link_error(const struct link *l)
{
    return &l->err;
}

const struct link_stats *link_stats(const struct link *l)
{
    return &l->st;
}

bool link_peer_static(const struct link *l, uint8_t out[static LINK_KEY_LEN])
{
    if (l->phase != P_OPEN)
        return false;
    memcpy(out, l->peer_static, LINK_KEY_LEN);
    return true;
}

const char *link_cipher_name(const struct link *l)
{
    return l->cipher_name;
}

bool link_aesgcm_available(void)
{
    return crypto_aead_aes256gcm_is_available() != 0;
}

size_t link_channel_count(const struct link *l)
{
    return l->n_chans;
}

/* ---- handshake ---- */

/* Writes our next handshake message: message 1 without payload (it would travel in clear),
 * messages 2 and 3 with our cipher mask and then the application's payload. */
static int write_hs(struct link *l, bool with_payload)
{
    uint8_t rec[4 + LINK_HS_MSG_MAX];
    uint8_t payload[1 + LINK_HS_PAYLOAD_MAX];
    int msg = !l->cfg.initiator ? 2 : with_payload ? 3 : 1;
    size_t len = 0, n;
    int r;

    if (with_payload) {
        payload[0] = l->cfg.ciphers;
        memcpy(payload + 1, l->payload, l->cfg.payload_len);
        len = 1 + l->cfg.payload_len;
    }
    r = noise_handshake_write(&l->hs, payload, len, rec + 4, LINK_HS_MSG_MAX, &n);
    if (r < 0)
        return die(l, r, LINK_GOAWAY_PROTO, true, "handshake: writing message %d: %s", msg,
                   mesh_strerror(r));
    put32(rec, (uint32_t)n);
    emit_raw_record(l, rec, 4 + n);
    signal_output(l);
    return 0;
}

static void start_transport(struct link *l)
{
    l->have_keys = true;
    l->last_recv = l->now;
    l->last_ping = l->now;
    l->rekey_at = l->now + l->cfg.rekey_ms;
}

/* Tells the application; a refusal kills the link (GOAWAY REJECTED). */
static int handshake_done(struct link *l)
{
    int r;
    l->phase = P_OPEN;
    r = l->cb.on_handshake(l->ud, l->peer_static, l->peer_payload, l->peer_payload_len);
    if (l->phase == P_DEAD)
        return l->err.code;
    if (r != 0)
        return die(l, MESH_EAUTH, LINK_GOAWAY_REJECTED, true,
                   "handshake: peer identity rejected by the application (%d)", r);
    signal_output(l);
    return 0;
}

/* Takes the link's cipher byte off the front of the peer's handshake payload (link.h "Cipher
 * negotiation"); the application gets the rest. */
static int take_peer_ciphers(struct link *l, int msg)
{
    if (l->peer_payload_len < 1)
        return PROTO(l, "handshake message %d: the payload has no cipher byte", msg);
    if (!(l->peer_payload[0] & LINK_CIPHER_CHACHAPOLY))
        return PROTO(l,
                     "handshake message %d: the peer's cipher mask 0x%02x lacks "
                     "ChaCha20-Poly1305 (bit 0)",
                     msg, l->peer_payload[0]);
    l->peer_ciphers = l->peer_payload[0];
    l->peer_payload_len--;
    memmove(l->peer_payload, l->peer_payload + 1, l->peer_payload_len);
    return 0;
}

/* Split, then the transport cipher both masks allow: AES-256-GCM when both have it. Both ends
 * compute the same answer from the same two masks, which the handshake authenticated. */
static int split(struct link *l)
{
    bool aes = (l->cfg.ciphers & l->peer_ciphers & LINK_CIPHER_AESGCM) != 0;
    int r = noise_handshake_split(&l->hs, &l->tx, &l->rx);
    if (r < 0)
        return die(l, r, LINK_GOAWAY_PROTO, true, "handshake: split: %s", mesh_strerror(r));
    if (aes) {
        r = noise_cipher_use_aesgcm(&l->tx);
        if (r == 0)
            r = noise_cipher_use_aesgcm(&l->rx);
        if (r < 0)
            return die(l, r, LINK_GOAWAY_PROTO, true, "handshake: switching to AES-256-GCM: %s",
                       mesh_strerror(r));
    }
    l->cipher_name = aes ? "aes-256-gcm" : "chacha20-poly1305";
    start_transport(l);
    return 0;
}

static int read_msg1(struct link *l, const uint8_t *msg, size_t len)
{
    size_t n;
    int r = noise_handshake_read(&l->hs, msg, len, NULL, 0, &n);
    if (r < 0)
        return die(l, r == MESH_ETOOBIG ? MESH_EMALFORMED : r, LINK_GOAWAY_PROTO, true,
                   "handshake message 1 (%zu bytes): %s%s", len, mesh_strerror(r),
                   r == MESH_EAUTH ? " (garbage, or a node of another link protocol version than "
                                     "\"" LINK_PROLOGUE "\")"
                                   : "");
    l->phase = P_WAIT_MSG3;
    return write_hs(l, true);
}

static int read_msg2(struct link *l, const uint8_t *msg, size_t len)
{
    int r = noise_handshake_read(&l->hs, msg, len, l->peer_payload, sizeof l->peer_payload,
                                 &l->peer_payload_len);
    if (r < 0) {
        if (r == MESH_EAUTH)
            l->st.auth_failures++;
        return die(l, r, r == MESH_EAUTH ? LINK_GOAWAY_AUTH : LINK_GOAWAY_PROTO, true,
                   "handshake message 2 (%zu bytes): %s", len, mesh_strerror(r));
    }
    r = take_peer_ciphers(l, 2);
    if (r < 0)
        return r;
    (void)noise_handshake_remote_static(&l->hs, l->peer_static);
    r = write_hs(l, true);
    if (r < 0)
        return r;
    l->phase = P_WAIT_HELLO;
    return split(l);
}

/* Message 3 carries the psk token: try each key of the ring on a copy of the state (the
 * struct holds no pointers, so assignment is a full copy). */
static int read_msg3(struct link *l, const uint8_t *msg, size_t len)
{
    struct noise_handshake trial;
    int r = MESH_EAUTH;

    for (size_t i = 0; i < l->cfg.n_psks; i++) {
        trial = l->hs;
        noise_handshake_set_psk(&trial, l->cfg.psks[i]);
        r = noise_handshake_read(&trial, msg, len, l->peer_payload, sizeof l->peer_payload,
                                 &l->peer_payload_len);
        if (r == 0 || r != MESH_EAUTH)
            break; /* success, or an error no key can fix */
    }
    if (r == 0) {
        noise_handshake_wipe(&l->hs);
        l->hs = trial;
    }
    noise_handshake_wipe(&trial);
    if (r < 0) {
        if (r == MESH_EAUTH) {
            l->st.auth_failures++;
            return die(l, r, LINK_GOAWAY_AUTH, true,
                       "handshake message 3: authentication failed with each of our %zu mesh "
                       "key(s): the peer uses a different mesh key",
                       l->cfg.n_psks);
        }
        return die(l, r, LINK_GOAWAY_PROTO, true, "handshake message 3 (%zu bytes): %s", len,
                   mesh_strerror(r));
    }
    r = take_peer_ciphers(l, 3);
    if (r < 0)
        return r;
    (void)noise_handshake_remote_static(&l->hs, l->peer_static);
    r = split(l);
    if (r < 0)
        return r;
    l->hello_pending = true;
    return handshake_done(l);
}

int link_start(struct link *l, uint64_t now_ms)
{
    if (l->phase != P_NEW)
        return MESH_ESTATE;
    l->now = now_ms;
    l->hs_deadline = now_ms + l->cfg.hs_timeout_ms;
    if (!l->cfg.initiator) {
        l->phase = P_WAIT_MSG1;
        return 0;
    }
    l->phase = P_WAIT_MSG2;
    return write_hs(l, false); /* message 1 */
}

/* ---- frames ---- */

static struct chan *frame_chan(struct link *l, uint32_t id, const char *what, int *ret)
{
    struct chan *c = chan_find(l, id);
    *ret = 0;
    if (!c && !id_is_stale(l, id))
        *ret = PROTO(l, "%s for channel %u that was never opened", what, id);
    return c;
}

static int on_open(struct link *l, uint32_t id, const uint8_t *body, size_t blen)
{
    bool peer_parity = (id & 1) == (l->cfg.initiator ? 0u : 1u);
    uint16_t type;
    uint32_t refuse = LINK_RESET_REFUSED;
    struct chan *c;

    if (!peer_parity || id <= l->last_peer_id)
        return PROTO(l, "OPEN with bad channel id %u (last %u)", id, l->last_peer_id);
    if (blen < 2 || blen - 2 > LINK_OPEN_PAYLOAD_MAX)
        return PROTO(l, "OPEN of channel %u: bad length %zu", id, blen);
    l->last_peer_id = id;
    type = get16(body);
    if (l->n_chans < l->cfg.max_channels && l->cb.on_channel_open) {
        c = chan_new(l, id, type, false);
        if (!c)
            return die(l, MESH_ENOMEM, LINK_GOAWAY_PROTO, true, "OPEN: out of memory");
        c->recv_avail = l->cfg.chan_window;
        c->grant_pending = l->cfg.chan_window;
        refuse = l->cb.on_channel_open(l->ud, id, type, body + 2, blen - 2);
        if (l->phase == P_DEAD)
            return l->err.code;
        c = chan_find(l, id); /* the callback may have reset it */
        if (!c)
            return 0;
        if (refuse == 0) {
            l->st.channels_opened++;
            mark_dirty(l, c);
            return 0;
        }
        chan_release(l, c);
    }
    /* Refused (by the application or the channel limit): answer with RESET. */
    l->st.channels_refused++;
    if (l->n_refused == REFUSED_MAX)
        return die(l, MESH_EFULL, LINK_GOAWAY_PROTO, true,
                   "peer keeps opening channels that we refuse (%d pending refusals)", REFUSED_MAX);
    l->refused_id[l->n_refused] = id;
    l->refused_reason[l->n_refused] = refuse;
    l->n_refused++;
    signal_output(l);
    return 0;
}

static int on_frame(struct link *l, const uint8_t *p, size_t len)
{
    uint8_t type = p[0];
    uint32_t id = get32(p + 2);
    const uint8_t *body = p + LINK_FRAME_HDR_LEN;
    size_t blen = len - LINK_FRAME_HDR_LEN;
    struct chan *c;
    int r;

    if (type < F_HELLO || (type > F_GOAWAY && type < F_OPEN) || type > F_RESET)
        return PROTO(l, "unknown frame type %u", type);
    if (p[1] != 0)
        return PROTO(l, "frame type %u with unknown flags 0x%02x", type, p[1]);
    if (l->phase == P_WAIT_HELLO && type != F_HELLO && type != F_GOAWAY)
        return PROTO(l, "handshake: expected HELLO, got frame type %u", type);
    if (type < F_OPEN && id != 0)
        return PROTO(l, "link frame type %u on channel %u", type, id);
    if (type >= F_OPEN && id == 0)
        return PROTO(l, "channel frame type %u on channel 0", type);

    switch (type) {
    case F_HELLO:
        if (l->phase != P_WAIT_HELLO || blen != 0)
            return PROTO(l, "unexpected HELLO");
        return handshake_done(l);
    case F_PING:
        if (blen != 8)
            return PROTO(l, "PING of %zu bytes", blen);
        l->pong_val = get64(body);
        l->pong_pending = true;
        signal_output(l);
        return 0;
    case F_PONG:
        if (blen != 8)
            return PROTO(l, "PONG of %zu bytes", blen);
        l->st.pongs_rx++;
        return 0;
    case F_REKEY:
        if (blen != 0)
            return PROTO(l, "REKEY of %zu bytes", blen);
        /* The next frame from the peer uses the rekeyed key (link.h, Noise section 11.3). */
        noise_cipher_rekey(&l->rx);
        l->st.rekeys_rx++;
        return 0;
    case F_GOAWAY: {
        unsigned reason = blen == 2 ? get16(body) : 0xffff;
        if (blen != 2)
            return PROTO(l, "GOAWAY of %zu bytes", blen);
        return die(l, reason_code(reason), LINK_GOAWAY_NORMAL, false, "peer closed the link: %s",
                   reason_str(reason));
    }
    case F_OPEN:
        return on_open(l, id, body, blen);
    case F_WINDOW: {
        uint32_t inc;
        if (blen != 4)
            return PROTO(l, "WINDOW of %zu bytes", blen);
        c = frame_chan(l, id, "WINDOW", &r);
        if (!c)
            return r;
        inc = get32(body);
        if (c->send_credit + inc > CREDIT_MAX)
            return PROTO(l, "channel %u: credit overflow", id);
        c->send_credit += inc;
        if (c->want_writable && chan_space(l, c) > 0 && !c->fin_pending && !c->reset_pending) {
            c->want_writable = false;
            if (l->cb.on_channel_writable)
                l->cb.on_channel_writable(l->ud, id);
        }
        return 0;
    }
    case F_DATA:
        c = frame_chan(l, id, "DATA", &r);
        if (!c)
            return r;
        if (blen == 0 || blen > l->cfg.max_frame_payload)
            return PROTO(l, "channel %u: DATA of %zu bytes", id, blen);
        if (c->fin_recv)
            return PROTO(l, "channel %u: DATA after FIN", id);
        if (c->local && c->open_pending)
            return PROTO(l, "channel %u: DATA before OPEN", id);
        if (blen > c->recv_avail)
            return PROTO(l, "channel %u: peer sent %zu bytes with %llu bytes of credit", id, blen,
                         (unsigned long long)c->recv_avail);
        if (c->reset_pending)
            return 0; /* we reset it; the peer has not heard yet */
        c->recv_avail -= blen;
        c->unconsumed += blen;
        if (l->cb.on_channel_data)
            l->cb.on_channel_data(l->ud, id, body, blen);
        return 0;
    case F_FIN:
        c = frame_chan(l, id, "FIN", &r);
        if (!c)
            return r;
        if (blen != 0 || c->fin_recv)
            return PROTO(l, "channel %u: bad or repeated FIN", id);
        c->fin_recv = true;
        if (c->reset_pending)
            return 0;
        if (l->cb.on_channel_closed)
            l->cb.on_channel_closed(l->ud, id);
        c = chan_find(l, id);
        if (c)
            maybe_release(l, c);
        return 0;
    case F_RESET: {
        uint32_t reason;
        if (blen != 4)
            return PROTO(l, "RESET of %zu bytes", blen);
        c = frame_chan(l, id, "RESET", &r);
        if (!c)
            return r;
        reason = get32(body);
        if (!c->reset_pending && l->cb.on_channel_reset)
            l->cb.on_channel_reset(l->ud, id, reason);
        c = chan_find(l, id);
        if (c)
            chan_release(l, c);
        return 0;
    }
    default:
        return PROTO(l, "unknown frame type %u", type);
    }
}

static int on_record(struct link *l, uint8_t *rec, size_t len)
{
    int r;

    switch (l->phase) {
    case P_WAIT_MSG1:
        return read_msg1(l, rec, len);
    case P_WAIT_MSG2:
        return read_msg2(l, rec, len);
    case P_WAIT_MSG3:
        return read_msg3(l, rec, len);
    case P_WAIT_HELLO:
    case P_OPEN:
        break;
    default:
        return MESH_ESTATE;
    }
    r = noise_cipher_decrypt(&l->rx, NULL, 0, rec, len, rec); /* in place */
    if (r < 0) {
        if (r == MESH_EAUTH)
            l->st.auth_failures++;
        return die(l, r, LINK_GOAWAY_AUTH, true,
                   "frame %llu (%zu bytes): %s: corrupted, replayed, reordered or forged%s",
                   (unsigned long long)l->st.frames_in, len, mesh_strerror(r),
                   l->phase == P_WAIT_HELLO ? " (or the peer uses a different mesh key)" : "");
    }
    l->st.frames_in++;
    l->last_recv = l->now;
    if (len - NOISE_TAGLEN < LINK_FRAME_HDR_LEN)
        return PROTO(l, "frame of %zu bytes is shorter than its header", len - NOISE_TAGLEN);
    return on_frame(l, rec, len - NOISE_TAGLEN);
}

/* Validates a record length field; may be the abort notice. */
static int check_len(struct link *l, uint32_t n)
{
    bool hs = l->phase == P_WAIT_MSG1 || l->phase == P_WAIT_MSG2 || l->phase == P_WAIT_MSG3;

    if ((n & 0xFFFFFF00u) == LINK_ABORT_MAGIC && l->phase != P_OPEN) {
        unsigned reason = n & 0xff;
        return die(l, reason_code(reason), LINK_GOAWAY_NORMAL, false,
                   "peer aborted the handshake: %s", reason_str(reason));
    }
    if (hs && n > LINK_HS_MSG_MAX)
        return die(l, MESH_ETOOBIG, LINK_GOAWAY_PROTO, true,
                   "handshake message of %u bytes (max %d)", n, LINK_HS_MSG_MAX);
    if (!hs && n > l->max_record)
        return die(l, MESH_ETOOBIG, LINK_GOAWAY_PROTO, true, "frame of %u bytes (max %zu)", n,
                   l->max_record);
    if (!hs && n < NOISE_TAGLEN + LINK_FRAME_HDR_LEN)
        return die(l, MESH_EMALFORMED, LINK_GOAWAY_PROTO, true, "frame of %u bytes", n);
    return 0;
}

size_t link_input_space(struct link *l, uint8_t **ptr)
{
    if (l->in_off == l->in_len) {
        l->in_off = l->in_len = 0;
    } else if (l->in_cap - l->in_len < 4 + l->max_record) {
        /* What is left is less than one record: after the move, the rest of it fits. */
        memmove(l->in, l->in + l->in_off, l->in_len - l->in_off);
        l->in_len -= l->in_off;
        l->in_off = 0;
    }
    *ptr = l->in + l->in_len;
    return l->in_cap - l->in_len;
}

int link_input_commit(struct link *l, size_t n, uint64_t now_ms)
{
    int r;

    if (l->phase == P_DEAD || l->phase == P_NEW)
        return MESH_ESTATE;
    if (n > l->in_cap - l->in_len)
        return MESH_EINVAL;
    l->now = now_ms;
    l->st.bytes_in += n;
    l->in_len += n;
    while (l->phase != P_DEAD && l->in_len - l->in_off >= 4) {
        uint8_t *rec = l->in + l->in_off;
        uint32_t rlen = get32(rec);
        r = check_len(l, rlen);
        if (r < 0)
            return r;
        if (l->in_len - l->in_off < 4 + (size_t)rlen)
            break;
        l->in_off += 4 + (size_t)rlen;
        r = on_record(l, rec + 4, rlen);
        if (r < 0)
            return r;
    }
    if (l->in_off == l->in_len)
        l->in_off = l->in_len = 0;
    return l->phase == P_DEAD ? l->err.code : 0;
}

int link_feed(struct link *l, const uint8_t *data, size_t len, uint64_t now_ms)
{
    if (l->phase == P_DEAD || l->phase == P_NEW)
        return MESH_ESTATE;
    do {
        uint8_t *p;
        size_t take = link_input_space(l, &p);
        if (take > len)
            take = len;
        memcpy(p, data, take);
        int r = link_input_commit(l, take, now_ms);
        if (r < 0)
            return r;
        data += take, len -= take;
    } while (len > 0);
    return 0;
}

int link_feed_eof(struct link *l, uint64_t now_ms)
{
    static const char *what[] = {
        [P_NEW] = "before the handshake",
        [P_WAIT_MSG1] = "before handshake message 1",
        [P_WAIT_MSG2] = "before handshake message 2",
        [P_WAIT_MSG3] = "before handshake message 3",
        [P_WAIT_HELLO] = "before confirming the handshake (different mesh key?)",
        [P_OPEN] = "without GOAWAY",
    };
    l->now = now_ms;
    if (l->phase == P_DEAD)
        return MESH_ESTATE;
    return die(l, MESH_ECLOSED, LINK_GOAWAY_NORMAL, false, "peer closed the connection %s%s",
               what[l->phase], l->in_len > l->in_off ? " in the middle of a record" : "");
}

/* ---- timers ---- */

int link_tick(struct link *l, uint64_t now_ms)
{
    uint64_t ka = l->cfg.keepalive_ms;

    if (l->phase == P_DEAD)
        return MESH_ESTATE;
    if (now_ms > l->now)
        l->now = now_ms;
    if (l->phase == P_NEW)
        return 0;
    if (l->phase != P_OPEN) {
        if (l->now >= l->hs_deadline)
            return die(l, MESH_EIO, LINK_GOAWAY_TIMEOUT, true, "handshake timed out after %llu ms",
                       (unsigned long long)l->cfg.hs_timeout_ms);
        return 0;
    }
    /* Keepalive: PING after keepalive_ms without hearing from the peer (or since our last
     * PING); dead after LINK_KEEPALIVE_MISSES unanswered PINGs. */
    if (l->now >= l->last_recv + ka * (LINK_KEEPALIVE_MISSES + 1))
        return die(l, MESH_EIO, LINK_GOAWAY_TIMEOUT, true,
                   "peer silent for %llu ms (%d keepalives unanswered)",
                   (unsigned long long)(l->now - l->last_recv), LINK_KEEPALIVE_MISSES);
    if (l->now >= (l->last_recv > l->last_ping ? l->last_recv : l->last_ping) + ka) {
        l->ping_pending = true;
        l->ping_val = l->now;
        l->last_ping = l->now;
        signal_output(l);
    }
    if (l->now >= l->rekey_at && !l->rekey_due) {
        l->rekey_due = true;
        signal_output(l);
    }
    return 0;
}

uint64_t link_next_deadline(const struct link *l)
{
    uint64_t ka = l->cfg.keepalive_ms, d, p;

    switch (l->phase) {
    case P_NEW:
    case P_DEAD:
        return LINK_NO_DEADLINE;
    case P_OPEN:
        break;
    default:
        return l->hs_deadline;
    }
    d = l->last_recv + ka * (LINK_KEEPALIVE_MISSES + 1);
    p = (l->last_recv > l->last_ping ? l->last_recv : l->last_ping) + ka;
    if (p < d)
        d = p;
    if (!l->rekey_due && l->rekey_at < d)
        d = l->rekey_at;
    return d;
}

int link_close(struct link *l)
{
    if (l->phase == P_DEAD)
        return MESH_ESTATE;
    if (l->phase != P_OPEN) {
        /* Nothing to flush: tell the peer and stop. */
        (void)die(l, MESH_ECLOSED, LINK_GOAWAY_NORMAL, true, "closed during the handshake");
        return 0;
    }
    if (!l->goaway_pending && !l->goaway_sent) {
        l->goaway_pending = true;
        l->goaway_reason = LINK_GOAWAY_NORMAL;
        signal_output(l);
    }
    return 0;
}

/* ---- channels API ---- */

static int check_open(const struct link *l)
{
    if (l->phase != P_OPEN || l->goaway_pending || l->goaway_sent)
        return MESH_ESTATE;
    return 0;
}

int link_channel_open(struct link *l, uint16_t type, const uint8_t *payload, size_t len,
                      uint32_t *ret_id)
{
    struct chan *c;
    int r = check_open(l);

    if (r < 0)
        return r;
    if (len > LINK_OPEN_PAYLOAD_MAX || (len && !payload) || !ret_id)
        return MESH_EINVAL;
    if (l->n_chans >= l->cfg.max_channels || l->next_local_id > UINT32_MAX - 2)
        return MESH_EFULL;
    c = chan_new(l, l->next_local_id, type, true);
    if (!c)
        return MESH_ENOMEM;
    l->next_local_id += 2;
    if (len)
        memcpy(c->open_payload, payload, len);
    c->open_len = len;
    c->open_pending = true;
    c->recv_avail = l->cfg.chan_window;
    c->grant_pending = l->cfg.chan_window;
    mark_dirty(l, c);
    *ret_id = c->id;
    return 0;
}

/* Room for n more bytes at the tail of c's send buffer, its headroom kept. */
static int sbuf_room(struct chan *c, size_t n)
{
    if (c->sbuf && c->scap - c->shead - c->slen >= n)
        return 0;
    if (c->sbuf && c->shead > SBUF_HEADROOM) {
        memmove(c->sbuf + SBUF_HEADROOM, c->sbuf + c->shead, c->slen);
        c->shead = SBUF_HEADROOM;
        if (c->scap - c->shead - c->slen >= n)
            return 0;
    }
    size_t cap = c->scap ? c->scap : 4096;
    while (cap - SBUF_HEADROOM - c->slen < n)
        cap *= 2;
    uint8_t *p = realloc(c->sbuf, cap);
    if (!p)
        return MESH_ENOMEM;
    if (!c->sbuf)
        c->shead = SBUF_HEADROOM;
    c->sbuf = p;
    c->scap = cap;
    return 0;
}

/* The channel id names, if data may be queued on it: else a negative code. */
static int sendable_chan(struct link *l, uint32_t id, struct chan **ret)
{
    int r = check_open(l);
    if (r < 0)
        return r;
    struct chan *c = chan_find(l, id);
    if (!c || c->reset_pending)
        return MESH_ENOTFOUND;
    if (c->fin_pending)
        return MESH_ESTATE;
    *ret = c;
    return 0;
}

long link_channel_reserve(struct link *l, uint32_t id, size_t len, uint8_t **ptr)
{
    struct chan *c;
    size_t n, link_room;
    int r = sendable_chan(l, id, &c);

    if (r < 0)
        return r;
    if (!ptr)
        return MESH_EINVAL;
    if (len == 0)
        return 0;
    /* Control channels may queue up to another out_cap beyond the bulk limit, so that bulk data
     * filling the link never holds Raft or RPC messages back (link.h "Priorities"). */
    size_t cap = (c->type & LINK_CHAN_CONTROL) ? 2 * l->cfg.out_cap : l->cfg.out_cap;
    link_room = l->queued + out_pending(l) < cap ? cap - l->queued - out_pending(l) : 0;
    if (link_room == 0) {
        c->want_writable = true;
        l->want_writable_any = true;
        return MESH_EAGAIN;
    }
    n = chan_space(l, c);
    if (n > link_room)
        n = link_room;
    if (n > len)
        n = len;
    if (n < len)
        c->want_writable = true;
    if (n == 0)
        return 0;
    r = sbuf_room(c, n);
    if (r < 0)
        return r;
    *ptr = c->sbuf + c->shead + c->slen;
    return (long)n;
}

int link_channel_commit(struct link *l, uint32_t id, size_t n)
{
    struct chan *c;
    int r = sendable_chan(l, id, &c);

    if (r < 0)
        return r;
    if (n == 0)
        return 0;
    if (!c->sbuf || n > c->scap - c->shead - c->slen || n > chan_space(l, c))
        return MESH_EINVAL;
    c->slen += n;
    l->queued += n;
    mark_ready(l, c);
    return 0;
}

long link_channel_send(struct link *l, uint32_t id, const uint8_t *data, size_t len)
{
    uint8_t *p;
    long n;

    if (len && !data)
        return MESH_EINVAL;
    n = link_channel_reserve(l, id, len, &p);
    if (n <= 0)
        return n;
    memcpy(p, data, (size_t)n);
    int r = link_channel_commit(l, id, (size_t)n);
    return r < 0 ? r : n;
}

int link_channel_consume(struct link *l, uint32_t id, size_t n)
{
    struct chan *c;

    if (l->phase != P_OPEN)
        return MESH_ESTATE;
    c = chan_find(l, id);
    if (!c)
        return MESH_ENOTFOUND;
    if (n > c->unconsumed)
        return MESH_EINVAL;
    c->unconsumed -= n;
    c->recv_avail += n;
    c->grant_pending += n;
    /* Batch WINDOW updates: send once half a window is owed (the sender is then at worst
     * half-blocked, never deadlocked: all of the window is owed when it has no credit). */
    if (c->grant_pending >= l->cfg.chan_window / 2 && !c->fin_recv)
        mark_dirty(l, c);
    return 0;
}

int link_channel_close(struct link *l, uint32_t id)
{
    struct chan *c;

    if (l->phase != P_OPEN || l->goaway_sent)
        return MESH_ESTATE;
    c = chan_find(l, id);
    if (!c || c->reset_pending)
        return MESH_ENOTFOUND;
    if (c->fin_pending)
        return 0;
    c->fin_pending = true;
    if (c->slen == 0)
        mark_dirty(l, c);
    return 0;
}

int link_channel_reset(struct link *l, uint32_t id, uint32_t reason)
{
    struct chan *c;

    if (l->phase != P_OPEN || l->goaway_sent)
        return MESH_ESTATE;
    c = chan_find(l, id);
    if (!c || c->reset_pending)
        return MESH_ENOTFOUND;
    if (c->local && c->open_pending) {
        chan_release(l, c); /* the peer never heard of it */
        return 0;
    }
    l->queued -= c->slen;
    c->slen = 0;
    c->shead = SBUF_HEADROOM;
    list_remove(ready_list(l, c), c, &c->ready, READY_OFF);
    c->reset_pending = true;
    c->reset_reason = reason;
    c->want_writable = false;
    mark_dirty(l, c);
    return 0;
}

int link_test_send_raw(struct link *l, const uint8_t *plaintext, size_t len)
{
    size_t plen;
    uint8_t *p;
    int r;

    if (l->phase != P_OPEN)
        return MESH_ESTATE;
    if (len > MAX_FRAME_CAP)
        return MESH_ETOOBIG;
    plen = len;
    r = out_reserve(l, 4 + plen + NOISE_TAGLEN);
    if (r < 0)
        return r;
    p = l->out + l->out_len;
    put32(p, (uint32_t)(plen + NOISE_TAGLEN));
    memcpy(p + 4, plaintext, plen);
    r = noise_cipher_encrypt(&l->tx, NULL, 0, p + 4, plen, p + 4);
    if (r < 0)
        return r;
    l->out_len += 4 + plen + NOISE_TAGLEN;
    return 0;
}
