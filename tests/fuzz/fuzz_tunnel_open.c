/* libFuzzer harness for a tunnel's open payload as it arrives in a stream's OPEN frame
 * (netlink/tunnel.h): arbitrary bytes to tunnel_open_decode; failures leave the output untouched;
 * what decodes survives a round trip (encode, decode, the same fields), fits the OPEN frame, is
 * canonical when encoded again, and a relay's next payload has one hop less. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "tunnel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const struct tunnel_open *a, const struct tunnel_open *b)
{
    return strcmp(a->service, b->service) == 0 && strcmp(a->dest, b->dest) == 0 &&
           strcmp(a->origin, b->origin) == 0 && a->hops_left == b->hops_left && a->id == b->id;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tunnel_open o, again, next, untouched;
    uint8_t enc[TUNNEL_OPEN_MAX], enc2[TUNNEL_OPEN_MAX];
    memset(&o, 0x5a, sizeof o);
    untouched = o;
    int rc = tunnel_open_decode(data, size, &o);
    if (rc < 0) {
        if (rc != MESH_EMALFORMED && rc != MESH_EUNSUPPORTED)
            abort();
        if (memcmp(&o, &untouched, sizeof o) != 0)
            abort();
        return 0;
    }
    int len = tunnel_open_encode(&o, enc, sizeof enc);
    if (len < 0 || len > LINK_OPEN_PAYLOAD_MAX)
        abort();
    if (tunnel_open_decode(enc, (size_t)len, &again) < 0 || !same(&o, &again))
        abort();
    if (tunnel_open_encode(&again, enc2, sizeof enc2) != len || memcmp(enc, enc2, (size_t)len))
        abort();
    if (tunnel_open_encode(&o, enc2, (size_t)len - 1) != MESH_ETOOBIG)
        abort();
    rc = tunnel_open_next(&o, &next);
    if (o.hops_left == 0 ? rc != MESH_ETOOBIG : (rc != 0 || next.hops_left != o.hops_left - 1))
        abort();
    return 0;
}
