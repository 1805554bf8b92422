/* The Noise Protocol Framework (revision 34, https://noiseprotocol.org/noise.html) with
 * DH = 25519, cipher = ChaChaPoly, hash = BLAKE2b, on libsodium.
 *
 * Handshakes always use ChaChaPoly. A CipherState that Split() returned may then be switched to
 * AESGCM (section 12.4) with noise_cipher_use_aesgcm, for a transport phase whose two ends have
 * agreed on it (link.h negotiates it inside the handshake).
 *
 * The product uses Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b for node-to-node links (see link.h);
 * NN, NNpsk0, XX and IKpsk2 are here too so that the unit test can check every vector of
 * tests/data/noise/cacophony-subset.json.
 *
 * All state structs are plain values without pointers: copying a struct copies the state. The
 * link responder relies on this to trial-read handshake message 3 once per key of its key ring
 * (a failed read must not disturb the original state; spec section 5.1 DecryptWithAd leaves n
 * unchanged on failure, but MixKeyAndHash(psk) has already changed ck and h by then).
 *
 * Copies hold secrets: wipe every copy with noise_handshake_wipe() / noise_cipher_wipe(). */
#ifndef FOGMESH_NETLINK_NOISE_H
#define FOGMESH_NETLINK_NOISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#define NOISE_DHLEN      32 /* X25519 keys and shared secrets (section 12.1) */
#define NOISE_HASHLEN    64 /* BLAKE2b (section 12.8) */
#define NOISE_BLOCKLEN   128
#define NOISE_KEYLEN     32
#define NOISE_TAGLEN     16
#define NOISE_PSKLEN     32
#define NOISE_MAX_MSGLEN 65535 /* section 3: every Noise message is at most 65535 bytes */

enum noise_pattern {
    NOISE_PATTERN_NN,
    NOISE_PATTERN_NNPSK0,
    NOISE_PATTERN_XX,
    NOISE_PATTERN_XXPSK3,
    NOISE_PATTERN_IKPSK2,
};

/* The AEAD of a CipherState (section 12.3 ChaChaPoly, section 12.4 AESGCM). */
enum noise_aead {
    NOISE_AEAD_CHACHAPOLY = 0,
    NOISE_AEAD_AESGCM = 1,
};

/* CipherState (section 5.1). With AESGCM, aes holds the key schedule precomputed from k
 * (crypto_aead_aes256gcm_beforenm), recomputed whenever k changes (Rekey included); it is as
 * secret as k. Its type is 16-byte aligned (CRYPTO_ALIGN(16)), which makes this struct (and
 * every struct holding one) 16-byte aligned: declare it, or allocate it with malloc/calloc,
 * never place it at an arbitrary offset of a byte buffer. The state holds no pointers, so a
 * copy of the struct is a working copy. */
struct noise_cipher {
    crypto_aead_aes256gcm_state aes; /* AESGCM only */
    uint8_t k[NOISE_KEYLEN];
    uint64_t n;
    bool has_key;
    uint8_t aead; /* enum noise_aead; NOISE_AEAD_CHACHAPOLY (0) unless switched */
};

/* SymmetricState (section 5.2). */
struct noise_symmetric {
    struct noise_cipher cs;
    uint8_t ck[NOISE_HASHLEN];
    uint8_t h[NOISE_HASHLEN];
};

/* HandshakeState (section 5.3). The message pattern is referred to by enum and index into a
 * constant table, so the struct stays pointer-free. */
struct noise_handshake {
    struct noise_symmetric ss;
    uint8_t s_priv[NOISE_DHLEN], s_pub[NOISE_DHLEN];
    uint8_t e_priv[NOISE_DHLEN], e_pub[NOISE_DHLEN];
    uint8_t rs[NOISE_DHLEN], re[NOISE_DHLEN];
    uint8_t psk[NOISE_PSKLEN];
    uint8_t fixed_e[NOISE_DHLEN]; /* test only: ephemeral private key to use */
    bool has_s, has_e, has_rs, has_re, has_psk, has_fixed_e;
    bool initiator;
    bool split_done;
    uint8_t pattern;   /* enum noise_pattern */
    uint8_t msg_index; /* next message of the pattern to write or read */
};

/* Initialize() parameters (section 5.3). Pointers are read during the call only. */
struct noise_params {
    enum noise_pattern pattern;
    bool initiator;
    const uint8_t *prologue; /* may be NULL when prologue_len is 0 */
    size_t prologue_len;
    const uint8_t
        *s_priv;        /* [NOISE_DHLEN] local static private key; NULL if the pattern has none */
    const uint8_t *rs;  /* [NOISE_DHLEN] remote static public key known in advance (IK) */
    const uint8_t *psk; /* [NOISE_PSKLEN]; may also be set later with noise_handshake_set_psk */
    /* Tests and fuzzers only: ephemeral private key [NOISE_DHLEN] instead of randombytes. Reusing
     * an ephemeral key in production breaks the security of the handshake. */
    const uint8_t *test_ephemeral;
};

