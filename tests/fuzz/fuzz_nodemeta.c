/* libFuzzer harness for node metadata as it arrives in gossip (meshd/nodemeta.h): arbitrary
 * bytes to nodemeta_decode; when they decode, the struct must survive a round trip (encode,
 * decode again, compare every field byte for byte) and render as JSON for the API.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon -Imeshd \
 *       tests/fuzz/fuzz_nodemeta.c meshd/nodemeta.c common/wire.c common/err.c common/addr.c \
 *       -lmsgpackc -ljansson -o fuzz_nodemeta */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "nodemeta.h"

/* Large enough for any struct node_meta: 32 labels of 63 + 127 characters. */
#define ENC_CAP 16384

static int same(const struct node_meta *a, const struct node_meta *b)
{
    if (memcmp(a->arch, b->arch, sizeof a->arch) != 0 || memcmp(a->os, b->os, sizeof a->os) != 0 ||
        memcmp(a->version, b->version, sizeof a->version) != 0 || a->cpus != b->cpus ||
        a->memory != b->memory || a->nlabels != b->nlabels || a->engine != b->engine ||
        a->ls_len != b->ls_len || memcmp(a->ls, b->ls, a->ls_len) != 0)
        return 0;
    for (size_t i = 0; i < a->nlabels; i++)
        if (memcmp(&a->labels[i], &b->labels[i], sizeof a->labels[i]) != 0)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t enc[ENC_CAP];
    struct node_meta m, again;
    memset(&m, 0x5a, sizeof m);
    struct node_meta untouched = m;
    if (nodemeta_decode(data, size, &m) < 0) {
        if (memcmp(&m, &untouched, sizeof m) != 0)
            abort(); /* outputs untouched on failure */
        return 0;
    }
    int len = nodemeta_encode(&m, enc, sizeof enc);
    if (len < 0)
        abort();
    if (nodemeta_decode(enc, (size_t)len, &again) < 0 || !same(&m, &again))
        abort();
    /* The encoding is canonical: encoding the copy gives the same bytes. */
    static uint8_t enc2[ENC_CAP];
    if (nodemeta_encode(&again, enc2, sizeof enc2) != len || memcmp(enc, enc2, (size_t)len) != 0)
        abort();
    /* Too small a buffer is refused, never overrun. */
    if (len > 0 && nodemeta_encode(&m, enc2, (size_t)len - 1) != MESH_ETOOBIG)
        abort();
    json_decref(nodemeta_json(&m));
    return 0;
}
