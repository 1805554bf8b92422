/* Image pulls: one pull per image however many replicas wait for it (a create that finds no
 * image asks for it; the next replicas of that image wait on the same slot), its progress as the
 * waiting replicas' message, and after a failure a retry with a backoff (RT_PULL_RETRY_MS
 * doubling to RT_PULL_RETRY_MAX_MS) with a local image inspect at most every RT_PULL_CHECK_MS
 * in between, so that an image loaded or imported meanwhile is used at once. At most
 * RT_PULLS_MAX images are pulled or wait for a retry at once.
 *
 * Owns the slots; must not decide what runs (it is told which images are wanted) nor talk to
 * the engine except through its io table (rt_io.h: image_pull, image_inspect, now, note). One
 * loop thread; not thread-safe. A slot is released once nothing is in flight for it; free the
 * object only after every pull and inspect has completed (the engine's close fails them with
 * MESH_ECLOSED). */
#ifndef FOGMESH_RUNTIME_PULLS_H
#define FOGMESH_RUNTIME_PULLS_H

#include <stdbool.h>
#include <stdint.h>

#include "rt_io.h"

#define RT_PULLS_MAX         16
#define RT_PULL_RETRY_MS     5000
#define RT_PULL_RETRY_MAX_MS 300000
#define RT_PULL_CHECK_MS     1000
#define RT_PULL_MSG_MAX      512
#define RT_IMAGE_REF_MAX     4096 /* bytes of a repo or tag: spec.h's SPEC_MAX_STRING */

struct rt_pulls;
struct rt_pull;

/* io is borrowed and must outlive the object. MESH_ENOMEM. */
int rt_pulls_new(const struct rt_io *io, struct rt_pulls **ret);
void rt_pulls_free(struct rt_pulls *ps); /* accepts NULL */

/* The slot of image, or NULL. */
struct rt_pull *rt_pulls_find(struct rt_pulls *ps, const char *image);
/* A create found no image: the slot of image, its pull started when it is new. NULL when
 * every slot is taken (or out of memory). */
struct rt_pull *rt_pulls_want(struct rt_pulls *ps, const char *image);

/* A pass begins: no image is wanted until rt_pull_wait says so. */
void rt_pulls_unmark(struct rt_pulls *ps);
/* A replica of this pass waits for pl: starts its retry when due, else checks for the image
 * locally (at most every RT_PULL_CHECK_MS). */
void rt_pull_wait(struct rt_pull *pl, uint64_t now);
/* A pass is done: the slots of images no replica waited for, with nothing in flight, go. */
void rt_pulls_sweep(struct rt_pulls *ps);

bool rt_pull_active(const struct rt_pull *pl);         /* the pull is in flight */
const char *rt_pull_message(const struct rt_pull *pl); /* "pulling ...", "image not found: ..." */
unsigned rt_pull_failures(const struct rt_pull *pl);
/* Slots taken (for tests). */
unsigned rt_pulls_count(const struct rt_pulls *ps);

#endif
