/* The desired-state feed: how a node that is not a Raft member gets the desired state
 * (DESIGN.md "Two kinds of state", issue 13 item 2). I/O-free; the daemon plugs it in through
 * struct feed_io (after struct forward_io), so it runs on the simulated network in unit tests.
 *
 * Every node advertises the (revision, digest) of the state it holds; the daemon carries the
 * advert in its gossip metadata (feed_advert) and hands the neighbours' adverts to feed_observe.
 * A node that sees a higher revision at a neighbour pulls from it, one pull at a time: the
 * canonical commands after its own revision (deltas, from a bounded ring of recently applied
 * commands the serving node keeps, feed_record) or, when the ring does not reach back that far,
 * the whole snapshot. It applies them to a copy of its state, checks the result against the
 * revision and digest the reply claims, and only then replaces its state. Updates thus spread
 * epidemically from the Raft replicas, which feed their ring from raft's apply.
 *
 * The digest: BLAKE2b-256 (libsodium crypto_generichash, key "fogmesh feed digest v1" as the
 * personalisation prefix) over the fsm's canonical snapshot encoding (fsm.h, "Snapshots": every
 * list strictly ordered, the revision inside). Why this and not a hash chain over the commands:
 *   - it is a function of the state alone, so two nodes that reached the same state by
 *     different routes (deltas, a snapshot, a restart from disk, raft's own snapshot install)
 *     agree on it; a chain would depend on history that a snapshot does not carry, and a node
 *     would have to trust a chain value it cannot recompute;
 *   - a receiver recomputes it from the bytes it got, so a snapshot or a delta run that does not
 *     produce the claimed state is caught, whatever the sender says;
 *   - it is deterministic across nodes because the encoding is canonical and applying a
 *     command is deterministic (fsm.h: every replica applies or skips a command identically).
 * The cost is one encode + hash of the state per change of revision (computed lazily, once per
 * batch, not per command); the state is bounded by the fsm's limits.
 *
 * What the digest does not prove: that the state came from the Raft log. A member that holds
 * the mesh key can build a self-consistent state (digest matching) at any revision, up to
 * UINT64_MAX, and every node would adopt it. Catching that takes a signature by the replicas
 * over (revision, digest), a later step. What the feed does defend against: a forged advert
 * (a revision the source cannot deliver), garbage or truncated replies, deltas or snapshots that
 * do not give the claimed digest, a stale source, a source that does not answer. Such a source is
 * set aside for a backoff that doubles per failure (FEED_BACKOFF_*), the pull goes to another,
 * the held state is never replaced by one that fails the check, and the revision never goes
 * down. After a delta run that failed its check, the next pull asks for a snapshot. */
/* clang-format off */
/* Wire (msgpack, common/wire.h's bounded reader; all decoders fuzzed in tests/fuzz/fuzz_feed.c):
 *   advert   [FEED_WIRE_VERSION, revision: uint, digest: bin 32]
 *   request  [FEED_WIRE_VERSION, FEED_MSG_PULL, from_revision: uint, want_snapshot: bool]
 *   reply    [FEED_WIRE_VERSION, FEED_MSG_STATE, kind, revision: uint, digest: bin 32, payload]
 *            kind FEED_REPLY_DELTAS: payload [cmd: bin, ...], the commands taking from_revision
 *                 to revision, each one that changed the state (the revision went up);
 *            kind FEED_REPLY_SNAPSHOT: payload bin, the fsm snapshot;
 *            kind FEED_REPLY_NONE: payload [] (empty), nothing newer here.
 *   store    [FEED_STORE_MAGIC, FEED_STORE_VERSION, revision: uint, digest: bin 32, snapshot: bin]
 * A newer version is refused (MESH_EUNSUPPORTED), not guessed at. */
/* clang-format on */
/* Threading and ownership: not thread-safe; one feed per node, driven from the node's loop.
 * The fsm is borrowed (a Raft replica's own, or the one a non-Raft node holds) and outlives the
 * feed. io callbacks must not call back into the feed, except that feed_pull_done may be called
 * from any later loop callback (never from inside io->call). No global state. */
#ifndef FOGMESH_CONSENSUS_FEED_H
#define FOGMESH_CONSENSUS_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "fsm.h"

