/* The reconciler's decisions, without I/O: which of this node's containers to create, start or
 * remove so that they match the placements the leader committed for this node, and the Docker
 * Engine API create body of a replica.
 *
 * Every container fogmesh creates carries labels naming the mesh node, the app, the
 * microservice, the replica and a hash of what it runs (image, command, env, ports, volumes,
 * resources, restart policy). A container whose hash differs from the desired one is replaced;
 * containers without our node label are never touched, so several meshd may share one engine.
 *
 * A replica's `config` is not in the hash: it lives in a file on the node, RT_CONFIG_FILE in a
 * directory of its own that is bind-mounted read-only at RT_CONFIG_MOUNT (the environment
 * variable RT_CONFIG_ENV names the file). A change of config alone rewrites the file
 * atomically (rename) and signals the running container (SIGHUP): no recreate. The directory is
 * mounted, not the file, so that a rename is visible inside the container. */
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

#define RT_CONFIG_MOUNT  "/fogmesh"    /* in the container, read-only */
#define RT_CONFIG_FILE   "config.json" /* in that directory */
#define RT_CONFIG_ENV    "FOGMESH_CONFIG"
#define RT_CONFIG_SIGNAL "HUP"

/* A replica this node should run. ms_spec is the microservice's canonical spec (borrowed). */
struct rt_desired {
    const char *app;
    const char *ms;
    uint32_t replica;
    const json_t *ms_spec;
    const char *image;      /* for this node's architecture */
    const char *config_dir; /* host directory mounted at RT_CONFIG_MOUNT; NULL: none */
    bool config_stale;      /* the config file does not hold rt_config_text() yet */
    bool held;              /* no container now: image being pulled, or a backoff */
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

enum rt_op {
    RT_CREATE = 1, /* create then start the desired replica */
    RT_START,      /* start a stopped container that matches */
    RT_REMOVE,     /* force-remove a container */
    RT_CONFIG,     /* write the desired replica's config file */
    RT_SIGNAL,     /* tell a running container its config changed (RT_CONFIG_SIGNAL) */
};

struct rt_action {
    int op;         /* enum rt_op */
    size_t desired; /* index in the desired array; SIZE_MAX for RT_REMOVE */
    const char *id; /* RT_START, RT_REMOVE, RT_SIGNAL: the container (borrowed from observed) */
};

/* The hash of what a replica runs: BLAKE2b of the canonical microservice spec without `config`
 * (a config change reaches a running container without a recreate), the image and the config
 * directory (NULL: none) that the container mounts. */
void rt_hash(const json_t *ms_spec, const char *image, const char *config_dir,
             char out[static RT_HASH_LEN + 1]);

/* What the config file of a replica holds: its spec's `config` ({} when absent) as compact JSON
 * with sorted keys and a final newline. malloc'd (the caller frees); NULL when out of memory. */
char *rt_config_text(const json_t *ms_spec);

/* The name of a replica's config directory: APP.MS.REPLICA. MESH_EINVAL when app or ms is not a
 * DNS label (lowercase letters, digits, '-': the spec's rule, so the name is unambiguous and
 * safe in a path) or len is too short. */
int rt_config_dir_name(const struct rt_desired *d, char *buf, size_t len);

/* Splits an image reference into what POST /images/create takes: fromImage and tag. The tag
 * is after the last ':' that follows the last '/', or the digest after '@'; "latest" when
 * neither. MESH_EINVAL when empty or a part does not fit. */
int rt_image_ref(const char *image, char *repo, size_t repo_len, char *tag, size_t tag_len);

/* The wait before retry number `failures` (1 for the first failure): base doubled per failure,
 * at most cap. */
uint64_t rt_backoff_ms(unsigned failures, uint64_t base_ms, uint64_t cap_ms);

/* Removals first (stale hashes, duplicates, containers for replicas no longer placed here),
 * then config writes of every desired replica whose file is stale, each followed by a signal
 * to its running container, then starts of stopped matching containers and creations, both
 * only for replicas that are not held. A config is thus in place before its container is created or
 * started. At most cap actions; returns the number. Deterministic for the same inputs. */
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
