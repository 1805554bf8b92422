/* Observed status: what this node sees of the replicas placed on it, the map it serves to the
 * other nodes (CALL_RT_STATUS, runtime/status_wire.h) and on its own API:
 *   "APP/MS/REPLICA" -> {"state", "message", "since", "restarts", "container"}
 * and the details of its containers that the list does not carry (restart count, start and
 * finish times), asked of the engine by an inspect only when the list shows a container in a
 * new state, and every RT_INFO_REFRESH_MS (a restart between two lists looks like an unchanged
 * "running"); at most RT_INSPECTS_MAX in flight.
 *
 * Owns the map and the details; must not decide what runs (reconcile.h, reconciler.h) nor talk
 * to the engine except through its io table (rt_io.h, inspect, now and wallclock). One loop
 * thread; not thread-safe. Inspects in flight refer to the object: free it only after they
 * have completed (the engine's close fails them with MESH_ECLOSED first). */
#ifndef FOGMESH_RUNTIME_OBSERVED_H
#define FOGMESH_RUNTIME_OBSERVED_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "rt_io.h"

#define RT_STATE_PENDING  "pending"  /* placed here, no container yet */
#define RT_STATE_PULLING  "pulling"  /* its image is being pulled (progress as message) */
#define RT_STATE_FAILED   "failed"   /* cannot run now; the message says why */
#define RT_STATE_STARTING "starting" /* a start was asked */
#define RT_STATE_RUNNING  "running"
#define RT_STATE_STOPPED  "stopped" /* the container exists and is not running */

#define RT_INFO_REFRESH_MS 10000
#define RT_INSPECTS_MAX    8

struct rt_obs;

/* io is borrowed and must outlive the object. MESH_ENOMEM. */
int rt_obs_new(const struct rt_io *io, struct rt_obs **ret);
void rt_obs_free(struct rt_obs *o); /* accepts NULL */

/* The current map (borrowed; valid until the next call that changes it). */
const json_t *rt_obs_map(const struct rt_obs *o);

/* Sets into[key] (into: the map being built, or the current one). since NULL: the current
 * map's since for key when its state is the same, else now (wallclock). container: the id (its
 * first 12 characters are kept) or NULL. */
void rt_obs_put(const struct rt_obs *o, json_t *into, const char *key, const char *state,
                const char *msg, const char *since, int64_t restarts, const char *container);
/* Sets key in the current map, without restarts and container. */
void rt_obs_set(struct rt_obs *o, const char *key, const char *state, const char *msg);
/* The map built becomes the current one (the reference is taken). */
void rt_obs_replace(struct rt_obs *o, json_t *next);

/* The engine listed container id in state (its "State"): its details are asked for when the
 * state is new, or old, and an inspect slot is free. */
void rt_obs_listed(struct rt_obs *o, const char *id, const char *state);
/* Forgets the details of the containers that are not keys of listed (and not being asked). */
void rt_obs_forget_unlisted(struct rt_obs *o, const json_t *listed);
/* What is known of container id: its restart count and since when it is in its state (the
 * start time when running, else the finish time; NULL when unknown). */
void rt_obs_container(const struct rt_obs *o, const char *id, bool running, const char **ret_since,
                      int64_t *ret_restarts);
/* Inspects in flight (for tests). */
unsigned rt_obs_inspects(const struct rt_obs *o);

#endif
