/* clang-format off */
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
/* clang-format on */
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
    uint8_t fp[MESH_KEY_FP_LEN]; /* mesh_key_fingerprint */
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

/* Index of the key whose fingerprint is fp, or -1. */
int keyring_find_fp(const struct keyring *kr, const uint8_t fp[static MESH_KEY_FP_LEN]);

/* clang-format off */
/* ---- proofs for key operations between nodes --------------------------------------------
 *
 * A node changes its ring at another node's request only with a proof of possession of the
 * key the operation needs (meshd/node_api.c decides which one):
 *
 *   mac = BLAKE2b-256 keyed with a subkey of K (crypto_kdf id 3) over
 *         "fogmesh-keyop-v1" || op (1) || recipient id (16) || requester id (16) || target fp (8)
 *
 * The recipient id binds the proof to one node, so it cannot be replayed to another; the
 * requester id is the hash of the static key the requester's link proved, so nobody else can
 * present it; op and target fingerprint bind it to one operation on one key. A proof may be
 * replayed only by its requester to its recipient, for the same operation, which the
 * operations' idempotence makes harmless. A new key travels sealed (crypto_box_seal) to the
 * recipient's X25519 identity key, which its link proved: no relay and no other member sees it. */
/* clang-format on */
#define KEYPROOF_LEN   32
#define KEY_SEALED_LEN (MESH_KEY_LEN + 48) /* crypto_box_SEALBYTES */

enum keyproof_op { KEYPROOF_INSTALL = 1, KEYPROOF_USE = 2, KEYPROOF_REMOVE = 3 };

void keyproof_make(const uint8_t key[static MESH_KEY_LEN], enum keyproof_op op,
                   const uint8_t recipient[static NODE_ID_LEN],
                   const uint8_t requester[static NODE_ID_LEN],
                   const uint8_t target_fp[static MESH_KEY_FP_LEN],
                   uint8_t ret_mac[static KEYPROOF_LEN]);

/* True when mac is keyproof_make's for these inputs (compared in constant time). */
bool keyproof_verify(const uint8_t key[static MESH_KEY_LEN], enum keyproof_op op,
                     const uint8_t recipient[static NODE_ID_LEN],
                     const uint8_t requester[static NODE_ID_LEN],
                     const uint8_t target_fp[static MESH_KEY_FP_LEN],
                     const uint8_t mac[static KEYPROOF_LEN]);

/* Seals key to an X25519 public key (anonymous sender: the proof authenticates the request). */
void keyring_seal_key(const uint8_t key[static MESH_KEY_LEN],
                      const uint8_t recipient_pub[static IDENTITY_KEY_LEN],
                      uint8_t ret_sealed[static KEY_SEALED_LEN]);

/* Opens what keyring_seal_key sealed to (pub, priv). MESH_EAUTH when it does not open; then
 * ret_key is untouched. */
int keyring_open_key(const uint8_t sealed[static KEY_SEALED_LEN],
                     const uint8_t pub[static IDENTITY_KEY_LEN],
                     const uint8_t priv[static IDENTITY_KEY_LEN],
                     uint8_t ret_key[static MESH_KEY_LEN]);

/* clang-format off */
/* ---- the messages of key operations between nodes (CALL_KEYOP) ----------------------------
 *
 * Decoded here, without I/O, so that one fuzz harness (tests/fuzz/fuzz_keyop.c) and the unit
 * tests reach exactly what meshd/node_api.c runs on a peer's bytes.
 *
 *   request  [version, op] for list; [version, op, target bin, proof bin] for install and
 *            remove; [version, op, target bin, proof bin, proof2 bin] for use. target is the key
 *            sealed to the recipient (install, KEY_SEALED_LEN) or the key's fingerprint (use,
 *            remove); proof is under the recipient's primary key, proof2 under the key to use.
 *   reply    the recipient's ring: [[fingerprint bin, primary bool], ...] (keyring_view_encode),
 *            never the keys. */
/* clang-format on */
enum keyop_kind { KEYOP_LIST, KEYOP_INSTALL, KEYOP_USE, KEYOP_REMOVE };

#define KEYOP_VERSION 2 /* 1 carried keys in clear and no proofs: refused */

struct keyop_req {
    enum keyop_kind op;
    const uint8_t *target; /* NULL for list; the rest point into the decoded buffer */
    uint32_t target_len;   /* KEY_SEALED_LEN for install, MESH_KEY_FP_LEN for use and remove */
    const uint8_t *proof;  /* KEYPROOF_LEN bytes, NULL for list */
    const uint8_t *proof2; /* KEYPROOF_LEN bytes, use only */
};

/* Decodes a request; buf is borrowed and ret points into it. MESH_EMALFORMED when the framing,
 * the op, a type or a length is wrong; MESH_EUNSUPPORTED for another version than
 * KEYOP_VERSION, with ret->op set (the op is read before the version is judged) so that the
 * refusal can name it. On MESH_EMALFORMED ret is untouched. A list may carry more elements
 * than the two it needs and bytes after the request are not looked at, as since version 2. */
int keyop_req_decode(const uint8_t *buf, size_t len, struct keyop_req *ret);

/* Checks a decoded request (not a list) against the recipient's ring and identity: requester is
 * the id of the static key the requester's link proved. 0 when the proofs hold; then, for
 * install and use, ret_key is the key to apply (the caller wipes it). MESH_EAUTH when a proof
 * fails or an install does not open, MESH_ENOTFOUND when a use names a key not in the ring;
 * err says which, and ret_key is untouched. */
int keyop_req_verify(const struct keyring *kr, const struct identity *self,
                     const uint8_t requester[static NODE_ID_LEN], const struct keyop_req *req,
                     uint8_t ret_key[static MESH_KEY_LEN], struct mesh_err *err);

/* A ring as a reply carries it. */
struct keyring_view {
    size_t n;
    uint8_t fp[KEYRING_MAX][MESH_KEY_FP_LEN];
    int primary; /* index, -1 if none was marked */
};

/* Writes kr's fingerprints and primary mark into buf; the length, or MESH_ETOOBIG. */
int keyring_view_encode(const struct keyring *kr, uint8_t *buf, size_t cap);

/* Decodes a reply; MESH_EMALFORMED (ret untouched) for wrong framing, types or lengths, or more
 * than KEYRING_MAX keys. More than one key marked primary: the last counts, as before. */
int keyring_view_decode(const uint8_t *buf, size_t len, struct keyring_view *ret);

/* Index of fp in v, or -1. */
int keyring_view_find(const struct keyring_view *v, const uint8_t fp[static MESH_KEY_FP_LEN]);

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
