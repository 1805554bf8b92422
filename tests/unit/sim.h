/* A deterministic simulated network for the SWIM state machine (after canonical/raft's
 * raft_fixture): N nodes in one process, simulated time in milliseconds, a priority queue of
 * in-flight packets and push-pull streams with random latency, random UDP loss, partitions
 * (nodes in different groups cannot talk), killing and restarting nodes. One seeded PRNG drives
 * everything (latency, loss and every node's io->random), so the same seed gives the same run.
 *
 * The mesh's routing on it (sim_enable_routing): every node also runs the neighbour probing,
 * link-state and routing core of netlink/neighbours.h, fed with its own SWIM membership; its
 * pings are calls over the simulated links, its link-state record is its SWIM metadata, and
 * its ping and route timers are stepped with the rest. Single links can be cut or slowed
 * (both directions, for packets, push-pulls and calls alike). Tests can make calls of their own
 * between nodes (sim_call, served through sim_on_call), e.g. relayed ones. */
#ifndef FOGMESH_TESTS_SIM_H
#define FOGMESH_TESTS_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "swim.h"

struct sim;

struct sim_net_stats {
    uint64_t sent, delivered, lost, cut, to_down;
    uint64_t pp_started, pp_ok, pp_failed;
    uint64_t calls, calls_ok;                    /* pings and sim_call's */
    uint64_t ls_published, links_up, links_down; /* routing */
};

struct nbrs;

/* Called for every member change on every node (after the node's own bookkeeping). */
typedef void (*sim_change_fn)(void *ctx, size_t node, const struct swim_member *m,
                              enum swim_member_state old);

/* base: the swim configuration every node gets (name, id, addr and meta are set per node). */
struct sim *sim_new(uint64_t seed, const struct swim_config *base);
void sim_free(struct sim *sim);

/* Adds and starts a node. name NULL → "n<i>", id NULL → derived from the index. Returns its
 * index. The node is alone until it joins. */
size_t sim_add_node(struct sim *sim, const char *name, const uint8_t *id);
size_t sim_count(const struct sim *sim);
struct swim *sim_swim(struct sim *sim, size_t i); /* NULL while killed */
const struct mesh_addr *sim_addr(const struct sim *sim, size_t i);
const char *sim_name(const struct sim *sim, size_t i);

/* Joins node i through the given seed nodes (at most SWIM_MAX_SEEDS). */
int sim_join(struct sim *sim, size_t i, const size_t *seeds, size_t nseeds);
/* The outcome io->join_done reported: false while none yet. */
bool sim_join_result(const struct sim *sim, size_t i, int *ret_rc, const char **ret_msg);
bool sim_leave_result(const struct sim *sim, size_t i, int *ret_rc);

void sim_kill(struct sim *sim, size_t i);    /* frees the node's swim: packets to it vanish */
void sim_restart(struct sim *sim, size_t i); /* same name, id, address; fresh state */

/* Stalls node i for ms (a GC pause, a swapped-out process): it does not tick, and what is sent
 * to it waits until it resumes. */
void sim_pause(struct sim *sim, size_t i, uint64_t ms);
void sim_set_latency(struct sim *sim, uint32_t min_ms, uint32_t max_ms);
void sim_set_loss(struct sim *sim, unsigned percent); /* per UDP packet, every link */
void sim_set_group(struct sim *sim, size_t i, int group);
void sim_heal(struct sim *sim); /* everyone back in group 0 */
void sim_on_change(struct sim *sim, sim_change_fn fn, void *ctx);

uint64_t sim_now(const struct sim *sim);
/* Processes every event up to now + ms, then sets the clock to now + ms. */
void sim_run_for(struct sim *sim, uint64_t ms);
/* Runs in steps of step_ms until pred returns true or max_ms have passed. Returns whether pred
 * held; *ret_elapsed (may be NULL) gets the simulated time taken. */
bool sim_run_until(struct sim *sim, bool (*pred)(struct sim *, void *), void *ctx, uint64_t max_ms,
                   uint64_t step_ms, uint64_t *ret_elapsed);
const struct sim_net_stats *sim_net_stats(const struct sim *sim);

/* Sends a raw UDP payload to node i as if from `from` (for tests that forge packets). */
void sim_inject(struct sim *sim, size_t i, const struct mesh_addr *from, const uint8_t *buf,
                size_t len);

/* ---- routing and calls ---- */

/* Gives every node (and every node added or restarted later) a routing core; its first ping
 * round is NBRS_PING_MS later. */
void sim_enable_routing(struct sim *sim);
struct nbrs *sim_nbrs(struct sim *sim, size_t i); /* NULL without routing or while killed */

/* Cuts (or restores) the link between a and b, or gives it its own latency (0: the
 * network's), in both directions. */
void sim_cut_link(struct sim *sim, size_t a, size_t b, bool cut);
void sim_set_link_latency(struct sim *sim, size_t a, size_t b, uint32_t ms);

enum sim_call_kind { SIM_CALL_PING, SIM_CALL_USER };

/* A call being served; answer it exactly once with sim_call_respond. */
struct sim_call_req;

/* serve: node got a call from node `from` (data borrowed for the call). reply: the answer to a
 * sim_call from node, with its cookie: rc MESH_EIO when the call failed (link cut, node
 * down, timeout), else what sim_call_respond gave. */
typedef void (*sim_serve_fn)(void *ctx, size_t node, size_t from, struct sim_call_req *req,
                             const uint8_t *data, size_t len);
typedef void (*sim_reply_fn)(void *ctx, size_t node, void *cookie, int rc, const uint8_t *reply,
                             size_t len);
void sim_on_call(struct sim *sim, sim_serve_fn serve, sim_reply_fn reply, void *ctx);

/* Starts a call from node `from` to the node at `to` (buf copied): it arrives after the link's
 * latency when the link works, else fails after timeout_ms; an answer later than timeout_ms
 * counts as a failure. Always 0: the outcome comes through the reply hook. */
int sim_call(struct sim *sim, size_t from, const struct mesh_addr *to, const uint8_t *buf,
             size_t len, uint64_t timeout_ms, void *cookie);
void sim_call_respond(struct sim *sim, struct sim_call_req *req, int rc, const uint8_t *reply,
                      size_t len);

#endif
