/* libFuzzer harness for the link-state record a node gossips (netlink/route.h): arbitrary bytes
 * to route_ls_decode; failures leave the outputs untouched; what decodes survives a round trip
 * (encode, decode, same neighbours) and is then canonical (encoding again gives the same bytes),
 * and too small a buffer is refused, never overrun. The neighbours then feed a small graph. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct route_nbr n[ROUTE_NBR_MAX], again[ROUTE_NBR_MAX], untouched[ROUTE_NBR_MAX];
    size_t cnt = 999, cnt2;
    uint8_t enc[ROUTE_LS_MAX], enc2[ROUTE_LS_MAX];
    memset(n, 0x5a, sizeof n);
    memcpy(untouched, n, sizeof n);
    int rc = route_ls_decode(data, size, n, &cnt);
    if (rc < 0) {
        if (rc != MESH_EMALFORMED && rc != MESH_EUNSUPPORTED)
            abort();
        if (cnt != 999 || memcmp(n, untouched, sizeof n) != 0)
            abort();
        return 0;
    }
    if (cnt > ROUTE_NBR_MAX)
        abort();
    int len = route_ls_encode(n, cnt, enc, sizeof enc);
    if (len < 0 || route_ls_decode(enc, (size_t)len, again, &cnt2) < 0 || cnt2 != cnt)
        abort();
    for (size_t i = 0; i < cnt; i++) /* field by field: the struct has padding */
        if (n[i].id != again[i].id || n[i].rtt_us != again[i].rtt_us)
            abort();
    if (route_ls_encode(again, cnt2, enc2, sizeof enc2) != len ||
        memcmp(enc, enc2, (size_t)len) != 0)
        abort();
    if (route_ls_encode(n, cnt, enc2, (size_t)len - 1) != MESH_ETOOBIG)
        abort();

    /* The neighbours of "a" in a graph where the ids of a few names are known. */
    struct route_graph *g;
    struct route_table *t;
    if (route_graph_new(8, &g) < 0)
        return 0;
    static const char *const names[] = {"a", "b", "c", "d"};
    for (size_t i = 0; i < 4; i++)
        route_graph_add_node(g, names[i], true);
    route_graph_set_nbrs(g, "a", n, cnt);
    for (size_t i = 1; i < 4; i++)
        route_graph_add_edge(g, names[i], "a", (uint32_t)i);
    if (route_compute(g, "a", &t, NULL) == 0)
        route_table_free(t);
    route_graph_free(g);
    return 0;
}
