#include "keyring.h"

#include "atomicfile.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* crypto_kdf contexts (8 bytes) and subkey ids: one subkey per use of a mesh key. */
static const char KDF_CTX[crypto_kdf_CONTEXTBYTES] = {'f', 'o', 'g', 'm', 'e', 's', 'h', '1'};
enum { SUBKEY_GOSSIP = 1, SUBKEY_LINK_PSK = 2, SUBKEY_KEYPROOF = 3 };

static void derive(struct keyring_entry *e, const uint8_t key[static MESH_KEY_LEN])
{
    uint8_t h[32];
    memcpy(e->key, key, MESH_KEY_LEN);
    crypto_kdf_derive_from_key(e->gossip, sizeof e->gossip, SUBKEY_GOSSIP, KDF_CTX, key);
    crypto_kdf_derive_from_key(e->link_psk, sizeof e->link_psk, SUBKEY_LINK_PSK, KDF_CTX, key);
    crypto_generichash(h, sizeof h, e->gossip, sizeof e->gossip, NULL, 0);
    memcpy(e->hint, h, sizeof e->hint);
    mesh_key_fingerprint(key, e->fp);
}

void keyring_init(struct keyring *kr, const uint8_t key[static MESH_KEY_LEN])
{
    memset(kr, 0, sizeof *kr);
    derive(&kr->e[0], key);
    kr->n = 1;
    kr->primary = 0;
}

int keyring_find(const struct keyring *kr, const uint8_t key[static MESH_KEY_LEN])
{
    int found = -1;
    for (size_t i = 0; i < kr->n; i++)
        if (sodium_memcmp(kr->e[i].key, key, MESH_KEY_LEN) == 0)
            found = (int)i;
    return found;
}

int keyring_find_fp(const struct keyring *kr, const uint8_t fp[static MESH_KEY_FP_LEN])
{
    int found = -1;
    for (size_t i = 0; i < kr->n; i++)
        if (sodium_memcmp(kr->e[i].fp, fp, MESH_KEY_FP_LEN) == 0)
            found = (int)i;
    return found;
}

void keyproof_make(const uint8_t key[static MESH_KEY_LEN], enum keyproof_op op,
                   const uint8_t recipient[static NODE_ID_LEN],
                   const uint8_t requester[static NODE_ID_LEN],
                   const uint8_t target_fp[static MESH_KEY_FP_LEN],
                   uint8_t ret_mac[static KEYPROOF_LEN])
{
    static const char domain[] = "fogmesh-keyop-v1";
    uint8_t sub[32], opb = (uint8_t)op;
    crypto_generichash_state st;
    /* A subkey of its own, as for gossip and the PSK: a proof is never a MAC under a key that
     * also seals or encrypts something. */
    crypto_kdf_derive_from_key(sub, sizeof sub, SUBKEY_KEYPROOF, KDF_CTX, key);
    crypto_generichash_init(&st, sub, sizeof sub, KEYPROOF_LEN);
    crypto_generichash_update(&st, (const uint8_t *)domain, sizeof domain - 1);
    crypto_generichash_update(&st, &opb, 1);
    crypto_generichash_update(&st, recipient, NODE_ID_LEN);
    crypto_generichash_update(&st, requester, NODE_ID_LEN);
    crypto_generichash_update(&st, target_fp, MESH_KEY_FP_LEN);
    crypto_generichash_final(&st, ret_mac, KEYPROOF_LEN);
    sodium_memzero(sub, sizeof sub);
    sodium_memzero(&st, sizeof st);
}

bool keyproof_verify(const uint8_t key[static MESH_KEY_LEN], enum keyproof_op op,
                     const uint8_t recipient[static NODE_ID_LEN],
                     const uint8_t requester[static NODE_ID_LEN],
                     const uint8_t target_fp[static MESH_KEY_FP_LEN],
                     const uint8_t mac[static KEYPROOF_LEN])
{
    uint8_t want[KEYPROOF_LEN];
    keyproof_make(key, op, recipient, requester, target_fp, want);
    bool ok = sodium_memcmp(want, mac, KEYPROOF_LEN) == 0;
    sodium_memzero(want, sizeof want);
    return ok;
}

void keyring_seal_key(const uint8_t key[static MESH_KEY_LEN],
                      const uint8_t recipient_pub[static IDENTITY_KEY_LEN],
                      uint8_t ret_sealed[static KEY_SEALED_LEN])
{
    _Static_assert(KEY_SEALED_LEN == MESH_KEY_LEN + crypto_box_SEALBYTES, "sealed key size");
    crypto_box_seal(ret_sealed, key, MESH_KEY_LEN, recipient_pub);
}

