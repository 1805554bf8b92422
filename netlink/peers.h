/* Links to other nodes, and request/response calls over them.
 *
 * peers owns the mesh port's TCP side: it accepts links, dials the peers that calls are
 * addressed to (one link per peer address, reused by every call), and carries each call on a
 * channel of its own: the caller's request, FIN, then the reply, FIN. Services register a
 * handler per channel type. Gossip push-pull, key-ring operations and later Raft forwarding and
 * log streaming are such calls.
 *
 * A reply travels in a small envelope: one status byte (0 for success, 1..127 an errno value,
 * 128..255 a MESH_E* code) then the reply bytes, or the error message, so a caller gets the
 * remote's error with its context ("key not in ring").
 *
 * Besides calls, peers carries streams: long-lived byte streams on a channel (see "streams"
 * below), for traffic that does not fit one request and one reply (Raft's connections).
 *
 * Async contract (libuv's): if peers_call returns an error, its callback never fires;
 * otherwise it fires exactly once, never from inside peers_call. Every table is bounded: links,
 * calls in flight, requests being served, streams, and the request and reply sizes. */
#ifndef FOGMESH_NETLINK_PEERS_H
#define FOGMESH_NETLINK_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "addr.h"
#include "err.h"
#include "keyring.h"
#include "link.h"

#define PEERS_DEFAULT_MAX_LINKS 256
/* Inbound connections still in their handshake, at most: beyond that the oldest one is dropped.
 * So a flood of connections that never finish a handshake holds at most this many slots, and
 * never pushes out a link that is up. */
#define PEERS_MAX_PENDING  64
#define PEERS_MAX_CALLS    1024 /* in flight, outgoing */
#define PEERS_MAX_SERVING  1024 /* requests being received or answered */
#define PEERS_MAX_SERVICES 16
/* Bytes of requests still being received, summed over every link: a request that would go
 * beyond is reset. So requests left half-sent pin 16 MiB at most, not PEERS_MAX_SERVING times a
 * service's max_req. */
#define PEERS_MAX_RECEIVING (16u << 20)
/* A request must arrive whole, and its reply be taken by the peer, within this; the time its
 * handler takes does not count (handlers have their own deadlines). */
#define PEERS_SERVE_TIMEOUT_MS 10000

struct peers;

/* What a handler is given. Answer it exactly once with peers_respond (inside the handler or
 * later); the request stays valid until then, even if the link goes away meanwhile. */
struct peers_req {
    const uint8_t *data;
    size_t len;
    uint16_t type;
    struct mesh_addr from;             /* the peer's advertised address */
    uint8_t peer_static[LINK_KEY_LEN]; /* the peer's identity key */
};

typedef void (*peers_serve_fn)(void *ud, struct peers_req *req);
typedef void (*peers_reply_fn)(void *ud, int rc, const uint8_t *reply, size_t len,
                               const struct mesh_err *err);

struct peers_hooks {
    void *ud;
    /* Checks a peer's handshake payload and returns its advertised address. Return 0 to
     * accept the link, a negative code to refuse it. Required. */
    int (*on_handshake)(void *ud, const uint8_t peer_static[LINK_KEY_LEN], const uint8_t *payload,
                        size_t len, struct mesh_addr *ret_adv);
    /* Optional: a link came up, or ended (err->code 0 for a normal close), for logs. `addr` is
     * the dialled or advertised address when known, else the remote socket address. */
    void (*on_link)(void *ud, const struct mesh_addr *addr, bool up, bool outgoing,
                    const struct mesh_err *err);
    /* Optional: accept() failed with err (-EMFILE, -ENFILE, ...) and the mesh port is not
     * accepted from for wait_ms (common/backoff.h), for logs. */
    void (*on_accept_paused)(void *ud, int err, uint32_t wait_ms);
};

struct peers_config {
    const uint8_t *static_priv; /* our identity (X25519), copied */
    const struct keyring *kr;   /* borrowed: new links use its current link PSKs */
    const uint8_t *payload;     /* our handshake payload, copied; <= LINK_HS_PAYLOAD_MAX */
    size_t payload_len;
    size_t max_links;     /* 0: PEERS_DEFAULT_MAX_LINKS */
    uint8_t link_ciphers; /* link_config.ciphers of every link: LINK_CIPHER_AUTO or a mask */
};