/* Initialize(): the protocol name is derived from the pattern (always _25519_ChaChaPoly_BLAKE2b).
 * Returns 0 or MESH_EINVAL (missing key the pattern needs). */
int noise_handshake_init(struct noise_handshake *hs, const struct noise_params *p);

/* Sets (or replaces) the PSK before the message holding the "psk" token is processed. */
void noise_handshake_set_psk(struct noise_handshake *hs, const uint8_t psk[static NOISE_PSKLEN]);

/* True when the next handshake message is ours to write. */
bool noise_handshake_our_turn(const struct noise_handshake *hs);
/* True when all the messages of the pattern have been written and read. */
bool noise_handshake_done(const struct noise_handshake *hs);

/* WriteMessage(payload, message_buffer): writes the next message to out (capacity out_cap).
 * Returns 0 and sets *ret_len, or MESH_ESTATE (not our turn / done), MESH_ETOOBIG (out_cap too
 * small or the message would exceed NOISE_MAX_MSGLEN), MESH_EAUTH (DH gave the all-zero
 * output). On error the state must be discarded. */
int noise_handshake_write(struct noise_handshake *hs, const uint8_t *payload, size_t payload_len,
                          uint8_t *out, size_t out_cap, size_t *ret_len);

/* ReadMessage(message, payload_buffer): reads the next message, writing its payload to
 * payload_out (capacity cap). Returns 0 and sets *ret_len, or MESH_ESTATE, MESH_EMALFORMED
 * (too short), MESH_ETOOBIG (payload does not fit), MESH_EAUTH (decryption failed or bad DH).
 * On error the state must be discarded (copy it first to retry, as the link responder does). */
int noise_handshake_read(struct noise_handshake *hs, const uint8_t *msg, size_t len,
                         uint8_t *payload_out, size_t cap, size_t *ret_len);

/* The handshake hash h (section 5.2 GetHandshakeHash), for channel binding. */
void noise_handshake_hash(const struct noise_handshake *hs, uint8_t out[static NOISE_HASHLEN]);

/* The remote static public key, once learned (false before). */
bool noise_handshake_remote_static(const struct noise_handshake *hs,
                                   uint8_t out[static NOISE_DHLEN]);

/* Split() (section 5.2) once done: the initiator sends with c1 and receives with c2, the
 * responder the other way round; ret_send/ret_recv are ours, both ChaChaPoly. Wipes every
 * secret of hs except h (still readable with noise_handshake_hash). Returns 0 or MESH_ESTATE. */
int noise_handshake_split(struct noise_handshake *hs, struct noise_cipher *ret_send,
                          struct noise_cipher *ret_recv);

void noise_handshake_wipe(struct noise_handshake *hs);

/* Transport messages: EncryptWithAd / DecryptWithAd (section 5.1) with the cipher's AEAD:
 * ChaChaPoly with the 96-bit nonce 0x00000000 || LE64(n) (section 12.3), or AESGCM with
 * 0x00000000 || BE64(n) (section 12.4). out needs len + NOISE_TAGLEN (encrypt) or
 * len - NOISE_TAGLEN (decrypt) bytes; in and out may be the same buffer. The nonce advances only
 * on success. Returns 0, MESH_EAUTH (decryption failed), MESH_EMALFORMED (shorter than a tag),
 * MESH_ESTATE (no key, or nonce 2^64-1 reached: section 5.1 reserves it). */
int noise_cipher_encrypt(struct noise_cipher *cs, const uint8_t *ad, size_t ad_len,
                         const uint8_t *in, size_t len, uint8_t *out);
int noise_cipher_decrypt(struct noise_cipher *cs, const uint8_t *ad, size_t ad_len,
                         const uint8_t *in, size_t len, uint8_t *out);

/* Rekey() (sections 4.2 and 11.3): k = the first 32 bytes of ENCRYPT(k, 2^64-1, "", zeros(32)),
 * with the cipher's own ENCRYPT (and, for AESGCM, its key schedule recomputed). n is unchanged. */
void noise_cipher_rekey(struct noise_cipher *cs);

/* Switches a CipherState fresh from Split() (a key, no message yet: n == 0) to AESGCM; both
 * ends of a session must switch the matching CipherStates. Returns 0 (also when already
 * switched), MESH_EUNSUPPORTED when this CPU lacks AES-NI or PCLMUL
 * (crypto_aead_aes256gcm_is_available(), valid after sodium_init()), MESH_ESTATE without a key
 * or after a message. */
int noise_cipher_use_aesgcm(struct noise_cipher *cs);

void noise_cipher_wipe(struct noise_cipher *cs);

#endif
