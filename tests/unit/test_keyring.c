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
#include "wire.h"

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

/* ---- the messages of key operations (keyop_req_decode, keyop_req_verify, keyring_view_*) --- */

/* The recipient of the requests below: its ring (ka primary, kb) and identity, and who asks. */
struct keyop_fixture {
    struct keyring ring;
    struct identity self;
    uint8_t ka[MESH_KEY_LEN], kb[MESH_KEY_LEN], kc[MESH_KEY_LEN]; /* kc: not in the ring */
    uint8_t fa[MESH_KEY_FP_LEN], fb[MESH_KEY_FP_LEN], fc[MESH_KEY_FP_LEN];
    uint8_t requester[NODE_ID_LEN];
};

static void keyop_fixture_init(struct keyop_fixture *f)
{
    memset(f, 0, sizeof *f);
    key(f->ka, 0xa1);
    key(f->kb, 0xb2);
    key(f->kc, 0xc3);
    mesh_key_fingerprint(f->ka, f->fa);
    mesh_key_fingerprint(f->kb, f->fb);
    mesh_key_fingerprint(f->kc, f->fc);
    keyring_init(&f->ring, f->ka);
    assert_int_equal(keyring_install(&f->ring, f->kb), 0);
    crypto_box_keypair(f->self.pub, f->self.priv);
    identity_node_id(f->self.pub, f->self.id);
    memset(f->requester, 0x7e, sizeof f->requester);
}

/* The parts of a request, as keyop_request in meshd/node_api.c packs them, each one open to
 * being replaced by a test: count, version, op, then up to three bin fields. */
struct req_parts {
    uint32_t count;
    uint64_t version, op;
    size_t nbin;
    const uint8_t *bin[4];
    size_t binlen[4];
};

static size_t req_pack(const struct req_parts *r, uint8_t *buf, size_t cap)
{
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, r->count);
    msgpack_pack_uint64(&w.pk, r->version);
    msgpack_pack_uint64(&w.pk, r->op);
    for (size_t i = 0; i < r->nbin; i++)
        wire_pack_bin(&w.pk, r->bin[i], r->binlen[i]);
    assert_false(w.overflow);
    return w.len;
}

/* A valid request of op for the fixture, its proofs made as the requester would. */
static struct req_parts req_valid(struct keyop_fixture *f, enum keyop_kind op,
                                  uint8_t sealed[static KEY_SEALED_LEN],
                                  uint8_t proof[static KEYPROOF_LEN],
                                  uint8_t proof2[static KEYPROOF_LEN])
{
    struct req_parts r = {.count = 2, .version = KEYOP_VERSION, .op = op};
    switch (op) {
    case KEYOP_LIST:
        break;
    case KEYOP_INSTALL:
        keyring_seal_key(f->kc, f->self.pub, sealed);
        keyproof_make(f->ka, KEYPROOF_INSTALL, f->self.id, f->requester, f->fc, proof);
        r = (struct req_parts){4, KEYOP_VERSION, op, 2, {sealed, proof}, {KEY_SEALED_LEN, 32}};
        break;
    case KEYOP_USE:
        keyproof_make(f->ka, KEYPROOF_USE, f->self.id, f->requester, f->fb, proof);
        keyproof_make(f->kb, KEYPROOF_USE, f->self.id, f->requester, f->fb, proof2);
        r = (struct req_parts){5, KEYOP_VERSION, op, 3, {f->fb, proof, proof2}, {8, 32, 32}};
        break;
    case KEYOP_REMOVE:
        keyproof_make(f->ka, KEYPROOF_REMOVE, f->self.id, f->requester, f->fb, proof);
        r = (struct req_parts){4, KEYOP_VERSION, op, 2, {f->fb, proof}, {8, 32}};
        break;
    }
    return r;
}

static int req_decode(const struct req_parts *r, struct keyop_req *q)
{
    uint8_t buf[512];
    return keyop_req_decode(buf, req_pack(r, buf, sizeof buf), q);
}

/* Every op decodes to its parts, pointing into the buffer; every truncation is malformed and
 * leaves the output as it was. */
