/* libFuzzer harness for the leader's side of a forwarded write (consensus/forward.h,
 * forward_canonical): arbitrary bytes as a follower's command. A refusal is one of the
 * documented codes with a reason; what is accepted is padded to 8 bytes (raft_uv's unit),
 * decodes with the machine's own decoder as the same command type, and is a fixed point: the
 * canonical form of the canonical form is itself, so the log holds one spelling. Records are
 * refused here (their format is the daemon's). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "forward.h"
#include "fsm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FORWARD_MAX_REQUEST)
        return 0;
    struct raft_buffer out = {.base = (void *)0x1, .len = 12345}, again;
    char why[640] = "";
    int rc = forward_canonical(data, size, NULL, NULL, &out, why, sizeof why);
    if (rc < 0) {
        if ((rc != MESH_EINVAL && rc != MESH_EUNSUPPORTED && rc != MESH_ENOMEM) || !why[0] ||
            out.base != (void *)0x1 || out.len != 12345)
            abort();
        return 0;
    }
    struct fsm_cmd in, c;
    if (out.len == 0 || out.len % 8 != 0 || fsm_cmd_decode(data, size, &in) != 0 ||
        fsm_cmd_decode(out.base, out.len, &c) != 0 || c.type != in.type)
        abort();
    if (forward_canonical(out.base, out.len, NULL, NULL, &again, why, sizeof why) != 0 ||
        again.len != out.len || memcmp(again.base, out.base, out.len) != 0)
        abort();
    raft_free(again.base);
    raft_free(out.base);
    return 0;
}
