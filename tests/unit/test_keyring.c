/* The key ring, gossip packet sealing and the anti-replay windows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "keyring.h"

static void key(uint8_t k[MESH_KEY_LEN], uint8_t fill)
{
    memset(k, fill, MESH_KEY_LEN);
}

static struct seal_inner inner_of(uint8_t who, uint64_t epoch, uint64_t seq)
{
    struct seal_inner in;
    memset(in.sender, who, sizeof in.sender);
    in.epoch = epoch;
    in.seq = seq;
    return in;
}

static void seal_roundtrip_and_tamper(void **state)
{
    (void)state;
    struct keyring kr;
    uint8_t k[MESH_KEY_LEN], pkt[SEAL_MAX_PACKET], out[SEAL_MAX_PACKET];
    const uint8_t *payload;
    struct seal_inner in = inner_of(7, 3, 99), got;
    key(k, 1);
    keyring_init(&kr, k);

    int n = seal_packet(&kr, &in, (const uint8_t *)"hello", 5, pkt, sizeof pkt);
    assert_int_equal(n, SEAL_OVERHEAD + 5);
    assert_int_equal(seal_open(&kr, pkt, (size_t)n, out, sizeof out, &got, &payload), 5);
    assert_memory_equal(payload, "hello", 5);
    assert_memory_equal(got.sender, in.sender, NODE_ID_LEN);
    assert_int_equal(got.epoch, 3);
    assert_int_equal(got.seq, 99);

    /* Every single-bit flip anywhere is refused. */
    for (int i = 0; i < n; i++) {
        pkt[i] ^= 0x10;
        int rc = seal_open(&kr, pkt, (size_t)n, out, sizeof out, &got, &payload);
        assert_true(rc == MESH_EAUTH || rc == MESH_EMALFORMED);
        pkt[i] ^= 0x10;
    }
    /* Truncations too. */
    for (int len = 0; len < n; len++) {
        int rc = seal_open(&kr, pkt, (size_t)len, out, sizeof out, &got, &payload);
        assert_true(rc == MESH_EAUTH || rc == MESH_EMALFORMED);
    }
    /* The payload bound. */
    uint8_t big[SEAL_MAX_PAYLOAD + 1] = {0};
    assert_int_equal(seal_packet(&kr, &in, big, sizeof big, pkt, sizeof pkt), MESH_ETOOBIG);
    assert_int_equal(seal_packet(&kr, &in, big, SEAL_MAX_PAYLOAD, pkt, sizeof pkt),
                     SEAL_MAX_PACKET);
}

static void wrong_key_is_refused(void **state)
{
    (void)state;
    struct keyring a, b;
    uint8_t k1[MESH_KEY_LEN], k2[MESH_KEY_LEN], pkt[SEAL_MAX_PACKET], out[SEAL_MAX_PACKET];
    const uint8_t *payload;
    struct seal_inner in = inner_of(1, 1, 1), got;
    key(k1, 1);
    key(k2, 2);
    keyring_init(&a, k1);
    keyring_init(&b, k2);
    int n = seal_packet(&a, &in, (const uint8_t *)"x", 1, pkt, sizeof pkt);
    assert_int_equal(seal_open(&b, pkt, (size_t)n, out, sizeof out, &got, &payload), MESH_EAUTH);
}

static void rotation(void **state)
{
    (void)state;
    struct keyring a, b;
    uint8_t k1[MESH_KEY_LEN], k2[MESH_KEY_LEN], pkt[SEAL_MAX_PACKET], out[SEAL_MAX_PACKET];
    const uint8_t *payload;
    struct seal_inner in = inner_of(1, 1, 1), got;
    key(k1, 1);
    key(k2, 2);
    keyring_init(&a, k1);
    keyring_init(&b, k1);
    /* Install the new key on b, make it primary on a: both still understand each other. */
    assert_int_equal(keyring_install(&b, k2), 0);
    assert_int_equal(keyring_install(&b, k2), MESH_EEXISTS);
    assert_int_equal(keyring_install(&a, k2), 0);
    assert_int_equal(keyring_use(&a, k2), 0);
    int n = seal_packet(&a, &in, (const uint8_t *)"x", 1, pkt, sizeof pkt);
    assert_int_equal(seal_open(&b, pkt, (size_t)n, out, sizeof out, &got, &payload), 1);
    n = seal_packet(&b, &in, (const uint8_t *)"y", 1, pkt, sizeof pkt);
    assert_int_equal(seal_open(&a, pkt, (size_t)n, out, sizeof out, &got, &payload), 1);
    /* The primary cannot be removed; the old key can, after which its packets are refused. */
    assert_int_equal(keyring_remove(&a, k2), MESH_ESTATE);
    assert_int_equal(keyring_remove(&a, k1), 0);
    assert_int_equal(keyring_remove(&a, k1), MESH_ENOTFOUND);
    assert_int_equal(a.n, 1);
    assert_int_equal(keyring_find(&a, k2), (int)a.primary);
    n = seal_packet(&b, &in, (const uint8_t *)"y", 1, pkt, sizeof pkt); /* b: primary k1 */
    assert_int_equal(seal_open(&a, pkt, (size_t)n, out, sizeof out, &got, &payload), MESH_EAUTH);
    /* Subkeys differ per use and per key. */
    assert_memory_not_equal(b.e[0].gossip, b.e[0].link_psk, 32);
    assert_memory_not_equal(b.e[0].gossip, b.e[1].gossip, 32);
    /* Bound. */
    for (uint8_t f = 3; f < 3 + KEYRING_MAX; f++) {
        uint8_t k[MESH_KEY_LEN];
        key(k, f);
        keyring_install(&b, k);
    }
    assert_int_equal(b.n, KEYRING_MAX);
}

