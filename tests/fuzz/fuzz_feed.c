/* libFuzzer harness for the desired-state feed's decoders (consensus/feed.h): the advert (gossip
 * metadata), the pull request (served for any member), the reply (what a puller decodes) and
 * the stored state (the file on disk). Arbitrary bytes to each: errors leave the outputs
 * untouched; a request that decodes re-encodes to one that decodes to the same values; a reply that
 * decodes is served to a fresh feed's pull path, which must refuse it or hold a state whose digest
 * is the claimed one; a stored state that loads has the revision it claims. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "feed.h"
#include "fsm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t t_now(void *ud)
{
    (void)ud;
    return 0;
}
static uint64_t t_random(void *ud)
{
    (void)ud;
    return 4;
}
static void t_timer(void *ud, uint64_t at)
{
    (void)ud;
    (void)at;
}
static int t_call(void *ud, const char *address, const uint8_t *buf, size_t len, size_t max_reply,
                  uint64_t timeout_ms, uint64_t id)
{
    (void)address, (void)buf, (void)len, (void)max_reply, (void)timeout_ms;
    *(uint64_t *)ud = id;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t rev = 0x5a5a;
    uint8_t d[FEED_DIGEST_LEN] = {0};
    if (feed_advert_decode(data, size, &rev, d) != 0 && rev != 0x5a5a)
        abort();

    uint64_t from = 0x5a5a;
    bool snap = false;
    if (feed_request_decode(data, size, &from, &snap) == 0) {
        /* msgpack has several encodings of one integer: compare values, not bytes. */
        uint8_t enc[FEED_REQUEST_MAX];
        size_t n = feed_request_encode(from, snap, enc, sizeof enc);
        uint64_t from2;
        bool snap2;
        if (n == 0 || feed_request_decode(enc, n, &from2, &snap2) != 0 || from2 != from ||
            snap2 != snap)
            abort();
    } else if (from != 0x5a5a) {
        abort();
    }

    struct fsm *fsm;
    struct feed *feed;
    if (fsm_new(&fsm) != 0)
        return 0;
    uint64_t t_id = 0;
    struct feed_io io = {
        .data = &t_id, .now = t_now, .random = t_random, .timer = t_timer, .call = t_call};
    if (feed_new(&io, fsm, &feed) != 0) {
        fsm_free(fsm);
        return 0;
    }
    struct feed_reply rp;
    if (feed_reply_decode(data, size, &rp) == 0) {
        /* Pretend a source advertised the reply's revision, and answer the pull with it. */
        uint8_t adv[FEED_ADVERT_MAX] = {0x93, 0x01, 0xcf};
        for (int i = 0; i < 8; i++)
            adv[3 + i] = (uint8_t)(rp.revision >> (56 - 8 * i));
        adv[11] = 0xc4;
        adv[12] = FEED_DIGEST_LEN;
        memcpy(adv + 13, rp.digest, FEED_DIGEST_LEN);
        if (feed_observe(feed, "src", adv, 13 + FEED_DIGEST_LEN) != 0)
            abort();
        if (rp.revision > 0 && !feed_pulling_now(feed))
            abort();
        feed_pull_done(feed, t_id, 0, data, size);
        if (fsm_revision(fsm) != 0) {
            uint8_t got[FEED_DIGEST_LEN];
            if (fsm_revision(fsm) != rp.revision || feed_digest(feed, got) != 0 ||
                memcmp(got, rp.digest, sizeof got) != 0)
                abort();
        }
    }
    struct mesh_err err;
    uint64_t before = fsm_revision(fsm);
    if (feed_store_decode(fsm, data, size, &err) != 0 && fsm_revision(fsm) != before)
        abort();
    feed_free(feed);
    fsm_free(fsm);
    return 0;
}
