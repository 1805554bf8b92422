/* Noise Protocol Framework rev 34 on libsodium. Section numbers below are those of the spec. */
#include "noise.h"

#include <string.h>

#include <sodium.h>

#include "err.h"

/* Tokens of a message pattern (section 7.1; psk from section 9). */
enum tok { T_END = 0, T_E, T_S, T_EE, T_ES, T_SE, T_SS, T_PSK };

#define MAX_MSGS 3
#define MAX_TOKS 5

struct pattern_def {
    const char *name; /* full protocol name, section 8 */
    bool psk;         /* a psk modifier is present: "e" also calls MixKey (section 9.2) */
    bool resp_s_pre;  /* "<- s" pre-message (IK) */
    uint8_t n_msgs;
    enum tok msgs[MAX_MSGS][MAX_TOKS + 1];
};

/* Section 7.4 (NN, XX, IK) with the psk modifiers of section 9.3 applied. Messages alternate,
 * the initiator first. Constant data, not mutable state. */
static const struct pattern_def patterns[] = {
    [NOISE_PATTERN_NN] =
        {"Noise_NN_25519_ChaChaPoly_BLAKE2b", false, false, 2, {{T_E}, {T_E, T_EE}}},
    [NOISE_PATTERN_NNPSK0] =
        {"Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b", true, false, 2, {{T_PSK, T_E}, {T_E, T_EE}}},
    [NOISE_PATTERN_XX] = {"Noise_XX_25519_ChaChaPoly_BLAKE2b",
                          false,
                          false,
                          3,
                          {{T_E}, {T_E, T_EE, T_S, T_ES}, {T_S, T_SE}}},
    [NOISE_PATTERN_XXPSK3] = {"Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b",
                              true,
                              false,
                              3,
                              {{T_E}, {T_E, T_EE, T_S, T_ES}, {T_S, T_SE, T_PSK}}},
    [NOISE_PATTERN_IKPSK2] = {"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b",
                              true,
                              true,
                              2,
                              {{T_E, T_ES, T_S, T_SS}, {T_E, T_EE, T_SE, T_PSK}}},
};

/* ---- CipherState (section 5.1) ---- */

/* The 96-bit nonce: 32 bits of zeros, then n little-endian for ChaChaPoly (section 12.3) or
 * big-endian for AESGCM (section 12.4). */
static void nonce96(const struct noise_cipher *cs, uint64_t n, uint8_t out[12])
{
    memset(out, 0, 4);
    for (int i = 0; i < 8; i++) {
        uint8_t b = (uint8_t)(n >> (8 * i));
        if (cs->aead == NOISE_AEAD_AESGCM)
            out[11 - i] = b;
        else
            out[4 + i] = b;
    }
}

/* ENCRYPT(k, n, ad, plaintext) of the cipher (sections 12.3 and 12.4): len + TAGLEN bytes into
 * out, which may be in. Neither AEAD can fail for our lengths (at most NOISE_MAX_MSGLEN in the
 * handshake, a link frame of at most a few MiB in transport). */
static void aead_encrypt(const struct noise_cipher *cs, uint64_t n, const uint8_t *ad,
                         size_t ad_len, const uint8_t *in, size_t len, uint8_t *out)
{
    uint8_t nonce[12];
    nonce96(cs, n, nonce);
    if (cs->aead == NOISE_AEAD_AESGCM)
        crypto_aead_aes256gcm_encrypt_afternm(out, NULL, in, len, ad, ad_len, NULL, nonce,
                                              &cs->aes);
    else
        crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, in, len, ad, ad_len, NULL, nonce,
                                                  cs->k);
}

/* DECRYPT: 0, or -1 when the tag does not verify. in holds len >= TAGLEN bytes. */
static int aead_decrypt(const struct noise_cipher *cs, uint64_t n, const uint8_t *ad, size_t ad_len,
                        const uint8_t *in, size_t len, uint8_t *out)
{
    uint8_t nonce[12];
    nonce96(cs, n, nonce);
    if (cs->aead == NOISE_AEAD_AESGCM)
        return crypto_aead_aes256gcm_decrypt_afternm(out, NULL, NULL, in, len, ad, ad_len, nonce,
                                                     &cs->aes);
    return crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, in, len, ad, ad_len, nonce,
                                                     cs->k);
}

