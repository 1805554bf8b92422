/* What a node tells the mesh about itself through gossip metadata (observed state, never Raft):
 * architecture, OS, CPU count, memory, meshd version and labels. Encoded as one msgpack array
 *
 *     [1, arch, os, cpus, memory_bytes, version, [[key, value], ...], engine, ls]
 *
 * (engine, the container engine's state, came later and may be missing: "none"; ls, the
 * node's neighbours with their RTTs as netlink/route.h encodes them (bin), later still, and
 * may be missing or empty: no links known).
 * that fits SWIM_META_MAX bytes. Decoders ignore trailing elements, so later capabilities can
 * append their own (engine state, resources in use) without breaking older nodes. */
#ifndef FOGMESH_MESHD_NODEMETA_H
#define FOGMESH_MESHD_NODEMETA_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "route.h"

#define NODEMETA_VERSION 1

enum nodemeta_engine {
    NODEMETA_ENGINE_NONE = 0, /* no engine configured or found, or not known yet */
    NODEMETA_ENGINE_UP = 1,
    NODEMETA_ENGINE_DOWN = 2,
};
const char *nodemeta_engine_name(enum nodemeta_engine e);

struct node_meta {
    char arch[16]; /* Docker's names: amd64, arm64, arm, ... */
    char os[16];
    uint32_t cpus;
    uint64_t memory; /* bytes */
    char version[24];
    struct config_label labels[CONFIG_LABEL_MAX];
    size_t nlabels;
    enum nodemeta_engine engine;
    uint8_t ls[ROUTE_LS_MAX]; /* route_ls_encode()d neighbours; ls_len 0: none */
    size_t ls_len;
};

/* This host's facts and cfg's labels. */
void nodemeta_local(struct node_meta *m, const struct meshd_config *cfg);

/* The architecture name used in specs and metadata for a uname machine string. */
const char *nodemeta_arch_name(const char *machine);

/* Encodes into buf; MESH_ETOOBIG when it does not fit in cap. Returns the length. */
int nodemeta_encode(const struct node_meta *m, uint8_t *buf, size_t cap);

/* Decodes; MESH_EMALFORMED on anything unexpected (outputs untouched). */
int nodemeta_decode(const uint8_t *buf, size_t len, struct node_meta *ret);

/* A JSON object {"arch", "os", "cpus", "memory", "version", "labels": {}}; new reference. */
json_t *nodemeta_json(const struct node_meta *m);

#endif
