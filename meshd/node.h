/* One mesh node: everything a running meshd holds hangs off this object (no global state), so a
 * test can run several in one process. */
#ifndef FOGMESH_MESHD_NODE_H
#define FOGMESH_MESHD_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "cluster.h"
#include "config.h"
#include "err.h"
#include "gossip.h"
#include "identity.h"
#include "keyring.h"
#include "log.h"
#include "loop.h"
#include "nodemeta.h"
#include "peers.h"
#include "transport.h"

/* Channel types of the calls nodes make to each other (LINK_CHAN_CONTROL: ahead of bulk). */
enum node_call_type {
    CALL_PUSHPULL = LINK_CHAN_CONTROL | 1,
    CALL_KEYOP = LINK_CHAN_CONTROL | 2,
    CALL_RAFT_APPLY = LINK_CHAN_CONTROL | 3,      /* a follower forwards a write */
    CALL_RAFT_READ_INDEX = LINK_CHAN_CONTROL | 4, /* a follower asks for a read index */
    CALL_RT_STATUS = LINK_CHAN_CONTROL | 5,       /* what a node observes of its replicas */
    /* TRANSPORT_CHAN_RAFT (transport.h) carries raft's own streams. */
    CALL_PING = LINK_CHAN_CONTROL | 6,  /* a neighbour's RTT (netlink/neighbours.h) */
    CALL_RELAY = LINK_CHAN_CONTROL | 7, /* a call on its way to a node further on */
    STREAM_LOGS = 0x20,   /* a replica's output, from the node that runs it (bulk priority) */
    STREAM_TUNNEL = 0x21, /* a service connection, hop by hop (node_tunnel.c) */
};

#define NODE_PEERS_FILE    "peers" /* addresses of members seen alive, for rejoining */
#define NODE_EPOCH_FILE    "epoch"
#define NODE_REMEMBER_MAX  32
#define NODE_REJOIN_MS     5000
#define NODE_RAFT_CLOSE_MS 5000 /* at shutdown, raft gets this long to close */
#define NODE_KEYOP_MAX     64   /* key operations in flight mesh-wide from this node */
/* Verification on demand (node_verify_member): links dialled at once to prove members, how
 * often one member is tried, and how many recent tries are remembered. */
#define NODE_VERIFY_INFLIGHT 4
#define NODE_VERIFY_RETRY_MS 30000
#define NODE_VERIFY_RECENT   64
#define NODE_VERIFY_TIMEOUT  3000

struct keyop;        /* a mesh-wide key-ring operation in progress (node_api.c) */
struct logs_session; /* a log stream through or from this node (node_logs.c) */
struct node_routes;  /* neighbours and the routing table (node_route.c) */
struct node_tunnels; /* service listeners and tunnels (node_tunnel.c) */
struct route_table;

/* Services (node_svc.c): where each service is provided and where meshd listens for it. */
#define SVC_ENDPOINTS_MAX 8192
#define SVC_LISTENERS_MAX 8192

/* One entry of the service catalog: an endpoint of a service (addr: its target, reached from
 * that node) or a listener for it (addr: where it listens on that node). host: declared with
 * `service expose|connect`, else a microservice replica's (app, ms, replica). */
struct svc_entry {
    char service[FSM_APP_NAME_MAX + 1];
    char node[FSM_NODE_NAME_MAX + 1];
    struct mesh_addr addr;
    bool host;
    char app[FSM_APP_NAME_MAX + 1], ms[FSM_APP_NAME_MAX + 1];
    uint32_t replica;
};

struct svc_list {
    struct svc_entry *v;
    size_t n, cap;
};

struct svc_catalog {
    uint64_t revision;       /* of the fsm it was built from */
    bool full;               /* entries beyond the bounds were left out */
    struct svc_list eps, ls; /* endpoints, listeners */
};
struct pp_call; /* a push-pull call in flight (node.c) */
struct forward;

