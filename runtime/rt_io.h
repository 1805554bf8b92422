/* The I/O table of the reconciler (runtime/reconciler.h) and of the parts it is made of
 * (observed.h, pulls.h, holds.h): every engine call, the desired state, the config files, the
 * clocks and the log go through it, so the logic runs on a fake engine in virtual time in unit
 * tests (tests/unit/test_reconciler.c) and on the real one in meshd (meshd/node_runtime.c).
 *
 * Async contract, as the engine client's (runtime/engine.h, STYLE.md 5): a call that takes a
 * struct rt_call either returns an error (a negative MESH_E* code; call->done never fires) or
 * returns 0 and fires call->done exactly once, later, from the caller's loop, never from inside
 * the call; MESH_ECLOSED when the engine goes away. The caller of the io owns nothing of the
 * rt_call: it is the module's, valid until done has returned. Strings and JSON passed to an io
 * function are borrowed for the call only (copy what must outlive it). */
#ifndef FOGMESH_RUNTIME_RT_IO_H
#define FOGMESH_RUNTIME_RT_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

/* What an engine call answered; valid only during the done callback. */
struct rt_result {
    int status;         /* 0, or a negative MESH_E* code */
    const char *msg;    /* why, when status < 0 ("" else) */
    const char *id;     /* create: the new container's id; else NULL */
    const json_t *json; /* the parsed body when there is one (list, inspect) */
};

struct rt_call {
    void (*done)(struct rt_call *c, const struct rt_result *res);
    /* Pulls: one line of progress ({"status", "progress"}); NULL elsewhere. */
    void (*progress)(struct rt_call *c, const json_t *line);
    void *data;
};

/* A replica the desired state places on this node, as the caller resolved it from its spec. */
struct rt_placed {
    const char *app, *ms; /* copied by the reconciler at once */
    uint32_t replica;
    const json_t *ms_spec; /* canonical microservice spec; NULL: nothing to run (no valid spec) */
    const char *image;     /* for this node's architecture; NULL (with ms_spec): none */
};

enum rt_note { RT_NOTE_DEBUG, RT_NOTE_INFO, RT_NOTE_WARN };

struct rt_io {
    void *ud;
    /* This node's containers (all states), as GET /containers/json lists them: res->json. */
    int (*list)(void *ud, struct rt_call *c);
    /* GET /containers/{id}/json: res->json. */
    int (*inspect)(void *ud, const char *id, struct rt_call *c);
    /* Creates (res->id), starts, force-removes, signals a container. */
    int (*create)(void *ud, const char *name, const json_t *body, struct rt_call *c);
    int (*start)(void *ud, const char *id, struct rt_call *c);
    int (*remove)(void *ud, const char *id, struct rt_call *c);
    int (*kill)(void *ud, const char *id, const char *signal, struct rt_call *c);
    /* Pulls repo:tag (c->progress on each line); inspects a local image (0: it is there). */
    int (*image_pull)(void *ud, const char *repo, const char *tag, struct rt_call *c);
    int (*image_inspect)(void *ud, const char *image, struct rt_call *c);
    /* Whether the desired state is known yet (no placement is acted on before). */
    bool (*desired_known)(void *ud);
    /* The replicas placed here: *ret (malloc'd, the reconciler frees) of *ret_n, whose specs
     * and images stay valid while *ret_keep (a reference the reconciler drops when done with
     * them; may be NULL) lives. 0 or MESH_ENOMEM. */
    int (*placements)(void *ud, struct rt_placed **ret, size_t *ret_n, json_t **ret_keep);
    /* The config file of dir (root/dirname): its text (malloc'd; "" when none or unreadable),
     * NULL when out of memory. */
    char *(*config_read)(void *ud, const char *dir);
    /* Writes text as dir's config file atomically (so a container never sees it half written). */
    int (*config_write)(void *ud, const char *dirname, const char *dir, const char *text,
                        struct mesh_err *err);
    /* Removes the config dirs under the root whose names are not keys of keep. */
    void (*config_sweep)(void *ud, const json_t *keep);
    /* Asks for rt_reconciler_tick() soon, from the loop (not from inside this call). */
    void (*kick)(void *ud);
    uint64_t (*now_ms)(void *ud);              /* monotonic */
    void (*wallclock)(void *ud, char buf[32]); /* now, "YYYY-MM-DDTHH:MM:SSZ" (UTC) */
    /* What happened, for the caller's log (runtime/ never logs itself). */
    void (*note)(void *ud, enum rt_note level, const char *msg);
};

#endif
