/* The pure parts of the engine client: the log frame parser, the progress-line parser, the
 * one-file tar builder, URL escaping and the label filter. No I/O here; fuzzed by
 * tests/fuzz/fuzz_engine_frames.c. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- multiplexed log frames ----
 * Docker's stdcopy format (moby pkg/stdcopy): [stream, 0, 0, 0, size (4 bytes, big endian)] then
 * size bytes of payload. Stream 0 stdin, 1 stdout, 2 stderr, 3 systemerr. A container with a
 * TTY gets no frames at all: its output is sent raw. */

void engine_frames_init(struct engine_frames *f, bool tty, bool auto_raw)
{
    memset(f, 0, sizeof *f);
    f->raw = tty;
    f->started = tty;
    f->auto_raw = auto_raw;
}

static bool header_ok(const uint8_t h[8])
{
    return h[0] <= 3 && h[1] == 0 && h[2] == 0 && h[3] == 0;
}

int engine_frames_feed(struct engine_frames *f, const char *buf, size_t len, engine_data_cb on_data,
                       void *data, struct mesh_err *err)
{
    size_t off = 0;
    if (f->raw) {
        if (len && on_data && on_data(1, buf, len, data))
            return MESH_ECLOSED;
        return 0;
    }
    while (off < len) {
        if (f->left == 0) {
            size_t want = sizeof f->hdr - f->hdr_len;
            size_t take = len - off < want ? len - off : want;
            memcpy(f->hdr + f->hdr_len, buf + off, take);
            f->hdr_len += take;
            off += take;
            if (f->hdr_len < sizeof f->hdr)
                return 0;
            if (!header_ok(f->hdr)) {
                if (!f->started && f->auto_raw) {
                    /* Not a frame stream: a TTY container. Hand over what was held as data. */
                    f->raw = true;
                    f->started = true;
                    if (on_data && on_data(1, (const char *)f->hdr, f->hdr_len, data))
                        return MESH_ECLOSED;
                    f->hdr_len = 0;
                    if (off < len && on_data && on_data(1, buf + off, len - off, data))
                        return MESH_ECLOSED;
                    return 0;
                }
                return mesh_errf(err, MESH_EMALFORMED,
                                 "log stream: bad frame header %02x %02x %02x %02x after %llu "
                                 "frames",
                                 f->hdr[0], f->hdr[1], f->hdr[2], f->hdr[3],
                                 (unsigned long long)f->frames);
            }
            f->started = true;
            f->stream = f->hdr[0];
            f->left = (uint32_t)f->hdr[4] << 24 | (uint32_t)f->hdr[5] << 16 |
                      (uint32_t)f->hdr[6] << 8 | (uint32_t)f->hdr[7];
            f->hdr_len = 0;
            f->frames++;
            continue;
        }
        size_t take = len - off < f->left ? len - off : f->left;
        f->left -= (uint32_t)take;
        if (on_data && on_data(f->stream, buf + off, take, data))
            return MESH_ECLOSED;
        off += take;
    }
    return 0;
}

/* ---- progress lines ----
 * Pull and import answer 200 at once and then report, one JSON object per line, progress
 * ({"status": "...", "id": "...", "progressDetail": {...}}) or a failure ({"error": "...",
 * "errorDetail": {"message": "..."}}): the HTTP status cannot say that a pull failed. */

void engine_progress_init(struct engine_progress *p, size_t max_line)
{
    memset(p, 0, sizeof *p);
    p->max = max_line ? max_line : 64 * 1024;
}

void engine_progress_free(struct engine_progress *p)
{
    if (!p)
        return;
    free(p->line);
    p->line = NULL;
    p->len = p->cap = 0;
}

