/* The scheduler the Raft leader runs: a pure function from (applications, current placements,
 * nodes, now) to a bounded list of placement changes. No I/O, no logging, no clock of its own,
 * no state between runs: the same input always gives the same output, byte for byte.
 *
 * Who calls what (the leader, meshd/): after each applied change of the desired state, after a
 * membership change seen by gossip, and on a timer (at least every second, so that the grace
 * of a dead node runs out), the leader builds a struct sched_input from its fsm (applications
 * with their mod_rev, placements, cordons) and gossip (nodes), calls sched_run(), turns each
 * change into a command with sched_change_cmd() and proposes it with raft_apply(). One run at a
 * time: the next run starts once the previous run's proposals have been applied (or failed),
 * otherwise it would decide again on a state that does not show them yet. A PLACE made for an
 * application that changed meanwhile is refused by the fsm as stale (fsm.h) and decided again
 * by the next run.
 *
 * The rules, in the order they are applied.
 *
 * 1. Records that are not wanted are removed (UNPLACE): their application is gone, their
 *    microservice is gone, or their replica index is >= the microservice's replicas. The
 *    records of an application whose spec cannot be read (not canonical JSON) are left alone.
 *
 * 2. Records that are placed on a node are kept (no change at all) unless one of these holds,
 *    in which case the replica is moved (rule 3) — this is the whole of "stability":
 *      a. the microservice is pinned (placement.node) to another node;
 *      b. the node is gone: dead for at least reschedule_after, or left (at once: it said
 *         goodbye), or missing from the node list for at least reschedule_after counted from
 *         unknown_since_ms, or its container engine unavailable for at least reschedule_after;
 *      c. the node is drained (cordoned with drain);
 *      d. the microservice no longer runs there: no image for the node's architecture, another
 *         placement.arch, or a placement.labels entry the node lacks;
 *      e. the node's known capacity (cpus, memory_bytes > 0) no longer holds the replica: kept
 *         replicas are counted on their node in (app, microservice, replica) order and the first
 *         one that does not fit, and every later one that does not, moves.
 *    A suspect node, a node dead or without an engine for less than the grace, a cordoned (not
 *    drained) node, a change of image, command, env, ports, volumes, config, restart or of
 *    another microservice: none of these moves a replica (the runtime recreates the container
 *    in place). Scores are never re-evaluated for placed replicas: the scheduler does not
 *    rebalance.
 *    Pinned microservices wait for their node: when the pinned node is gone (b), the record
 *    stays on it with the reason "waiting for node X: ..." (so a node that comes back after a
 *    partition keeps running it without a restart); when it is drained or the microservice no
 *    longer fits it (c, d, e), the replica becomes pending, "waiting for node X: ...". Reasons
 *    starting with SCHED_WAITING_PREFIX belong to the scheduler: once the node is back, such a
 *    record gets the reason "node is back".
 *
 * 3. Replicas without a node (new, pending, or moved by rule 2) are placed in (app,
 *    microservice, replica) order, after every kept replica has been counted on its node:
 *    filters, then scores, after the Kubernetes scheduling framework's Filter and Score phases
 *    (kubernetes.io/docs/concepts/scheduling-eviction/kube-scheduler/).
 *    Filters (the first that fails is the node's reason):
 *      node alive (not suspect, dead or left); not cordoned; container engine available; its
 *      name is one the fsm can record; placement.node; placement.arch and an image for the
 *      node's architecture (spec_images_for_arch); every placement.labels entry; free CPU and
 *      free memory >= resources. Unset resources count as 0 here (they always fit), as
 *      Kubernetes' NodeResourcesFit does for a pod without requests. A node whose capacity is
 *      unknown (0) fits only microservices that ask for none of that resource.
 *    Scores (lower wins, compared in this order):
 *      a. spread: replicas of the same microservice already on the node (Nomad's job
 *         anti-affinity, scheduler/rank.go JobAntiAffinityIterator; Kubernetes'
 *         PodTopologySpread with the node as the topology);
 *      b. least allocated: max(CPU fraction, memory fraction) of the node once the replica
 *         is added, in basis points (the dominant resource, as DRF, rather than Kubernetes'
 *         LeastAllocated average, so a node full of memory is not picked for its idle CPUs).
 *         Here unset resources count as SCHED_SCORE_DEFAULT_MILLICPU and
 *         SCHED_SCORE_DEFAULT_MEMORY, as Kubernetes' scoring does (schedutil
 *         DefaultMilliCPURequest, DefaultMemoryRequest), so that microservices without
 *         resources are spread too;
 *      c. node name (bytewise), for determinism.
 *    Nomad's default is the opposite, bin packing (scheduler/rank.go BinPackIterator): at the
 *    edge, spreading keeps a node's loss small and leaves room on every node.
 *    What cannot be placed is pending (PLACE with node "") with the reason, e.g.
 *      "no node matches: 3 nodes lack label zone=a, 1 node is arm64 without an image"
 *    (counts per reason, in the filter order above). A pending record whose reason is
 *    unchanged gives no change: a run on an unchanged state gives no changes at all.
 *    A pinned microservice considers its node only ("waiting for node X: it is dead").
 *    New records are made only while the fsm has room (FSM_PLACEMENTS_MAX, counting the
 *    records that stay); replicas beyond get no record and are counted in over_limit.
 *
 *    The reason of a pending replica is worked out once every replica of the run has been
 *    placed, against the allocations the next run will start from, so that it does not
 *    change from one run to the next with the order in which replicas were considered.
 *
 * 4. Output, each group in (app, microservice, replica) order: UNPLACEs, then reason updates of
 *    kept records (waiting, back), then PLACEs onto nodes, then pending PLACEs; at most `cap`
 *    of them; the rest are counted (sched_stats.changes) and left to the next run, which
 *    finds them again.
 *
 * Cordon and drain are node records in the fsm (fsm_cmd_cordon) that the caller copies into
 * struct sched_node; `meshctl drain` is CORDON(node, true, drain=true), after which runs move
 * everything off. `meshctl move` is sched_move(). */
