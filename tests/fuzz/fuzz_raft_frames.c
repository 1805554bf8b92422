/* libFuzzer: the raft transport's listener-side input (consensus/transport.h): the handshake
 * in a stream's open payload, and raft's byte stream through the framing check, fed in the
 * splits the input chooses. The first byte picks the split size; the check must never read out
 * of bounds, allocate beyond its bounds, or accept bytes after it failed. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "link.h"
#include "transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char address[LINK_OPEN_PAYLOAD_MAX];
    uint64_t id;
    size_t hs = size < LINK_OPEN_PAYLOAD_MAX ? size : LINK_OPEN_PAYLOAD_MAX;
    if (transport_handshake_decode(data, hs, &id, address, sizeof address) == 0 &&
        strlen(address) >= sizeof address)
        __builtin_trap();

    if (size == 0)
        return 0;
    size_t step = (size_t)data[0] % 64 + 1;
    struct transport_framecheck f;
    transport_framecheck_init(&f, 1u << 20);
    int failed = 0;
    for (size_t off = 1; off < size; off += step) {
        size_t n = size - off < step ? size - off : step;
        int rc = transport_framecheck_feed(&f, data + off, n);
        if (failed && rc == 0)
            __builtin_trap(); /* errors are sticky */
        failed = rc < 0;
    }
    transport_framecheck_fini(&f);
    return 0;
}
