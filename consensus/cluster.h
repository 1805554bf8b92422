/* One node's Raft server: canonical/raft with its libuv disk backend (raft_uv) in
 * DATA_DIR/raft, a transport over mesh links (transport.h), the desired-state machine (fsm.h),
 * and, on the leader, the automatic voter policy (voters.h) applied one change at a time.
 *
 * No logging and no HTTP here: the daemon reads the state through the accessors, applies
 * commands with cluster_apply and feeds gossip's view of the members to cluster_autopilot.
 *
 * Timing (Raft thesis §3.4, §9.3): an election timeout T (randomised by canonical/raft in
 * [T, 2T]) and a heartbeat interval T/5. The lan profile uses T = 500 ms, so a dead leader is
 * replaced in about 0.5-1.2 s (etcd's defaults give 1-2 s, Consul's 5 s); wan multiplies by 5,
 * as etcd and Consul advise for slow links, and a number multiplies by itself. Pre-vote (thesis
 * §9.6) keeps a node that was cut off from disrupting the cluster when it comes back. */
#ifndef FOGMESH_CONSENSUS_CLUSTER_H
#define FOGMESH_CONSENSUS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "err.h"
#include "fsm.h"
#include "voters.h"

#define CLUSTER_BASE_ELECTION_MS 500
#define CLUSTER_RAFT_DIR         "raft"

struct cluster_config {
    uv_loop_t *uv;
    const char *data_dir; /* the node's; raft's files go to DATA_DIR/raft */
    raft_id id;
    const char *address;                 /* advertised mesh address, "host:port" */
    struct raft_uv_transport *transport; /* borrowed; closed by the owner after cluster_close */
    bool may_bootstrap;                  /* no --join, no remembered peers */
    double timing;                       /* 1 = lan, 5 = wan, or a multiplier */
    unsigned target_voters;              /* --raft-voters */
    uint64_t dead_grace_ms;              /* a voter dead this long is replaced */
    /* Optional: called after a libuv loop iteration in which raft's last applied index, its
     * leader or its state changed (also once after a start that restored state), so that
     * waiters act at once instead of polling. From libuv's check phase, outside every raft
     * callback: it may call cluster_* functions. Never after cluster_close. */
    void (*on_change)(void *ud);
    void *change_ud;
};

struct cluster;

/* What a cluster_apply callback gets: status 0 and the state machine's result (copied), or a
 * negative MESH_E* code with a message. Called exactly once, never from inside cluster_apply. */
typedef void (*cluster_apply_cb)(void *ud, int status, const struct fsm_result *res,
                                 const struct mesh_err *err);
typedef void (*cluster_barrier_cb)(void *ud, int status);
typedef void (*cluster_close_cb)(void *ud);

/* Creates DATA_DIR/raft, starts raft (bootstrapping a one-voter configuration when allowed and
 * there is no state yet). On failure nothing is left running. */
int cluster_start(const struct cluster_config *cfg, struct cluster **ret, struct mesh_err *err);

/* Stops raft; cb fires once everything raft holds is closed, then the cluster is freed. */
void cluster_close(struct cluster *c, cluster_close_cb cb, void *ud);

struct cluster_req;

/* Proposes a command (buf->base allocated with raft_malloc; taken on success, left to the
 * caller on error). MESH_EINVAL when buf's length is not a multiple of 8 (every fsm_cmd_*
 * encoder pads); MESH_ESTATE when this node is not the leader; a write the disk cannot take
 * fails with -ENOSPC in the callback. The callback fires once the
 * entry is applied here, or with an error if leadership is lost first or the cluster closes.
 * *ret_req (optional) lets a caller that stops waiting (its own timeout) detach. */
int cluster_apply(struct cluster *c, struct raft_buffer *buf, cluster_apply_cb cb, void *ud,
                  struct cluster_req **ret_req);

/* The callback of req will not fire; its memory is released when raft is done with it. */
void cluster_req_detach(struct cluster_req *req);

/* A barrier on the leader: when cb fires with 0, every entry committed before the call has been
 * applied here (linearizable reads). MESH_ESTATE when not the leader. */
int cluster_barrier(struct cluster *c, cluster_barrier_cb cb, void *ud,
                    struct cluster_req **ret_req);

/* On the leader: one step of the voter policy with gossip's view of the members (ids and
 * addresses as raft knows them). Does nothing while a configuration change is in flight or on
 * a follower. Returns the change started (VOTERS_OP_NONE when none) for the daemon to log. */
int cluster_autopilot(struct cluster *c, const struct voters_member *members, size_t n,
                      uint64_t now_ms, struct voters_change *ret_change);

/* Hands leadership to another voter before this node leaves (best effort). */
int cluster_transfer(struct cluster *c);

/* Makes this node the only voter of a new configuration, from its own log (canonical/raft's
 * raft_recover): the way back when a majority of voters is lost for good. Run it with meshd
 * stopped. */
int cluster_recover(const char *data_dir, raft_id id, const char *address, struct mesh_err *err);

struct cluster_info {
    int state; /* RAFT_FOLLOWER, RAFT_CANDIDATE, RAFT_LEADER, RAFT_UNAVAILABLE */
    raft_id leader_id;
    const char *leader_address; /* NULL when no leader is known; valid until the next call */
    uint64_t term;
    uint64_t commit_index;
    uint64_t last_applied;
    bool reserve_released; /* this start found the disk full and gave back the space reserve
                              (cluster.c "a reserve of disk space"): writes fail meanwhile */
};
void cluster_info(struct cluster *c, struct cluster_info *ret);
const struct raft_configuration *cluster_configuration(struct cluster *c);
struct fsm *cluster_fsm(struct cluster *c);
const char *cluster_state_name(int state);
const char *cluster_role_name(int role);

/* The raft id of a node id: its first 8 bytes, big-endian (never 0). */
raft_id cluster_raft_id(const uint8_t node_id[static 16]);

#endif
