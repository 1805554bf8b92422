/* libFuzzer harness for the messages of key operations between nodes (netlink/keyring.h,
 * CALL_KEYOP): what any member holding the mesh key can send to a node's key ring service, and
 * what every other node sends back to the one an operator asked. The first input byte picks a
 * mode; the rest is the body:
 *   0: the body as a request to a node whose ring is key_a (primary) and key_b, and whose
 *      identity is fixed: keyop_req_decode; where it decodes, keyop_req_verify with the
 *      requester's id fixed (so the proof checks and the opening of a sealed key run on
 *      attacker bytes too), and where the proofs hold (only from a seed: a fuzzer does not forge
 *      MACs) the operation is applied to a copy of the ring and its effect checked.
 *   1: the body as a list reply: keyring_view_decode, and what it returned checked.
 * The seeds (tests/fuzz/seeds/keyop) are valid requests of every op with proofs made for this
 * fixture, one of version 1, and replies of rings of one to KEYRING_MAX keys.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon -Inetlink \
 *       tests/fuzz/fuzz_keyop.c netlink/keyring.c netlink/identity.c common/err.c \
 *       common/addr.c common/wire.c common/meshkey.c common/atomicfile.c \
 *       -lsodium -lmsgpackc -o fuzz_keyop */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keyring.h"

static const uint8_t key_a[MESH_KEY_LEN] = {0x6b, 0x65, 0x79, 1};
static const uint8_t key_b[MESH_KEY_LEN] = {0x6b, 0x65, 0x79, 2};
static const uint8_t requester[NODE_ID_LEN] = {0x72, 0x65, 0x71};

static struct keyring ring; /* the recipient's: key_a primary, key_b installed */
static struct identity self;

static void setup(void)
{
    static bool done;
    if (done)
        return;
    if (sodium_init() < 0)
        abort();
    keyring_init(&ring, key_a);
    if (keyring_install(&ring, key_b) < 0)
        abort();
    uint8_t seed[crypto_box_SEEDBYTES];
    memset(seed, 0x5e, sizeof seed);
    crypto_box_seed_keypair(self.pub, self.priv, seed);
    identity_node_id(self.pub, self.id);
    identity_id_format(self.id, self.id_str);
    done = true;
}

static bool inside(const uint8_t *p, size_t n, const uint8_t *buf, size_t len)
{
    return p && p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

static void mode_request(const uint8_t *p, size_t n)
{
    struct keyop_req q;
    struct mesh_err err = {0};
    uint8_t key[MESH_KEY_LEN], fp[MESH_KEY_FP_LEN];
    memset(&q, 0xee, sizeof q);
    struct keyop_req before = q;
    int rc = keyop_req_decode(p, n, &q);
    if (rc == MESH_EMALFORMED) {
        if (memcmp(&q, &before, sizeof q) != 0)
            abort(); /* untouched on failure */
        return;
    }
    if (rc == MESH_EUNSUPPORTED) {
        if (q.op > KEYOP_REMOVE || q.target || q.proof || q.proof2)
            abort();
        return;
    }
    if (rc != 0 || q.op > KEYOP_REMOVE)
        abort();
    if (q.op == KEYOP_LIST) {
        if (q.target || q.proof || q.proof2)
            abort();
        return;
    }
    /* Every part lies in the input, with the length its op needs. */
    if (q.target_len != (q.op == KEYOP_INSTALL ? KEY_SEALED_LEN : MESH_KEY_FP_LEN) ||
        !inside(q.target, q.target_len, p, n) || !inside(q.proof, KEYPROOF_LEN, p, n) ||
        (q.op == KEYOP_USE) != (q.proof2 != NULL) ||
        (q.proof2 && !inside(q.proof2, KEYPROOF_LEN, p, n)))
        abort();

    memset(key, 0xee, sizeof key);
    rc = keyop_req_verify(&ring, &self, requester, &q, key, &err);
    if (rc < 0) {
        if ((rc != MESH_EAUTH && !(rc == MESH_ENOTFOUND && q.op == KEYOP_USE)) || !err.msg[0])
            abort();
        for (size_t i = 0; i < sizeof key; i++)
            if (key[i] != 0xee)
                abort(); /* ret_key is untouched on failure */
        return;
    }
    if (rc != 0)
        abort();

    /* The proofs held: the operation does what it names on a copy of the ring. */
    struct keyring kr = ring;
    switch (q.op) {
    case KEYOP_LIST:
        break;
    case KEYOP_INSTALL:
        rc = keyring_install(&kr, key);
        if ((rc != 0 && rc != MESH_EEXISTS && rc != MESH_EFULL) ||
            (rc != MESH_EFULL && keyring_find(&kr, key) < 0))
            abort();
        break;
    case KEYOP_USE:
        mesh_key_fingerprint(key, fp);
        if (memcmp(fp, q.target, MESH_KEY_FP_LEN) != 0 || keyring_use(&kr, key) != 0 ||
            keyring_find(&kr, key) != (int)kr.primary)
            abort();
        break;
    case KEYOP_REMOVE: {
        int i = keyring_find_fp(&kr, q.target);
        if (i >= 0) {
            uint8_t k[MESH_KEY_LEN];
            memcpy(k, kr.e[i].key, sizeof k);
            rc = keyring_remove(&kr, k);
            if (rc == 0 ? keyring_find_fp(&kr, q.target) >= 0
                        : rc != MESH_ESTATE || i != (int)ring.primary)
                abort();
        }
        break;
    }
    }
    keyring_wipe(&kr);
}

static void mode_reply(const uint8_t *p, size_t n)
{
    struct keyring_view v;
    memset(&v, 0xee, sizeof v);
    struct keyring_view before = v;
    int rc = keyring_view_decode(p, n, &v);
    if (rc == MESH_EMALFORMED) {
        if (memcmp(&v, &before, sizeof v) != 0)
            abort(); /* untouched on failure */
        return;
    }
    if (rc != 0 || v.n > KEYRING_MAX || v.primary < -1 || v.primary >= (int)v.n)
        abort();
    for (size_t i = 0; i < v.n; i++) {
        int j = keyring_view_find(&v, v.fp[i]);
        if (j < 0 || j > (int)i)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    setup();
    if (data[0] % 2 == 0)
        mode_request(data + 1, size - 1);
    else
        mode_reply(data + 1, size - 1);
    return 0;
}
