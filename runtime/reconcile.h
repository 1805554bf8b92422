/* The reconciler's decisions, without I/O: which of this node's containers to create, start or
 * remove so that they match the placements the leader committed for this node, and the Docker
 * Engine API create body of a replica.
 *
 * Every container fogmesh creates carries labels naming the mesh node, the app, the
 * microservice, the replica and a hash of what it runs (image, command, env, ports, volumes,
 * resources, restart policy). A container whose hash differs from the desired one is replaced;
 * containers without our node label are never touched, so several meshd may share one engine. */
#ifndef FOGMESH_RUNTIME_RECONCILE_H
#define FOGMESH_RUNTIME_RECONCILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define RT_LABEL_NODE    "fogmesh.node"
#define RT_LABEL_APP     "fogmesh.app"
#define RT_LABEL_MS      "fogmesh.microservice"
#define RT_LABEL_REPLICA "fogmesh.replica"
#define RT_LABEL_HASH    "fogmesh.hash"
#define RT_HASH_LEN      16 /* hex characters */

/* A replica this node should run. ms_spec is the microservice's canonical spec (borrowed). */
struct rt_desired {
    const char *app;
    const char *ms;
    uint32_t replica;
    const json_t *ms_spec;
    const char *image; /* for this node's architecture */
    char hash[RT_HASH_LEN + 1];
};

/* A container of ours the engine reported. */
struct rt_observed {
    const char *id;
    const char *app;
    const char *ms;
    uint32_t replica;
    const char *hash;
    bool running;
};

enum rt_op { RT_CREATE = 1, RT_START, RT_REMOVE };

struct rt_action {
    int op;         /* enum rt_op */
    size_t desired; /* RT_CREATE: index in the desired array */
    const char *id; /* RT_START, RT_REMOVE: the container (borrowed from observed) */
};

/* The hash of what a replica runs: BLAKE2b of the canonical microservice spec without `config`
 * (a config change reaches a running container without a recreate) and the image. */
void rt_hash(const json_t *ms_spec, const char *image, char out[static RT_HASH_LEN + 1]);

/* Removals first (stale hashes, duplicates, containers for replicas no longer placed here), then
 * starts of stopped matching containers, then creations. At most cap actions; returns the
 * number. Deterministic for the same inputs. */
size_t rt_plan(const struct rt_desired *desired, size_t nd, const struct rt_observed *observed,
               size_t no, struct rt_action *actions, size_t cap);

/* The container name: fm-NODE-APP-MS-REPLICA. */
void rt_container_name(const char *node, const struct rt_desired *d, char *buf, size_t len);

/* The POST /containers/create body (new reference) for desired replica d on node. Host
 * networking: fogmesh carries traffic between services itself (issue 6), and Podman's
 * compatible API would otherwise put the container on a bridge. */
json_t *rt_create_body(const char *node, const struct rt_desired *d);

/* Reads our labels from a /containers/json entry into *ret (strings borrowed from entry).
 * MESH_ENOTFOUND when the container is not one of ours. */
int rt_observed_from_json(const json_t *entry, struct rt_observed *ret);

#endif