static void save_and_load(void **state)
{
    (void)state;
    char dir[] = "/tmp/fogmesh-test-krXXXXXX";
    assert_non_null(mkdtemp(dir));
    struct keyring a, b;
    struct mesh_err err = {0};
    uint8_t k1[MESH_KEY_LEN], k2[MESH_KEY_LEN];
    key(k1, 1);
    key(k2, 2);
    assert_int_equal(keyring_load(&b, dir, &err), MESH_ENOTFOUND);
    keyring_init(&a, k1);
    keyring_install(&a, k2);
    keyring_use(&a, k2);
    assert_int_equal(keyring_save(&a, dir, &err), 0);
    assert_int_equal(keyring_load(&b, dir, &err), 0);
    assert_int_equal(b.n, 2);
    assert_memory_equal(b.e[b.primary].key, k2, MESH_KEY_LEN);
    assert_true(keyring_find(&b, k1) >= 0);

    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, KEYRING_FILENAME);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    FILE *f = fopen(path, "a");
    fputs("garbage\n", f);
    fclose(f);
    assert_int_equal(keyring_load(&b, dir, &err), MESH_EINVAL);
    assert_non_null(strstr(err.msg, ":4"));
    unlink(path);
    rmdir(dir);
}

static void replay_windows(void **state)
{
    (void)state;
    struct replay_table t;
    assert_int_equal(replay_init(&t, 4), 0);
    struct seal_inner a = inner_of(1, 5, 100);
    assert_int_equal(replay_check(&t, &a), 0);
    assert_int_equal(replay_check(&t, &a), MESH_EREPLAY);
    /* Out of order inside the window is fine, once. */
    a.seq = 90;
    assert_int_equal(replay_check(&t, &a), 0);
    assert_int_equal(replay_check(&t, &a), MESH_EREPLAY);
    /* Far ahead slides the window; what fell out of it is refused. */
    a.seq = 100 + 5 * REPLAY_WINDOW;
    assert_int_equal(replay_check(&t, &a), 0);
    a.seq = 100;
    assert_int_equal(replay_check(&t, &a), MESH_EREPLAY);
    a.seq = 100 + 5 * REPLAY_WINDOW - 1;
    assert_int_equal(replay_check(&t, &a), 0);
    /* An older epoch (a packet from before the sender restarted) is refused; a newer resets. */
    struct seal_inner old = inner_of(1, 4, 1 << 20);
    assert_int_equal(replay_check(&t, &old), MESH_EREPLAY);
    struct seal_inner restarted = inner_of(1, 6, 0);
    assert_int_equal(replay_check(&t, &restarted), 0);
    assert_int_equal(replay_check(&t, &restarted), MESH_EREPLAY);
    /* The table is bounded: more senders than slots evict the least recently used. */
    for (uint8_t who = 10; who < 20; who++) {
        struct seal_inner s = inner_of(who, 1, 1);
        assert_int_equal(replay_check(&t, &s), 0);
    }
    size_t used = 0;
    for (size_t i = 0; i < t.cap; i++)
        used += t.e[i].used != 0;
    assert_int_equal(used, 4);
    /* Sequence exhaustive check in a sliding pattern: each accepted once. */
    for (uint64_t s = 0; s < 5000; s++) {
        struct seal_inner x = inner_of(99, 1, s);
        assert_int_equal(replay_check(&t, &x), 0);
        if (s >= 3) {
            x.seq = s - 3;
            assert_int_equal(replay_check(&t, &x), MESH_EREPLAY);
        }
    }
    replay_free(&t);
}

/* Fingerprints are what other programs (meshctl, tests) compute too: pin the definition. */
static void fingerprints(void **state)
{
    (void)state;
    uint8_t k[MESH_KEY_LEN], fp[MESH_KEY_FP_LEN];
    char hex[MESH_KEY_FP_STR_LEN + 1];
    struct keyring kr;
    key(k, 7);
    mesh_key_fingerprint(k, fp);
    mesh_key_fp_format(fp, hex);
    /* BLAKE2b-256("fogmesh-key-fp" || 32 x 0x07)[:8], computed with Python's hashlib. */
    assert_string_equal(hex, "483b075967b92272");
    keyring_init(&kr, k);
    assert_memory_equal(kr.e[0].fp, fp, MESH_KEY_FP_LEN);
    assert_int_equal(keyring_find_fp(&kr, fp), 0);
    key(k, 8);
    assert_int_equal(keyring_install(&kr, k), 0);
    mesh_key_fingerprint(k, fp);
    assert_int_equal(keyring_find_fp(&kr, fp), 1);
    fp[0] ^= 1;
    assert_int_equal(keyring_find_fp(&kr, fp), -1);
    keyring_wipe(&kr);
}

