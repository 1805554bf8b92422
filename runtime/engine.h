/* An asynchronous client of the Docker Engine REST API (v1.41) over a unix socket, on one
 * libevent event_base: Docker (dockerd) or Podman (`podman system service`).
 *
 * I/O: libcurl's multi-socket interface driven by the event_base (CURLMOPT_SOCKETFUNCTION and
 * CURLMOPT_TIMERFUNCTION mapped onto libevent events, curl_multi_socket_action; libcurl's
 * docs/examples/multi-event.c is the model). No blocking calls except reading a local file for
 * engine_image_import, no threads, no global state: one struct engine per node.
 * curl_global_init(CURL_GLOBAL_DEFAULT) is the caller's, once per process before engine_new()
 * (and curl_global_cleanup() after the last engine_free()).
 *
 * Async contract (libuv's, STYLE.md 5). Every operation takes a done callback and user data:
 * - if the call returns an error (a negative MESH_E* code), the callback never fires;
 * - otherwise it fires exactly once, always from the event loop, never from inside the call;
 * - engine_cancel(req): the callback fires (later, from the loop) with MESH_ECLOSED, even if the
 *   transfer had just finished. Data and progress callbacks do not fire after engine_cancel().
 * - engine_free() fires every pending callback with MESH_ECLOSED before it returns.
 * A struct engine_req handle is valid from the call until its done callback returns.
 *
 * Bounds: at most `max_active` requests talk to the engine at once and up to `max_queued` more
 * wait in FIFO order (beyond that a call returns MESH_EFULL); a response body larger than
 * `max_response` fails with MESH_ETOOBIG (logs and pull progress are streamed instead, with a
 * bounded line for progress); each request has a timeout (`timeout_ms`, plus the stop timeout
 * for a stop; `stream_timeout_ms` for pulls and imports; none for followed logs, which end by
 * engine_cancel or when the container stops). Followed logs do not take an active slot (they
 * would hold it forever): at most `max_follows` of them run at once (else MESH_EFULL).
 *
 * Errors carry the engine's own message with context, e.g. "create container web: no such
 * image: localhost/nope:latest: image not known" (MESH_ENOTFOUND) or "engine unavailable at
 * /run/podman/podman.sock: connection refused" (MESH_EIO). HTTP statuses map to codes: 404
 * MESH_ENOTFOUND, 409 MESH_EEXISTS on create and MESH_ESTATE elsewhere, 400 MESH_EINVAL, other
 * failures MESH_EIO (Podman answers 500 with a "cause" where Docker answers 409; those causes
 * map like Docker's statuses). 304 on start/stop (already started/stopped) is a success with
 * reply->changed false. */
#ifndef FOGMESH_RUNTIME_ENGINE_H
#define FOGMESH_RUNTIME_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "err.h"

#define ENGINE_API_VERSION "v1.41"

struct engine;
struct engine_req;

struct engine_config {
    const char *url;            /* "unix:///path/to/sock" or a bare path; required */
    unsigned max_active;        /* requests in flight at once; 0: 8 */
    unsigned max_queued;        /* waiting beyond those; 0: 1024 */
    unsigned max_follows;       /* followed log streams; 0: 32 */
    size_t max_response;        /* bytes of one response body; 0: 16 MiB */
    unsigned timeout_ms;        /* per request; 0: 30 s */
    unsigned stream_timeout_ms; /* pulls and imports; 0: 30 min */
};

enum engine_kind {
    ENGINE_UNKNOWN = 0, /* engine_version() has not answered yet */
    ENGINE_DOCKER,
    ENGINE_PODMAN,
};

/* What a done callback receives; valid only during the callback. */
struct engine_reply {
    int status;       /* 0, or a negative MESH_E* code with err.msg saying why */
    long http_status; /* 0 when no HTTP answer came (unreachable, canceled, timed out) */
    json_t *json;     /* the parsed body when there is one (borrowed: json_incref to keep) */
    const char *id;   /* engine_container_create: the new container's id; else NULL */
    bool changed;     /* false when the engine answered 304 (already started/stopped) */
    struct mesh_err err;
};

typedef void (*engine_cb)(struct engine_req *req, const struct engine_reply *reply, void *data);

/* Log data: stream 1 stdout, 2 stderr (0 stdin, 3 Docker's "systemerr"); buf holds len bytes of
 * a frame's payload, not NUL-terminated; a frame may arrive in several calls. A TTY container's
 * raw output arrives as stream 1. Return 0 to go on, nonzero to stop the request (its done
 * callback then fires with MESH_ECLOSED). Must not call engine_free(). */
typedef int (*engine_data_cb)(int stream, const char *buf, size_t len, void *data);