/* Sets k, keeping the AESGCM key schedule in step with it. */
static void cipher_set_key(struct noise_cipher *cs, const uint8_t k[NOISE_KEYLEN])
{
    memcpy(cs->k, k, NOISE_KEYLEN);
    if (cs->aead == NOISE_AEAD_AESGCM)
        crypto_aead_aes256gcm_beforenm(&cs->aes, cs->k);
}

int noise_cipher_encrypt(struct noise_cipher *cs, const uint8_t *ad, size_t ad_len,
                         const uint8_t *in, size_t len, uint8_t *out)
{
    if (!cs->has_key || cs->n == UINT64_MAX)
        return MESH_ESTATE;
    aead_encrypt(cs, cs->n, ad, ad_len, in, len, out);
    cs->n++;
    return 0;
}

int noise_cipher_decrypt(struct noise_cipher *cs, const uint8_t *ad, size_t ad_len,
                         const uint8_t *in, size_t len, uint8_t *out)
{
    if (!cs->has_key || cs->n == UINT64_MAX)
        return MESH_ESTATE;
    if (len < NOISE_TAGLEN)
        return MESH_EMALFORMED;
    if (aead_decrypt(cs, cs->n, ad, ad_len, in, len, out) != 0)
        return MESH_EAUTH;
    cs->n++;
    return 0;
}

void noise_cipher_rekey(struct noise_cipher *cs)
{
    uint8_t zeros[NOISE_KEYLEN] = {0};
    uint8_t tmp[NOISE_KEYLEN + NOISE_TAGLEN];

    /* Section 4.2: REKEY(k) = ENCRYPT(k, maxnonce, zerolen, zeros), truncated to 32 bytes; the
     * cipher's own ENCRYPT, so AESGCM rekeys with AES-GCM (section 11.3). */
    aead_encrypt(cs, UINT64_MAX, NULL, 0, zeros, sizeof zeros, tmp);
    cipher_set_key(cs, tmp);
    sodium_memzero(tmp, sizeof tmp);
}

int noise_cipher_use_aesgcm(struct noise_cipher *cs)
{
    if (!crypto_aead_aes256gcm_is_available())
        return MESH_EUNSUPPORTED;
    if (!cs->has_key || cs->n != 0)
        return MESH_ESTATE;
    if (cs->aead == NOISE_AEAD_AESGCM)
        return 0;
    cs->aead = NOISE_AEAD_AESGCM;
    crypto_aead_aes256gcm_beforenm(&cs->aes, cs->k);
    return 0;
}

void noise_cipher_wipe(struct noise_cipher *cs)
{
    sodium_memzero(cs, sizeof *cs); /* the AESGCM key schedule too */
}

/* InitializeKey(k) (section 5.1). */
static void cipher_init_key(struct noise_cipher *cs, const uint8_t k[NOISE_KEYLEN])
{
    cipher_set_key(cs, k);
    cs->n = 0;
    cs->has_key = true;
}

/* ---- Hash functions (sections 4.3 and 12.8) ---- */

static void hash2(uint8_t out[NOISE_HASHLEN], const uint8_t *a, size_t alen, const uint8_t *b,
                  size_t blen)
{
    crypto_generichash_blake2b_state st;
    crypto_generichash_blake2b_init(&st, NULL, 0, NOISE_HASHLEN);
    crypto_generichash_blake2b_update(&st, a, alen);
    if (blen)
        crypto_generichash_blake2b_update(&st, b, blen);
    crypto_generichash_blake2b_final(&st, out, NOISE_HASHLEN);
    sodium_memzero(&st, sizeof st);
}

/* HMAC-HASH (RFC 2104) with BLOCKLEN 128, as section 4.3 requires; not BLAKE2b's keyed mode,
 * which would give different results. key_len is at most HASHLEN. */
