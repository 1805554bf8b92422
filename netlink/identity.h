/* A node's identity: a static X25519 key pair (the `s` of the link handshake) kept in the data
 * dir, and the node id derived from its public key. */
#ifndef FOGMESH_NETLINK_IDENTITY_H
#define FOGMESH_NETLINK_IDENTITY_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define IDENTITY_KEY_LEN  32
#define NODE_ID_LEN       16
#define NODE_ID_STR_LEN   (NODE_ID_LEN * 2) /* lower-case hex, without NUL */
#define IDENTITY_FILENAME "node.key"

struct identity {
    uint8_t pub[IDENTITY_KEY_LEN];
    uint8_t priv[IDENTITY_KEY_LEN];
    uint8_t id[NODE_ID_LEN];
    char id_str[NODE_ID_STR_LEN + 1];
};

/* Loads DIR/node.key, or creates it (mode 0600, written atomically) when it does not exist.
 * ret_created (optional) tells which. On failure ret is untouched and err says why. */
int identity_load_or_create(const char *dir, struct identity *ret, int *ret_created,
                            struct mesh_err *err);

/* The node id of a public key: the first NODE_ID_LEN bytes of BLAKE2b-256(pub). */
void identity_node_id(const uint8_t pub[static IDENTITY_KEY_LEN],
                      uint8_t ret_id[static NODE_ID_LEN]);

/* The binding of a node id to an identity key, the one rule every check uses: true when `id` is
 * the node id of `pub` (constant time). A link's handshake proves `pub`; gossip only claims
 * ids, so an id counts as a node's only once a link proved the key it comes from. */
bool identity_key_binds_id(const uint8_t pub[static IDENTITY_KEY_LEN],
                           const uint8_t id[static NODE_ID_LEN]);

/* Lower-case hex of an id into out (NODE_ID_STR_LEN + 1 bytes). */
void identity_id_format(const uint8_t id[static NODE_ID_LEN], char out[static NODE_ID_STR_LEN + 1]);

/* Wipes the private key. */
void identity_wipe(struct identity *id);

#endif
