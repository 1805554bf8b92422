/* Noise vectors from cacophony (tests/data/noise/README.md): every handshake message, the
 * handshake hash and the transport messages after it must match byte for byte.
 *
 * The data directory is $FOGMESH_TESTDATA (the tests/data folder), else argv[1], else
 * "tests/data" relative to the working directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "err.h"
#include "noise.h"

static char vector_path[4096];

struct blob {
    uint8_t *p;
    size_t len;
};

static struct blob hex(json_t *obj, const char *key)
{
    struct blob b = {NULL, 0};
    json_t *v = json_object_get(obj, key);
    const char *s;
    size_t slen;

    if (!v)
        return b;
    assert_true(json_is_string(v));
    s = json_string_value(v);
    slen = strlen(s);
    assert_int_equal(slen % 2, 0);
    b.p = malloc(slen / 2 + 1);
    assert_non_null(b.p);
    assert_int_equal(sodium_hex2bin(b.p, slen / 2 + 1, s, slen, NULL, &b.len, NULL), 0);
    assert_int_equal(b.len, slen / 2);
    return b;
}

static int pattern_of(const char *name, enum noise_pattern *ret)
{
    static const struct {
        const char *name;
        enum noise_pattern p;
    } names[] = {
        {"Noise_NN_25519_ChaChaPoly_BLAKE2b", NOISE_PATTERN_NN},
        {"Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b", NOISE_PATTERN_NNPSK0},
        {"Noise_XX_25519_ChaChaPoly_BLAKE2b", NOISE_PATTERN_XX},
        {"Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b", NOISE_PATTERN_XXPSK3},
        {"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b", NOISE_PATTERN_IKPSK2},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(names[i].name, name) == 0) {
            *ret = names[i].p;
            return 0;
        }
    }
    return -1;
}

/* The first PSK of a "init_psks"/"resp_psks" array (our patterns have a single psk token). */
static struct blob first_psk(json_t *v, const char *key)
{
    struct blob b = {NULL, 0};
    json_t *arr = json_object_get(v, key);
    json_t *tmp;

    if (!arr)
        return b;
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 1);
    tmp = json_object();
    json_object_set(tmp, "k", json_array_get(arr, 0));
    b = hex(tmp, "k");
    json_decref(tmp);
    assert_int_equal(b.len, NOISE_PSKLEN);
    return b;
}