static int progress_line(struct engine_progress *p, const char *s, size_t n,
                         engine_progress_cb on_progress, void *data, struct mesh_err *err)
{
    while (n && (s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    while (n && (*s == ' ' || *s == '\t' || *s == '\r')) {
        s++;
        n--;
    }
    if (n == 0)
        return 0;
    json_error_t jerr;
    json_t *j = json_loadb(s, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        return mesh_errf(err, MESH_EMALFORMED, "progress line %llu: %s",
                         (unsigned long long)p->lines + 1, jerr.text);
    p->lines++;
    if (!json_is_object(j)) {
        json_decref(j);
        return mesh_errf(err, MESH_EMALFORMED, "progress line %llu: not an object",
                         (unsigned long long)p->lines);
    }
    const char *msg = NULL;
    json_t *detail = json_object_get(j, "errorDetail");
    if (json_is_object(detail))
        msg = json_string_value(json_object_get(detail, "message"));
    if (!msg)
        msg = json_string_value(json_object_get(j, "error"));
    if (!msg && (json_object_get(j, "error") || json_is_object(detail)))
        msg = "error without a message";
    if (msg && !p->error) {
        p->error = MESH_EIO;
        snprintf(p->message, sizeof p->message, "%s", msg);
    }
    int rc = 0;
    if (on_progress && on_progress(j, data))
        rc = MESH_ECLOSED;
    json_decref(j);
    return rc;
}

int engine_progress_feed(struct engine_progress *p, const char *buf, size_t len,
                         engine_progress_cb on_progress, void *data, struct mesh_err *err)
{
    size_t off = 0;
    while (off < len) {
        const char *nl = memchr(buf + off, '\n', len - off);
        size_t n = nl ? (size_t)(nl - (buf + off)) : len - off;
        if (p->len + n > p->max)
            return mesh_errf(err, MESH_ETOOBIG, "progress line %llu longer than %zu bytes",
                             (unsigned long long)p->lines + 1, p->max);
        if (!nl || p->len) {
            /* Hold a partial line (or complete one already begun) in p->line. */
            if (p->len + n > p->cap) {
                size_t cap = p->cap ? p->cap : 256;
                while (cap < p->len + n)
                    cap *= 2;
                if (cap > p->max)
                    cap = p->max;
                char *line = realloc(p->line, cap);
                if (!line)
                    return mesh_errf(err, MESH_ENOMEM, "progress line: out of memory");
                p->line = line;
                p->cap = cap;
            }
            memcpy(p->line + p->len, buf + off, n);
            p->len += n;
        }
        if (!nl)
            return 0;
        int rc;
        if (p->len) {
            rc = progress_line(p, p->line, p->len, on_progress, data, err);
            p->len = 0;
        } else {
            rc = progress_line(p, buf + off, n, on_progress, data, err);
        }
        if (rc)
            return rc;
        off += n + 1;
    }
    return 0;
}

int engine_progress_finish(struct engine_progress *p, engine_progress_cb on_progress, void *data,
                           struct mesh_err *err)
{
    if (!p->len)
        return 0;
    int rc = progress_line(p, p->line, p->len, on_progress, data, err);
    p->len = 0;
    return rc;
}

/* ---- tar ----
 * POSIX ustar (pax's "ustar Interchange Format" in IEEE 1003.1): 512-byte header blocks with
 * octal numeric fields, the data padded to 512 bytes, two zero blocks at the end. */

#define TAR_BLOCK 512

static void tar_octal(char *field, size_t width, uint64_t v)
{
    /* width - 1 digits, zero padded, then a NUL. */
    field[width - 1] = '\0';
    for (size_t i = width - 1; i-- > 0;) {
        field[i] = (char)('0' + (v & 7));
        v >>= 3;
    }
}

int engine_tar_one(const char *name, const void *content, size_t len, unsigned mode,
                   uint8_t **ret_tar, size_t *ret_len)
{
    if (!name || !ret_tar || !ret_len || (!content && len))
        return MESH_EINVAL;
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > 99 || name[0] == '/' || strstr(name, "..") || name[nlen - 1] == '/')
        return MESH_EINVAL;
    if (len > (uint64_t)077777777777) /* 11 octal digits */
        return MESH_ETOOBIG;
    size_t padded = (len + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
    size_t total = TAR_BLOCK + padded + 2 * TAR_BLOCK;
    uint8_t *tar = calloc(1, total);
    if (!tar)
        return MESH_ENOMEM;
    char *h = (char *)tar;
    memcpy(h, name, nlen);                        /* name[100] */
    tar_octal(h + 100, 8, mode & 07777);          /* mode[8] */
    tar_octal(h + 108, 8, 0);                     /* uid[8] */
    tar_octal(h + 116, 8, 0);                     /* gid[8] */
    tar_octal(h + 124, 12, len);                  /* size[12] */
    tar_octal(h + 136, 12, (uint64_t)time(NULL)); /* mtime[12] */
    memset(h + 148, ' ', 8);                      /* chksum[8], spaces while summing */
    h[156] = '0';                                 /* typeflag: regular file */
    memcpy(h + 257, "ustar", 6);                  /* magic[6] "ustar\0" */
    memcpy(h + 263, "00", 2);                     /* version[2] */
    memcpy(h + 265, "root", 4);                   /* uname[32] */
    memcpy(h + 297, "root", 4);                   /* gname[32] */
    tar_octal(h + 329, 8, 0);                     /* devmajor[8] */
    tar_octal(h + 337, 8, 0);                     /* devminor[8] */
    unsigned sum = 0;
    for (size_t i = 0; i < TAR_BLOCK; i++)
        sum += tar[i];
    /* Six octal digits, a NUL and a space, as most tars write it. */
    tar_octal(h + 148, 7, sum);
    h[155] = ' ';
    if (len)
        memcpy(tar + TAR_BLOCK, content, len);
    *ret_tar = tar;
    *ret_len = total;
    return 0;
}

/* ---- URLs and filters ---- */

int engine_url_escape(const char *s, const char *keep, char **ret)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!s || !ret)
        return MESH_EINVAL;
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1);
    if (!out)
        return MESH_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~' || (keep && c && strchr(keep, c))) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    *ret = out;
    return 0;
}

int engine_labels_filter(const char *const labels[], size_t n, char **ret)
{
    if (!ret || (n && !labels))
        return MESH_EINVAL;
    json_t *arr = json_array();
    json_t *obj = json_object();
    if (!arr || !obj)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        if (!labels[i] || !labels[i][0])
            goto inval;
        if (json_array_append_new(arr, json_string(labels[i])))
            goto nomem;
    }
    if (json_object_set(obj, "label", arr))
        goto nomem;
    char *s = json_dumps(obj, JSON_COMPACT);
    if (!s)
        goto nomem;
    json_decref(arr);
    json_decref(obj);
    *ret = s;
    return 0;
inval:
    json_decref(arr);
    json_decref(obj);
    return MESH_EINVAL;
nomem:
    json_decref(arr);
    json_decref(obj);
    return MESH_ENOMEM;
}