#ifndef FOGMESH_CONSENSUS_SCHEDULER_H
#define FOGMESH_CONSENSUS_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <raft.h>

#include "err.h"
#include "fsm.h"

#define SCHED_RESCHEDULE_AFTER_MS    10000 /* meshd's --reschedule-after default */
#define SCHED_NODES_MAX              4096  /* nodes in one input */
#define SCHED_SCORE_DEFAULT_MILLICPU 100   /* scoring only, for unset resources.cpus */
#define SCHED_SCORE_DEFAULT_MEMORY   (200ull * 1024 * 1024) /* scoring only */
#define SCHED_WAITING_PREFIX         "waiting for node "
#define SCHED_ANY_REPLICA            UINT32_MAX

enum sched_node_state {
    SCHED_NODE_ALIVE = 0,
    SCHED_NODE_SUSPECT,
    SCHED_NODE_DEAD,
    SCHED_NODE_LEFT,
};

struct sched_label {
    const char *key;
    const char *value;
};

/* One node as gossip (observed) and the fsm's cordons (desired) show it. All pointers are
 * borrowed for the duration of the call. */
struct sched_node {
    const char *name;
    enum sched_node_state state;
    uint64_t since_ms;             /* when it entered `state`, on now_ms's clock */
    bool cordoned;                 /* fsm_cordon_get() == 0 */
    bool drain;                    /* ... with drain */
    bool engine_ok;                /* container engine available */
    uint64_t engine_down_since_ms; /* when !engine_ok: since when */
    const char *arch;              /* "amd64", "arm64", "arm"; NULL or "" when unknown */
    const struct sched_label *labels;
    size_t nlabels;
    uint32_t cpus;         /* 0: unknown */
    uint64_t memory_bytes; /* 0: unknown */
};

