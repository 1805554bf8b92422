/* fogmesh error codes: one table, negative-errno style (after libuv's UV_ERRNO_MAP and
 * canonical/raft's src/err.h). Functions return 0 or a negative MESH_E* code; where a caller
 * needs to know why, a struct mesh_err carries the code and a message with context that each
 * layer may prefix on the way up ("deploy sensors: microservice reader: image: required"). */
#ifndef FOGMESH_COMMON_ERR_H
#define FOGMESH_COMMON_ERR_H

#include <stdarg.h>
#include <stddef.h>

#define MESH_ERR_MAP(X)                   \
    X(NOMEM, "out of memory")             \
    X(INVAL, "invalid argument")          \
    X(MALFORMED, "malformed message")     \
    X(TOOBIG, "too large")                \
    X(AUTH, "authentication failed")      \
    X(REPLAY, "replayed message")         \
    X(PROTO, "protocol violation")        \
    X(STATE, "not allowed in this state") \
    X(NOTFOUND, "not found")              \
    X(EXISTS, "already exists")           \
    X(FULL, "table or queue full")        \
    X(AGAIN, "try again")                 \
    X(IO, "input/output error")           \
    X(CLOSED, "closed")                   \
    X(UNSUPPORTED, "unsupported")         \
    X(NOTLEADER, "not the leader")

enum {
    MESH_OK = 0,
    MESH_ERR_FIRST_ = -1000,
#define MESH_ERR_ENUM_(name, msg) MESH_E##name,
    MESH_ERR_MAP(MESH_ERR_ENUM_)
#undef MESH_ERR_ENUM_
        MESH_ERR_LAST_
};

/* The message of a MESH_E* code, or strerror() of a negative errno value. Never NULL. */
const char *mesh_strerror(int code);

#define MESH_ERRMSG_LEN 256

struct mesh_err {
    int code;
    char msg[MESH_ERRMSG_LEN];
};

/* Sets err (when not NULL) to code and a printf-style message; returns code so that callers
 * can write `return mesh_errf(err, MESH_EINVAL, "bad port %s", s);`. */
int mesh_errf(struct mesh_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in err with "prefix: " (canonical/raft's ErrMsgWrapf). */
int mesh_err_wrapf(struct mesh_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
