/* Gossip membership: SWIM with the Lifeguard extensions, as a state machine without I/O.
 *
 * Sources:
 *  - SWIM: Das, Gupta, Motivala, "SWIM: Scalable Weakly-consistent Infection-style Process Group
 *    Membership Protocol", DSN 2002. §3.1 failure detector (ping, ping-req through k members),
 *    §4.1 dissemination by piggybacking, §4.2 suspicion and incarnation numbers, §4.3 round-robin
 *    probe target selection over a shuffled list.
 *  - Lifeguard: Dadgar, Phillips, Currey, "Lifeguard: Local Health Awareness for More Accurate
 *    Failure Detection", 2018, arXiv:1707.00788. §4.1 local health multiplier (awareness) scaling
 *    probe interval and timeout, §4.2 local-health-aware suspicion (timeouts that shrink with
 *    independent confirmations), §4.3 buddy system, nacks from ping-req relays.
 *  - HashiCorp memberlist (used by Serf/Consul), whose behaviour this follows where the papers
 *    leave choices open: push-pull anti-entropy over TCP and its interval scaling, retransmit
 *    limit retransmit_mult * ceil(log10(N+1)), suspicion timeout formula, transmit-limited
 *    broadcast queue, gossip to recently dead members, merge of remote "dead" as "suspect".
 *
 * The machine never blocks, logs, reads a clock or touches a socket. The daemon feeds it packets
 * (swim_recv), push-pull streams (swim_pushpull_*) and the time in milliseconds; it calls back
 * through struct swim_io to send, to start a push-pull, for randomness and to report changes.
 * Callbacks must not call back into the same swim object (the daemon queues what it must do).
 *
 * Not thread-safe; one object per node, driven from the node's event loop. */
#ifndef FOGMESH_MESHD_SWIM_H
#define FOGMESH_MESHD_SWIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "err.h"
#include "swim_wire.h"

#define SWIM_MAX_SEEDS   16
#define SWIM_NO_DEADLINE UINT64_MAX

enum swim_member_state {
    SWIM_NONE = 0, /* not (or no longer) in the table: reported once when a member is reaped */
    SWIM_ALIVE = 1,
    SWIM_SUSPECT = 2,
    SWIM_DEAD = 3,
    SWIM_LEFT = 4,
};

const char *swim_state_name(enum swim_member_state st);

/* A member as the daemon sees it. Read-only outside swim.c. */
struct swim_member {
    char name[SWIM_NAME_MAX + 1];
    uint8_t id[SWIM_ID_LEN]; /* opaque node id; names are unique, ids tell holders apart */
    struct mesh_addr addr;   /* advertised UDP (and TCP) address */
    uint64_t incarnation;
    enum swim_member_state state;
    uint64_t state_change; /* ms (the daemon's clock) of the last state change */
    size_t meta_len;
    uint8_t meta[SWIM_META_MAX];
    /* A link authenticated by the identity key this id is the hash of advertised this name and
     * address (swim_prove). Gossip alone can claim any id, so only a verified member is one
     * whose id is bound to its key; the daemon decides what unverified members may not do. */
    bool verified;
};

struct swim_io {
    void *data; /* passed as `ud` to every callback */

    /* Sends one UDP payload (the daemon seals it). buf is borrowed for the call. A returned error
     * is counted; a lost packet is normal for SWIM. */
    int (*send_packet)(void *ud, const struct mesh_addr *to, const uint8_t *buf, size_t len);

    /* Starts a push-pull exchange with `to`: send `state` (borrowed for the call; copy it) over
     * a reliable stream, read the reply, then call swim_pushpull_merge(s, req, reply) or, on any
     * failure, swim_pushpull_failed(s, req). If this returns an error, neither is expected. */
    int (*pushpull)(void *ud, uint64_t req, const struct mesh_addr *to, const uint8_t *state,
                    size_t len);

    uint32_t (*random)(void *ud);

    /* Optional. A member was added (old == SWIM_NONE), changed state, or changed address, meta
     * or incarnation (old == m->state), or was reaped (m->state == SWIM_NONE). */
    void (*member_changed)(void *ud, const struct swim_member *m, enum swim_member_state old);