/* One application: its canonical spec (spec_validate's output, borrowed) and the mod_rev the
 * fsm has for it (struct fsm_app), which every PLACE carries. */
struct sched_app {
    const char *name;
    uint64_t mod_rev;
    const json_t *spec;
};

/* Everything a run looks at; all borrowed for the duration of the call. Placements are the
 * fsm's records (fsm_placement_at), in any order. */
struct sched_input {
    const struct sched_app *apps;
    size_t napps;
    const struct fsm_placement *placements;
    size_t nplacements;
    const struct sched_node *nodes;
    size_t nnodes;
    uint64_t now_ms;
    uint64_t reschedule_after_ms; /* 0: SCHED_RESCHEDULE_AFTER_MS */
    uint64_t unknown_since_ms;    /* nodes not in `nodes` count as dead since then: when this
                                     leader started (its gossip view may be young) */
};

enum sched_op {
    SCHED_PLACE = 1, /* to a node, or pending when to is "" */
    SCHED_UNPLACE,   /* remove the record */
};

/* One change; plain values, owned by whoever holds the struct. */
struct sched_change {
    int op; /* enum sched_op */
    char app[FSM_APP_NAME_MAX + 1];
    uint64_t app_mod_rev;
    char ms[FSM_APP_NAME_MAX + 1];
    uint32_t replica;
    char from[FSM_NODE_NAME_MAX + 1]; /* the record's node before: "" when none or pending */
    char to[FSM_NODE_NAME_MAX + 1];   /* PLACE: the node, "" for pending; UNPLACE: "" */
    char reason[FSM_REASON_MAX + 1];  /* printable ASCII */
};

struct sched_stats {
    size_t changes;    /* changes this run decided; those beyond cap wait for the next run */
    size_t placed;     /* replicas on a node after the run */
    size_t pending;    /* replicas pending after the run */
    size_t over_limit; /* replicas left without a record (FSM_PLACEMENTS_MAX) */
    size_t bad_specs;  /* applications whose spec could not be read; left alone */
};

/* Runs the scheduler on `in` (borrowed). Writes at most cap changes into changes[] (owned by
 * the caller; may be NULL when cap is 0) and their number into *ret_n, and fills *ret_stats
 * when not NULL. Returns 0, MESH_EINVAL (NULL input, a node without a name, two nodes or two
 * applications of one name, two placements of one replica), MESH_ETOOBIG (more than
 * SCHED_NODES_MAX nodes, FSM_APPS_MAX applications or FSM_PLACEMENTS_MAX placements) or
 * MESH_ENOMEM; on error the outputs are untouched. */
int sched_run(const struct sched_input *in, struct sched_change *changes, size_t cap, size_t *ret_n,
              struct sched_stats *ret_stats);

/* `meshctl move APP/MS NODE`: moves replica (or, with SCHED_ANY_REPLICA, the lowest replica
 * that is not on node yet) of app/ms to node, if node passes every filter of rule 3 (spread
 * and scores do not matter: the user chose). The move sticks, since placed replicas are never
 * moved for score. Strings borrowed. On success returns 0 and fills *ret (a PLACE). Otherwise
 * returns MESH_ENOTFOUND (no such app, microservice, replica record or node), MESH_EEXISTS
 * (already there), MESH_ESTATE (the node does not fit, or the microservice is pinned
 * elsewhere), MESH_EINVAL or MESH_ENOMEM, with err (when not NULL) saying why, e.g.
 * "node n3 is arm64 without an image"; *ret untouched. */
int sched_move(const struct sched_input *in, const char *app, const char *ms, uint32_t replica,
               const char *node, struct sched_change *ret, struct mesh_err *err);

/* Encodes a change as the fsm command to propose (fsm_cmd_place / fsm_cmd_unplace); ownership
 * of *out as fsm_cmd_put_app (raft_apply takes it). Returns 0, MESH_EINVAL or MESH_ENOMEM. */
int sched_change_cmd(const struct sched_change *c, struct raft_buffer *out);

#endif