/* A proof verifies only for the very key, operation, recipient, requester and target it was
 * made for: changing any one of them must fail, or a proof could be replayed elsewhere. */
static void proofs_bind_everything(void **state)
{
    (void)state;
    uint8_t k[MESH_KEY_LEN], other[MESH_KEY_LEN], fp[MESH_KEY_FP_LEN], fp2[MESH_KEY_FP_LEN];
    uint8_t a[NODE_ID_LEN], b[NODE_ID_LEN], c[NODE_ID_LEN], mac[KEYPROOF_LEN];
    key(k, 1);
    key(other, 2);
    memset(a, 0xa, sizeof a);
    memset(b, 0xb, sizeof b);
    memset(c, 0xc, sizeof c);
    mesh_key_fingerprint(other, fp);
    mesh_key_fingerprint(k, fp2);

    keyproof_make(k, KEYPROOF_REMOVE, a, b, fp, mac);
    assert_true(keyproof_verify(k, KEYPROOF_REMOVE, a, b, fp, mac));
    assert_false(keyproof_verify(other, KEYPROOF_REMOVE, a, b, fp, mac)); /* key */
    assert_false(keyproof_verify(k, KEYPROOF_INSTALL, a, b, fp, mac));    /* op */
    assert_false(keyproof_verify(k, KEYPROOF_USE, a, b, fp, mac));
    assert_false(keyproof_verify(k, KEYPROOF_REMOVE, c, b, fp, mac));  /* another recipient */
    assert_false(keyproof_verify(k, KEYPROOF_REMOVE, a, c, fp, mac));  /* another requester */
    assert_false(keyproof_verify(k, KEYPROOF_REMOVE, b, a, fp, mac));  /* roles swapped */
    assert_false(keyproof_verify(k, KEYPROOF_REMOVE, a, b, fp2, mac)); /* another key removed */
    for (size_t i = 0; i < KEYPROOF_LEN; i++) {
        mac[i] ^= 0x80;
        assert_false(keyproof_verify(k, KEYPROOF_REMOVE, a, b, fp, mac));
        mac[i] ^= 0x80;
    }
    /* Deterministic: the recipient recomputes it. */
    uint8_t again[KEYPROOF_LEN];
    keyproof_make(k, KEYPROOF_REMOVE, a, b, fp, again);
    assert_memory_equal(again, mac, KEYPROOF_LEN);
    /* Not a plain hash of public inputs: a proof under a key nobody has differs. */
    keyproof_make(other, KEYPROOF_REMOVE, a, b, fp, again);
    assert_memory_not_equal(again, mac, KEYPROOF_LEN);
}

/* A key sealed to one identity opens only with that identity's private key. */
static void sealed_keys(void **state)
{
    (void)state;
    uint8_t k[MESH_KEY_LEN], out[MESH_KEY_LEN], sealed[KEY_SEALED_LEN];
    uint8_t pub[IDENTITY_KEY_LEN], priv[IDENTITY_KEY_LEN];
    uint8_t pub2[IDENTITY_KEY_LEN], priv2[IDENTITY_KEY_LEN];
    key(k, 9);
    /* Identities are X25519 key pairs (identity.c): a private scalar and its base point. */
    randombytes_buf(priv, sizeof priv);
    crypto_scalarmult_base(pub, priv);
    randombytes_buf(priv2, sizeof priv2);
    crypto_scalarmult_base(pub2, priv2);

    keyring_seal_key(k, pub, sealed);
    assert_memory_not_equal(sealed + 32, k, MESH_KEY_LEN);
    memset(out, 0, sizeof out);
    assert_int_equal(keyring_open_key(sealed, pub, priv, out), 0);
    assert_memory_equal(out, k, MESH_KEY_LEN);

    memset(out, 0x55, sizeof out);
    assert_int_equal(keyring_open_key(sealed, pub2, priv2, out), MESH_EAUTH);
    for (size_t i = 0; i < MESH_KEY_LEN; i++)
        assert_int_equal(out[i], 0x55); /* untouched on failure */
    sealed[KEY_SEALED_LEN - 1] ^= 1;
    assert_int_equal(keyring_open_key(sealed, pub, priv, out), MESH_EAUTH);
    sodium_memzero(priv, sizeof priv);
    sodium_memzero(priv2, sizeof priv2);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seal_roundtrip_and_tamper),
        cmocka_unit_test(wrong_key_is_refused),
        cmocka_unit_test(rotation),
        cmocka_unit_test(save_and_load),
        cmocka_unit_test(replay_windows),
        cmocka_unit_test(fingerprints),
        cmocka_unit_test(proofs_bind_everything),
        cmocka_unit_test(sealed_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