struct peers_stats {
    uint64_t links_accepted, links_dialled, links_up, links_failed;
    uint64_t handshakes_dropped; /* inbound ones, to stay within PEERS_MAX_PENDING */
    uint64_t handshake_failures;
    uint64_t accept_backoffs; /* accept pauses for lack of descriptors or memory */
    uint64_t calls, calls_failed, served, refused;
    uint64_t serve_timeouts; /* requests or replies the peer left half-done */
    uint64_t streams_opened, streams_accepted, streams_failed;
};

/* listen_fd: a bound, listening TCP socket; peers takes it over (closed by peers_free). */
int peers_new(struct event_base *base, int listen_fd, const struct peers_config *cfg,
              const struct peers_hooks *hooks, struct peers **ret, struct mesh_err *err);
void peers_free(struct peers *p); /* accepts NULL; pending callbacks (on_end too) do not fire */

/* Registers the handler for channel `type` (LINK_CHAN_CONTROL may be set for priority). */
int peers_serve(struct peers *p, uint16_t type, size_t max_req, peers_serve_fn fn, void *ud);

/* Answers a request: rc 0 with reply bytes (copied), or a negative code with msg. Frees req. */
void peers_respond(struct peers_req *req, int rc, const uint8_t *reply, size_t len,
                   const char *msg);

/* Calls `type` on the node at `to` with req (copied). The reply (at most max_reply bytes) or
 * the failure comes to cb. timeout_ms covers dialling, the handshake and the exchange. */
int peers_call(struct peers *p, const struct mesh_addr *to, uint16_t type, const uint8_t *req,
               size_t len, size_t max_reply, uint64_t timeout_ms, peers_reply_fn cb, void *ud);

/* ---- streams ----------------------------------------------------------------------------
 *
 * A stream is a bidirectional byte stream on a channel of its own (raft's connections run on
 * them): the opener names a channel type and an open payload (<= LINK_OPEN_PAYLOAD_MAX bytes,
 * carried in the OPEN frame); the peer's acceptor for that type takes it or refuses it. The
 * accepting side sends one byte 0 (the accept mark) before anything else, so the opener knows
 * the stream was taken (on_connected) rather than merely sent; a refusal resets the channel.
 * Flow control is the link's per-channel credit: data delivered by on_data is held against
 * the sender's credit until the owner calls peers_stream_consume, so a slow reader stops the
 * writer instead of growing a buffer.
 *
 * Lifetime (libuv's handle rule): every stream that peers_stream_open returned, and every
 * stream an acceptor took, gets exactly one on_end, always from the event loop (never from
 * inside a peers_stream_* call), after which peers frees the stream: the owner may free its
 * own memory (ud) in on_end or later, never before. on_end's err->code is 0 when both sides
 * closed (FIN both ways), -ECANCELED after peers_stream_reset, -ETIMEDOUT when the open timed
 * out, MESH_EUNSUPPORTED when the peer refused, else why the stream or its link ended. Between
 * the end and on_end no other callback fires. peers_free frees live streams without calling
 * on_end (as it does for calls): close the owners first. */

struct peers_stream;

struct peers_stream_cb {
    /* Opener only: the peer accepted the stream; peers_stream_send works from now on. */
    void (*on_connected)(void *ud, struct peers_stream *s);
    /* Bytes from the peer, valid during the call. Return credit with peers_stream_consume
     * once they are processed (now or later). */
    void (*on_data)(void *ud, struct peers_stream *s, const uint8_t *data, size_t len);
    /* peers_stream_send accepted less than asked before, and there is room again. */
    void (*on_writable)(void *ud, struct peers_stream *s);
    /* The peer closed its side (FIN): no more data will come. Optional. */
    void (*on_fin)(void *ud, struct peers_stream *s);
    /* The final callback (see above). Required. err is valid during the call. */
    void (*on_end)(void *ud, struct peers_stream *s, const struct mesh_err *err);
};

/* What an acceptor is told about an incoming stream; valid during the accept call. */
struct peers_stream_info {
    uint16_t type;
    struct mesh_addr from;             /* the peer's advertised address */
    uint8_t peer_static[LINK_KEY_LEN]; /* the peer's identity key */
    const uint8_t *payload;            /* the open payload */
    size_t len;
};

/* Called for each incoming stream of a type given to peers_listen_streams. To accept, call
 * peers_stream_set_cb(s, ...) and return 0 (sending is allowed inside); return a nonzero
 * reset reason (LINK_RESET_REFUSED, or any value of the application's) to refuse: the stream
 * is then freed and no callback fires for it. Runs inside the link's event handling: do not
 * call peers_free from it. */