static void run_vector(json_t *v, int *ret_checked)
{
    const char *name = json_string_value(json_object_get(v, "protocol_name"));
    enum noise_pattern pat = NOISE_PATTERN_NN;
    struct blob ipro = hex(v, "init_prologue"), rpro = hex(v, "resp_prologue");
    struct blob is = hex(v, "init_static"), rs = hex(v, "resp_static");
    struct blob ie = hex(v, "init_ephemeral"), re = hex(v, "resp_ephemeral");
    struct blob irs = hex(v, "init_remote_static"), rrs = hex(v, "resp_remote_static");
    struct blob ipsk = first_psk(v, "init_psks"), rpsk = first_psk(v, "resp_psks");
    struct blob hh = hex(v, "handshake_hash");
    struct noise_handshake ini, res;
    struct noise_cipher i_send, i_recv, r_send, r_recv;
    json_t *msgs = json_object_get(v, "messages");
    uint8_t buf[NOISE_MAX_MSGLEN], pt[NOISE_MAX_MSGLEN], h1[NOISE_HASHLEN], h2[NOISE_HASHLEN];
    size_t n, m;

    assert_non_null(name);
    print_message("vector %s\n", name);
    assert_int_equal(pattern_of(name, &pat), 0);
    assert_non_null(ie.p);
    assert_non_null(re.p);
    assert_int_equal(hh.len, NOISE_HASHLEN);
    assert_true(json_is_array(msgs));

    struct noise_params ip = {
        .pattern = pat,
        .initiator = true,
        .prologue = ipro.p,
        .prologue_len = ipro.len,
        .s_priv = is.p,
        .rs = irs.p,
        .psk = ipsk.p,
        .test_ephemeral = ie.p,
    };
    struct noise_params rp = {
        .pattern = pat,
        .initiator = false,
        .prologue = rpro.p,
        .prologue_len = rpro.len,
        .s_priv = rs.p,
        .rs = rrs.p,
        .psk = rpsk.p,
        .test_ephemeral = re.p,
    };
    assert_int_equal(noise_handshake_init(&ini, &ip), 0);
    assert_int_equal(noise_handshake_init(&res, &rp), 0);

    size_t i = 0;
    for (; i < json_array_size(msgs) && !noise_handshake_done(&ini); i++) {
        json_t *msg = json_array_get(msgs, i);
        struct blob pl = hex(msg, "payload"), ct = hex(msg, "ciphertext");
        struct noise_handshake *w = (i % 2 == 0) ? &ini : &res;
        struct noise_handshake *r = (i % 2 == 0) ? &res : &ini;

        assert_true(noise_handshake_our_turn(w));
        assert_int_equal(noise_handshake_write(w, pl.p, pl.len, buf, sizeof buf, &n), 0);
        assert_int_equal(n, ct.len);
        assert_memory_equal(buf, ct.p, n);
        assert_int_equal(noise_handshake_read(r, buf, n, pt, sizeof pt, &m), 0);
        assert_int_equal(m, pl.len);
        if (m)
            assert_memory_equal(pt, pl.p, m);
        (*ret_checked)++;
        free(pl.p);
        free(ct.p);
    }
    assert_true(noise_handshake_done(&ini));
    assert_true(noise_handshake_done(&res));

    noise_handshake_hash(&ini, h1);
    noise_handshake_hash(&res, h2);
    assert_memory_equal(h1, hh.p, NOISE_HASHLEN);
    assert_memory_equal(h2, hh.p, NOISE_HASHLEN);
    (*ret_checked)++;

    assert_int_equal(noise_handshake_split(&ini, &i_send, &i_recv), 0);
    assert_int_equal(noise_handshake_split(&res, &r_send, &r_recv), 0);
    /* h stays readable after Split */
    noise_handshake_hash(&ini, h1);
    assert_memory_equal(h1, hh.p, NOISE_HASHLEN);

    /* Transport messages keep alternating, initiator first after the handshake's parity. */
    for (; i < json_array_size(msgs); i++) {
        json_t *msg = json_array_get(msgs, i);
        struct blob pl = hex(msg, "payload"), ct = hex(msg, "ciphertext");
        struct noise_cipher *enc = (i % 2 == 0) ? &i_send : &r_send;
        struct noise_cipher *dec = (i % 2 == 0) ? &r_recv : &i_recv;

        assert_int_equal(noise_cipher_encrypt(enc, NULL, 0, pl.p, pl.len, buf), 0);
        assert_int_equal(pl.len + NOISE_TAGLEN, ct.len);
        assert_memory_equal(buf, ct.p, ct.len);
        assert_int_equal(noise_cipher_decrypt(dec, NULL, 0, buf, ct.len, pt), 0);
        if (pl.len)
            assert_memory_equal(pt, pl.p, pl.len);
        /* A second decryption of the same message is a replay: the nonce has moved on. */
        assert_int_equal(noise_cipher_decrypt(dec, NULL, 0, buf, ct.len, pt), MESH_EAUTH);
        (*ret_checked)++;
        free(pl.p);
        free(ct.p);
    }

    noise_cipher_wipe(&i_send);
    noise_cipher_wipe(&i_recv);
    noise_cipher_wipe(&r_send);
    noise_cipher_wipe(&r_recv);
    noise_handshake_wipe(&ini);
    noise_handshake_wipe(&res);
    free(ipro.p), free(rpro.p), free(is.p), free(rs.p), free(ie.p), free(re.p);
    free(irs.p), free(rrs.p), free(ipsk.p), free(rpsk.p), free(hh.p);
}