int keyring_open_key(const uint8_t sealed[static KEY_SEALED_LEN],
                     const uint8_t pub[static IDENTITY_KEY_LEN],
                     const uint8_t priv[static IDENTITY_KEY_LEN],
                     uint8_t ret_key[static MESH_KEY_LEN])
{
    uint8_t key[MESH_KEY_LEN];
    if (crypto_box_seal_open(key, sealed, KEY_SEALED_LEN, pub, priv) != 0)
        return MESH_EAUTH;
    memcpy(ret_key, key, MESH_KEY_LEN);
    sodium_memzero(key, sizeof key);
    return 0;
}

int keyring_install(struct keyring *kr, const uint8_t key[static MESH_KEY_LEN])
{
    if (keyring_find(kr, key) >= 0)
        return MESH_EEXISTS;
    if (kr->n == KEYRING_MAX)
        return MESH_EFULL;
    derive(&kr->e[kr->n++], key);
    return 0;
}

int keyring_use(struct keyring *kr, const uint8_t key[static MESH_KEY_LEN])
{
    int i = keyring_find(kr, key);
    if (i < 0)
        return MESH_ENOTFOUND;
    kr->primary = (size_t)i;
    return 0;
}

int keyring_remove(struct keyring *kr, const uint8_t key[static MESH_KEY_LEN])
{
    int i = keyring_find(kr, key);
    if (i < 0)
        return MESH_ENOTFOUND;
    if ((size_t)i == kr->primary)
        return MESH_ESTATE;
    memmove(&kr->e[i], &kr->e[i + 1], (kr->n - (size_t)i - 1) * sizeof kr->e[0]);
    kr->n--;
    sodium_memzero(&kr->e[kr->n], sizeof kr->e[0]);
    if (kr->primary > (size_t)i)
        kr->primary--;
    return 0;
}

void keyring_wipe(struct keyring *kr)
{
    sodium_memzero(kr, sizeof *kr);
}

int keyring_save(const struct keyring *kr, const char *dir, struct mesh_err *err)
{
    char path[4096], tmp[4096];
    char text[KEYRING_MAX * (MESH_KEY_B64_LEN + 1) + 128];
    size_t off = 0;
    int rc = 0;

    snprintf(path, sizeof path, "%s/%s", dir, KEYRING_FILENAME);
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, KEYRING_FILENAME);
    off += (size_t)snprintf(text, sizeof text, "# fogmesh key ring: primary key first\n");
    for (size_t k = 0; k < kr->n; k++) {
        size_t i = (kr->primary + k) % kr->n;
        mesh_key_encode(kr->e[i].key, text + off);
        off += MESH_KEY_B64_LEN;
        text[off++] = '\n';
    }
    rc = mesh_file_replace(tmp, path, text, off, 0600, err);
    sodium_memzero(text, sizeof text);
    return rc;
}

int keyring_load(struct keyring *kr, const char *dir, struct mesh_err *err)
{
    char path[4096], line[256];
    struct keyring ring;
    int rc = 0, lineno = 0;
    snprintf(path, sizeof path, "%s/%s", dir, KEYRING_FILENAME);
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return MESH_ENOTFOUND;
        return mesh_errf(err, -errno, "cannot read %s: %s", path, strerror(errno));
    }
    memset(&ring, 0, sizeof ring);
    while (fgets(line, sizeof line, f)) {
        uint8_t key[MESH_KEY_LEN];
        lineno++;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        rc = mesh_key_decode(line, key, err);
        if (rc < 0) {
            mesh_err_wrapf(err, "%s:%d", path, lineno);
            break;
        }
        if (ring.n == 0)
            keyring_init(&ring, key);
        else if ((rc = keyring_install(&ring, key)) < 0 && rc != MESH_EEXISTS) {
            mesh_errf(err, rc, "%s: more than %d keys", path, KEYRING_MAX);
            break;
        }
        rc = 0;
        sodium_memzero(key, sizeof key);
    }
    fclose(f);
    sodium_memzero(line, sizeof line);
    if (rc == 0 && ring.n == 0)
        rc = mesh_errf(err, MESH_EINVAL, "%s holds no key", path);
    if (rc == 0)
        *kr = ring;
    keyring_wipe(&ring);
    return rc;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int seal_packet(const struct keyring *kr, const struct seal_inner *inner, const uint8_t *payload,
                size_t len, uint8_t *out, size_t outcap)
{
    uint8_t plain[SEAL_MAX_PACKET];
    const struct keyring_entry *k = &kr->e[kr->primary];
    size_t plen = SEAL_INNER_LEN + len;
    size_t total = SEAL_HEADER_LEN + plen + crypto_aead_xchacha20poly1305_ietf_ABYTES;

    if (len > SEAL_MAX_PAYLOAD || total > outcap)
        return MESH_ETOOBIG;
    memcpy(plain, inner->sender, NODE_ID_LEN);
    put_be64(plain + NODE_ID_LEN, inner->epoch);
    put_be64(plain + NODE_ID_LEN + 8, inner->seq);
    memcpy(plain + SEAL_INNER_LEN, payload, len);

    out[0] = SEAL_VERSION;
    memcpy(out + 1, k->hint, 4);
    randombytes_buf(out + 5, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    unsigned long long clen = 0;
    /* The clear header is associated data: a flipped version or hint fails the tag. */
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + SEAL_HEADER_LEN, &clen, plain, plen, out,
                                               SEAL_HEADER_LEN, NULL, out + 5, k->gossip);
    sodium_memzero(plain, plen);
    return (int)(SEAL_HEADER_LEN + clen);
}