static void keyop_request_decode_valid_and_truncated(void **state)
{
    (void)state;
    struct keyop_fixture f;
    uint8_t sealed[KEY_SEALED_LEN], proof[KEYPROOF_LEN], proof2[KEYPROOF_LEN], buf[512];
    keyop_fixture_init(&f);
    for (int op = KEYOP_LIST; op <= KEYOP_REMOVE; op++) {
        struct req_parts r = req_valid(&f, (enum keyop_kind)op, sealed, proof, proof2);
        size_t len = req_pack(&r, buf, sizeof buf);
        struct keyop_req q, untouched;
        assert_int_equal(keyop_req_decode(buf, len, &q), 0);
        assert_int_equal(q.op, op);
        if (op == KEYOP_LIST) {
            assert_null(q.target);
            assert_null(q.proof);
        } else {
            assert_int_equal(q.target_len, r.binlen[0]);
            assert_true(q.target > buf && q.target + q.target_len <= buf + len);
            assert_memory_equal(q.target, r.bin[0], r.binlen[0]);
            assert_memory_equal(q.proof, proof, KEYPROOF_LEN);
        }
        if (op == KEYOP_USE)
            assert_memory_equal(q.proof2, proof2, KEYPROOF_LEN);
        else
            assert_null(q.proof2);
        for (size_t cut = 0; cut < len; cut++) {
            memset(&q, 0x5a, sizeof q);
            untouched = q;
            assert_int_equal(keyop_req_decode(buf, cut, &q), MESH_EMALFORMED);
            assert_memory_equal(&q, &untouched, sizeof q);
        }
    }
}

/* Too few or too many elements, wrong types and wrong lengths: each is malformed; another
 * version is unsupported (and names the op, for the log), before its layout is looked at. */
static void keyop_request_decode_refusals(void **state)
{
    (void)state;
    struct keyop_fixture f;
    uint8_t sealed[KEY_SEALED_LEN], proof[KEYPROOF_LEN], proof2[KEYPROOF_LEN], buf[512];
    uint8_t junk[KEY_SEALED_LEN + 1] = {0};
    struct keyop_req q;
    struct wire_wr w;
    keyop_fixture_init(&f);

    /* Element counts. */
    struct req_parts r;
    wire_wr_init(&w, buf, sizeof buf); /* [2] */
    msgpack_pack_array(&w.pk, 1);
    msgpack_pack_uint8(&w.pk, KEYOP_VERSION);
    assert_int_equal(keyop_req_decode(buf, w.len, &q), MESH_EMALFORMED);
    wire_wr_init(&w, buf, sizeof buf); /* [] */
    msgpack_pack_array(&w.pk, 0);
    assert_int_equal(keyop_req_decode(buf, w.len, &q), MESH_EMALFORMED);
    for (int op = KEYOP_INSTALL; op <= KEYOP_REMOVE; op++) {
        r = req_valid(&f, (enum keyop_kind)op, sealed, proof, proof2);
        struct req_parts more = r, fewer = r, bare = r;
        more.count++; /* an extra element */
        more.bin[more.nbin] = proof;
        more.binlen[more.nbin++] = KEYPROOF_LEN;
        assert_int_equal(req_decode(&more, &q), MESH_EMALFORMED);
        fewer.count--; /* the last one missing */
        fewer.nbin--;
        assert_int_equal(req_decode(&fewer, &q), MESH_EMALFORMED);
        bare.count = 2; /* a list's layout under another op */
        bare.nbin = 0;
        assert_int_equal(req_decode(&bare, &q), MESH_EMALFORMED);
        /* A count that promises more than the buffer holds. */
        struct req_parts lie = r;
        lie.count += 1000;
        assert_int_equal(req_decode(&lie, &q), MESH_EMALFORMED);
    }
    /* A list needs only its two elements; what follows is not read (as since version 2). */
    r = req_valid(&f, KEYOP_LIST, sealed, proof, proof2);
    r.count = 3;
    r.nbin = 1;
    r.bin[0] = junk;
    r.binlen[0] = 3;
    assert_int_equal(req_decode(&r, &q), 0);
    assert_int_equal(q.op, KEYOP_LIST);
    assert_null(q.target);

    /* Wrong lengths: a fingerprint for a sealed key and the other way round, proofs one short
     * or one long, an empty target. */
    for (int op = KEYOP_INSTALL; op <= KEYOP_REMOVE; op++) {
        r = req_valid(&f, (enum keyop_kind)op, sealed, proof, proof2);
        for (size_t field = 0; field < r.nbin; field++) {
            size_t good = r.binlen[field];
            size_t bad[] = {0, good - 1, good + 1, op == KEYOP_INSTALL ? 8 : KEY_SEALED_LEN};
            for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
                struct req_parts t = r;
                t.bin[field] = junk;
                t.binlen[field] = bad[b];
                assert_int_equal(req_decode(&t, &q), MESH_EMALFORMED);
            }
        }
    }
    /* Unknown ops, and the version and op of other types than a uint. */
    r = req_valid(&f, KEYOP_LIST, sealed, proof, proof2);
    r.op = KEYOP_REMOVE + 1;
    assert_int_equal(req_decode(&r, &q), MESH_EMALFORMED);
    r.op = UINT64_MAX;
    assert_int_equal(req_decode(&r, &q), MESH_EMALFORMED);
    wire_wr_init(&w, buf, sizeof buf); /* ["2", 0] */
    msgpack_pack_array(&w.pk, 2);
    wire_pack_str(&w.pk, "2", 1);
    msgpack_pack_uint8(&w.pk, 0);
    assert_int_equal(keyop_req_decode(buf, w.len, &q), MESH_EMALFORMED);
    wire_wr_init(&w, buf, sizeof buf); /* [2, -1] */
    msgpack_pack_array(&w.pk, 2);
    msgpack_pack_uint8(&w.pk, KEYOP_VERSION);
    msgpack_pack_int8(&w.pk, -1);
    assert_int_equal(keyop_req_decode(buf, w.len, &q), MESH_EMALFORMED);
    wire_wr_init(&w, buf, sizeof buf); /* {2: 0}: a map, not an array */
    msgpack_pack_map(&w.pk, 1);
    msgpack_pack_uint8(&w.pk, KEYOP_VERSION);
    msgpack_pack_uint8(&w.pk, 0);
    assert_int_equal(keyop_req_decode(buf, w.len, &q), MESH_EMALFORMED);
    /* Fields of other types than bin: a str target, an array proof. */
    r = req_valid(&f, KEYOP_REMOVE, sealed, proof, proof2);
    wire_wr_init(&w, buf, sizeof buf);
    msgpack_pack_array(&w.pk, 4);
    msgpack_pack_uint8(&w.pk, KEYOP_VERSION);
    msgpack_pack_uint8(&w.pk, KEYOP_REMOVE);
    wire_pack_str(&w.pk, (const char *)f.fb, MESH_KEY_FP_LEN);
    wire_pack_bin(&w.pk, proof, KEYPROOF_LEN);
    assert_int_equal(keyop_req_decode(buf, w.len, &q), MESH_EMALFORMED);
    wire_wr_init(&w, buf, sizeof buf);
    msgpack_pack_array(&w.pk, 4);
    msgpack_pack_uint8(&w.pk, KEYOP_VERSION);
    msgpack_pack_uint8(&w.pk, KEYOP_REMOVE);
    wire_pack_bin(&w.pk, f.fb, MESH_KEY_FP_LEN);
    msgpack_pack_array(&w.pk, 1);
    msgpack_pack_uint8(&w.pk, 0);
    assert_int_equal(keyop_req_decode(buf, w.len, &q), MESH_EMALFORMED);

    /* Other versions: unsupported, with the op, whatever the layout (version 1 carried the key
     * in clear); an unknown op is malformed first. */
    uint64_t versions[] = {0, 1, 3, UINT64_MAX};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        r = (struct req_parts){3, versions[i], KEYOP_INSTALL, 1, {f.kc}, {MESH_KEY_LEN}};
        memset(&q, 0, sizeof q);
        assert_int_equal(req_decode(&r, &q), MESH_EUNSUPPORTED);
        assert_int_equal(q.op, KEYOP_INSTALL);
        assert_null(q.target);
        r.op = 9;
        assert_int_equal(req_decode(&r, &q), MESH_EMALFORMED);
    }
}