static void test_vectors(void **state)
{
    json_error_t jerr;
    json_t *root = json_load_file(vector_path, 0, &jerr);
    json_t *vecs;
    int checked = 0;
    bool seen[5] = {false};
    (void)state;

    if (!root)
        fail_msg("cannot load %s: %s (line %d)", vector_path, jerr.text, jerr.line);
    vecs = json_object_get(root, "vectors");
    assert_true(json_is_array(vecs));
    assert_int_equal(json_array_size(vecs), 5);
    for (size_t i = 0; i < json_array_size(vecs); i++) {
        enum noise_pattern p = NOISE_PATTERN_NN;
        json_t *v = json_array_get(vecs, i);
        assert_int_equal(pattern_of(json_string_value(json_object_get(v, "protocol_name")), &p), 0);
        seen[p] = true;
        run_vector(v, &checked);
    }
    for (size_t i = 0; i < 5; i++)
        assert_true(seen[i]);
    /* 5 vectors x (6 messages + 1 hash) */
    assert_int_equal(checked, 35);
    json_decref(root);
}

/* A byte flipped anywhere in a handshake message makes the reader fail. */
static void test_tamper(void **state)
{
    uint8_t si[32], sr[32], psk[32], m1[128], m2[256], m3[256], tmp[256], pt[256];
    size_t n1, n2, n3, n;
    (void)state;

    randombytes_buf(si, sizeof si);
    randombytes_buf(sr, sizeof sr);
    randombytes_buf(psk, sizeof psk);
    struct noise_params ip = {
        .pattern = NOISE_PATTERN_XXPSK3, .initiator = true, .s_priv = si, .psk = psk};
    struct noise_params rp = {.pattern = NOISE_PATTERN_XXPSK3, .initiator = false, .s_priv = sr};
    struct noise_handshake ini, res, trial;

    assert_int_equal(noise_handshake_init(&ini, &ip), 0);
    assert_int_equal(noise_handshake_init(&res, &rp), 0);
    assert_int_equal(noise_handshake_write(&ini, NULL, 0, m1, sizeof m1, &n1), 0);
    assert_int_equal(noise_handshake_read(&res, m1, n1, pt, sizeof pt, &n), 0);
    assert_int_equal(noise_handshake_write(&res, (const uint8_t *)"hi", 2, m2, sizeof m2, &n2), 0);
    for (size_t i = 0; i < n2; i++) {
        struct noise_handshake c = ini;
        memcpy(tmp, m2, n2);
        tmp[i] ^= 0x01;
        assert_int_not_equal(noise_handshake_read(&c, tmp, n2, pt, sizeof pt, &n), 0);
    }
    assert_int_equal(noise_handshake_read(&ini, m2, n2, pt, sizeof pt, &n), 0);
    assert_int_equal(noise_handshake_write(&ini, NULL, 0, m3, sizeof m3, &n3), 0);

    /* The responder has no PSK yet: try a wrong one on a copy, then the right one. */
    uint8_t wrong[32];
    randombytes_buf(wrong, sizeof wrong);
    trial = res;
    noise_handshake_set_psk(&trial, wrong);
    assert_int_equal(noise_handshake_read(&trial, m3, n3, pt, sizeof pt, &n), MESH_EAUTH);
    trial = res;
    noise_handshake_set_psk(&trial, psk);
    assert_int_equal(noise_handshake_read(&trial, m3, n3, pt, sizeof pt, &n), 0);
    assert_true(noise_handshake_done(&trial));
    struct noise_handshake good = trial;
    /* Truncated message 3 */
    trial = res;
    noise_handshake_set_psk(&trial, psk);
    assert_int_equal(noise_handshake_read(&trial, m3, 40, pt, sizeof pt, &n), MESH_EMALFORMED);

    /* Rekey: both sides derive the same new key, and the old key no longer decrypts. */
    struct noise_cipher a, b, c, d;
    assert_int_equal(noise_handshake_split(&ini, &a, &b), 0);
    assert_int_equal(noise_handshake_split(&good, &c, &d), 0);
    uint8_t ct[64];
    noise_cipher_rekey(&a);
    assert_int_equal(noise_cipher_encrypt(&a, NULL, 0, (const uint8_t *)"abc", 3, ct), 0);
    struct noise_cipher old = d;
    assert_int_equal(noise_cipher_decrypt(&old, NULL, 0, ct, 3 + NOISE_TAGLEN, pt), MESH_EAUTH);
    noise_cipher_rekey(&d);
    assert_int_equal(noise_cipher_decrypt(&d, NULL, 0, ct, 3 + NOISE_TAGLEN, pt), 0);
    assert_memory_equal(pt, "abc", 3);
    assert_int_equal(noise_cipher_decrypt(&d, NULL, 0, ct, 17, pt), MESH_EAUTH);
    assert_int_equal(noise_cipher_decrypt(&d, NULL, 0, ct, 3, pt), MESH_EMALFORMED);

    noise_cipher_wipe(&a), noise_cipher_wipe(&b), noise_cipher_wipe(&c), noise_cipher_wipe(&d);
    noise_cipher_wipe(&old);
    noise_handshake_wipe(&ini), noise_handshake_wipe(&res), noise_handshake_wipe(&trial);
    noise_handshake_wipe(&good);
}