typedef uint32_t (*peers_accept_fn)(void *ud, struct peers_stream *s,
                                    const struct peers_stream_info *info);

#define PEERS_MAX_STREAMS               1024 /* open at once, both directions */
#define PEERS_STREAM_DEFAULT_TIMEOUT_MS 10000

/* Accepts streams of channel `type` with fn; fn NULL stops accepting them (streams already
 * accepted live on). MESH_EEXISTS when `type` is served by peers_serve, MESH_EFULL when the
 * table is full. */
int peers_listen_streams(struct peers *p, uint16_t type, peers_accept_fn fn, void *ud);

/* Opens a stream of `type` to the node at `to`: dials or reuses the link, opens the channel
 * with payload (copied) once the link is up, and calls on_connected when the peer accepts.
 * timeout_ms (0: PEERS_STREAM_DEFAULT_TIMEOUT_MS) bounds dialling, the handshake and the
 * acceptance. cb is copied. On failure nothing is created, *ret_stream is untouched and no
 * callback fires. */
int peers_stream_open(struct peers *p, const struct mesh_addr *to, uint16_t type,
                      const uint8_t *payload, size_t len, uint64_t timeout_ms,
                      const struct peers_stream_cb *cb, void *ud, struct peers_stream **ret_stream);

/* Sets a stream's callbacks: an acceptor's way to take the stream, or an owner's way to hand
 * it over (even to callbacks that only take on_end, before it goes away itself). */
void peers_stream_set_cb(struct peers_stream *s, const struct peers_stream_cb *cb, void *ud);

/* Queues up to len bytes (copied) and returns how many were taken: fewer than len (even 0)
 * when the peer's credit or the link's buffers are used up; on_writable follows when there is
 * room. MESH_ESTATE before on_connected, after peers_stream_close, or once the stream ended. */
long peers_stream_send(struct peers_stream *s, const uint8_t *data, size_t len);

/* Zero-copy variant (link_channel_reserve): up to len bytes of room at *ptr, as many as
 * peers_stream_send would take now (same results); peers_stream_commit then queues the first n
 * bytes written there. Nothing else may be called on the stream's link in between. */
long peers_stream_reserve(struct peers_stream *s, size_t len, uint8_t **ptr);
int peers_stream_commit(struct peers_stream *s, size_t n);

/* The owner processed n bytes delivered by on_data: returns that much credit to the peer.
 * MESH_EINVAL for more than was delivered and not yet consumed. */
int peers_stream_consume(struct peers_stream *s, size_t n);

/* Half-close: FIN after the data already queued. The stream ends (on_end, code 0) once the
 * peer has closed its side too. */
int peers_stream_close(struct peers_stream *s);

/* Aborts: drops queued data, resets the channel; on_end follows with -ECANCELED (unless the
 * stream already ended for another reason, whose on_end is then still due). Idempotent. */
void peers_stream_reset(struct peers_stream *s);

/* The remote node's advertised (or dialled) address. */
const struct mesh_addr *peers_stream_remote(const struct peers_stream *s);

size_t peers_stream_count(const struct peers *p);

/* Closes every link (graceful GOAWAY); pending calls fail. */
void peers_close_all(struct peers *p);

/* Closes the links to the node at `to` the same way, so that the next call or stream dials a
 * new connection: for a link that stopped answering (a black hole keeps TCP retransmitting
 * with growing backoff long after the path is back). */
void peers_close_links_to(struct peers *p, const struct mesh_addr *to);

size_t peers_link_count(const struct peers *p);
const struct peers_stats *peers_stats(const struct peers *p);

/* The transport cipher (link_cipher_name) of a link that is up with the node at `to`, dialled
 * or accepted; NULL when there is none. Both links with one node, if there are two, negotiate
 * from the same two configurations. */
const char *peers_link_cipher(const struct peers *p, const struct mesh_addr *to);

/* The identity key that the handshake of a link up with the node at `to` proved, into
 * ret_static; MESH_ENOTFOUND when there is no such link. An accepted link's address is what
 * its peer advertised, so a caller that needs a given node checks the key's id (the key ring
 * does, before it seals a key to it). */
int peers_link_static(const struct peers *p, const struct mesh_addr *to,
                      uint8_t ret_static[static LINK_KEY_LEN]);

#endif
