/* libevent binding of a struct link (link.h) to a TCP socket.
 *
 * Contract (after libuv's handles): the owner keeps the linkio until on_close has fired, which
 * happens exactly once, from the event loop (never from inside a linkio_* call or a link
 * callback), after the socket is closed; the owner may call linkio_free from on_close or any
 * time after. If linkio_connect/linkio_adopt fail, nothing is created and no callback fires.
 * linkio_free before on_close aborts the link silently (no callback); it must not be called
 * from inside a link callback. */
#ifndef FOGMESH_NETLINK_LINKIO_H
#define FOGMESH_NETLINK_LINKIO_H

#include <stdint.h>

#include <event2/event.h>

#include "addr.h"
#include "err.h"
#include "link.h"

#define LINKIO_DEFAULT_CONNECT_TIMEOUT 5000 /* ms */

struct linkio;

struct linkio_config {
    struct link_config link;
    /* Link callbacks, called with ud. on_output is ignored (linkio uses it). */
    struct link_callbacks cb;
    /* Exactly once: err->code is 0 after our own linkio_close, MESH_ECLOSED when the peer
     * closed (err->msg says whether with GOAWAY or by dropping the connection), else the error
     * that ended the link. err is valid during the call. Required. */
    void (*on_close)(void *ud, const struct mesh_err *err);
    void *ud;
    uint64_t connect_timeout_ms; /* 0: LINKIO_DEFAULT_CONNECT_TIMEOUT */
};

/* Connects (non-blocking) to addr and runs the handshake as initiator (cfg->link.initiator is
 * forced). cfg is copied. On failure *ret is untouched and err says why. */
int linkio_connect(struct event_base *base, const struct mesh_addr *addr,
                   const struct linkio_config *cfg, struct linkio **ret, struct mesh_err *err);

/* Adopts an accepted TCP socket as responder. On success linkio owns fd (made non-blocking and
 * close-on-exec); on failure the caller still owns it. */
int linkio_adopt(struct event_base *base, int fd, const struct linkio_config *cfg,
                 struct linkio **ret, struct mesh_err *err);

/* The link, for link_channel_* calls and stats. Output produced by those calls is flushed
 * from the event loop. */
struct link *linkio_link(struct linkio *lio);

/* Graceful close: GOAWAY, flush, close the socket, then on_close. Idempotent. */
void linkio_close(struct linkio *lio);

void linkio_free(struct linkio *lio);

#endif
