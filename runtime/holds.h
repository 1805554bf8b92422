/* Holds: a replica whose create or start failed for a reason other than a missing image waits
 * before its next try (RT_HOLD_RETRY_MS doubling per failure to RT_HOLD_RETRY_MAX_MS) and shows
 * "failed" with the engine's message meanwhile. A hold is for one hash of the replica: a change
 * of its spec tries at once. A create that succeeds clears it; a replica no longer placed here
 * loses it.
 *
 * Owns the table, nothing else: no I/O at all (the time is given). One loop thread; not
 * thread-safe. */
#ifndef FOGMESH_RUNTIME_HOLDS_H
#define FOGMESH_RUNTIME_HOLDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define RT_HOLD_RETRY_MS     2000
#define RT_HOLD_RETRY_MAX_MS 60000

struct rt_holds;

int rt_holds_new(struct rt_holds **ret); /* MESH_ENOMEM */
void rt_holds_free(struct rt_holds *h);  /* accepts NULL */

/* key's create or start of hash failed at now with msg (copied): holds it. Returns when the
 * next try is due. */
uint64_t rt_holds_fail(struct rt_holds *h, const char *key, const char *hash, const char *msg,
                       uint64_t now);
/* Whether key (now wanting hash) waits at now: true and *ret_msg (borrowed until the next
 * change of the table) while its hold for the same hash lasts. A hold for another hash goes. */
bool rt_holds_check(struct rt_holds *h, const char *key, const char *hash, uint64_t now,
                    const char **ret_msg);
void rt_holds_clear(struct rt_holds *h, const char *key);
/* Drops the holds of the keys that are not keys of wanted. */
void rt_holds_prune(struct rt_holds *h, const json_t *wanted);
/* Failures counted for key (0: no hold), for tests. */
unsigned rt_holds_failures(const struct rt_holds *h, const char *key);

#endif