static void hmac(uint8_t out[NOISE_HASHLEN], const uint8_t *key, size_t key_len, const uint8_t *d1,
                 size_t d1_len, const uint8_t *d2, size_t d2_len)
{
    uint8_t pad[NOISE_BLOCKLEN];
    uint8_t inner[NOISE_HASHLEN];
    crypto_generichash_blake2b_state st;

    memset(pad, 0, sizeof pad);
    memcpy(pad, key, key_len);
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] ^= 0x36;
    crypto_generichash_blake2b_init(&st, NULL, 0, NOISE_HASHLEN);
    crypto_generichash_blake2b_update(&st, pad, sizeof pad);
    if (d1_len)
        crypto_generichash_blake2b_update(&st, d1, d1_len);
    if (d2_len)
        crypto_generichash_blake2b_update(&st, d2, d2_len);
    crypto_generichash_blake2b_final(&st, inner, sizeof inner);

    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] ^= 0x36 ^ 0x5c;
    crypto_generichash_blake2b_init(&st, NULL, 0, NOISE_HASHLEN);
    crypto_generichash_blake2b_update(&st, pad, sizeof pad);
    crypto_generichash_blake2b_update(&st, inner, sizeof inner);
    crypto_generichash_blake2b_final(&st, out, NOISE_HASHLEN);

    sodium_memzero(pad, sizeof pad);
    sodium_memzero(inner, sizeof inner);
    sodium_memzero(&st, sizeof st);
}

/* HKDF(chaining_key, input_key_material, num_outputs) of section 4.3; out3 may be NULL. */
static void hkdf(const uint8_t ck[NOISE_HASHLEN], const uint8_t *ikm, size_t ikm_len,
                 uint8_t out1[NOISE_HASHLEN], uint8_t out2[NOISE_HASHLEN],
                 uint8_t out3[NOISE_HASHLEN])
{
    uint8_t temp_key[NOISE_HASHLEN];
    const uint8_t one = 1, two = 2, three = 3;

    hmac(temp_key, ck, NOISE_HASHLEN, ikm, ikm_len, NULL, 0);
    hmac(out1, temp_key, NOISE_HASHLEN, &one, 1, NULL, 0);
    hmac(out2, temp_key, NOISE_HASHLEN, out1, NOISE_HASHLEN, &two, 1);
    if (out3)
        hmac(out3, temp_key, NOISE_HASHLEN, out2, NOISE_HASHLEN, &three, 1);
    sodium_memzero(temp_key, sizeof temp_key);
}

/* ---- SymmetricState (section 5.2) ---- */

static void sym_init(struct noise_symmetric *ss, const char *name)
{
    size_t len = strlen(name);
    memset(ss, 0, sizeof *ss);
    if (len <= NOISE_HASHLEN)
        memcpy(ss->h, name, len); /* zero-padded */
    else
        hash2(ss->h, (const uint8_t *)name, len, NULL, 0);
    memcpy(ss->ck, ss->h, NOISE_HASHLEN);
}

static void mix_hash(struct noise_symmetric *ss, const uint8_t *data, size_t len)
{
    hash2(ss->h, ss->h, NOISE_HASHLEN, data, len);
}

static void mix_key(struct noise_symmetric *ss, const uint8_t *ikm, size_t len)
{
    uint8_t ck[NOISE_HASHLEN], k[NOISE_HASHLEN];
    hkdf(ss->ck, ikm, len, ck, k, NULL);
    memcpy(ss->ck, ck, NOISE_HASHLEN);
    cipher_init_key(&ss->cs, k); /* HASHLEN 64: truncated to 32 bytes */
    sodium_memzero(ck, sizeof ck);
    sodium_memzero(k, sizeof k);
}

static void mix_key_and_hash(struct noise_symmetric *ss, const uint8_t *ikm, size_t len)
{
    uint8_t ck[NOISE_HASHLEN], th[NOISE_HASHLEN], k[NOISE_HASHLEN];
    hkdf(ss->ck, ikm, len, ck, th, k);
    memcpy(ss->ck, ck, NOISE_HASHLEN);
    mix_hash(ss, th, NOISE_HASHLEN);
    cipher_init_key(&ss->cs, k);
    sodium_memzero(ck, sizeof ck);
    sodium_memzero(th, sizeof th);
    sodium_memzero(k, sizeof k);
}

/* EncryptAndHash: out gets len (+ TAGLEN once a key is set) bytes. in and out may alias. */
static int encrypt_and_hash(struct noise_symmetric *ss, const uint8_t *in, size_t len, uint8_t *out,
                            size_t *ret_len)
{
    if (ss->cs.has_key) {
        int r = noise_cipher_encrypt(&ss->cs, ss->h, NOISE_HASHLEN, in, len, out);
        if (r < 0)
            return r;
        len += NOISE_TAGLEN;
    } else if (out != in) {
        memmove(out, in, len);
    }
    mix_hash(ss, out, len);
    *ret_len = len;
    return 0;
}

