/* Time helpers shared by every folder: a duration in milliseconds as the struct timeval that
 * libevent's timers take (or the struct timespec of POSIX calls), and the monotonic clock.
 *
 * Owns: those conversions and the one reading of CLOCK_MONOTONIC that the daemon's loops hand
 * to the protocol state machines as "now". Must not: keep state, read the wall clock (log.c's
 * timestamps and the containers' "since" are wall-clock times and read it themselves), or be
 * used inside the I/O-free cores (swim, link, route, fsm, scheduler), which take now as an
 * argument so that tests can step time. Header only (static inline), no global state; safe
 * from any thread. */
#ifndef FOGMESH_COMMON_TIMEUTIL_H
#define FOGMESH_COMMON_TIMEUTIL_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

/* ms as a struct timeval: {ms / 1000, (ms % 1000) * 1000}. */
static inline struct timeval mesh_ms_to_timeval(uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* ms as a struct timespec: {ms / 1000, (ms % 1000) * 1000000}. */
static inline struct timespec mesh_ms_to_timespec(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    return ts;
}

/* Monotonic nanoseconds (CLOCK_MONOTONIC: never steps back, counts from an arbitrary start). */
static inline uint64_t mesh_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Monotonic milliseconds: the time base handed to the protocol state machines. */
static inline uint64_t mesh_now_ms(void)
{
    return mesh_now_ns() / 1000000u;
}

#endif