/* ---- transport ciphers (sections 12.3 and 12.4) ---- */

/* A fresh NN handshake, split: i_send/r_recv share one key, r_send/i_recv the other. */
static void split_pair(struct noise_cipher *i_send, struct noise_cipher *i_recv,
                       struct noise_cipher *r_send, struct noise_cipher *r_recv)
{
    struct noise_params ip = {.pattern = NOISE_PATTERN_NN, .initiator = true};
    struct noise_params rp = {.pattern = NOISE_PATTERN_NN, .initiator = false};
    struct noise_handshake ini, res;
    uint8_t m[128], pt[16];
    size_t n, k;

    assert_int_equal(noise_handshake_init(&ini, &ip), 0);
    assert_int_equal(noise_handshake_init(&res, &rp), 0);
    assert_int_equal(noise_handshake_write(&ini, NULL, 0, m, sizeof m, &n), 0);
    assert_int_equal(noise_handshake_read(&res, m, n, pt, sizeof pt, &k), 0);
    assert_int_equal(noise_handshake_write(&res, NULL, 0, m, sizeof m, &n), 0);
    assert_int_equal(noise_handshake_read(&ini, m, n, pt, sizeof pt, &k), 0);
    assert_int_equal(noise_handshake_split(&ini, i_send, i_recv), 0);
    assert_int_equal(noise_handshake_split(&res, r_send, r_recv), 0);
    assert_int_equal(i_send->aead, NOISE_AEAD_CHACHAPOLY);
    assert_memory_equal(i_send->k, r_recv->k, NOISE_KEYLEN);
    noise_handshake_wipe(&ini);
    noise_handshake_wipe(&res);
}

static void wipe4(struct noise_cipher *a, struct noise_cipher *b, struct noise_cipher *c,
                  struct noise_cipher *d)
{
    noise_cipher_wipe(a), noise_cipher_wipe(b), noise_cipher_wipe(c), noise_cipher_wipe(d);
}

static void nonce_le(uint64_t n, uint8_t out[12])
{
    memset(out, 0, 12);
    for (int i = 0; i < 8; i++)
        out[4 + i] = (uint8_t)(n >> (8 * i));
}

static void nonce_be(uint64_t n, uint8_t out[12])
{
    memset(out, 0, 12);
    for (int i = 0; i < 8; i++)
        out[11 - i] = (uint8_t)(n >> (8 * i));
}

static void skip_without_aesgcm(void)
{
    if (!crypto_aead_aes256gcm_is_available()) {
        print_message("AES-256-GCM is not available on this CPU (AES-NI + PCLMUL)\n");
        skip();
    }
}

/* Known answers for the nonce encodings: noise_cipher_encrypt must equal libsodium's one-shot
 * AEAD under k with a hand-built nonce, for counters whose bytes all differ. */
