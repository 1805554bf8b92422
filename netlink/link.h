/* clang-format off */
/* One end of an encrypted node-to-node link, as a sans-I/O state machine: it is fed the bytes
 * received and the time, and produces bytes to send and callbacks. No sockets, clock or logging
 * here (linkio.h binds it to a TCP socket on libevent).
 *
 * Wire format (all integers big-endian)
 * -------------------------------------
 * Every record on the stream is a u32 length followed by that many bytes.
 *
 * 1. Handshake: Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b (noise.h), prologue "fogmesh-link-v2".
 *      -> e                         (msg 1, empty payload)
 *      <- e, ee, s, es              (msg 2, payload = u8 ciphers || responder's payload)
 *      -> s, se, psk                (msg 3, payload = u8 ciphers || initiator's payload)
 *    Each message is one record of at most LINK_HS_MSG_MAX bytes. The PSK is a mesh key: the
 *    initiator uses the primary key of its ring, the responder trial-reads message 3 with each
 *    key of its ring on a copy of its HandshakeState.
 *    XXpsk3 mixes the PSK in only at message 3, so the initiator cannot know that the responder
 *    holds the mesh key until it decrypts the responder's first transport frame; that frame is
 *    always HELLO (below), and the initiator reports the handshake done only then. Note also
 *    that message 2's payload is readable by anyone who sends a message 1 (it is encrypted to
 *    the initiator's ephemeral key only): put nothing secret in the handshake payload.
 *    A record whose length field is LINK_ABORT_MAGIC | reason (a value no real record can have)
 *    is a plaintext "handshake aborted" notice, honoured only before the handshake completes;
 *    it is unauthenticated and says no more than closing the TCP connection would.
 *    Version 1 ("fogmesh-link-v1", no cipher byte) and version 2 nodes cannot talk: the
 *    prologue enters the handshake hash, so message 1 already fails to authenticate.
 *
 *    Cipher negotiation. The first byte of the payloads of messages 2 and 3 belongs to the link:
 *    a bitmask of the transport ciphers its sender accepts, bit 0 ChaCha20-Poly1305 (always
 *    set), bit 1 AES-256-GCM (set when link_config.ciphers allows it and the sender's CPU has
 *    AES-NI); the other bits are sent as 0 and ignored. A message 2 or 3 without that byte, or
 *    with bit 0 clear, is a protocol error. The link strips the byte: on_handshake sees the
 *    application's payload only, at most LINK_HS_PAYLOAD_MAX bytes as before. After Split,
 *    both directions use AES-256-GCM (Noise section 12.4) when both masks have bit 1, else
 *    ChaCha20-Poly1305 (section 12.3); the handshake itself is always ChaChaPoly.
 *    An attacker cannot downgrade (or upgrade) the choice: both masks travel encrypted inside
 *    the handshake and are covered by the handshake hash h. Message 2's payload is AEAD-
 *    encrypted under a key bound to the responder's static key (es) with h as associated data;
 *    message 3's payload under a key that also depends on the PSK, with an h that covers all of
 *    message 2; and the initiator trusts the result only once HELLO decrypts under the keys of
 *    Split, which depend on the PSK. Altering either mask therefore makes message 2, message 3
 *    or HELLO fail to decrypt, and the handshake dies as with any other tampering.
 *
 * 2. Transport: each record is one frame = ciphertext of (header || body) + 16-byte tag, with
 *    one CipherState per direction (Noise section 5.2 Split), the negotiated AEAD and its
 *    counter nonce (section 12.3 for ChaChaPoly, 12.4 for AESGCM); empty associated data.
 *    A lost, reordered, replayed or altered frame fails to decrypt and kills the link. The
 *    plaintext header is LINK_FRAME_HDR_LEN (6) bytes: u8 type, u8 flags (0), u32 channel.
 *      type  name    channel  body
 *       1    HELLO   0        none; first frame of the responder
 *       2    PING    0        u64 opaque
 *       3    PONG    0        the PING's u64
 *       4    REKEY   0        none
 *       5    GOAWAY  0        u16 reason (enum link_goaway)
 *      16    OPEN    id       u16 type, open payload (<= LINK_OPEN_PAYLOAD_MAX)
 *      17    WINDOW  id       u32 credit increment (bytes)
 *      18    DATA    id       1..max_frame_payload bytes
 *      19    FIN     id       none (no more DATA from the sender: half-close)
 *      20    RESET   id       u32 reason code
 *    Any other type is a protocol error. Channel ids: the initiator opens odd ids, the
 *    responder even ids, each side strictly increasing and never reused (as HTTP/2, RFC 9113
 *    section 5.1.1), so a late frame for a channel already gone is recognised and ignored, while
 *    a frame for an id never opened is a protocol error.
 *
 * Rekeying (Noise section 11.3 leaves the signalling to the application): each side rekeys its
 * own sending key after rekey_bytes of plaintext or rekey_ms, by sending a REKEY frame under the
 * old key and then calling Rekey() (section 4.2, with the negotiated cipher); the receiver
 * calls Rekey() on its receiving key right after decrypting REKEY. Both directions are
 * independent, so no agreement is needed, and the nonce counters simply continue.
 *
 * Flow control (per channel, per direction): a sender starts with zero credit and may send
 * DATA only within the credit the receiver granted with WINDOW frames. Each side grants its
 * chan_window with a WINDOW frame right after sending (opener) or accepting (peer) the OPEN,
 * then returns credit as the application consumes data (link_channel_consume), batching updates
 * until half a window is owed. DATA beyond the granted credit is a protocol error that kills
 * the link, so what a peer can make us hold is bounded by the window.
 *
 * Priorities: channels whose type has LINK_CHAN_CONTROL set are "control" channels. Frames are
 * encrypted lazily when the output is read (link_output_peek): link and channel control frames
 * first, then control-channel data, then at most one bulk DATA frame (of at most
 * LINK_BULK_CHUNK bytes) and only when no other encrypted bytes are waiting, so a large bulk
 * transfer delays control traffic by at most one bulk frame plus what the transport buffers.
 * Queueing is bounded per link too (out_cap): bulk channels stop being accepted at out_cap,
 * control channels only at twice that, so bulk data filling a link never blocks a control send.
 *
 * Threading and re-entrancy: one link is used from one thread. Callbacks may call the link_*
 * channel and output functions of the same link, but must not call link_free.
 *
 * Errors: functions return 0 (or a count) or a negative MESH_E* code. Once link_feed or
 * link_tick fails, the link is dead: every later call fails with MESH_ESTATE, link_error says
 * why, and link_output_peek may still return a final notice (abort record or GOAWAY frame) that
 * the owner should try to flush before closing the socket. */