struct node {
    struct meshd_config cfg;
    struct logger log;
    struct mesh_loop loop;
    struct identity ident;
    struct keyring kr;
    uint64_t epoch;
    struct node_meta meta;
    int lock_fd;
    int tcp_fd;
    int udp_fd;
    struct peers *peers;
    struct gossip *gossip;
    struct event *sig_int;
    struct event *sig_term;
    struct event *rejoin_timer;
    struct event *remember_timer;
    struct api *api;
    struct raft_uv_transport transport;
    bool transport_ready;
    struct cluster *cluster;
    raft_id raft_id;
    struct event *autopilot_timer;
    struct forward *fwd;        /* writes and reads through the leader (consensus/forward.h) */
    struct event *fwd_timer;    /* its one timer */
    struct event *raft_changed; /* raft applied, or its leader changed (node_raft.c) */
    struct event *sched_timer;
    uint64_t seen_revision;  /* of the desired state last acted on (node_sched_changed) */
    struct fanout *fanouts;  /* listings waiting for other nodes' observed state */
    json_t *spec_cache;      /* the scheduler's parsed specs: {app: [mod_rev, spec]} */
    json_t *engine_down;     /* the scheduler's {node: ms first seen with its engine down} */
    size_t sched_inflight;   /* placement changes proposed, not applied yet */
    uint64_t leader_since;   /* when this node last became leader (0: not leader) */
    struct engine *engine;   /* NULL: no container engine on this node */
    struct node_runtime *rt; /* the reconciler and its wiring; NULL without an engine */
    struct logs_session *logs;
    size_t nlogs;
    struct svc_catalog *svc; /* built from the state on demand (node_svc_catalog) */
    struct node_routes *routes;
    struct node_tunnels *tunnels;
    uint64_t tunnel_refused; /* connections and streams refused (node_tunnel.c) */
    bool recovering;
    struct evhttp_request *recover_req;
    struct api_watch recover_watch;
    struct event *recover_timer;
    uint64_t recover_deadline;
    uint64_t started_ms;
    bool created_key;
    bool key_file_ignored;
    bool joined;
    bool leaving;
    /* node_raft_stop is waiting for raft to close: only that close or its deadline ends the
     * loop then (node_stop records the exit code only), and the API takes no new raft calls. */
    bool raft_closing;
    int exit_code;
    size_t nkeyops;
    struct keyop *keyops;
    struct log_ratelimit keyop_log_rl; /* refused key operations from other nodes */
    /* Push-pull calls in flight: peers_free does not fire their callbacks, so node_close
     * frees what is left here. */
    struct pp_call *pp_calls;
    /* Verification calls in flight (their callback has no state of its own to free) and the
     * ids tried lately, so that a flood of unverified members costs a bounded trickle of
     * dials. */
    size_t verify_inflight;
    struct {
        uint8_t id[NODE_ID_LEN];
        uint64_t at;
    } verify_recent[NODE_VERIFY_RECENT];
    uint64_t verify_calls;
    /* Join seeds: --join, else the peers remembered from the last run. */
    struct mesh_addr seeds[CONFIG_JOIN_MAX + NODE_REMEMBER_MAX];
    size_t nseeds;
    char join_error[MESH_ERRMSG_LEN];
    char last_pp_error[MESH_ERRMSG_LEN];
    char join_error_logged[MESH_ERRMSG_LEN];
    struct log_ratelimit join_log_rl;
    struct log_ratelimit_hosts link_log_rl;
    struct log_ratelimit_hosts fwd_log_rl; /* forwarded writes refused (node_raft.c) */
    struct log_ratelimit accept_log_rl;    /* mesh port accept pauses */
};

/* Builds a node from cfg: data dir, identity, key ring, sockets, gossip, API. On failure
 * everything half-built is released and err says why in one line. The node is not running
 * until node_run(). */
int node_start(struct node *n, const struct meshd_config *cfg, struct mesh_err *err);

/* Runs the loop until SIGINT/SIGTERM, a completed leave or node_stop(); returns the exit
 * code. */
int node_run(struct node *n);

void node_stop(struct node *n, int exit_code);

/* Graceful leave: gossip "left", then stop. */
int node_leave(struct node *n);

/* Saves the key ring after a change (logs and returns the error). */
int node_keyring_changed(struct node *n, struct mesh_err *err);

/* Closes sockets, removes the API socket, frees everything. Accepts a half-built node. */
void node_close(struct node *n);

/* Registers the HTTP handlers and the CALL_KEYOP service (node_api.c). */
int node_api_init(struct node *n, struct mesh_err *err);

/* Starts raft on the mesh transport and registers the applications API (node_raft.c). */
int node_raft_start(struct node *n, bool may_bootstrap, struct mesh_err *err);
/* Submits a command (raft_malloc'ed, always consumed) through the leader for an API client:
 * applied here when leading, else forwarded; answers req with {"name", "result", "version"}. */
void node_raft_write(struct node *n, struct evhttp_request *req, const char *name,
                     struct raft_buffer *cmd);
/* The application name of /v1/apps/NAME (rest: what follows the prefix) into buf, or false
 * with a 400 answered. */
