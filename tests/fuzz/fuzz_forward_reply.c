/* libFuzzer harness for the answers a follower decodes from the leader (consensus/forward.h):
 * the APPLY reply and the READ_INDEX reply. Arbitrary bytes to both decoders: failures return
 * MESH_EMALFORMED and leave the outputs untouched; what decodes has an outcome of enum
 * fsm_outcome and re-encodes to a prefix-canonical reply that decodes to the same values.
 * The first byte picks nothing: both decoders see every input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "forward.h"
#include "fsm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int outcome = -7;
    uint64_t version = 0x5a5a, index = 0xa5a5;
    int rc = forward_reply_decode(data, size, &outcome, &version, &index);
    if (rc < 0) {
        if (rc != MESH_EMALFORMED || outcome != -7 || version != 0x5a5a || index != 0xa5a5)
            abort();
    } else {
        if (rc != 0 || outcome < FSM_OUT_CREATED || outcome > FSM_OUT_UNKNOWN)
            abort();
        uint8_t enc[FORWARD_REPLY_MAX];
        size_t n = forward_reply_encode(outcome, version, index, enc, sizeof enc);
        int o2;
        uint64_t v2, i2;
        if (n == 0 || forward_reply_decode(enc, n, &o2, &v2, &i2) != 0 || o2 != outcome ||
            v2 != version || i2 != index)
            abort();
    }

    uint64_t ri = 0x1234;
    rc = forward_read_index_decode(data, size, &ri);
    if (rc < 0) {
        if (rc != MESH_EMALFORMED || ri != 0x1234)
            abort();
    } else {
        uint8_t enc[FORWARD_READ_INDEX_REPLY_MAX];
        uint64_t again;
        size_t n = forward_read_index_encode(ri, enc, sizeof enc);
        if (n == 0 || forward_read_index_decode(enc, n, &again) != 0 || again != ri)
            abort();
    }
    return 0;
}
