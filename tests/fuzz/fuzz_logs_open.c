/* libFuzzer harness for the STREAM_LOGS wire (runtime/logs_wire.h): the open payload any member
 * holding the mesh key can send to a node to read a replica's output, and the error text a
 * hosting node answers with. The first input byte picks a mode; the rest is the body:
 *   even: the body as an open payload: rt_logs_open_decode; failures leave the output untouched
 *         and are MESH_EMALFORMED or MESH_EUNSUPPORTED; what decodes has names that are DNS
 *         labels and a tail in bounds, encodes again within RT_LOGS_OPEN_MAX (and a link's
 *         OPEN frame), decodes to the same fields and encodes to the same bytes;
 *   odd:  the body as an error text: rt_logs_error_decode gives a 4xx/5xx code and a message of
 *         printable ASCII, NUL-terminated within the buffer.
 * Seeds: tests/fuzz/seeds/logs_open. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "logs_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const struct rt_logs_open *a, const struct rt_logs_open *b)
{
    return strcmp(a->app, b->app) == 0 && strcmp(a->ms, b->ms) == 0 && a->replica == b->replica &&
           a->follow == b->follow && a->tail == b->tail;
}

static void check_label(const char *s)
{
    size_t len = strnlen(s, RT_LOGS_NAME_MAX + 1);
    if (len == 0 || len > RT_LOGS_NAME_MAX)
        abort();
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        char msg[64];
        int code = 0;
        memset(msg, 0x5a, sizeof msg);
        rt_logs_error_decode(body, len, &code, msg, sizeof msg);
        if (code < 400 || code > 599 || !memchr(msg, '\0', sizeof msg))
            abort();
        for (const char *p = msg; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                abort();
        return 0;
    }
    struct rt_logs_open o, again, untouched;
    uint8_t enc[RT_LOGS_OPEN_MAX], enc2[RT_LOGS_OPEN_MAX];
    memset(&o, 0x5a, sizeof o);
    untouched = o;
    int rc = rt_logs_open_decode(body, len, &o);
    if (rc < 0) {
        if ((rc != MESH_EMALFORMED && rc != MESH_EUNSUPPORTED) ||
            memcmp(&o, &untouched, sizeof o) != 0)
            abort();
        return 0;
    }
    check_label(o.app);
    check_label(o.ms);
    if (o.tail < -1 || o.tail > RT_LOGS_TAIL_MAX)
        abort();
    int elen = rt_logs_open_encode(&o, enc, sizeof enc);
    if (elen <= 0 || elen > RT_LOGS_OPEN_MAX || elen > 256 /* LINK_OPEN_PAYLOAD_MAX */)
        abort();
    memset(&again, 0, sizeof again);
    if (rt_logs_open_decode(enc, (size_t)elen, &again) != 0 || !same(&o, &again))
        abort();
    if (rt_logs_open_encode(&again, enc2, sizeof enc2) != elen || memcmp(enc, enc2, (size_t)elen))
        abort();
    return 0;
}