static void test_cipher_nonces(void **state)
{
    static const uint64_t ns[] = {0, 1, 255, 256, 0x0102030405060708ull, UINT64_MAX - 1};
    static const uint8_t ad[] = "associated";
    uint8_t pt[100], got[sizeof pt + NOISE_TAGLEN], want[sizeof pt + NOISE_TAGLEN], nonce[12];
    struct noise_cipher a, b, c, d;
    (void)state;

    randombytes_buf(pt, sizeof pt);
    split_pair(&a, &b, &c, &d);
    /* ChaChaPoly: 00000000 || LE64(n) (section 12.3) */
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        a.n = ns[i];
        assert_int_equal(noise_cipher_encrypt(&a, ad, sizeof ad, pt, sizeof pt, got), 0);
        nonce_le(ns[i], nonce);
        crypto_aead_chacha20poly1305_ietf_encrypt(want, NULL, pt, sizeof pt, ad, sizeof ad, NULL,
                                                  nonce, a.k);
        assert_memory_equal(got, want, sizeof want);
        assert_true(a.n == ns[i] + 1);
    }
    wipe4(&a, &b, &c, &d);

    skip_without_aesgcm();
    split_pair(&a, &b, &c, &d);
    assert_int_equal(noise_cipher_use_aesgcm(&a), 0);
    assert_int_equal(a.aead, NOISE_AEAD_AESGCM);
    /* AESGCM: 00000000 || BE64(n) (section 12.4) */
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        a.n = ns[i];
        assert_int_equal(noise_cipher_encrypt(&a, ad, sizeof ad, pt, sizeof pt, got), 0);
        nonce_be(ns[i], nonce);
        assert_int_equal(crypto_aead_aes256gcm_encrypt(want, NULL, pt, sizeof pt, ad, sizeof ad,
                                                       NULL, nonce, a.k),
                         0);
        assert_memory_equal(got, want, sizeof want);
        /* and not the little-endian nonce (they coincide only for n = 0) */
        if (ns[i] != 0) {
            nonce_le(ns[i], nonce);
            crypto_aead_aes256gcm_encrypt(want, NULL, pt, sizeof pt, ad, sizeof ad, NULL, nonce,
                                          a.k);
            assert_memory_not_equal(got, want, sizeof want);
        }
    }
    /* The reserved nonce 2^64-1 is refused, as with ChaChaPoly (section 5.1). */
    a.n = UINT64_MAX;
    assert_int_equal(noise_cipher_encrypt(&a, NULL, 0, pt, sizeof pt, got), MESH_ESTATE);
    wipe4(&a, &b, &c, &d);
}

/* Both ends switched: messages both ways, with and without ad, of sizes around AES-GCM's 16-byte
 * blocks and libsodium's 128-byte batches; a ChaChaPoly receiver cannot read them. */
static void test_aesgcm_round_trip(void **state)
{
    static const size_t sizes[] = {0, 1, 15, 16, 17, 127, 128, 129, 1000, 65536 + 5};
    static uint8_t pt[65536 + 5], ct[sizeof pt + NOISE_TAGLEN], out[sizeof pt];
    struct noise_cipher a, b, c, d;
    (void)state;

    skip_without_aesgcm();
    split_pair(&a, &b, &c, &d);
    struct noise_cipher chacha_d = d;
    assert_int_equal(noise_cipher_use_aesgcm(&a), 0);
    assert_int_equal(noise_cipher_use_aesgcm(&a), 0); /* idempotent */
    assert_int_equal(noise_cipher_use_aesgcm(&b), 0);
    assert_int_equal(noise_cipher_use_aesgcm(&c), 0);
    assert_int_equal(noise_cipher_use_aesgcm(&d), 0);
    randombytes_buf(pt, sizeof pt);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t len = sizes[i];
        const uint8_t *ad = i % 2 ? (const uint8_t *)"ad" : NULL;
        size_t ad_len = ad ? 2 : 0;
        assert_int_equal(noise_cipher_encrypt(&a, ad, ad_len, pt, len, ct), 0);
        assert_int_equal(noise_cipher_decrypt(&d, ad, ad_len, ct, len + NOISE_TAGLEN, out), 0);
        if (len)
            assert_memory_equal(out, pt, len);
        assert_int_equal(noise_cipher_encrypt(&c, ad, ad_len, pt, len, ct), 0);
        assert_int_equal(noise_cipher_decrypt(&b, ad, ad_len, ct, len + NOISE_TAGLEN, out), 0);
        if (len)
            assert_memory_equal(out, pt, len);
    }
    assert_true(a.n == sizeof sizes / sizeof sizes[0] && d.n == a.n);
    /* Same key and nonce, other AEAD: no. */
    chacha_d.n = 0;
    struct noise_cipher a0 = a;
    a0.n = 0;
    assert_int_equal(noise_cipher_encrypt(&a0, NULL, 0, pt, 32, ct), 0);
    assert_int_equal(noise_cipher_decrypt(&chacha_d, NULL, 0, ct, 32 + NOISE_TAGLEN, out),
                     MESH_EAUTH);
    /* Only a fresh CipherState switches. */
    assert_int_equal(noise_cipher_use_aesgcm(&chacha_d), 0);
    struct noise_cipher used = chacha_d, none = {0};
    used.aead = NOISE_AEAD_CHACHAPOLY, used.n = 1;
    assert_int_equal(noise_cipher_use_aesgcm(&used), MESH_ESTATE);
    assert_int_equal(noise_cipher_use_aesgcm(&none), MESH_ESTATE);
    noise_cipher_wipe(&chacha_d), noise_cipher_wipe(&a0), noise_cipher_wipe(&used);
    wipe4(&a, &b, &c, &d);
}