#define FEED_WIRE_VERSION 1
#define FEED_MSG_PULL     1
#define FEED_MSG_STATE    2
#define FEED_DIGEST_LEN   32
#define FEED_ADVERT_MAX   48 /* bytes of an encoded advert (41 in practice) */
#define FEED_REQUEST_MAX  32
#define FEED_ADDR_MAX     96                    /* bytes of a source's address, NUL included */
#define FEED_SOURCES_MAX  64                    /* neighbours whose adverts are remembered */
#define FEED_RING_MAX     256                   /* commands in the ring */
#define FEED_RING_BYTES   (4u * 1024 * 1024)    /* bytes of commands in the ring */
#define FEED_CMD_MAX      (FSM_SPEC_MAX + 1024) /* bytes of one command (forward.h's bound) */
/* The largest snapshot the fsm's limits allow: every application at its largest spec, every
 * placement, cordon and record at their longest strings, with msgpack overhead. */
#define FEED_SNAPSHOT_MAX                                                   \
    ((size_t)FSM_APPS_MAX * (FSM_SPEC_MAX + FSM_APP_NAME_MAX + 32) +        \
     (size_t)FSM_PLACEMENTS_MAX *                                           \
         (2 * FSM_APP_NAME_MAX + FSM_NODE_NAME_MAX + FSM_REASON_MAX + 32) + \
     (size_t)FSM_CORDONS_MAX * (FSM_NODE_NAME_MAX + 8) +                    \
     (size_t)FSM_RECS_MAX * (FSM_REC_KEY_MAX + FSM_REC_MAX + 32) + 1024)
/* Bytes of a reply a puller accepts: a snapshot, or the whole ring. */
#define FEED_REPLY_MAX       (FEED_SNAPSHOT_MAX + 128)
#define FEED_PULL_TIMEOUT_MS 5000
#define FEED_BACKOFF_MIN_MS  500
#define FEED_BACKOFF_MAX_MS  60000
#define FEED_NO_DEADLINE     UINT64_MAX

#define FEED_STORE_MAGIC   "fogmesh-feed"
#define FEED_STORE_VERSION 1

enum feed_reply_kind { FEED_REPLY_NONE = 0, FEED_REPLY_DELTAS = 1, FEED_REPLY_SNAPSHOT = 2 };

struct feed_stats {
    uint64_t pulls;         /* started */
    uint64_t pulls_ok;      /* the state advanced */
    uint64_t deltas;        /* commands applied from deltas */
    uint64_t snapshots;     /* snapshots installed */
    uint64_t bad_reply;     /* did not decode, or deltas that did not apply */
    uint64_t mismatch;      /* decoded, but not the claimed revision or digest */
    uint64_t failed;        /* the call failed or timed out */
    uint64_t not_honoured;  /* the source answered with less than it advertised */
    uint64_t set_aside;     /* sources put in backoff (the sum of the four above, roughly) */
    uint64_t served_deltas; /* requests served from the ring */
    uint64_t served_snapshots;
};

struct feed_io {
    void *data;                   /* passed as `ud` */
    uint64_t (*now)(void *ud);    /* monotonic milliseconds */
    uint64_t (*random)(void *ud); /* tie-breaking between equal sources */
    /* Arms the one timer for at_ms (FEED_NO_DEADLINE: disarm), replacing the last; the daemon
     * calls feed_tick when it fires. */
    void (*timer)(void *ud, uint64_t at_ms);
    /* Calls the feed on the node at address with buf (borrowed for the call). Unless this
     * returns an error, the daemon calls feed_pull_done(feed, id, ...) once, later; a reply
     * longer than max_reply is a failure. */
    int (*call)(void *ud, const char *address, const uint8_t *buf, size_t len, size_t max_reply,
                uint64_t timeout_ms, uint64_t id);
    /* Optional: the held state was replaced (a newer revision): re-advertise, reconcile. */
    void (*changed)(void *ud, uint64_t revision);
};

struct feed;

/* io is copied, fsm borrowed. Returns 0 and *ret (feed_free) or MESH_ENOMEM. */
int feed_new(const struct feed_io *io, struct fsm *fsm, struct feed **ret);
/* Accepts NULL. A pull still out is forgotten: its feed_pull_done must not come after. */
void feed_free(struct feed *feed);

/* Whether this node pulls (a non-Raft node) or only serves and records (a Raft replica, whose
 * state raft changes). New feeds pull. */