/* DecryptAndHash: in holds len bytes (ciphertext with tag once a key is set). */
static int decrypt_and_hash(struct noise_symmetric *ss, const uint8_t *in, size_t len, uint8_t *out,
                            size_t *ret_len)
{
    uint8_t h[NOISE_HASHLEN];
    hash2(h, ss->h, NOISE_HASHLEN, in, len); /* hash the ciphertext before out may overwrite it */
    if (ss->cs.has_key) {
        int r = noise_cipher_decrypt(&ss->cs, ss->h, NOISE_HASHLEN, in, len, out);
        if (r < 0)
            return r;
        len -= NOISE_TAGLEN;
    } else if (out != in) {
        memmove(out, in, len);
    }
    memcpy(ss->h, h, NOISE_HASHLEN);
    *ret_len = len;
    return 0;
}

/* ---- HandshakeState (section 5.3) ---- */

static int dh(uint8_t out[NOISE_DHLEN], const uint8_t priv[NOISE_DHLEN],
              const uint8_t pub[NOISE_DHLEN])
{
    /* libsodium rejects the all-zero output (a low-order public key); section 12.1 allows
     * either behaviour, and refusing is the safer one for an authenticated handshake. */
    return crypto_scalarmult(out, priv, pub) == 0 ? 0 : MESH_EAUTH;
}

int noise_handshake_init(struct noise_handshake *hs, const struct noise_params *p)
{
    const struct pattern_def *pd;

    if ((unsigned)p->pattern >= sizeof patterns / sizeof patterns[0])
        return MESH_EINVAL;
    pd = &patterns[p->pattern];
    if ((p->pattern == NOISE_PATTERN_XX || p->pattern == NOISE_PATTERN_XXPSK3 ||
         p->pattern == NOISE_PATTERN_IKPSK2) &&
        !p->s_priv)
        return MESH_EINVAL;
    if (pd->resp_s_pre && p->initiator && !p->rs)
        return MESH_EINVAL;
    if (p->prologue_len && !p->prologue)
        return MESH_EINVAL;

    memset(hs, 0, sizeof *hs);
    hs->pattern = (uint8_t)p->pattern;
    hs->initiator = p->initiator;
    if (p->s_priv) {
        memcpy(hs->s_priv, p->s_priv, NOISE_DHLEN);
        crypto_scalarmult_base(hs->s_pub, hs->s_priv);
        hs->has_s = true;
    }
    if (p->rs) {
        memcpy(hs->rs, p->rs, NOISE_DHLEN);
        hs->has_rs = true;
    }
    if (p->psk)
        noise_handshake_set_psk(hs, p->psk);
    if (p->test_ephemeral) {
        memcpy(hs->fixed_e, p->test_ephemeral, NOISE_DHLEN);
        hs->has_fixed_e = true;
    }

    sym_init(&hs->ss, pd->name);
    mix_hash(&hs->ss, p->prologue, p->prologue_len);
    /* Pre-messages (section 5.3 Initialize): only IK's "<- s" among our patterns. */
    if (pd->resp_s_pre)
        mix_hash(&hs->ss, p->initiator ? hs->rs : hs->s_pub, NOISE_DHLEN);
    return 0;
}

void noise_handshake_set_psk(struct noise_handshake *hs, const uint8_t psk[static NOISE_PSKLEN])
{
    memcpy(hs->psk, psk, NOISE_PSKLEN);
    hs->has_psk = true;
}

bool noise_handshake_done(const struct noise_handshake *hs)
{
    return hs->msg_index >= patterns[hs->pattern].n_msgs;
}

bool noise_handshake_our_turn(const struct noise_handshake *hs)
{
    if (noise_handshake_done(hs))
        return false;
    /* Even messages are the initiator's ("->"), odd ones the responder's ("<-"). */
    return (hs->msg_index % 2 == 0) == hs->initiator;
}