/* A split pair whose a -> d direction uses AES-GCM (the test is skipped without AES-NI), and a
 * random plaintext. */
static void aesgcm_pair(struct noise_cipher *a, struct noise_cipher *b, struct noise_cipher *c,
                        struct noise_cipher *d, uint8_t *pt, size_t len)
{
    skip_without_aesgcm();
    split_pair(a, b, c, d);
    assert_int_equal(noise_cipher_use_aesgcm(a), 0);
    assert_int_equal(noise_cipher_use_aesgcm(d), 0);
    randombytes_buf(pt, len);
}

/* Rekey (sections 4.2 and 11.3) with AES-GCM: k becomes the first 32 bytes of AES-GCM's own
 * ENCRYPT(k, 2^64-1, "", zeros), the key schedule follows, both ends agree, and the old key no
 * longer decrypts. */
static void test_aesgcm_rekey(void **state)
{
    uint8_t zeros[32] = {0}, nonce[12], want[32 + NOISE_TAGLEN], old_k[32];
    uint8_t pt[40], ct[sizeof pt + NOISE_TAGLEN], ref[sizeof ct], out[sizeof pt];
    struct noise_cipher a, b, c, d;
    (void)state;

    aesgcm_pair(&a, &b, &c, &d, pt, sizeof pt);
    assert_int_equal(noise_cipher_encrypt(&a, NULL, 0, pt, sizeof pt, ct), 0);
    assert_int_equal(noise_cipher_decrypt(&d, NULL, 0, ct, sizeof ct, out), 0);

    memcpy(old_k, a.k, 32);
    nonce_be(UINT64_MAX, nonce);
    crypto_aead_aes256gcm_encrypt(want, NULL, zeros, 32, NULL, 0, NULL, nonce, old_k);
    noise_cipher_rekey(&a);
    assert_memory_equal(a.k, want, 32);
    assert_memory_not_equal(a.k, old_k, 32);
    assert_true(a.n == 1); /* n carries on */
    /* The precomputed state follows the new key: same output as the one-shot AEAD under it. */
    assert_int_equal(noise_cipher_encrypt(&a, NULL, 0, pt, sizeof pt, ct), 0);
    nonce_be(1, nonce);
    crypto_aead_aes256gcm_encrypt(ref, NULL, pt, sizeof pt, NULL, 0, NULL, nonce, a.k);
    assert_memory_equal(ct, ref, sizeof ct);

    struct noise_cipher old = d;
    assert_int_equal(noise_cipher_decrypt(&old, NULL, 0, ct, sizeof ct, out), MESH_EAUTH);
    noise_cipher_rekey(&d);
    assert_memory_equal(d.k, a.k, 32);
    assert_int_equal(noise_cipher_decrypt(&d, NULL, 0, ct, sizeof ct, out), 0);
    assert_memory_equal(out, pt, sizeof pt);
    /* ChaChaPoly's rekey of the same key gives another key: each cipher uses its own ENCRYPT. */
    struct noise_cipher ch = {0};
    memcpy(ch.k, old_k, 32);
    ch.has_key = true;
    noise_cipher_rekey(&ch);
    assert_memory_not_equal(ch.k, want, 32);

    noise_cipher_wipe(&old), noise_cipher_wipe(&ch);
    wipe4(&a, &b, &c, &d);
    /* Wiping clears the key schedule too. */
    static const uint8_t zero_state[sizeof a.aes];
    assert_memory_equal(&a.aes, zero_state, sizeof a.aes);
    sodium_memzero(old_k, sizeof old_k);
}

