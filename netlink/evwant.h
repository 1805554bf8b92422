/* Keeps a libevent event added or deleted as wanted, remembering which in *added, so that
 * callers can state their interest after every change without a syscall when nothing changes. */
#ifndef FOGMESH_NETLINK_EVWANT_H
#define FOGMESH_NETLINK_EVWANT_H

#include <stdbool.h>

#include <event2/event.h>

static inline void ev_want(struct event *ev, bool *added, bool on)
{
    if (on == *added)
        return;
    if (on)
        event_add(ev, NULL);
    else
        event_del(ev);
    *added = on;
}

#endif