/* The DH of a token from our point of view (section 5.3 WriteMessage/ReadMessage). */
static int token_dh(struct noise_handshake *hs, enum tok t)
{
    uint8_t out[NOISE_DHLEN];
    const uint8_t *priv = NULL, *pub = NULL;
    bool ok;
    int r;

    switch (t) {
    case T_EE:
        ok = hs->has_e && hs->has_re;
        priv = hs->e_priv, pub = hs->re;
        break;
    case T_SS:
        ok = hs->has_s && hs->has_rs;
        priv = hs->s_priv, pub = hs->rs;
        break;
    case T_ES: /* initiator's e with responder's s */
        if (hs->initiator)
            ok = hs->has_e && hs->has_rs, priv = hs->e_priv, pub = hs->rs;
        else
            ok = hs->has_s && hs->has_re, priv = hs->s_priv, pub = hs->re;
        break;
    case T_SE: /* initiator's s with responder's e */
        if (hs->initiator)
            ok = hs->has_s && hs->has_re, priv = hs->s_priv, pub = hs->re;
        else
            ok = hs->has_e && hs->has_rs, priv = hs->e_priv, pub = hs->rs;
        break;
    default:
        return MESH_EINVAL;
    }
    if (!ok)
        return MESH_ESTATE;
    r = dh(out, priv, pub);
    if (r == 0)
        mix_key(&hs->ss, out, NOISE_DHLEN);
    sodium_memzero(out, sizeof out);
    return r;
}

int noise_handshake_write(struct noise_handshake *hs, const uint8_t *payload, size_t payload_len,
                          uint8_t *out, size_t out_cap, size_t *ret_len)
{
    const struct pattern_def *pd = &patterns[hs->pattern];
    size_t off = 0, n;
    int r;

    if (!noise_handshake_our_turn(hs) || hs->split_done)
        return MESH_ESTATE;
    for (const enum tok *t = pd->msgs[hs->msg_index]; *t != T_END; t++) {
        switch (*t) {
        case T_E:
            if (out_cap - off < NOISE_DHLEN)
                return MESH_ETOOBIG;
            if (hs->has_fixed_e)
                memcpy(hs->e_priv, hs->fixed_e, NOISE_DHLEN);
            else
                randombytes_buf(hs->e_priv, NOISE_DHLEN);
            crypto_scalarmult_base(hs->e_pub, hs->e_priv);
            hs->has_e = true;
            memcpy(out + off, hs->e_pub, NOISE_DHLEN);
            off += NOISE_DHLEN;
            mix_hash(&hs->ss, hs->e_pub, NOISE_DHLEN);
            if (pd->psk) /* section 9.2 */
                mix_key(&hs->ss, hs->e_pub, NOISE_DHLEN);
            break;
        case T_S:
            if (!hs->has_s)
                return MESH_ESTATE;
            if (out_cap - off < NOISE_DHLEN + NOISE_TAGLEN)
                return MESH_ETOOBIG;
            memcpy(out + off, hs->s_pub, NOISE_DHLEN);
            r = encrypt_and_hash(&hs->ss, out + off, NOISE_DHLEN, out + off, &n);
            if (r < 0)
                return r;
            off += n;
            break;
        case T_PSK:
            if (!hs->has_psk)
                return MESH_ESTATE;
            mix_key_and_hash(&hs->ss, hs->psk, NOISE_PSKLEN);
            break;
        default:
            r = token_dh(hs, *t);
            if (r < 0)
                return r;
            break;
        }
    }
    if (out_cap - off < payload_len + (hs->ss.cs.has_key ? NOISE_TAGLEN : 0) ||
        off + payload_len + NOISE_TAGLEN > NOISE_MAX_MSGLEN)
        return MESH_ETOOBIG;
    if (payload_len)
        memcpy(out + off, payload, payload_len);
    r = encrypt_and_hash(&hs->ss, out + off, payload_len, out + off, &n);
    if (r < 0)
        return r;
    off += n;
    hs->msg_index++;
    *ret_len = off;
    return 0;
}