/* clang-format on */
#ifndef FOGMESH_NETLINK_LINK_H
#define FOGMESH_NETLINK_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define LINK_KEY_LEN          32
#define LINK_MAX_PSKS         4
#define LINK_HS_PAYLOAD_MAX   512
#define LINK_HS_MSG_MAX       1024
#define LINK_OPEN_PAYLOAD_MAX 256
#define LINK_FRAME_HDR_LEN    6
#define LINK_FRAME_OVERHEAD   (4 + LINK_FRAME_HDR_LEN + 16) /* length + header + tag */
#define LINK_BULK_CHUNK       65536
#define LINK_ABORT_MAGIC      0xFFFFFF00u
#define LINK_CHAN_CONTROL     0x8000u /* channel type flag: control priority */
#define LINK_NO_DEADLINE      UINT64_MAX
#define LINK_PROLOGUE         "fogmesh-link-v2"

/* Transport ciphers: bits of link_config.ciphers and of the handshake's cipher mask. */
#define LINK_CIPHER_CHACHAPOLY 0x01u /* ChaCha20-Poly1305: every node; always accepted */
#define LINK_CIPHER_AESGCM     0x02u /* AES-256-GCM: only where the CPU has AES-NI and PCLMUL */
#define LINK_CIPHER_AUTO       0x00u /* ChaChaPoly, and AES-GCM when this CPU has it */

/* Defaults, used where a config field is 0. */
#define LINK_DEFAULT_MAX_FRAME    65536
#define LINK_DEFAULT_MAX_CHANNELS 1024
/* 1 MiB, not 256 KiB: a tunnel's throughput is at most a window per round trip, and on a busy
 * host that round trip includes scheduling delays (+10-15 % on 2 shared cores, bench/README.md
 * tunnel); on a WAN link of 50 ms it is still only 20 MB/s per tunnel (ssh uses 2 MiB). */
#define LINK_DEFAULT_WINDOW       (1024 * 1024)
#define LINK_DEFAULT_SNDBUF       (256 * 1024)
#define LINK_DEFAULT_OUT_CAP      (1024 * 1024)
#define LINK_DEFAULT_REKEY_BYTES  (1ull << 30)
#define LINK_DEFAULT_REKEY_MS     (2 * 60 * 1000)
#define LINK_DEFAULT_HS_TIMEOUT   5000
#define LINK_DEFAULT_KEEPALIVE_MS 15000
#define LINK_KEEPALIVE_MISSES     3

/* GOAWAY reasons and handshake abort reasons. */
enum link_goaway {
    LINK_GOAWAY_NORMAL = 0,
    LINK_GOAWAY_AUTH = 1,     /* mesh key mismatch or undecryptable frame */
    LINK_GOAWAY_REJECTED = 2, /* the application refused the peer's identity */
    LINK_GOAWAY_PROTO = 3,    /* protocol violation */
    LINK_GOAWAY_TIMEOUT = 4,  /* handshake or keepalive timeout */
};