int seal_open(const struct keyring *kr, const uint8_t *pkt, size_t len, uint8_t *out, size_t outcap,
              struct seal_inner *ret_inner, const uint8_t **ret_payload)
{
    if (len < SEAL_HEADER_LEN + crypto_aead_xchacha20poly1305_ietf_ABYTES + SEAL_INNER_LEN ||
        len > SEAL_MAX_PACKET || pkt[0] != SEAL_VERSION)
        return MESH_EMALFORMED;
    if (outcap < len)
        return MESH_ETOOBIG;
    for (size_t i = 0; i < kr->n; i++) {
        const struct keyring_entry *k = &kr->e[i];
        if (memcmp(pkt + 1, k->hint, 4) != 0)
            continue;
        unsigned long long plen = 0;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(out, &plen, NULL, pkt + SEAL_HEADER_LEN,
                                                       len - SEAL_HEADER_LEN, pkt, SEAL_HEADER_LEN,
                                                       pkt + 5, k->gossip) != 0)
            continue; /* a hint collision, or a forged packet: try the others */
        memcpy(ret_inner->sender, out, NODE_ID_LEN);
        ret_inner->epoch = get_be64(out + NODE_ID_LEN);
        ret_inner->seq = get_be64(out + NODE_ID_LEN + 8);
        *ret_payload = out + SEAL_INNER_LEN;
        return (int)(plen - SEAL_INNER_LEN);
    }
    return MESH_EAUTH;
}

int replay_init(struct replay_table *t, size_t cap)
{
    t->e = calloc(cap, sizeof *t->e);
    t->cap = t->e ? cap : 0;
    t->clock = 0;
    return t->e ? 0 : MESH_ENOMEM;
}

void replay_free(struct replay_table *t)
{
    free(t->e);
    t->e = NULL;
    t->cap = 0;
}

/* The sender's entry, or a new one in a free slot or in place of the least recently used
 * entry, preferring one whose epoch no link proved: an entry a link proved is worth more than
 * one a flood of packets with made-up sender ids can churn. */
static struct replay_entry *replay_slot(struct replay_table *t, const uint8_t *sender)
{
    struct replay_entry *free_slot = NULL, *lru = NULL;
    for (size_t i = 0; i < t->cap; i++) {
        struct replay_entry *e = &t->e[i];
        if (e->used == 0) {
            if (!free_slot)
                free_slot = e;
            continue;
        }
        if (memcmp(e->sender, sender, NODE_ID_LEN) == 0)
            return e;
        if (!lru || (lru->proven && !e->proven) ||
            (lru->proven == e->proven && e->used < lru->used))
            lru = e;
    }
    struct replay_entry *e = free_slot ? free_slot : lru;
    memset(e, 0, sizeof *e);
    memcpy(e->sender, sender, NODE_ID_LEN);
    return e;
}

static void win_start(struct replay_win *w, uint64_t epoch, uint64_t seq, uint64_t stamp)
{
    memset(w, 0, sizeof *w);
    w->epoch = epoch;
    w->top = seq;
    w->bits[(seq / 64) % (REPLAY_WINDOW / 64)] |= 1ull << (seq % 64);
    w->used = stamp;
}

