/* Gossip membership on the daemon's loop: the SWIM/Lifeguard state machine (swim.h) bound to
 * the UDP side of the mesh port, with every packet sealed under the key ring (keyring.h), and
 * its timers driven by a libevent timer re-armed from swim_next_deadline(). Push-pull exchanges
 * go through a hook that carries them over an encrypted link. */
#ifndef FOGMESH_MESHD_GOSSIP_H
#define FOGMESH_MESHD_GOSSIP_H

#include <event2/event.h>

#include "identity.h"
#include "keyring.h"
#include "log.h"
#include "swim.h"

struct gossip_hooks {
    void *ud;
    /* Starts a push-pull with `to` (see swim_io.pushpull). Required. */
    int (*pushpull)(void *ud, uint64_t req, const struct mesh_addr *to, const uint8_t *state,
                    size_t len);
    void (*member_changed)(void *ud, const struct swim_member *m, enum swim_member_state old);
    void (*join_done)(void *ud, int rc, const struct mesh_err *err);
    void (*leave_done)(void *ud, int rc);
    /* Optional. A packet claimed an epoch for sender `id` that differs from the one we hold for
     * it, and no link has proven either (keyring.h, replay windows): the daemon should bring
     * up a link to that member, whose handshake proves its epoch (gossip_proven). Called for
     * every such packet: rate-limit on the daemon's side. */
    void (*want_proof)(void *ud, const uint8_t id[NODE_ID_LEN]);
};

struct gossip_stats {
    uint64_t pkts_in, pkts_out;
    uint64_t bad_auth;  /* not sealed with a key of our ring */
    uint64_t malformed; /* bad framing before or after opening, oversized datagrams */
    uint64_t replayed;
    uint64_t epoch_unproven; /* packets whose sender's epoch conflicted with no proof */
    uint64_t send_errors;
};

struct gossip;

/* Timing profiles. lan (the default) probes every 400 ms with a 200 ms timeout, gossips every
 * 100 ms and uses a suspicion multiplier of 3: about 2.5x memberlist's LAN pace, so a dead node
 * is declared in well under half of Serf's time (measured by bench/run.py membership), while
 * indirect probes, Lifeguard's nacks, local-health scaling and suspicion that waits for
 * independent confirmations keep false positives away under packet loss. wan follows
 * memberlist's DefaultWANConfig (probe 5 s, timeout 3 s, suspicion x6, gossip 500 ms to 4
 * members) for high-latency or lossy uplinks. */
enum gossip_profile { GOSSIP_PROFILE_LAN, GOSSIP_PROFILE_WAN };
int gossip_profile_parse(const char *s, enum gossip_profile *ret);
void gossip_profile_apply(struct swim_config *sc, enum gossip_profile p);

/* Takes over udp_fd (bound, non-blocking; closed by gossip_free). name, id, addr and meta go
 * to the state machine; kr and log are borrowed and must outlive the gossip object. epoch must
 * grow at every start of this node (see keyring.h on replays). */
int gossip_new(struct event_base *base, int udp_fd, const struct swim_config *scfg,
               const struct keyring *kr, uint64_t epoch, const struct gossip_hooks *hooks,
               const struct logger *log, struct gossip **ret, struct mesh_err *err);
void gossip_free(struct gossip *g); /* accepts NULL */

int gossip_join(struct gossip *g, const struct mesh_addr *seeds, size_t n);
int gossip_leave(struct gossip *g);
int gossip_set_meta(struct gossip *g, const uint8_t *meta, size_t len);

/* The responder and initiator halves of push-pull, called by whoever carries the streams. */
int gossip_pushpull_recv(struct gossip *g, const struct mesh_addr *from, const uint8_t *buf,
                         size_t len, uint8_t **ret_reply, size_t *ret_len, struct mesh_err *err);
void gossip_pushpull_done(struct gossip *g, uint64_t req, int rc, const uint8_t *buf, size_t len);

/* A link authenticated by the identity key that `id` is the hash of advertised name and addr,
 * and (when has_epoch) the epoch of that node's current run: marks the member verified
 * (swim_prove) and makes the epoch the sender's current one for the replay windows. */
void gossip_proven(struct gossip *g, const uint8_t id[static NODE_ID_LEN], const char *name,
                   const struct mesh_addr *addr, bool has_epoch, uint64_t epoch);

const struct swim *gossip_swim(const struct gossip *g);
const struct gossip_stats *gossip_stats(const struct gossip *g);

#endif
