/* Helpers the tests of netlink/peers and of the raft transport share: a loopback listening
 * socket, and a handshake hook for peers whose handshake payload is simply their advertised
 * struct mesh_addr. Failures abort the running cmocka test. */
#ifndef FOGMESH_TESTS_PEERS_HARNESS_H
#define FOGMESH_TESTS_PEERS_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "link.h"

/* A non-blocking TCP socket listening on 127.0.0.1 at a free port, which goes to *ret_addr. */
int harness_listen_socket(struct mesh_addr *ret_addr);

/* peers_hooks.on_handshake: the payload is the peer's struct mesh_addr. */
int harness_hs_hook(void *ud, const uint8_t peer_static[LINK_KEY_LEN], const uint8_t *payload,
                    size_t len, struct mesh_addr *ret_adv);

#endif