/* RFC 6479: a ring of 64-bit words; moving the top clears the words it passes. The word shared
 * with the top limits the usable window to REPLAY_WINDOW - 64. */
static int win_check(struct replay_win *w, uint64_t seq, uint64_t stamp)
{
    const uint64_t nwords = REPLAY_WINDOW / 64;
    w->used = stamp;
    if (seq > w->top) {
        uint64_t old_word = w->top / 64, new_word = seq / 64;
        if (new_word - old_word >= nwords)
            memset(w->bits, 0, sizeof w->bits);
        else
            for (uint64_t i = old_word + 1; i <= new_word; i++)
                w->bits[i % nwords] = 0;
        w->top = seq;
    } else if (w->top - seq >= REPLAY_WINDOW - 64) {
        return MESH_EREPLAY;
    }
    uint64_t *word = &w->bits[(seq / 64) % nwords];
    uint64_t bit = 1ull << (seq % 64);
    if (*word & bit)
        return MESH_EREPLAY;
    *word |= bit;
    return 0;
}

/* ---- the messages of key operations ---------------------------------------------------- */

int keyop_req_decode(const uint8_t *buf, size_t len, struct keyop_req *ret)
{
    struct wire_rd r;
    uint32_t cnt, tlen = 0, plen = 0, p2len = 0;
    uint64_t v, op;
    const uint8_t *target = NULL, *proof = NULL, *proof2 = NULL;

    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &cnt) < 0 || cnt < 2 || wire_rd_uint(&r, &v) < 0 ||
        wire_rd_uint(&r, &op) < 0 || op > KEYOP_REMOVE)
        return MESH_EMALFORMED;
    if (v != KEYOP_VERSION) {
        *ret = (struct keyop_req){.op = (enum keyop_kind)op};
        return MESH_EUNSUPPORTED;
    }
    if (op != KEYOP_LIST &&
        (cnt != (op == KEYOP_USE ? 5u : 4u) || wire_rd_bin(&r, &target, &tlen) < 0 ||
         tlen != (op == KEYOP_INSTALL ? KEY_SEALED_LEN : MESH_KEY_FP_LEN) ||
         wire_rd_bin(&r, &proof, &plen) < 0 || plen != KEYPROOF_LEN ||
         (op == KEYOP_USE && (wire_rd_bin(&r, &proof2, &p2len) < 0 || p2len != KEYPROOF_LEN))))
        return MESH_EMALFORMED;
    *ret = (struct keyop_req){.op = (enum keyop_kind)op,
                              .target = target,
                              .target_len = tlen,
                              .proof = proof,
                              .proof2 = proof2};
    return 0;
}

int keyop_req_verify(const struct keyring *kr, const struct identity *self,
                     const uint8_t requester[static NODE_ID_LEN], const struct keyop_req *req,
                     uint8_t ret_key[static MESH_KEY_LEN], struct mesh_err *err)
{
    const struct keyring_entry *primary = &kr->e[kr->primary];
    uint8_t key[MESH_KEY_LEN], fp[MESH_KEY_FP_LEN];
    int i;

    switch (req->op) {
    case KEYOP_LIST:
        break;
    case KEYOP_INSTALL:
        if (keyring_open_key(req->target, self->pub, self->priv, key) < 0)
            return mesh_errf(err, MESH_EAUTH, "the key is not sealed to this node");
        mesh_key_fingerprint(key, fp);
        if (!keyproof_verify(primary->key, KEYPROOF_INSTALL, self->id, requester, fp, req->proof)) {
            sodium_memzero(key, sizeof key);
            return mesh_errf(err, MESH_EAUTH, "no proof of this node's primary key");
        }
        memcpy(ret_key, key, MESH_KEY_LEN);
        sodium_memzero(key, sizeof key);
        break;
    case KEYOP_USE:
        /* The fingerprint picks the key, the proof under that very key is what counts. */
        i = keyring_find_fp(kr, req->target);
        if (i < 0)
            return mesh_errf(err, MESH_ENOTFOUND,
                             "the key is not installed: run `meshctl keys install` first");
        if (!keyproof_verify(primary->key, KEYPROOF_USE, self->id, requester, req->target,
                             req->proof))
            return mesh_errf(err, MESH_EAUTH, "no proof of this node's primary key");
        if (!keyproof_verify(kr->e[i].key, KEYPROOF_USE, self->id, requester, req->target,
                             req->proof2))
            return mesh_errf(err, MESH_EAUTH, "no proof of the key to use");
        memcpy(ret_key, kr->e[i].key, MESH_KEY_LEN);
        break;
    case KEYOP_REMOVE:
        if (!keyproof_verify(primary->key, KEYPROOF_REMOVE, self->id, requester, req->target,
                             req->proof))
            return mesh_errf(err, MESH_EAUTH, "no proof of this node's primary key");
        break;
    }
    return 0;
}

