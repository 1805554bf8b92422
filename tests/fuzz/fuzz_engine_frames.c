/* libFuzzer harness for the engine client's stream parsers (runtime/engine.h): Docker's
 * multiplexed log frames and the newline-separated JSON progress of pulls and imports.
 *
 * Input: byte 0 picks the parser and its mode, byte 1 seeds the chunking, the rest is the
 * stream. Each stream is parsed twice, whole and in pseudo-random chunks; both runs must agree
 * (same data per stream, same result, same error line), since the engine's bytes arrive split
 * anywhere. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

struct sink {
    uint64_t bytes[4];
    uint64_t hash[4];
    uint64_t lines;
};

static int on_data(int stream, const char *buf, size_t len, void *data)
{
    struct sink *s = data;
    if (stream < 0 || stream > 3)
        abort();
    s->bytes[stream] += len;
    for (size_t i = 0; i < len; i++)
        s->hash[stream] = s->hash[stream] * 131 + (uint8_t)buf[i];
    return 0;
}

static int on_line(json_t *line, void *data)
{
    struct sink *s = data;
    if (!json_is_object(line))
        abort();
    s->lines++;
    return 0;
}

static size_t next_chunk(uint32_t *seed, size_t left)
{
    *seed = *seed * 1103515245u + 12345u;
    size_t n = (*seed >> 16) % 17;
    return n < left ? n : left;
}

static int run_frames(const char *buf, size_t len, bool tty, bool auto_raw, uint32_t seed,
                      bool chunked, struct sink *s)
{
    struct engine_frames f;
    struct mesh_err err = {0};
    engine_frames_init(&f, tty, auto_raw);
    size_t off = 0;
    int rc = 0;
    while (off < len && rc == 0) {
        size_t n = chunked ? next_chunk(&seed, len - off) : len - off;
        rc = engine_frames_feed(&f, buf + off, n, on_data, s, &err);
        off += n;
    }
    uint64_t total = s->bytes[0] + s->bytes[1] + s->bytes[2] + s->bytes[3];
    if (total > len)
        abort();
    return rc;
}

static int run_progress(const char *buf, size_t len, uint32_t seed, bool chunked, struct sink *s,
                        char *msg, size_t msg_len)
{
    struct engine_progress p;
    struct mesh_err err = {0};
    engine_progress_init(&p, 256);
    size_t off = 0;
    int rc = 0;
    while (off < len && rc == 0) {
        size_t n = chunked ? next_chunk(&seed, len - off) : len - off;
        rc = engine_progress_feed(&p, buf + off, n, on_line, s, &err);
        off += n;
    }
    if (rc == 0)
        rc = engine_progress_finish(&p, on_line, s, &err);
    if (p.error) {
        memcpy(msg, p.message, msg_len);
        msg[msg_len - 1] = '\0';
    }
    engine_progress_free(&p);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t mode = data[0] % 4;
    uint32_t seed = data[1];
    const char *buf = (const char *)data + 2;
    size_t len = size - 2;
    if (mode < 3) {
        bool tty = mode == 1, auto_raw = mode == 2;
        struct sink whole = {0}, split = {0};
        int a = run_frames(buf, len, tty, auto_raw, seed, false, &whole);
        int b = run_frames(buf, len, tty, auto_raw, seed, true, &split);
        /* An error stops at the bad header in both runs, with the same data before it. */
        if (a != b || memcmp(&whole, &split, sizeof whole) != 0)
            abort();
    } else {
        struct sink whole = {0}, split = {0};
        char m1[MESH_ERRMSG_LEN] = "", m2[MESH_ERRMSG_LEN] = "";
        int a = run_progress(buf, len, seed, false, &whole, m1, sizeof m1);
        int b = run_progress(buf, len, seed, true, &split, m2, sizeof m2);
        if (a != b || whole.lines != split.lines || strcmp(m1, m2) != 0)
            abort();
    }
    return 0;
}
