/* The STREAM_LOGS wire (meshd/node_logs.c): the open payload a node sends to the node that runs
 * a replica, and the error the hosting node answers with. Pure encoders and bounds-checked
 * decoders of peer bytes, nothing else: no I/O, no state, no allocation; safe from any thread.
 *
 * Open payload, msgpack (common/wire.h), at most LINK_OPEN_PAYLOAD_MAX bytes:
 *   [version = RT_LOGS_OPEN_VERSION, app, ms, replica, follow, all, tail]
 * app and ms are DNS labels (the spec's rule), all = true asks for the whole log (tail then 0),
 * else the last `tail` lines (<= RT_LOGS_TAIL_MAX). More elements after these are skipped (a
 * later version may add some); another version is MESH_EUNSUPPORTED.
 *
 * The stream's answer: one status byte first, RT_LOGS_STATUS_OK then the output, or
 * RT_LOGS_STATUS_ERR then "CODE message" (CODE the HTTP status the asking node answers with,
 * e.g. "404 ..."), then FIN. */
#ifndef FOGMESH_RUNTIME_LOGS_WIRE_H
#define FOGMESH_RUNTIME_LOGS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define RT_LOGS_OPEN_VERSION 1
#define RT_LOGS_NAME_MAX     63 /* app and ms: a DNS label */
#define RT_LOGS_TAIL_MAX     1000000
#define RT_LOGS_OPEN_MAX     160 /* bytes of an encoded open payload, at most */
#define RT_LOGS_STATUS_OK    0
#define RT_LOGS_STATUS_ERR   1

struct rt_logs_open {
    char app[RT_LOGS_NAME_MAX + 1];
    char ms[RT_LOGS_NAME_MAX + 1];
    uint32_t replica;
    bool follow;
    int32_t tail; /* -1: the whole log */
};

/* Encodes o into buf (cap bytes): the length, MESH_EINVAL when a field is out of its bounds,
 * MESH_ETOOBIG when cap is too small. */
int rt_logs_open_encode(const struct rt_logs_open *o, uint8_t *buf, size_t cap);

/* Decodes a peer's open payload (borrowed) into *ret: 0, MESH_EMALFORMED or MESH_EUNSUPPORTED
 * (another version); *ret is untouched on failure. */
int rt_logs_open_decode(const uint8_t *buf, size_t len, struct rt_logs_open *ret);

/* The error text "CODE message" into buf (cap bytes, NUL-terminated, message cut to fit): the
 * length without the NUL. code is taken as 502 unless 400..599. */
size_t rt_logs_error_encode(int code, const char *msg, char *buf, size_t cap);

/* A hosting node's error text (len bytes, borrowed, not NUL-terminated): *ret_code is its HTTP
 * status when it begins with one an error may have ("4xx " or "5xx "), else 502 and the whole
 * text is the message. The message goes into msg (cap > 0 bytes, NUL-terminated, cut to fit)
 * with every byte that is not printable ASCII replaced by '?' (it goes into a JSON string and
 * onto terminals). */
void rt_logs_error_decode(const uint8_t *text, size_t len, int *ret_code, char *msg, size_t cap);

#endif