/* The proofs of decoded requests, checked as the recipient does: each refusal says why, and
 * the key to apply comes out only when everything holds. */
static void keyop_request_verify(void **state)
{
    (void)state;
    struct keyop_fixture f;
    uint8_t sealed[KEY_SEALED_LEN], proof[KEYPROOF_LEN], proof2[KEYPROOF_LEN], buf[512];
    uint8_t out[MESH_KEY_LEN], other_id[NODE_ID_LEN];
    struct keyop_req q;
    struct mesh_err err = {0};
    keyop_fixture_init(&f);
    memset(other_id, 0x11, sizeof other_id);

    /* Valid: install yields the unsealed key, use the key in the ring, remove nothing. */
    struct req_parts r = req_valid(&f, KEYOP_INSTALL, sealed, proof, proof2);
    assert_int_equal(keyop_req_decode(buf, req_pack(&r, buf, sizeof buf), &q), 0);
    assert_int_equal(keyop_req_verify(&f.ring, &f.self, f.requester, &q, out, &err), 0);
    assert_memory_equal(out, f.kc, MESH_KEY_LEN);
    /* ... but not from another requester, nor at another recipient. */
    memset(out, 0x55, sizeof out);
    assert_int_equal(keyop_req_verify(&f.ring, &f.self, other_id, &q, out, &err), MESH_EAUTH);
    assert_string_equal(err.msg, "no proof of this node's primary key");
    for (size_t i = 0; i < sizeof out; i++)
        assert_int_equal(out[i], 0x55); /* untouched on failure */
    struct identity stranger;
    crypto_box_keypair(stranger.pub, stranger.priv);
    identity_node_id(stranger.pub, stranger.id);
    assert_int_equal(keyop_req_verify(&f.ring, &stranger, f.requester, &q, out, &err), MESH_EAUTH);
    assert_string_equal(err.msg, "the key is not sealed to this node");
    /* Sealed to us, but the proof is under a key that is not our primary. */
    keyproof_make(f.kb, KEYPROOF_INSTALL, f.self.id, f.requester, f.fc, proof);
    assert_int_equal(keyop_req_decode(buf, req_pack(&r, buf, sizeof buf), &q), 0);
    assert_int_equal(keyop_req_verify(&f.ring, &f.self, f.requester, &q, out, &err), MESH_EAUTH);
    assert_string_equal(err.msg, "no proof of this node's primary key");

    r = req_valid(&f, KEYOP_USE, sealed, proof, proof2);
    assert_int_equal(keyop_req_decode(buf, req_pack(&r, buf, sizeof buf), &q), 0);
    assert_int_equal(keyop_req_verify(&f.ring, &f.self, f.requester, &q, out, &err), 0);
    assert_memory_equal(out, f.kb, MESH_KEY_LEN);
    /* The second proof under the primary instead of the key to use: a member holding only the
     * old key cannot switch a node back to it. */
    keyproof_make(f.ka, KEYPROOF_USE, f.self.id, f.requester, f.fb, proof2);
    assert_int_equal(keyop_req_decode(buf, req_pack(&r, buf, sizeof buf), &q), 0);
    assert_int_equal(keyop_req_verify(&f.ring, &f.self, f.requester, &q, out, &err), MESH_EAUTH);
    assert_string_equal(err.msg, "no proof of the key to use");
    /* A key the ring does not hold. */
    r.bin[0] = f.fc;
    assert_int_equal(keyop_req_decode(buf, req_pack(&r, buf, sizeof buf), &q), 0);
    assert_int_equal(keyop_req_verify(&f.ring, &f.self, f.requester, &q, out, &err),
                     MESH_ENOTFOUND);

    r = req_valid(&f, KEYOP_REMOVE, sealed, proof, proof2);
    assert_int_equal(keyop_req_decode(buf, req_pack(&r, buf, sizeof buf), &q), 0);
    assert_int_equal(keyop_req_verify(&f.ring, &f.self, f.requester, &q, out, &err), 0);
    /* A proof for removing kb does not remove ka. */
    r.bin[0] = f.fa;
    assert_int_equal(keyop_req_decode(buf, req_pack(&r, buf, sizeof buf), &q), 0);
    assert_int_equal(keyop_req_verify(&f.ring, &f.self, f.requester, &q, out, &err), MESH_EAUTH);
    /* Nor does a proof made for another op. */
    r = req_valid(&f, KEYOP_REMOVE, sealed, proof, proof2);
    keyproof_make(f.ka, KEYPROOF_USE, f.self.id, f.requester, f.fb, proof);
    assert_int_equal(keyop_req_decode(buf, req_pack(&r, buf, sizeof buf), &q), 0);
    assert_int_equal(keyop_req_verify(&f.ring, &f.self, f.requester, &q, out, &err), MESH_EAUTH);
    keyring_wipe(&f.ring);
}

