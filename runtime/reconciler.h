/* The reconciler: a pass every tick (and at once when the desired state changes) that makes
 * this node's containers match the placements the leader committed for it, beside the config
 * files, image pulls, holds and observed status the pass needs.
 *
 * A pass: list our containers; note their details (observed.h); build the desired replicas from
 * the placements (their config text and the hash of what they run, reconcile.h); decide what
 * waits (a pull, pulls.h, or a hold, holds.h); make the new status map; plan (rt_plan) and run
 * the actions one after the other: remove, write a config, signal, start, create then start.
 * - A create that finds no image starts a pull (or waits on the pull of that image already
 *   known); the replica shows "pulling" and the progress, "failed" after a failed pull.
 * - Another create or start failure holds the replica ("failed", the engine's message).
 * - While the engine does not answer its ping (rt_reconciler_engine), every replica placed here
 *   is "failed", "engine unavailable ...", and no pass runs.
 * - Config files live in root/APP.MS.REPLICA (reconcile.h); without a root, none.
 *
 * Owns the pass, the config cache, the pulls, holds and observed status; must not decide
 * placement (it acts on what it is given) nor do I/O except through its io table (rt_io.h).
 * One loop thread; not thread-safe. rt_reconciler_close() before the engine goes (no new call
 * is made after it; the engine's close then fails what is in flight, which ends the pass), and
 * rt_reconciler_free() only after every call has completed. */
#ifndef FOGMESH_RUNTIME_RECONCILER_H
#define FOGMESH_RUNTIME_RECONCILER_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "rt_io.h"

#define RT_ACTIONS_MAX 64 /* per pass; the rest in the next */

struct rt_reconciler;

enum rt_engine_state { RT_ENGINE_UNKNOWN, RT_ENGINE_UP, RT_ENGINE_DOWN };

/* node: this mesh node's name (copied; containers are labelled and named with it). root: the
 * absolute directory of the config files (copied; NULL: containers get none). io is borrowed
 * and must outlive the object. MESH_ENOMEM. */
int rt_reconciler_new(const char *node, const char *root, const struct rt_io *io,
                      struct rt_reconciler **ret);
void rt_reconciler_free(struct rt_reconciler *r); /* accepts NULL; see the contract above */
void rt_reconciler_close(struct rt_reconciler *r);

/* The engine answered its ping (up) or did not (down, err: why). Going down makes every replica
 * placed here "failed" at once. */
void rt_reconciler_engine(struct rt_reconciler *r, bool up, const char *err);
enum rt_engine_state rt_reconciler_engine_state(const struct rt_reconciler *r);

/* The periodic tick: a pass starts unless one runs, the engine is not up or the desired state is
 * not known; with the engine down the status is made again (placements may change meanwhile). */
void rt_reconciler_tick(struct rt_reconciler *r);
/* The desired state changed: a pass now (through io->kick) or right after the one in progress. */
void rt_reconciler_kick(struct rt_reconciler *r);
bool rt_reconciler_busy(const struct rt_reconciler *r); /* a pass runs */

/* The observed status map ("APP/MS/REPLICA" -> {"state", "message", "since", "restarts",
 * "container"}), borrowed until the next pass or engine change. */
const json_t *rt_reconciler_status(const struct rt_reconciler *r);

/* The parts, for tests. */
struct rt_pulls *rt_reconciler_pulls(struct rt_reconciler *r);
struct rt_holds *rt_reconciler_holds(struct rt_reconciler *r);
struct rt_obs *rt_reconciler_obs(struct rt_reconciler *r);

#endif