/* One line of pull/import progress, a JSON object ({"status": ..., "progressDetail": ...},
 * borrowed). Return 0 to go on, nonzero to stop (done then fires with MESH_ECLOSED). Must not
 * call engine_free(). */
typedef int (*engine_progress_cb)(json_t *line, void *data);

/* Creates a client on base. No connection is made until the first request. */
int engine_new(struct event_base *base, const struct engine_config *cfg, struct engine **ret_engine,
               struct mesh_err *err);

/* Fails every pending request (done callbacks fire with MESH_ECLOSED, before this returns) and
 * frees the client. Accepts NULL. May be called from a done callback, not from a data or
 * progress callback. */
void engine_free(struct engine *e);

/* Asks that req end early: see the contract above. Returns 0, or MESH_EINVAL for NULL. */
int engine_cancel(struct engine_req *req);

/* Stops (pause) or resumes reading a streamed answer (a followed log), so a slow consumer
 * holds the engine back instead of growing a buffer. Resuming may call on_data before it
 * returns. MESH_ESTATE when the request is not running. */
int engine_pause(struct engine_req *req, bool pause);

/* The socket path the client talks to. */
const char *engine_socket_path(const struct engine *e);

/* Docker or Podman, as learnt from the last successful engine_version(). */
enum engine_kind engine_kind(const struct engine *e);
const char *engine_kind_name(enum engine_kind k);

/* Requests in flight / waiting, for status and tests. */
unsigned engine_active(const struct engine *e);
unsigned engine_queued(const struct engine *e);
/* The most requests that were ever in flight at once (for tests of the bound). */
unsigned engine_active_peak(const struct engine *e);

/* Every operation below: ret_req (may be NULL) receives the handle for engine_cancel(). String
 * arguments are copied; the caller keeps ownership of everything it passes. */

/* GET /_ping. */
int engine_ping(struct engine *e, engine_cb cb, void *data, struct engine_req **ret_req);
/* GET /version; reply->json is the engine's answer; sets engine_kind(). */
int engine_version(struct engine *e, engine_cb cb, void *data, struct engine_req **ret_req);

/* POST /containers/create?name=NAME with spec (serialized during the call; the caller keeps
 * it) as the body; reply->id is the new id. name may be NULL (the engine picks one). */
int engine_container_create(struct engine *e, const char *name, const json_t *spec, engine_cb cb,
                            void *data, struct engine_req **ret_req);
int engine_container_start(struct engine *e, const char *id, engine_cb cb, void *data,
                           struct engine_req **ret_req);
/* Stops with SIGTERM then, after timeout_s seconds, SIGKILL. */
int engine_container_stop(struct engine *e, const char *id, unsigned timeout_s, engine_cb cb,
                          void *data, struct engine_req **ret_req);
/* DELETE /containers/{id}; force also stops a running one; volumes: its anonymous volumes. */
int engine_container_remove(struct engine *e, const char *id, bool force, bool volumes,
                            engine_cb cb, void *data, struct engine_req **ret_req);
/* signal: a name such as "HUP" or "SIGHUP", or a number as text. */
int engine_container_kill(struct engine *e, const char *id, const char *signal, engine_cb cb,
                          void *data, struct engine_req **ret_req);
/* reply->json: the inspect object (State.Running, Config.Labels, ...). */
int engine_container_inspect(struct engine *e, const char *id, engine_cb cb, void *data,
                             struct engine_req **ret_req);
/* GET /containers/json?all=ALL&filters=FILTERS; filters is the filter JSON text (see
 * engine_labels_filter), escaped here; NULL for none. reply->json: an array. */
int engine_container_list(struct engine *e, bool all, const char *filters, engine_cb cb, void *data,
                          struct engine_req **ret_req);

struct engine_logs_opts {
    bool follow;
    bool timestamps;
    bool no_stdout, no_stderr; /* both streams by default */
    int tail;                  /* last N lines; < 0: all */
    bool tty;                  /* the container has a TTY: raw bytes, no frames. When false and
                                  the first 8 bytes are no frame header, raw is assumed. */
    /* Optional: called once when the engine answered 2xx, before any output (same rules as
       on_data's callback). */
    void (*on_start)(void *data);
};
/* GET /containers/{id}/logs: on_data receives the output as it comes. */
int engine_container_logs(struct engine *e, const char *id, const struct engine_logs_opts *opts,
                          engine_data_cb on_data, engine_cb cb, void *data,
                          struct engine_req **ret_req);

/* PUT /containers/{id}/archive?path=DIR with tar (len bytes, copied during the call): extracts
 * it in the container's directory DIR, which must exist. */