int keyring_view_encode(const struct keyring *kr, uint8_t *buf, size_t cap)
{
    struct wire_wr w;
    wire_wr_init(&w, buf, cap);
    msgpack_pack_array(&w.pk, (uint32_t)kr->n);
    for (size_t i = 0; i < kr->n; i++) {
        msgpack_pack_array(&w.pk, 2);
        wire_pack_bin(&w.pk, kr->e[i].fp, MESH_KEY_FP_LEN);
        if (i == kr->primary)
            msgpack_pack_true(&w.pk);
        else
            msgpack_pack_false(&w.pk);
    }
    return w.overflow ? MESH_ETOOBIG : (int)w.len;
}

int keyring_view_decode(const uint8_t *buf, size_t len, struct keyring_view *ret)
{
    struct wire_rd r;
    uint32_t cnt;
    struct keyring_view v = {.primary = -1};
    wire_rd_init(&r, buf, len);
    if (wire_rd_array(&r, &cnt) < 0 || cnt > KEYRING_MAX)
        return MESH_EMALFORMED;
    for (uint32_t i = 0; i < cnt; i++) {
        uint32_t two, flen;
        const uint8_t *fp;
        bool primary;
        if (wire_rd_array(&r, &two) < 0 || two != 2 || wire_rd_bin(&r, &fp, &flen) < 0 ||
            flen != MESH_KEY_FP_LEN || wire_rd_bool(&r, &primary) < 0)
            return MESH_EMALFORMED;
        memcpy(v.fp[v.n++], fp, MESH_KEY_FP_LEN);
        if (primary)
            v.primary = (int)i;
    }
    *ret = v;
    return 0;
}

int keyring_view_find(const struct keyring_view *v, const uint8_t fp[static MESH_KEY_FP_LEN])
{
    for (size_t i = 0; i < v->n; i++)
        if (sodium_memcmp(v->fp[i], fp, MESH_KEY_FP_LEN) == 0)
            return (int)i;
    return -1;
}

int replay_check(struct replay_table *t, const struct seal_inner *in, bool *ret_unproven)
{
    if (ret_unproven)
        *ret_unproven = false;
    if (!t->cap)
        return 0;
    struct replay_entry *e = replay_slot(t, in->sender);
    bool fresh = e->used == 0;
    e->used = ++t->clock;
    if (fresh) {
        win_start(&e->w[0], in->epoch, in->seq, t->clock);
        return 0;
    }
    for (size_t i = 0; i < REPLAY_EPOCHS; i++)
        if (e->w[i].used && e->w[i].epoch == in->epoch)
            return win_check(&e->w[i], in->seq, t->clock);
    if (ret_unproven)
        *ret_unproven = !e->proven;
    if (in->epoch < e->w[0].epoch)
        return MESH_EREPLAY;
    /* A newer epoch than the current one: a restart, or a claim. It gets a window of its
     * own (a free one, else the least recently used of the newer ones), accepted at once,
     * and never displaces the current epoch's window. */
    struct replay_win *w = NULL;
    for (size_t i = 1; i < REPLAY_EPOCHS; i++)
        if (!w || e->w[i].used < w->used)
            w = &e->w[i];
    win_start(w, in->epoch, in->seq, t->clock);
    return 0;
}

void replay_prove(struct replay_table *t, const uint8_t sender[static NODE_ID_LEN], uint64_t epoch)
{
    if (!t->cap)
        return;
    struct replay_entry *e = replay_slot(t, sender);
    e->used = ++t->clock;
    struct replay_win cur = {0};
    for (size_t i = 0; i < REPLAY_EPOCHS; i++)
        if (e->w[i].used && e->w[i].epoch == epoch)
            cur = e->w[i];
    if (!cur.used) {
        /* No packet of this epoch seen yet: a window that takes any sequence once. */
        cur.epoch = epoch;
        cur.used = t->clock;
    }
    e->w[0] = cur;
    for (size_t i = 1; i < REPLAY_EPOCHS; i++)
        if (e->w[i].epoch <= epoch)
            memset(&e->w[i], 0, sizeof e->w[i]);
    e->proven = true;
}
