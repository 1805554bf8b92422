/* The CALL_RT_STATUS wire: what a node observes of the replicas placed on it (runtime/
 * observed.h), as it answers a node that lists microservices. Pure encoders and bounds-checked
 * decoders of peer bytes: no I/O, no state; safe from any thread. The decoded map is a new
 * jansson object the caller owns.
 *
 * msgpack (common/wire.h): */
/* clang-format off */
/*   request: [version = RT_STATUS_VERSION]
 *   reply:   [version, [[key, state, message, since, restarts, container], ...]] */
/* clang-format on */
/* key "APP/MS/REPLICA" (DNS labels, a decimal replica), state one of the RT_STATE_* names,
 * message valid UTF-8 without NUL of at most RT_STATUS_MESSAGE_MAX bytes (the encoder cuts longer
 * ones at a character boundary), since at most RT_STATUS_SINCE_MAX printable ASCII bytes (an RFC
 * 3339 time), restarts an unsigned count, container "" or the short id (at most RT_STATUS_ID_MAX
 * letters and digits). At most RT_STATUS_ENTRIES_MAX entries, each key once. Elements after
 * these, in the reply or an entry, are skipped (a later version may add some); another version
 * is MESH_EUNSUPPORTED.
 *
 * The map, in both directions: {"APP/MS/REPLICA": {"state", "message", "since", "restarts",
 * "container"}}, the object meshd serves on its API for each replica. */
#ifndef FOGMESH_RUNTIME_STATUS_WIRE_H
#define FOGMESH_RUNTIME_STATUS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define RT_STATUS_VERSION     1
#define RT_STATUS_ENTRIES_MAX 4096
#define RT_STATUS_KEY_MAX     (63 + 1 + 63 + 1 + 10)
#define RT_STATUS_MESSAGE_MAX 600
#define RT_STATUS_SINCE_MAX   64
#define RT_STATUS_ID_MAX      12
#define RT_STATUS_REPLY_MAX   (1u << 20) /* bytes of an encoded reply, at most */
#define RT_STATUS_REQUEST_MAX 8

/* The request into buf (cap bytes): its length, or MESH_ETOOBIG. */
int rt_status_request_encode(uint8_t *buf, size_t cap);
/* 0 when buf holds a request this node answers, MESH_EMALFORMED or MESH_EUNSUPPORTED. */
int rt_status_request_decode(const uint8_t *buf, size_t len);

/* Encodes the map (borrowed) into *ret_buf (malloc'd, the caller frees) and *ret_len: 0,
 * MESH_EINVAL when an entry is not of the form above (a message too long is cut, not refused),
 * MESH_ETOOBIG beyond RT_STATUS_ENTRIES_MAX or RT_STATUS_REPLY_MAX, MESH_ENOMEM. Outputs are
 * untouched on failure. */
int rt_status_reply_encode(const json_t *map, uint8_t **ret_buf, size_t *ret_len);

/* Decodes a peer's reply (borrowed) into *ret_map (a new reference): 0, MESH_EMALFORMED,
 * MESH_EUNSUPPORTED or MESH_ENOMEM; *ret_map is untouched on failure. */
int rt_status_reply_decode(const uint8_t *buf, size_t len, json_t **ret_map);

#endif
