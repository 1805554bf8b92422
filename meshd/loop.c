#include "loop.h"

#include <string.h>
#include <time.h>

#include "err.h"

static void uv_pass(struct mesh_loop *l)
{
    uv_run(&l->uv, UV_RUN_NOWAIT);
    l->passes++;
    /* Re-arm from the timeout libuv would have blocked for: -1 means no timer is pending (the
     * fd watch alone wakes us), 0 means work is queued and we must come back at once. A loop
     * with no active handle also reports 0 (it "would exit"): nothing to wait for then. */
    int timeout = uv_loop_alive(&l->uv) ? uv_backend_timeout(&l->uv) : -1;
    event_del(l->uv_timer);
    if (timeout >= 0) {
        struct timeval tv = mesh_ms_to_timeval((uint64_t)timeout);
        event_add(l->uv_timer, &tv);
    }
}

static void on_uv_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    /* Nothing to do here: the uv_run pass after every libevent iteration does the work. */
}

int mesh_loop_init(struct mesh_loop *l)
{
    memset(l, 0, sizeof *l);
    l->base = event_base_new();
    if (!l->base)
        goto fail;
    if (uv_loop_init(&l->uv) != 0)
        goto fail;
    l->uv_ready = true;
    l->uv_io = event_new(l->base, uv_backend_fd(&l->uv), EV_READ | EV_PERSIST, on_uv_event, l);
    l->uv_timer = evtimer_new(l->base, on_uv_event, l);
    if (!l->uv_io || !l->uv_timer || event_add(l->uv_io, NULL) != 0)
        goto fail;
    return 0;
fail:
    mesh_loop_close(l);
    return MESH_ENOMEM;
}

int mesh_loop_run(struct mesh_loop *l)
{
    l->stopping = false;
    uv_pass(l);
    while (!l->stopping) {
        if (event_base_loop(l->base, EVLOOP_ONCE) < 0)
            return MESH_EIO;
        uv_pass(l);
    }
    return 0;
}

void mesh_loop_stop(struct mesh_loop *l)
{
    l->stopping = true;
    if (l->base)
        event_base_loopbreak(l->base);
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void mesh_loop_close(struct mesh_loop *l)
{
    if (l->uv_timer)
        event_free(l->uv_timer);
    if (l->uv_io)
        event_free(l->uv_io);
    l->uv_timer = l->uv_io = NULL;
    if (l->uv_ready) {
        uv_walk(&l->uv, close_walk_cb, NULL);
        uv_run(&l->uv, UV_RUN_DEFAULT);
        uv_loop_close(&l->uv);
        l->uv_ready = false;
    }
    if (l->base)
        event_base_free(l->base);
    l->base = NULL;
}
