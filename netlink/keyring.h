/* The mesh key ring and the sealing of gossip packets.
 *
 * A ring holds up to KEYRING_MAX mesh keys; one is primary. New packets are sealed with the
 * primary key; packets sealed with any key of the ring are accepted. This lets an operator
 * rotate the key of a running mesh as Serf's keyring does: install the new key everywhere, make
 * it primary everywhere, then remove the old one.
 *
 * Keys are never used directly: each use gets its own subkey (libsodium crypto_kdf, BLAKE2b),
 * one for gossip packets and one as the PSK of the link handshake.
 *
 * A sealed gossip packet (at most 1400 bytes on the wire):
 *
 *   version (1) | key hint (4) | nonce (24) | XChaCha20-Poly1305( inner ) | tag (16)
 *   inner = sender node id (16) | epoch (8, BE) | sequence (8, BE) | payload
 *
 * The key hint (the first bytes of a hash of the gossip subkey) picks the key without trial
 * decryption. Random 192-bit nonces need no coordination. Replays are caught after opening by a
 * per-sender window over (epoch, sequence): the epoch is a counter the sender bumps and stores at
 * every start, so an old packet replayed after a restart is older than the sender's epoch, and a
 * packet replayed within an epoch falls on a bit already set in the window (RFC 6479 style). */
#ifndef FOGMESH_NETLINK_KEYRING_H
#define FOGMESH_NETLINK_KEYRING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "identity.h"
#include "meshkey.h"

#define KEYRING_MAX      4
#define KEYRING_FILENAME "keyring"
#define SEAL_VERSION     1
#define SEAL_HEADER_LEN  (1 + 4 + 24)
#define SEAL_INNER_LEN   (NODE_ID_LEN + 8 + 8)
#define SEAL_OVERHEAD    (SEAL_HEADER_LEN + 16 + SEAL_INNER_LEN)
#define SEAL_MAX_PACKET  1400
#define SEAL_MAX_PAYLOAD (SEAL_MAX_PACKET - SEAL_OVERHEAD)

struct keyring_entry {
    uint8_t key[MESH_KEY_LEN]; /* the mesh key as the operator knows it */
    uint8_t gossip[32];        /* subkey sealing gossip packets */
    uint8_t link_psk[32];      /* subkey used as the Noise PSK of links */
    uint8_t hint[4];
};

struct keyring {
    struct keyring_entry e[KEYRING_MAX];
    size_t n;
    size_t primary;
};

/* Starts a ring with one key, primary. */
void keyring_init(struct keyring *kr, const uint8_t key[static MESH_KEY_LEN]);

/* Adds a key (not primary). MESH_EEXISTS if present, MESH_EFULL when the ring is full. */
int keyring_install(struct keyring *kr, const uint8_t key[static MESH_KEY_LEN]);

/* Makes an installed key primary. MESH_ENOTFOUND if it is not in the ring. */
int keyring_use(struct keyring *kr, const uint8_t key[static MESH_KEY_LEN]);

/* Removes a key. The primary key cannot be removed (MESH_ESTATE). */
int keyring_remove(struct keyring *kr, const uint8_t key[static MESH_KEY_LEN]);

/* Index of key in the ring, or -1. Constant-time per comparison. */
int keyring_find(const struct keyring *kr, const uint8_t key[static MESH_KEY_LEN]);

/* Saves the ring as DIR/keyring (primary first, base64, mode 0600, atomically) / loads it.
 * keyring_load returns MESH_ENOTFOUND when there is no file. */
int keyring_save(const struct keyring *kr, const char *dir, struct mesh_err *err);
int keyring_load(struct keyring *kr, const char *dir, struct mesh_err *err);

void keyring_wipe(struct keyring *kr);

struct seal_inner {
    uint8_t sender[NODE_ID_LEN];
    uint64_t epoch;
    uint64_t seq;
};

/* Seals payload into out (capacity outcap) with the primary key; returns the packet length or
 * MESH_ETOOBIG when payload exceeds SEAL_MAX_PAYLOAD or out is too small. */
int seal_packet(const struct keyring *kr, const struct seal_inner *inner, const uint8_t *payload,
                size_t len, uint8_t *out, size_t outcap);

/* Opens a packet in place-free fashion: plaintext goes to out (capacity >= len). On success
 * *ret_inner is filled, *ret_payload points into out and the payload length is returned.
 * MESH_EMALFORMED for bad framing, MESH_EAUTH for an unknown key or a failed tag. */
int seal_open(const struct keyring *kr, const uint8_t *pkt, size_t len, uint8_t *out, size_t outcap,
              struct seal_inner *ret_inner, const uint8_t **ret_payload);

/* Anti-replay windows, per sender, in a bounded table (least recently used evicted, senders
 * whose epoch no link has proven first).
 *
 * Any holder of the mesh key can seal a packet that claims any sender id and any epoch, so the
 * epoch a packet carries is only a claim. If the highest epoch seen simply replaced the
 * sender's window, one forged packet with epoch 2^64-1 would make every later packet of the
 * real sender look like a replay from an earlier run. So each sender has a small set of
 * windows: w[0] is its current epoch (the first one seen, or the one a link proved, see
 * replay_prove); a higher epoch gets a window of its own among the others (a real restart is
 * accepted at once, a forged epoch never displaces the current one); a lower epoch than the
 * current one is refused (the packets of an earlier run). Only a link's handshake, which the
 * sender's identity key authenticates, moves the current epoch forward. */
#define REPLAY_WINDOW 1024 /* sequence numbers tracked below the highest seen */
#define REPLAY_EPOCHS 3    /* windows per sender: the current epoch and two newer ones */

struct replay_win {
    uint64_t epoch;
    uint64_t top; /* highest sequence accepted */
    uint64_t bits[REPLAY_WINDOW / 64];
    uint64_t used; /* LRU stamp among the sender's windows; 0 = free */
};

struct replay_entry {
    uint8_t sender[NODE_ID_LEN];
    bool proven;                        /* w[0].epoch came from a link (replay_prove) */
    struct replay_win w[REPLAY_EPOCHS]; /* w[0]: the current epoch */
    uint64_t used;                      /* LRU stamp; 0 = free slot */
};

struct replay_table {
    struct replay_entry *e;
    size_t cap;
    uint64_t clock;
};

int replay_init(struct replay_table *t, size_t cap);
void replay_free(struct replay_table *t);

/* Returns 0 and records (epoch, seq) when it is new for sender; MESH_EREPLAY when it was seen
 * or is too old (an epoch below the sender's current one, or below the window).
 * *ret_unproven (optional) is set to true when the packet's epoch differs from the sender's
 * current epoch and no link has proven that one: the caller should get the epoch proven
 * (a link to the sender, whose handshake carries it) rather than rely on the claim. */
int replay_check(struct replay_table *t, const struct seal_inner *in, bool *ret_unproven);

/* A link authenticated by sender's identity key says its epoch is `epoch`: that becomes the
 * current epoch (keeping its window if there is one); windows of epochs up to it are dropped,
 * and packets of lower epochs are refused from now on. */
void replay_prove(struct replay_table *t, const uint8_t sender[static NODE_ID_LEN], uint64_t epoch);

#endif
