/* libFuzzer harness for the CALL_RT_STATUS wire (runtime/status_wire.h): what any member holding
 * the mesh key can send as a status reply to a node listing microservices, and as a request to a
 * node serving its status. The first input byte picks a mode; the rest is the body:
 *   even: the body as a reply: rt_status_reply_decode; failures leave the output untouched and
 *         are MESH_EMALFORMED or MESH_EUNSUPPORTED; what decodes is a map of at most
 *         RT_STATUS_ENTRIES_MAX entries of the five fields, encodes again, and decodes to the
 *         same map and the same bytes (canonical);
 *   odd:  the body as a request: rt_status_request_decode, 0 or one of those two codes.
 * Seeds: tests/fuzz/seeds/rt_status. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "status_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_entry(const json_t *e)
{
    if (!json_is_object(e) || json_object_size(e) != 5 ||
        !json_is_string(json_object_get(e, "state")) ||
        !json_is_string(json_object_get(e, "message")) ||
        json_string_length(json_object_get(e, "message")) > RT_STATUS_MESSAGE_MAX ||
        !json_is_string(json_object_get(e, "since")) ||
        json_string_length(json_object_get(e, "since")) > RT_STATUS_SINCE_MAX ||
        !json_is_integer(json_object_get(e, "restarts")) ||
        json_integer_value(json_object_get(e, "restarts")) < 0 ||
        !json_is_string(json_object_get(e, "container")) ||
        json_string_length(json_object_get(e, "container")) > RT_STATUS_ID_MAX)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        int rc = rt_status_request_decode(body, len);
        if (rc != 0 && rc != MESH_EMALFORMED && rc != MESH_EUNSUPPORTED)
            abort();
        return 0;
    }
    json_t *sentinel = json_null(), *map = sentinel;
    int rc = rt_status_reply_decode(body, len, &map);
    if (rc < 0) {
        if ((rc != MESH_EMALFORMED && rc != MESH_EUNSUPPORTED && rc != MESH_ENOMEM) ||
            map != sentinel)
            abort();
        return 0;
    }
    if (!json_is_object(map) || json_object_size(map) > RT_STATUS_ENTRIES_MAX)
        abort();
    const char *key;
    json_t *e;
    json_object_foreach(map, key, e)
    {
        if (strlen(key) > RT_STATUS_KEY_MAX)
            abort();
        check_entry(e);
    }
    uint8_t *enc, *enc2;
    size_t elen, elen2;
    if (rt_status_reply_encode(map, &enc, &elen) != 0)
        abort();
    json_t *again;
    if (rt_status_reply_decode(enc, elen, &again) != 0 || !json_equal(map, again))
        abort();
    if (rt_status_reply_encode(again, &enc2, &elen2) != 0 || elen2 != elen ||
        memcmp(enc, enc2, elen) != 0)
        abort();
    free(enc);
    free(enc2);
    json_decref(again);
    json_decref(map);
    return 0;
}
