/* libFuzzer harness for the open payload of a relayed raft stream (consensus/transport.h,
 * "Relaying"): arbitrary bytes to transport_relay_decode; failures return the documented codes
 * and leave the output untouched; what decodes carries a handshake that decodes on its own,
 * re-encodes to the same bytes, fits the OPEN frame, and does not fit one byte shorter. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct transport_relay r, untouched, again;
    uint8_t enc[LINK_OPEN_PAYLOAD_MAX + TRANSPORT_RELAY_HEADER];
    memset(&r, 0x5a, sizeof r);
    untouched = r;
    int rc = transport_relay_decode(data, size, &r);
    if (rc < 0) {
        if (rc != MESH_EMALFORMED && rc != MESH_EUNSUPPORTED)
            abort();
        if (memcmp(&r, &untouched, sizeof r) != 0)
            abort();
        return 0;
    }
    if (r.hs != data + TRANSPORT_RELAY_HEADER || r.hs_len != size - TRANSPORT_RELAY_HEADER)
        abort();
    uint64_t id;
    char address[MESH_ADDR_STRLEN];
    if (transport_handshake_decode(r.hs, r.hs_len, &id, address, sizeof address) != 0 ||
        id != r.id || strcmp(address, r.address) != 0)
        abort();
    size_t n = transport_relay_encode(r.hops_left, &r.dest, r.hs, r.hs_len, enc, sizeof enc);
    if (n != size || memcmp(enc, data, size) != 0)
        abort();
    if (transport_relay_encode(r.hops_left, &r.dest, r.hs, r.hs_len, enc, n - 1) != 0)
        abort();
    if (transport_relay_decode(enc, n, &again) != 0 || again.hops_left != r.hops_left ||
        !mesh_addr_equal(&again.dest, &r.dest) || again.id != r.id)
        abort();
    return 0;
}