int engine_container_put_archive(struct engine *e, const char *id, const char *dir, const void *tar,
                                 size_t len, engine_cb cb, void *data, struct engine_req **ret_req);
/* The same with a one-file archive built here: DIR/NAME gets content (len bytes) and mode. */
int engine_container_put_file(struct engine *e, const char *id, const char *dir, const char *name,
                              const void *content, size_t len, unsigned mode, engine_cb cb,
                              void *data, struct engine_req **ret_req);

/* GET /images/{ref}/json: MESH_ENOTFOUND when the engine does not have it. */
int engine_image_inspect(struct engine *e, const char *ref, engine_cb cb, void *data,
                         struct engine_req **ret_req);
/* POST /images/create?fromImage=IMAGE&tag=TAG (tag NULL: "latest"); on_progress (may be NULL)
 * gets each progress line; an error reported inside the stream fails the request. */
int engine_image_pull(struct engine *e, const char *image, const char *tag,
                      engine_progress_cb on_progress, engine_cb cb, void *data,
                      struct engine_req **ret_req);
/* POST /images/create?fromSrc=-&repo=REPO&tag=TAG with the tar file at path as the body
 * (opened during the call, O_CLOEXEC; read as curl sends it). changes: Dockerfile instructions
 * such as "CMD [\"/bin/sh\"]", or NULL. */
int engine_image_import(struct engine *e, const char *path, const char *repo, const char *tag,
                        const char *changes, engine_progress_cb on_progress, engine_cb cb,
                        void *data, struct engine_req **ret_req);

/* Helpers. */

/* {"label":["k=v",...]} for n labels ("k" alone matches any value) into *ret (malloc'd, NUL
 * terminated; the caller frees). */
int engine_labels_filter(const char *const labels[], size_t n, char **ret);

/* Percent-encodes s (RFC 3986: everything but unreserved characters and those in keep, which
 * may be NULL) into *ret (malloc'd; the caller frees). */
int engine_url_escape(const char *s, const char *keep, char **ret);

/* Parsers of the engine's streams, pure (no I/O), exposed for tests and fuzzing. */

/* Docker's multiplexed log stream: frames of an 8-byte header (stream type, 3 zero bytes, a
 * 4-byte big-endian payload length) and the payload. Chunk boundaries fall anywhere. */
struct engine_frames {
    uint8_t hdr[8];
    size_t hdr_len;  /* header bytes held so far */
    uint32_t left;   /* payload bytes of the current frame still to come */
    int stream;      /* of the current frame */
    bool raw;        /* TTY output: no frames */
    bool started;    /* a first header was seen (or raw decided) */
    bool auto_raw;   /* decide raw from the first bytes */
    uint64_t frames; /* complete headers parsed */
};
/* Zeroes f; tty: raw from the start; auto_raw: raw when the first header is not plausible. */
void engine_frames_init(struct engine_frames *f, bool tty, bool auto_raw);
/* Feeds len bytes. Returns 0; MESH_EMALFORMED (err says why) on a bad header; or MESH_ECLOSED
 * when on_data asked to stop. */
int engine_frames_feed(struct engine_frames *f, const char *buf, size_t len, engine_data_cb on_data,
                       void *data, struct mesh_err *err);

/* Newline-separated JSON objects (pull and import progress). Lines longer than max are an
 * error. An object with "error" or "errorDetail.message" records the first such message. */
struct engine_progress {
    char *line;
    size_t len, cap, max;
    uint64_t lines;
    int error; /* MESH_EIO once the stream reported an error */
    char message[MESH_ERRMSG_LEN];
};
void engine_progress_init(struct engine_progress *p, size_t max_line);
void engine_progress_free(struct engine_progress *p);
/* Returns 0; MESH_EMALFORMED or MESH_ETOOBIG on bad input (err says why); MESH_ENOMEM; or
 * MESH_ECLOSED when on_progress asked to stop. An error line is not a failure here: see
 * p->error. on_progress may be NULL. */
int engine_progress_feed(struct engine_progress *p, const char *buf, size_t len,
                         engine_progress_cb on_progress, void *data, struct mesh_err *err);
/* End of stream: parses a last line without a newline. Same returns. */
int engine_progress_finish(struct engine_progress *p, engine_progress_cb on_progress, void *data,
                           struct mesh_err *err);

/* A ustar archive of one regular file `name` (relative, at most 99 bytes, no "..") holding len
 * bytes of content, mode e.g. 0644, owned by 0:0, mtime now. *ret_tar (malloc'd) and *ret_len
 * receive it; untouched on failure. */
int engine_tar_one(const char *name, const void *content, size_t len, unsigned mode,
                   uint8_t **ret_tar, size_t *ret_len);

#endif
