/* Accept backoff, shared by the API socket (meshd/api.c) and the mesh port (netlink/peers.c).
 *
 * When accept() fails for lack of descriptors (EMFILE, ENFILE) or memory, the listening socket
 * stays readable, so accepting again at once spins at 100 % CPU. Instead the listener stops for
 * a pause: 100 ms, doubling up to 1 s while the shortage lasts, back to 100 ms once accepts have
 * worked for a second after a pause (Go's net/http Server.Serve sleeps 5 ms doubling to 1 s;
 * nginx disables accept events for 500 ms). The owner holds one timer: it fires at the end of a
 * pause (accept again, then wait ACCEPT_CALM_MS) and at the end of the calm period (forget). */
#ifndef FOGMESH_COMMON_BACKOFF_H
#define FOGMESH_COMMON_BACKOFF_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#define ACCEPT_BACKOFF_MIN_MS 100
#define ACCEPT_BACKOFF_MAX_MS 1000
#define ACCEPT_CALM_MS        1000

struct accept_backoff {
    uint32_t wait_ms; /* the last pause; 0 when none is remembered */
    bool paused;      /* not accepting now */
};

/* Whether accept()'s errno e calls for a pause (else it concerns one connection only). */
static inline bool accept_backoff_wanted(int e)
{
    return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

/* Starts a pause after a failed accept; returns its length. */
static inline uint32_t accept_backoff_pause(struct accept_backoff *b)
{
    uint32_t w = b->wait_ms ? 2 * b->wait_ms : ACCEPT_BACKOFF_MIN_MS;
    b->wait_ms = w > ACCEPT_BACKOFF_MAX_MS ? ACCEPT_BACKOFF_MAX_MS : w;
    b->paused = true;
    return b->wait_ms;
}

/* The owner's timer fired: returns the next timer (ms) to set, 0 for none. After a pause the
 * listener accepts again (b->paused is false) and the calm period starts. */
static inline uint32_t accept_backoff_timer(struct accept_backoff *b)
{
    if (b->paused) {
        b->paused = false;
        return ACCEPT_CALM_MS;
    }
    b->wait_ms = 0;
    return 0;
}

#endif