/* The list reply: rings of 0 to KEYRING_MAX keys round-trip; truncations, a fifth key, wrong
 * element counts, types and fingerprint lengths are malformed and leave the output alone. */
static void keyring_view_replies(void **state)
{
    (void)state;
    struct keyring kr;
    struct keyring_view v, untouched;
    uint8_t k[MESH_KEY_LEN], buf[256];
    struct wire_wr w;
    key(k, 1);
    keyring_init(&kr, k);
    for (uint8_t i = 2; i <= KEYRING_MAX; i++) {
        key(k, i);
        assert_int_equal(keyring_install(&kr, k), 0);
    }
    assert_int_equal(keyring_use(&kr, k), 0); /* the last one primary */
    int len = keyring_view_encode(&kr, buf, sizeof buf);
    assert_true(len > 0);
    assert_int_equal(keyring_view_encode(&kr, buf, (size_t)len - 1), MESH_ETOOBIG);
    len = keyring_view_encode(&kr, buf, sizeof buf);
    assert_int_equal(keyring_view_decode(buf, (size_t)len, &v), 0);
    assert_int_equal(v.n, KEYRING_MAX);
    assert_int_equal(v.primary, (int)kr.primary);
    for (size_t i = 0; i < kr.n; i++) {
        assert_memory_equal(v.fp[i], kr.e[i].fp, MESH_KEY_FP_LEN);
        assert_int_equal(keyring_view_find(&v, kr.e[i].fp), (int)i);
    }
    uint8_t absent[MESH_KEY_FP_LEN] = {0};
    assert_int_equal(keyring_view_find(&v, absent), -1);
    for (size_t cut = 0; cut < (size_t)len; cut++) {
        memset(&v, 0x5a, sizeof v);
        untouched = v;
        assert_int_equal(keyring_view_decode(buf, cut, &v), MESH_EMALFORMED);
        assert_memory_equal(&v, &untouched, sizeof v);
    }

    /* An empty ring, or one with no key marked primary: decoded, primary -1. */
    wire_wr_init(&w, buf, sizeof buf);
    msgpack_pack_array(&w.pk, 0);
    assert_int_equal(keyring_view_decode(buf, w.len, &v), 0);
    assert_int_equal(v.n, 0);
    assert_int_equal(v.primary, -1);
    wire_wr_init(&w, buf, sizeof buf);
    msgpack_pack_array(&w.pk, 1);
    msgpack_pack_array(&w.pk, 2);
    wire_pack_bin(&w.pk, kr.e[0].fp, MESH_KEY_FP_LEN);
    msgpack_pack_false(&w.pk);
    assert_int_equal(keyring_view_decode(buf, w.len, &v), 0);
    assert_int_equal(v.primary, -1);

    /* One key more than a ring holds. */
    wire_wr_init(&w, buf, sizeof buf);
    msgpack_pack_array(&w.pk, KEYRING_MAX + 1);
    for (int i = 0; i < KEYRING_MAX + 1; i++) {
        msgpack_pack_array(&w.pk, 2);
        wire_pack_bin(&w.pk, kr.e[0].fp, MESH_KEY_FP_LEN);
        msgpack_pack_false(&w.pk);
    }
    assert_int_equal(keyring_view_decode(buf, w.len, &v), MESH_EMALFORMED);

    /* Entries of one or three elements, fingerprints of 7 and 9 bytes or as str, the primary
     * mark as an integer, an entry that is not an array, a map for the ring. */
    for (int bad = 0; bad < 8; bad++) {
        uint8_t fp9[MESH_KEY_FP_LEN + 1] = {0};
        wire_wr_init(&w, buf, sizeof buf);
        if (bad == 7) {
            msgpack_pack_map(&w.pk, 0);
            assert_int_equal(keyring_view_decode(buf, w.len, &v), MESH_EMALFORMED);
            continue;
        }
        msgpack_pack_array(&w.pk, 1);
        if (bad == 6) {
            wire_pack_bin(&w.pk, kr.e[0].fp, MESH_KEY_FP_LEN);
            assert_int_equal(keyring_view_decode(buf, w.len, &v), MESH_EMALFORMED);
            continue;
        }
        msgpack_pack_array(&w.pk, bad == 0 ? 1 : bad == 1 ? 3 : 2);
        if (bad == 2)
            wire_pack_bin(&w.pk, fp9, MESH_KEY_FP_LEN - 1);
        else if (bad == 3)
            wire_pack_bin(&w.pk, fp9, MESH_KEY_FP_LEN + 1);
        else if (bad == 4)
            wire_pack_str(&w.pk, (const char *)fp9, MESH_KEY_FP_LEN);
        else
            wire_pack_bin(&w.pk, kr.e[0].fp, MESH_KEY_FP_LEN);
        if (bad == 5)
            msgpack_pack_uint8(&w.pk, 1);
        else if (bad != 0)
            msgpack_pack_true(&w.pk);
        if (bad == 1)
            msgpack_pack_true(&w.pk);
        memset(&v, 0x5a, sizeof v);
        untouched = v;
        assert_int_equal(keyring_view_decode(buf, w.len, &v), MESH_EMALFORMED);
        assert_memory_equal(&v, &untouched, sizeof v);
    }
    keyring_wipe(&kr);
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
        cmocka_unit_test(fingerprints),
        cmocka_unit_test(proofs_bind_everything),
        cmocka_unit_test(sealed_keys),
        cmocka_unit_test(keyop_request_decode_valid_and_truncated),
        cmocka_unit_test(keyop_request_decode_refusals),
        cmocka_unit_test(keyop_request_verify),
        cmocka_unit_test(keyring_view_replies),
        cmocka_unit_test(replay_forged_epoch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