/* Channel reset reasons used by the link itself; applications may use any other value. */
#define LINK_RESET_REFUSED 1u /* the peer's application or channel limit refused the OPEN */
#define LINK_RESET_CANCEL  2u

struct link_config {
    bool initiator;
    uint8_t static_priv[LINK_KEY_LEN]; /* our identity (X25519); the public key is derived */
    uint8_t psks[LINK_MAX_PSKS][LINK_KEY_LEN]; /* mesh keys; psks[0] is the primary one */
    size_t n_psks;                             /* 1..LINK_MAX_PSKS */
    const uint8_t *payload; /* local handshake payload, copied by link_new; may be NULL */
    size_t payload_len;     /* <= LINK_HS_PAYLOAD_MAX */
    /* Transport ciphers we accept (see "Cipher negotiation"): LINK_CIPHER_AUTO, or
     * LINK_CIPHER_* bits including LINK_CIPHER_CHACHAPOLY (else MESH_EINVAL). AES-GCM is
     * offered only when this CPU can run it, even if asked for. */
    uint8_t ciphers;

    /* Limits; 0 selects the LINK_DEFAULT_* value. */
    size_t max_frame_payload; /* bytes of DATA per frame we send and accept; <= 1 MiB */
    size_t max_channels;      /* open channels at once (both directions) */
    uint32_t chan_window;     /* receive window we grant per channel */
    size_t chan_sndbuf;       /* bytes link_channel_send buffers per channel */
    size_t out_cap;           /* bytes queued by bulk channels plus encrypted output waiting;
                                 control channels may queue up to twice that */
    uint64_t rekey_bytes;     /* rekey our sending key after this many plaintext bytes */
    uint64_t rekey_ms;        /* ... or this long */
    uint64_t hs_timeout_ms;
    uint64_t keepalive_ms; /* PING interval; dead after LINK_KEEPALIVE_MISSES silent ones */

    /* Tests and fuzzers only: fixed ephemeral private key (NULL in production). */
    const uint8_t *test_ephemeral;
};

struct link_callbacks {
    /* Handshake complete and authenticated: the peer's static key and its handshake payload
     * (valid during the call). Return 0 to accept, anything else to reject: the link then
     * sends GOAWAY(REJECTED) and dies with MESH_EAUTH. Required. */
    int (*on_handshake)(void *ud, const uint8_t peer_static[LINK_KEY_LEN], const uint8_t *payload,
                        size_t len);
    /* The peer opened channel id. Return 0 to accept (a WINDOW is sent), or a nonzero reset
     * reason to refuse it (a RESET is sent; no other callback for this id). Optional: without
     * it every OPEN is refused. */
    uint32_t (*on_channel_open)(void *ud, uint32_t id, uint16_t type, const uint8_t *payload,
                                size_t len);
    /* DATA on channel id, valid during the call. Call link_channel_consume(id, n) once n bytes
     * have been processed to return credit to the peer. */
    void (*on_channel_data)(void *ud, uint32_t id, const uint8_t *data, size_t len);
    /* link_channel_send accepted less than asked before, and there is room again. */
    void (*on_channel_writable)(void *ud, uint32_t id);
    /* The peer half-closed channel id (FIN): no more data will come. The channel is released
     * once both sides have closed it. */
    void (*on_channel_closed)(void *ud, uint32_t id);
    /* The peer reset channel id; the channel is released when this returns. */
    void (*on_channel_reset)(void *ud, uint32_t id, uint32_t reason);
    /* Optional: output became available (edge-triggered: once until the next link_output_peek).
     * Do not call link functions from it; schedule a flush instead. */
    void (*on_output)(void *ud);
};

struct link_stats {
    uint64_t frames_in, frames_out;
    uint64_t bytes_in, bytes_out; /* wire bytes, handshake included */
    uint64_t auth_failures;       /* undecryptable handshake messages or frames */
    uint64_t protocol_errors;
    uint64_t rekeys_tx, rekeys_rx;
    uint64_t channels_opened, channels_refused;
    uint64_t pings_tx, pongs_rx;
};

enum link_state {
    LINK_STATE_NEW,
    LINK_STATE_HANDSHAKE,
    LINK_STATE_ESTABLISHED,
    LINK_STATE_CLOSING, /* GOAWAY queued by link_close */
    LINK_STATE_DEAD,
};

struct link;

/* Fills cfg with defaults (zeroed keys, responder). */
void link_config_init(struct link_config *cfg);

/* Creates a link. cfg and cb are copied (cfg->payload too); ud is passed to callbacks. On
 * failure *ret is untouched. Returns 0, MESH_EINVAL or MESH_ENOMEM. */
