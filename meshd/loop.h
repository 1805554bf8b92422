/* The daemon's one event loop: a libevent event_base with canonical/raft's libuv loop embedded
 * in it. libevent watches uv_backend_fd() and a timer set from uv_backend_timeout(); after every
 * libevent pass the loop runs uv_run(UV_RUN_NOWAIT), so work that a libevent callback queues on
 * libuv (a raft_apply, say) starts in the same iteration. Only raft lives on the libuv side. */
#ifndef FOGMESH_MESHD_LOOP_H
#define FOGMESH_MESHD_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <uv.h>

#include "timeutil.h" /* mesh_now_ms, the time base handed to the protocol state machines */

struct mesh_loop {
    struct event_base *base;
    uv_loop_t uv;
    bool uv_ready;
    struct event *uv_io;    /* persistent read watch on uv_backend_fd() */
    struct event *uv_timer; /* one-shot, re-armed from uv_backend_timeout() */
    bool stopping;
    uint64_t passes; /* loop iterations, for tests and status */
};

/* Sets up both loops. On failure nothing is left allocated. */
int mesh_loop_init(struct mesh_loop *l);

/* Runs until mesh_loop_stop() is called from a callback. Returns 0, or a negative error when
 * libevent fails. */
int mesh_loop_run(struct mesh_loop *l);

/* Makes mesh_loop_run() return after the current pass. */
void mesh_loop_stop(struct mesh_loop *l);

/* Closes every libuv handle still open (running their close callbacks), then frees both loops.
 * Accepts a zeroed or half-initialised loop. */
void mesh_loop_close(struct mesh_loop *l);

#endif