bool node_api_app_name(struct evhttp_request *req, const char *rest, char *buf, size_t len);
/* The request side of PUT and DELETE /v1/apps/NAME, which needs no node (the HTTP fuzzer runs
 * it): the name from the path and, for PUT, the validated spec, as the command to write. 0 and
 * *cmd (raft_malloc'ed, the caller's); or the client has its 400 answer and a negative code. */
int node_api_app_put_cmd(struct evhttp_request *req, const char *rest,
                         char name[static FSM_APP_NAME_MAX + 1], struct raft_buffer *cmd);
int node_api_app_delete_cmd(struct evhttp_request *req, const char *rest,
                            char name[static FSM_APP_NAME_MAX + 1], struct raft_buffer *cmd);
/* Reads from the local replica for an API client: at once, or once it has applied this node's
 * last forwarded write, or (?consistent=true) the leader's read index. reply() answers; `name`
 * is passed through ("" when unused); `consistent` says whether the read was linearizable. */
#define NODE_READ_NAME_MAX 160 /* "APP/MS/REPLICA" fits */
typedef void (*node_read_fn)(struct node *n, struct evhttp_request *req, const char *name,
                             bool consistent);
void node_raft_read(struct node *n, struct evhttp_request *req, const char *name,
                    node_read_fn reply);
/* The container runtime: engine ping, gossip of its state, reconcile passes, the CALL_RT_STATUS
 * service (node_runtime.c). Without --engine and without a default socket the node runs no
 * containers. */
int node_runtime_start(struct node *n, struct mesh_err *err);
void node_runtime_stop(struct node *n);
/* The desired state changed: reconcile now (or right after the pass in progress) instead of
 * at the next tick. */
void node_runtime_kick(struct node *n);
/* What this node observes of its replicas ("app/ms/replica" -> {"state", "message", "since",
 * "restarts", "container"}, borrowed until the next loop pass; runtime/observed.h), NULL when
 * it runs no containers; and of one of them, or NULL. Served to other nodes as CALL_RT_STATUS. */
const json_t *node_runtime_observed(struct node *n);
const json_t *node_runtime_status(struct node *n, const char *app, const char *ms,
                                  uint32_t replica);

/* GET /v1/logs/APP/MS[/REPLICA]?follow=&tail= (node_logs.c), parsed without a node (the HTTP
 * fuzzer runs it): app and ms point into buf; tail -1 when not given. 0, or the client has its
 * 404/400 answer and a negative code. */
struct node_logs_args {
    const char *app, *ms;
    uint32_t replica;
    bool follow;
    int tail;
};
int node_logs_args(struct evhttp_request *req, const char *ref,
                   char buf[static NODE_READ_NAME_MAX + 1], struct node_logs_args *a);

/* The parsed spec of an application (new reference), parsed once per version (node_sched.c). */
json_t *node_spec_cached(struct node *n, const struct fsm_app *a);

/* "APP/MS" (or "APP/MS/REPLICA" when replica is not NULL; *replica = -1 when absent) split in
 * place into buf (node_sched.c). 0, or MESH_EINVAL. */
int node_split_ms_ref(const char *ref, char *buf, size_t len, const char **app, const char **ms,
                      long *replica);

/* `meshctl logs` (node_logs.c): GET /v1/logs/APP/MS[/REPLICA] and the STREAM_LOGS service. */
int node_logs_start(struct node *n, struct mesh_err *err);
/* After api_free and peers_free, before node_runtime_stop. */
void node_logs_close(struct node *n);

/* Routing (node_route.c): neighbour pings, gossip of the neighbours, shortest paths,
 * GET /v1/routes. The table is NULL until first computed; valid until the next loop pass. */
int node_routes_start(struct node *n, struct mesh_err *err);
void node_routes_stop(struct node *n); /* after peers_free */
const struct route_table *node_routes_table(struct node *n);
/* peers_call to dest along the routes: directly when dest answers directly (or no route is
 * known), else relayed hop by hop (CALL_RELAY). Only raft's forwarded writes and read indexes
 * are relayed. Same contract as peers_call. */
#define NODE_RELAY_MAX_REQUEST                                         \
    (FSM_SPEC_MAX + 1024) /* consensus/forward.h's FORWARD_MAX_REQUEST \
                           */
int node_call_routed(struct node *n, const struct mesh_addr *dest, uint16_t type,
                     const uint8_t *req, size_t len, size_t max_reply, uint64_t timeout_ms,
                     peers_reply_fn cb, void *ud);