void feed_set_pulling(struct feed *feed, bool pulling);

/* The digest of the state held now (the fsm's current one), and its encoded advert: returns
 * the length written into buf (cap >= FEED_ADVERT_MAX), or 0 on MESH_ENOMEM. */
int feed_digest(struct feed *feed, uint8_t ret_digest[static FEED_DIGEST_LEN]);
size_t feed_advert(struct feed *feed, uint8_t *buf, size_t cap);
int feed_advert_decode(const uint8_t *buf, size_t len, uint64_t *ret_revision,
                       uint8_t ret_digest[static FEED_DIGEST_LEN]);

/* A neighbour's advert (address NUL-terminated, both borrowed), from its gossip metadata.
 * Returns 0, MESH_EMALFORMED (a bad advert: ignored), MESH_EINVAL (address too long) or
 * MESH_EFULL (the table is full of sources at least as new: ignored). May start a pull. */
int feed_observe(struct feed *feed, const char *address, const uint8_t *advert, size_t len);
/* The neighbour is gone (dead, left, no longer a neighbour). */
void feed_forget(struct feed *feed, const char *address);

/* A command the fsm applied (a Raft replica's apply path), which took the revision from
 * rev_before to rev_after (> rev_before: commands that changed nothing are not recorded). cmd is
 * copied. A gap (rev_before is not the last rev_after) empties the ring first. Returns 0 or
 * MESH_ENOMEM (the ring is emptied: later requests get snapshots). */
int feed_record(struct feed *feed, uint64_t rev_before, uint64_t rev_after, const uint8_t *cmd,
                size_t len);

/* Serves a request (borrowed). Returns 0 and *ret_reply (malloc'ed, the caller frees) with
 * *ret_len, or MESH_EMALFORMED / MESH_EUNSUPPORTED / MESH_ENOMEM. */
int feed_serve(struct feed *feed, const uint8_t *req, size_t len, uint8_t **ret_reply,
               size_t *ret_len);

/* The answer to the call io->call started with id: rc 0 and the reply (borrowed), or an error
 * (the call failed). A stale id (timed out, superseded) is ignored. */
void feed_pull_done(struct feed *feed, uint64_t id, int rc, const uint8_t *reply, size_t len);
/* The timer fired. */
void feed_tick(struct feed *feed);

struct feed_stats feed_get_stats(const struct feed *feed);
bool feed_pulling_now(const struct feed *feed);

/* ---- the wire, for the fuzzer and tests ---- */

size_t feed_request_encode(uint64_t from_revision, bool want_snapshot, uint8_t *buf, size_t cap);
int feed_request_decode(const uint8_t *buf, size_t len, uint64_t *ret_from, bool *ret_snapshot);

/* A decoded reply; pointers borrow from the buffer. For DELTAS, cmds holds the payload's ncmds
 * bin values back to back (already checked: read them with wire_rd_bin). */
struct feed_reply {
    unsigned kind;
    uint64_t revision;
    uint8_t digest[FEED_DIGEST_LEN];
    const uint8_t *snapshot; /* SNAPSHOT */
    size_t snapshot_len;
    uint32_t ncmds; /* DELTAS */
    const uint8_t *cmds;
    size_t cmds_len;
};
/* Checks the whole reply (every element, every bound, nothing after it) without applying. */
int feed_reply_decode(const uint8_t *buf, size_t len, struct feed_reply *ret);

/* ---- the held state on disk (offline autonomy, issue 13 item 3) ---- */

/* Encodes the fsm's state with its revision and digest, for mesh_file_replace (atomicfile.h).
 * Returns 0 and *ret_buf (malloc'ed) / *ret_len, or MESH_ENOMEM. */
int feed_store_encode(const struct fsm *fsm, uint8_t **ret_buf, size_t *ret_len);
/* Loads what feed_store_encode wrote (borrowed) into fsm: the digest is recomputed from the
 * snapshot and compared, the revision checked against the snapshot's. Returns 0, or
 * MESH_EMALFORMED / MESH_EUNSUPPORTED / MESH_ENOMEM with why in err (may be NULL), the fsm
 * untouched on error. */
int feed_store_decode(struct fsm *fsm, const uint8_t *buf, size_t len, struct mesh_err *err);

#endif
