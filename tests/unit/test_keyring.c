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
    assert_int_equal(replay_check(&t, &a, NULL), 0);
    assert_int_equal(replay_check(&t, &a, NULL), MESH_EREPLAY);
    /* Out of order inside the window is fine, once. */
    a.seq = 90;
    assert_int_equal(replay_check(&t, &a, NULL), 0);
    assert_int_equal(replay_check(&t, &a, NULL), MESH_EREPLAY);
    /* Far ahead slides the window; what fell out of it is refused. */
    a.seq = 100 + 5 * REPLAY_WINDOW;
    assert_int_equal(replay_check(&t, &a, NULL), 0);
    a.seq = 100;
    assert_int_equal(replay_check(&t, &a, NULL), MESH_EREPLAY);
    a.seq = 100 + 5 * REPLAY_WINDOW - 1;
    assert_int_equal(replay_check(&t, &a, NULL), 0);
    /* An older epoch (a packet from before the sender restarted) is refused; a newer resets. */
    struct seal_inner old = inner_of(1, 4, 1 << 20);
    assert_int_equal(replay_check(&t, &old, NULL), MESH_EREPLAY);
    struct seal_inner restarted = inner_of(1, 6, 0);
    assert_int_equal(replay_check(&t, &restarted, NULL), 0);
    assert_int_equal(replay_check(&t, &restarted, NULL), MESH_EREPLAY);
    /* The table is bounded: more senders than slots evict the least recently used. */
    for (uint8_t who = 10; who < 20; who++) {
        struct seal_inner s = inner_of(who, 1, 1);
        assert_int_equal(replay_check(&t, &s, NULL), 0);
    }
    size_t used = 0;
    for (size_t i = 0; i < t.cap; i++)
        used += t.e[i].used != 0;
    assert_int_equal(used, 4);
    /* Sequence exhaustive check in a sliding pattern: each accepted once. */
    for (uint64_t s = 0; s < 5000; s++) {
        struct seal_inner x = inner_of(99, 1, s);
        assert_int_equal(replay_check(&t, &x, NULL), 0);
        if (s >= 3) {
            x.seq = s - 3;
            assert_int_equal(replay_check(&t, &x, NULL), MESH_EREPLAY);
        }
    }
    replay_free(&t);
}

/* Issue 10 item 7: a key holder can seal a packet claiming any sender and epoch. One packet
 * claiming epoch 2^64-1 for Y used to replace Y's window, so Y's real gossip was dropped as
 * "from an earlier run" and Y flapped dead/alive everywhere. */
static void replay_forged_epoch(void **state)
{
    (void)state;
    struct replay_table t;
    bool unproven = true;
    assert_int_equal(replay_init(&t, 4), 0);
    struct seal_inner y = inner_of(1, 7, 1);
    assert_int_equal(replay_check(&t, &y, &unproven), 0);
    assert_false(unproven);
    struct seal_inner forged = inner_of(1, UINT64_MAX, 1);
    assert_int_equal(replay_check(&t, &forged, &unproven), 0);
    assert_true(unproven); /* the daemon is asked to get Y's epoch proven */
    /* Y's real packets still pass, replays of them still do not. */
    for (uint64_t seq = 2; seq < 50; seq++) {
        y.seq = seq;
        assert_int_equal(replay_check(&t, &y, &unproven), 0);
        assert_false(unproven);
        assert_int_equal(replay_check(&t, &y, NULL), MESH_EREPLAY);
    }
    /* Even a stream of forged epochs never displaces the current one. */
    for (uint64_t e = 1; e < 100; e++) {
        struct seal_inner f = inner_of(1, UINT64_MAX - e, e);
        assert_int_equal(replay_check(&t, &f, NULL), 0);
        y.seq = 100 + e;
        assert_int_equal(replay_check(&t, &y, NULL), 0);
    }
    /* A packet from Y's earlier run is still a replay. */
    struct seal_inner old = inner_of(1, 6, 1000);
    assert_int_equal(replay_check(&t, &old, NULL), MESH_EREPLAY);
    /* Y restarts (epoch 8): accepted at once, replays of it dropped, the old run too. */
    struct seal_inner r8 = inner_of(1, 8, 1);
    assert_int_equal(replay_check(&t, &r8, NULL), 0);
    assert_int_equal(replay_check(&t, &r8, NULL), MESH_EREPLAY);
    /* A link proves epoch 8: it becomes current, its window kept, epoch 7 is now old, and
     * the forged epochs keep no window of their own beyond the bounded few. */
    replay_prove(&t, r8.sender, 8);
    assert_int_equal(replay_check(&t, &r8, NULL), MESH_EREPLAY);
    y.seq = 5000;
    assert_int_equal(replay_check(&t, &y, &unproven), MESH_EREPLAY);
    assert_false(unproven); /* proven: an older epoch is a plain replay */
    r8.seq = 2;
    assert_int_equal(replay_check(&t, &r8, NULL), 0);
    /* A forged first packet (no real one seen yet) is undone by the proof. */
    struct seal_inner z_forged = inner_of(2, UINT64_MAX, 1), z = inner_of(2, 3, 1);
    assert_int_equal(replay_check(&t, &z_forged, NULL), 0);
    assert_int_equal(replay_check(&t, &z, &unproven), MESH_EREPLAY);
    assert_true(unproven);
    replay_prove(&t, z.sender, 3);
    assert_int_equal(replay_check(&t, &z, NULL), 0);
    assert_int_equal(replay_check(&t, &z, NULL), MESH_EREPLAY);
    replay_free(&t);
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
        cmocka_unit_test(replay_forged_epoch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