    /* Optional. Outcome of swim_join once it returned 0: rc 0 when one seed answered, else the
     * error with a message in err (e.g. MESH_EEXISTS `name "x" is taken by node <id>`). */
    void (*join_done)(void *ud, int rc, const struct mesh_err *err);

    /* Optional. After swim_leave returned 0: rc 0 once the "left" message has been sent its
     * retransmit limit (or no peer is left to tell), -ETIMEDOUT after leave_timeout_ms. */
    void (*leave_done)(void *ud, int rc);
};

struct swim_config {
    /* Identity. name (1..64 bytes, no control characters) is copied; meta is copied. */
    const char *name;
    uint8_t id[SWIM_ID_LEN];
    struct mesh_addr addr;
    const uint8_t *meta;
    size_t meta_len;

    /* Defaults follow memberlist's DefaultLANConfig. */
    uint32_t probe_interval_ms;    /* 1000 */
    uint32_t probe_timeout_ms;     /* 500 */
    uint32_t indirect_checks;      /* 3: k of SWIM §3.1 */
    uint32_t suspicion_mult;       /* 4 */
    uint32_t suspicion_max_mult;   /* 6 */
    uint32_t awareness_max;        /* 8: multiplier (score+1) is at most this */
    uint32_t gossip_interval_ms;   /* 200 */
    uint32_t gossip_nodes;         /* 3 */
    uint32_t gossip_to_dead_ms;    /* 30000: keep telling the dead they are dead */
    uint32_t retransmit_mult;      /* 4 */
    uint32_t pushpull_interval_ms; /* 30000, scaled up beyond 32 members */
    /* Serf's reconnect: every interval, push-pull with one random dead member, so that two
     * sides of a healed partition find each other without an operator's join. 0 disables. */
    uint32_t reconnect_interval_ms; /* 30000 */
    uint32_t max_members;           /* 4096 (including ourselves) */
    /* Members that no link proved (swim_member.verified), at most: beyond that a new one
     * takes the place of the oldest unverified dead or left member, or is refused
     * (stats.unverified_full). Every node of a large mesh is unverified at most other nodes
     * (each links to a bounded set of neighbours), so this must exceed the mesh's size; it
     * keeps a flood of made-up members from taking the whole table. */
    uint32_t max_unverified;   /* 1024 */
    uint32_t max_broadcasts;   /* 1024 queued state messages */
    uint32_t max_relays;       /* 64 ping-req relays in flight */
    uint32_t max_packet;       /* 1336 = 1400 - 64 sealing overhead; at least 768 */
    uint32_t leave_timeout_ms; /* 5000 */
    /* Reaping: how long dead and left members stay in the table (as tombstones that refute
     * stale gossip and report "dead"/"left"). Serf's reconnect_timeout and tombstone_timeout
     * are both 24 h; the same here. */
    uint64_t dead_reap_ms; /* 24 h */
    uint64_t left_reap_ms; /* 24 h */
};

struct swim_stats {
    uint64_t pkts_recv, pkts_sent, send_errors;
    uint64_t malformed;       /* packets/streams dropped as malformed */
    uint64_t bad_version;     /* packets/streams of another wire version */
    uint64_t unknown_type;    /* messages of unknown type (skipped) */
    uint64_t impostor;        /* alive about a name held by a live member with another id */
    uint64_t misdirected;     /* pings for another name/id (address reuse) */
    uint64_t table_full;      /* new members refused because max_members was reached */
    uint64_t unverified_full; /* new unverified members refused (max_unverified) */
    uint64_t bcast_dropped;   /* broadcasts dropped because the queue was full */
    uint64_t relay_full;      /* ping-reqs refused because max_relays were in flight */
    uint64_t probes, probe_acks, indirect_probes, probe_failures, nacks_recv;
    uint64_t suspicions; /* members we marked suspect (from any source) */
    uint64_t refutes;    /* times we refuted our own suspicion/death */
    uint64_t deaths;     /* members we marked dead */
    uint64_t pushpull_ok, pushpull_failed, pushpull_refused;
    uint64_t reconnects; /* push-pulls started with a dead member */
};