int link_new(const struct link_config *cfg, const struct link_callbacks *cb, void *ud,
             struct link **ret);

/* Wipes keys and frees; accepts NULL. */
void link_free(struct link *l);

/* Starts the handshake timer; the initiator writes message 1. */
int link_start(struct link *l, uint64_t now_ms);

/* Feeds bytes received (any split). Returns 0, or a negative code after which the link is
 * dead (see link_error). data is only read during the call. */
int link_feed(struct link *l, const uint8_t *data, size_t len, uint64_t now_ms);

/* Zero-copy input: link_input_space returns the room (always at least one whole record) at
 * *ptr where the owner may receive bytes; link_input_commit then takes the n bytes written
 * there, as link_feed does. Frames are decrypted in place. */
size_t link_input_space(struct link *l, uint8_t **ptr);
int link_input_commit(struct link *l, size_t n, uint64_t now_ms);

/* The transport reached end of stream. Returns MESH_ECLOSED (the link is now dead) with a
 * message that says what was going on. */
int link_feed_eof(struct link *l, uint64_t now_ms);

/* Encrypts pending frames if needed and returns the bytes waiting to be sent (*len may be 0).
 * The pointer is valid until the next call on this link. */
void link_output_peek(struct link *l, const uint8_t **ptr, size_t *len);
/* n bytes of the peeked output were sent. */
void link_output_consume(struct link *l, size_t n);
/* True when nothing is waiting (encrypted or to be encrypted). */
bool link_output_idle(const struct link *l);

/* Timers: handshake timeout, keepalive, time-based rekey. Returns 0 or a negative code after
 * which the link is dead. */
int link_tick(struct link *l, uint64_t now_ms);
/* When link_tick should be called next (LINK_NO_DEADLINE if never). */
uint64_t link_next_deadline(const struct link *l);

/* Graceful close: sends GOAWAY(NORMAL); the owner closes the transport once the output is
 * idle. */
int link_close(struct link *l);

enum link_state link_state(const struct link *l);
const struct mesh_err *link_error(const struct link *l);
const struct link_stats *link_stats(const struct link *l);
/* The peer's static key, once the handshake is done. */
bool link_peer_static(const struct link *l, uint8_t out[static LINK_KEY_LEN]);
/* The negotiated transport cipher, "chacha20-poly1305" or "aes-256-gcm", from the moment the
 * keys are split (on_handshake may ask); NULL before. A static string. */
const char *link_cipher_name(const struct link *l);
/* True when this CPU can run AES-256-GCM (libsodium's AES-NI code), so that
 * LINK_CIPHER_AUTO offers it. Needs sodium_init() first. */
bool link_aesgcm_available(void);

/* Opens a channel (established links only). payload (<= LINK_OPEN_PAYLOAD_MAX) is copied.
 * Returns 0 and *ret_id, MESH_ESTATE, MESH_EINVAL, MESH_EFULL (channel limit or ids
 * exhausted). Data may be queued at once; it flows when the peer grants credit. */
int link_channel_open(struct link *l, uint16_t type, const uint8_t *payload, size_t len,
                      uint32_t *ret_id);

/* Queues up to len bytes (copied) and returns how many were accepted, bounded by the peer's
 * credit and the channel send buffer (0 = wait for on_channel_writable), or MESH_ENOTFOUND,
 * MESH_ESTATE (closed for sending / link not established), MESH_EAGAIN (link output full). */
long link_channel_send(struct link *l, uint32_t id, const uint8_t *data, size_t len);

/* Zero-copy variant: link_channel_reserve returns how many bytes (at most len) the channel
 * accepts now, with the same bounds and results as link_channel_send, and sets *ptr to where
 * they go; link_channel_commit then queues the first n (<= that) bytes written there. Nothing
 * else may be called on the link between the two. */
long link_channel_reserve(struct link *l, uint32_t id, size_t len, uint8_t **ptr);
int link_channel_commit(struct link *l, uint32_t id, size_t n);

/* The application has processed n bytes delivered by on_channel_data. Returns 0,
 * MESH_ENOTFOUND, MESH_EINVAL (more than was delivered). */
int link_channel_consume(struct link *l, uint32_t id, size_t n);

/* Half-close: FIN after the buffered data. */
int link_channel_close(struct link *l, uint32_t id);

/* Abort: drops buffered data, sends RESET(reason), releases the channel. No callback fires
 * for it afterwards. */
int link_channel_reset(struct link *l, uint32_t id, uint32_t reason);

/* Number of channels currently held. */
size_t link_channel_count(const struct link *l);

/* Tests and fuzzers only: encrypts an arbitrary plaintext frame (header included) into the
 * output, as if this link had produced it, to drive the peer's parser with valid ciphertext. */
int link_test_send_raw(struct link *l, const uint8_t *plaintext, size_t len);

#endif
