/* One mesh node: everything a running meshd holds hangs off this object (no global state), so a
 * test can run several in one process. */
#ifndef FOGMESH_MESHD_NODE_H
#define FOGMESH_MESHD_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "config.h"
#include "err.h"
#include "identity.h"
#include "log.h"
#include "loop.h"
#include "meshkey.h"

struct node {
    struct meshd_config cfg;
    struct logger log;
    struct mesh_loop loop;
    struct identity ident;
    uint8_t mesh_key[MESH_KEY_LEN];
    bool have_key;
    int lock_fd;
    int tcp_fd;
    int udp_fd;
    struct event *tcp_ev;
    struct event *udp_ev;
    struct event *sig_int;
    struct event *sig_term;
    struct api *api;
    uint64_t started_ms;
    int exit_code;
};

/* Builds a node from cfg: data dir, identity, sockets, API. On failure everything half-built is
 * released and err says why in one line. The node is not running until node_run(). */
int node_start(struct node *n, const struct meshd_config *cfg, struct mesh_err *err);

/* Runs the loop until SIGINT/SIGTERM or node_stop(); returns the exit code. */
int node_run(struct node *n);

void node_stop(struct node *n);

/* Closes sockets, removes the API socket, frees everything. Accepts a half-built node. */
void node_close(struct node *n);

#endif