struct swim_counts {
    size_t alive, suspect, dead, left;
};

struct swim;

void swim_config_init(struct swim_config *cfg);

/* Creates the machine with ourselves as the only (alive) member. io is copied. */
int swim_new(const struct swim_config *cfg, const struct swim_io *io, uint64_t now,
             struct swim **ret_s, struct mesh_err *err);
void swim_free(struct swim *s); /* accepts NULL */

/* Joins through seeds (copied; at most SWIM_MAX_SEEDS): push-pull with each in turn until one
 * answers, then io->join_done. Returns an error (and join_done never fires) when no push-pull
 * could even be started. */
int swim_join(struct swim *s, const struct mesh_addr *seeds, size_t n, uint64_t now);

/* Leaves gracefully: gossips "left" with a bumped incarnation, stops probing; io->leave_done
 * reports. */
int swim_leave(struct swim *s, uint64_t now);

/* Replaces our metadata (copied, at most SWIM_META_MAX) and gossips it with a new incarnation. */
int swim_set_meta(struct swim *s, const uint8_t *meta, size_t len, uint64_t now);

/* Handles one received UDP payload (already opened by the daemon). `from` is the source address
 * the daemon saw. Bad input is counted in the stats and dropped: the return value is 0 or
 * MESH_EMALFORMED/MESH_EUNSUPPORTED for the daemon's own accounting only. */
int swim_recv(struct swim *s, const struct mesh_addr *from, const uint8_t *buf, size_t len,
              uint64_t now);

/* Does whatever is due at `now`; swim_next_deadline says when to call it next. */
int swim_tick(struct swim *s, uint64_t now);
uint64_t swim_next_deadline(const struct swim *s); /* SWIM_NO_DEADLINE when nothing is due */

/* Responder side of a push-pull: merges the peer's state and returns our state as the reply in
 * *ret_reply (malloc'd, the caller frees it with free()). A request from a node whose name is
 * held by a live member with another id is refused: returns MESH_EEXISTS with err set AND a reply
 * carrying the refusal, which should still be sent so the joiner can report it (the one
 * exception to "outputs untouched on failure"). Other errors: no reply. */
int swim_pushpull_recv(struct swim *s, const struct mesh_addr *from, const uint8_t *buf, size_t len,
                       uint64_t now, uint8_t **ret_reply, size_t *ret_len, struct mesh_err *err);

/* Initiator side: the reply to request `req` arrived (buf borrowed) / the exchange failed. */
int swim_pushpull_merge(struct swim *s, uint64_t req, const uint8_t *buf, size_t len, uint64_t now,
                        struct mesh_err *err);
int swim_pushpull_failed(struct swim *s, uint64_t req, uint64_t now);

/* Largest push-pull stream this node sends or accepts: the daemon's read limit. */
size_t swim_pushpull_max_len(const struct swim *s);

/* A link whose handshake was authenticated by the identity key that `id` is the hash of
 * advertised `name` and `addr` (the daemon checks the hash, identity_key_binds_id): members with
 * exactly that id, name and address are verified from now on, also ones that gossip brings
 * later. The last SWIM_PROOFS_MAX proofs are kept; a member keeps its mark until its id, name
 * or address changes. */
#define SWIM_PROOFS_MAX 256
void swim_prove(struct swim *s, const uint8_t id[static SWIM_ID_LEN], const char *name,
                const struct mesh_addr *addr, uint64_t now);

/* Accessors. Member pointers stay valid until the next call that takes `now`. */
size_t swim_member_count(const struct swim *s);
const struct swim_member *swim_member_at(const struct swim *s, size_t i);
const struct swim_member *swim_member_find(const struct swim *s, const char *name);
const struct swim_member *swim_self(const struct swim *s);
void swim_counts(const struct swim *s, struct swim_counts *ret_counts);
const struct swim_stats *swim_stats(const struct swim *s);
uint64_t swim_incarnation(const struct swim *s);
unsigned swim_health_score(const struct swim *s); /* Lifeguard awareness, 0..awareness_max-1 */

#endif