/* The mesh address of the next hop towards the member that advertises dest (raft's
 * transport, node_raft.c): dest itself when it is a neighbour that answers directly or the
 * route is direct; MESH_ENOTFOUND when no member has that address or no route is known. */
int node_routes_next_hop_addr(struct node *n, const struct mesh_addr *dest,
                              struct mesh_addr *ret_hop);
/* Where a relay passes a tunnel for the member named dest that came from the hop at from
 * (node_tunnel.c): never back to from (nbrs_relay_hop). MESH_ENOTFOUND without a route,
 * MESH_EAGAIN when the only way is back. */
int node_routes_relay_hop(struct node *n, const char *dest, const struct mesh_addr *from,
                          struct mesh_addr *ret_hop);

/* Gossips this node's metadata (n->meta) after a change. */
void node_meta_publish(struct node *n);

/* Service listeners and tunnels (node_tunnel.c). Stop before peers_free. */
int node_tunnels_start(struct node *n, struct mesh_err *err);
void node_tunnels_stop(struct node *n);
/* Counters and listeners for GET /v1/status; new reference. */
json_t *node_tunnels_json(struct node *n);

/* Services (node_svc.c): GET /v1/services, PUT|DELETE /v1/services/NAME/expose|connect. */
int node_svc_start(struct node *n, struct mesh_err *err);
void node_svc_stop(struct node *n);
/* The catalog for the current state (rebuilt when the state changed); NULL before Raft runs. */
const struct svc_catalog *node_svc_catalog(struct node *n);
void svc_catalog_free(struct svc_catalog *c);
/* The catalog of fsm's state, without I/O (the fuzzer's entry too): spec_of gives an
 * application's canonical spec (a new reference, or NULL to leave it out; node_spec_cached).
 * NULL when memory ran out. */
typedef json_t *(*svc_spec_fn)(void *ud, const struct fsm_app *a);
struct svc_catalog *svc_catalog_build(const struct fsm *fsm, svc_spec_fn spec_of, void *ud);

/* A service declaration as a record of the desired state: key "expose/SERVICE/NODE" with the
 * value {"service", "node", "target"}, or "connect/NODE/HOST:PORT" with {"service", "node",
 * "listen"}. */
struct svc_rec {
    bool expose; /* else a listener (connect) */
    char service[FSM_APP_NAME_MAX + 1];
    char node[FSM_NODE_NAME_MAX + 1];
    struct mesh_addr addr; /* target or listen address, numeric, port != 0 */
};
/* Parses a stored record (key and value borrowed), as written by any node: 0 and *ret,
 * MESH_EUNSUPPORTED (not a service record) or MESH_EINVAL (not one this node would write: bad
 * JSON, a field missing or extra, a bad name or address, a key that disagrees with the value). */
int svc_rec_parse(const char *key, size_t key_len, const uint8_t *value, size_t len,
                  struct svc_rec *ret);
/* The PUT_REC command of r, in the one form the leader stores (fsm_cmd_put_rec's ownership). */
int svc_rec_encode(const struct svc_rec *r, struct raft_buffer *out);

/* The leader's scheduler loop and the placement API (node_sched.c). */
int node_sched_start(struct node *n, struct mesh_err *err);
void node_sched_stop(struct node *n);
/* Frees listings in flight; after peers_free (their calls never answer then). */
void node_sched_close(struct node *n);
/* Raft applied entries (node_raft.c): when the desired state changed, the leader schedules and
 * every node reconciles, at once. */
void node_sched_changed(struct node *n);

/* Closes raft while the loop still runs; bounded in time. */
void node_raft_stop(struct node *n);
/* Frees the writes and reads node_raft_stop left waiting for a callback; after peers_free. */
void node_raft_free(struct node *n);
/* {"state", "leader", "term", "commit_index", "applied_index", "voters", "standbys",
 * "disk_full_at_start"} by node name. */
json_t *node_raft_status(struct node *n);

/* Frees what the API handlers still hold; after api_free and peers_free. */
void node_api_close(struct node *n);

/* Gets a member verified (swim_member.verified): unless it is already, was tried in the last
 * NODE_VERIFY_RETRY_MS or NODE_VERIFY_INFLIGHT tries are in flight, calls it (CALL_PING) at
 * its advertised address; the link's handshake proves its id, name and address if the key
 * holder is there (on_link_handshake). Used on demand, for the members this node is about to
 * trust (Raft candidates, placement targets, a conflicting epoch), never for all members. */
void node_verify_member(struct node *n, const struct swim_member *m);

/* The member's status name as the API shows it. */
const char *node_member_status(const struct swim_member *m);

#endif