/* Any altered byte, or a truncated message, fails without advancing the nonce. */
static void test_aesgcm_tamper(void **state)
{
    uint8_t pt[50], ct[sizeof pt + NOISE_TAGLEN], bad[sizeof ct], out[sizeof pt];
    struct noise_cipher a, b, c, d;
    (void)state;

    aesgcm_pair(&a, &b, &c, &d, pt, sizeof pt);
    assert_int_equal(noise_cipher_encrypt(&a, (const uint8_t *)"x", 1, pt, sizeof pt, ct), 0);
    for (size_t i = 0; i < sizeof ct; i++) {
        memcpy(bad, ct, sizeof ct);
        bad[i] ^= 0x80;
        assert_int_equal(noise_cipher_decrypt(&d, (const uint8_t *)"x", 1, bad, sizeof bad, out),
                         MESH_EAUTH);
    }
    assert_int_equal(noise_cipher_decrypt(&d, (const uint8_t *)"y", 1, ct, sizeof ct, out),
                     MESH_EAUTH); /* other ad */
    assert_int_equal(noise_cipher_decrypt(&d, (const uint8_t *)"x", 1, ct, sizeof ct - 1, out),
                     MESH_EAUTH);
    assert_int_equal(noise_cipher_decrypt(&d, NULL, 0, ct, NOISE_TAGLEN - 1, out), MESH_EMALFORMED);
    assert_true(d.n == 0);
    assert_int_equal(noise_cipher_decrypt(&d, (const uint8_t *)"x", 1, ct, sizeof ct, out), 0);
    assert_memory_equal(out, pt, sizeof pt);
    /* A replay fails: the nonce has moved on. */
    assert_int_equal(noise_cipher_decrypt(&d, (const uint8_t *)"x", 1, ct, sizeof ct, out),
                     MESH_EAUTH);
    wipe4(&a, &b, &c, &d);
}

/* In place (out == in) gives the same bytes as separate buffers, both ways, for both AEADs. */
static void test_cipher_in_place(void **state)
{
    static const size_t sizes[] = {0, 1, 16, 100, 128, 300, 4096 + 3};
    static uint8_t pt[4096 + 3], sep[sizeof pt + NOISE_TAGLEN], buf[sizeof sep], out[sizeof pt];
    (void)state;

    randombytes_buf(pt, sizeof pt);
    for (int aes = 0; aes < 2; aes++) {
        struct noise_cipher a, b, c, d;
        if (aes && !crypto_aead_aes256gcm_is_available())
            skip();
        split_pair(&a, &b, &c, &d);
        if (aes) {
            assert_int_equal(noise_cipher_use_aesgcm(&a), 0);
            assert_int_equal(noise_cipher_use_aesgcm(&d), 0);
        }
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t len = sizes[i];
            struct noise_cipher a2 = a, d2 = d;
            assert_int_equal(noise_cipher_encrypt(&a2, NULL, 0, pt, len, sep), 0);
            memcpy(buf, pt, len);
            assert_int_equal(noise_cipher_encrypt(&a, NULL, 0, buf, len, buf), 0);
            assert_memory_equal(buf, sep, len + NOISE_TAGLEN);
            assert_int_equal(noise_cipher_decrypt(&d2, NULL, 0, sep, len + NOISE_TAGLEN, out), 0);
            assert_int_equal(noise_cipher_decrypt(&d, NULL, 0, buf, len + NOISE_TAGLEN, buf), 0);
            if (len) {
                assert_memory_equal(out, pt, len);
                assert_memory_equal(buf, pt, len);
            }
            noise_cipher_wipe(&a2), noise_cipher_wipe(&d2);
        }
        wipe4(&a, &b, &c, &d);
    }
}

int main(int argc, char **argv)
{
    const char *dir = getenv("FOGMESH_TESTDATA");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),         cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_cipher_nonces),   cmocka_unit_test(test_aesgcm_round_trip),
        cmocka_unit_test(test_aesgcm_rekey),    cmocka_unit_test(test_aesgcm_tamper),
        cmocka_unit_test(test_cipher_in_place),
    };

    if (!dir || !*dir)
        dir = argc > 1 ? argv[1] : "tests/data";
    snprintf(vector_path, sizeof vector_path, "%s/noise/cacophony-subset.json", dir);
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
