/* meshctl's side of the local API: HTTP over the daemon's unix socket, with libcurl. */
#ifndef FOGMESH_CTL_CLIENT_H
#define FOGMESH_CTL_CLIENT_H

#include <jansson.h>
#include <stdio.h>

#include "err.h"

struct client {
    const char *socket_path;
    long timeout_ms; /* 0: the default (30 s), < 0: none (followed streams) */
};

/* Sends method path (with an optional JSON body) and returns the HTTP status and the parsed JSON
 * reply (*ret_body, owned by the caller; NULL when the reply is not JSON). A transport failure
 * returns a negative code with err saying what to do. */
int client_call(const struct client *c, const char *method, const char *path, const json_t *body,
                long *ret_status, json_t **ret_body, struct mesh_err *err);

/* GET path; a 2xx body is written to out as it arrives (a followed log runs until meshd ends
 * it or the user interrupts), any other body is parsed as JSON into *ret_body as above. */
int client_stream(const struct client *c, const char *path, FILE *out, long *ret_status,
                  json_t **ret_body, struct mesh_err *err);

#endif