int noise_handshake_read(struct noise_handshake *hs, const uint8_t *msg, size_t len,
                         uint8_t *payload_out, size_t cap, size_t *ret_len)
{
    const struct pattern_def *pd = &patterns[hs->pattern];
    size_t off = 0, n;
    int r;

    if (hs->split_done || noise_handshake_done(hs) || noise_handshake_our_turn(hs))
        return MESH_ESTATE;
    if (len > NOISE_MAX_MSGLEN)
        return MESH_ETOOBIG;
    for (const enum tok *t = pd->msgs[hs->msg_index]; *t != T_END; t++) {
        switch (*t) {
        case T_E:
            if (len - off < NOISE_DHLEN)
                return MESH_EMALFORMED;
            memcpy(hs->re, msg + off, NOISE_DHLEN);
            hs->has_re = true;
            off += NOISE_DHLEN;
            mix_hash(&hs->ss, hs->re, NOISE_DHLEN);
            if (pd->psk) /* section 9.2 */
                mix_key(&hs->ss, hs->re, NOISE_DHLEN);
            break;
        case T_S: {
            size_t need = NOISE_DHLEN + (hs->ss.cs.has_key ? NOISE_TAGLEN : 0);
            uint8_t rs[NOISE_DHLEN];
            if (len - off < need)
                return MESH_EMALFORMED;
            r = decrypt_and_hash(&hs->ss, msg + off, need, rs, &n);
            if (r < 0)
                return r;
            memcpy(hs->rs, rs, NOISE_DHLEN);
            hs->has_rs = true;
            off += need;
            break;
        }
        case T_PSK:
            if (!hs->has_psk)
                return MESH_ESTATE;
            mix_key_and_hash(&hs->ss, hs->psk, NOISE_PSKLEN);
            break;
        default:
            r = token_dh(hs, *t);
            if (r < 0)
                return r;
            break;
        }
    }
    n = len - off;
    if (hs->ss.cs.has_key) {
        if (n < NOISE_TAGLEN)
            return MESH_EMALFORMED;
        if (n - NOISE_TAGLEN > cap)
            return MESH_ETOOBIG;
    } else if (n > cap) {
        return MESH_ETOOBIG;
    }
    /* Decrypt into a payload buffer that can hold it; an empty payload needs no buffer. */
    {
        uint8_t dummy[1];
        r = decrypt_and_hash(&hs->ss, msg + off, n, payload_out ? payload_out : dummy, &n);
        if (r < 0)
            return r;
    }
    hs->msg_index++;
    *ret_len = n;
    return 0;
}

void noise_handshake_hash(const struct noise_handshake *hs, uint8_t out[static NOISE_HASHLEN])
{
    memcpy(out, hs->ss.h, NOISE_HASHLEN);
}

bool noise_handshake_remote_static(const struct noise_handshake *hs,
                                   uint8_t out[static NOISE_DHLEN])
{
    if (!hs->has_rs)
        return false;
    memcpy(out, hs->rs, NOISE_DHLEN);
    return true;
}

int noise_handshake_split(struct noise_handshake *hs, struct noise_cipher *ret_send,
                          struct noise_cipher *ret_recv)
{
    uint8_t k1[NOISE_HASHLEN], k2[NOISE_HASHLEN];
    struct noise_cipher c1 = {0}, c2 = {0};
    uint8_t h[NOISE_HASHLEN], rs[NOISE_DHLEN];
    bool has_rs = hs->has_rs;

    if (!noise_handshake_done(hs) || hs->split_done)
        return MESH_ESTATE;
    hkdf(hs->ss.ck, NULL, 0, k1, k2, NULL);
    cipher_init_key(&c1, k1);
    cipher_init_key(&c2, k2);
    if (hs->initiator) {
        *ret_send = c1;
        *ret_recv = c2;
    } else {
        *ret_send = c2;
        *ret_recv = c1;
    }
    /* Keep only what is public (h, rs) and forget the rest (section 5.3: the HandshakeState
     * may be deleted after Split). */
    memcpy(h, hs->ss.h, sizeof h);
    memcpy(rs, hs->rs, sizeof rs);
    noise_handshake_wipe(hs);
    memcpy(hs->ss.h, h, sizeof h);
    memcpy(hs->rs, rs, sizeof rs);
    hs->has_rs = has_rs;
    hs->split_done = true;
    hs->msg_index = 0xff; /* done */
    sodium_memzero(k1, sizeof k1);
    sodium_memzero(k2, sizeof k2);
    noise_cipher_wipe(&c1);
    noise_cipher_wipe(&c2);
    return 0;
}

void noise_handshake_wipe(struct noise_handshake *hs)
{
    sodium_memzero(hs, sizeof *hs);
}
