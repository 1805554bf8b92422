#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "err.h"

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(struct logger *lg, FILE *out, enum log_level level, const char *name)
{
    lg->out = out;
    lg->level = level;
    snprintf(lg->name, sizeof lg->name, "%s", name ? name : "");
}

int log_level_parse(const char *s, enum log_level *ret_level)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *ret_level = (enum log_level)i;
            return 0;
        }
    }
    return MESH_EINVAL;
}

const char *log_level_name(enum log_level level)
{
    return (unsigned)level < 4 ? level_names[level] : "?";
}

void log_msg(const struct logger *lg, enum log_level level, const char *fmt, ...)
{
    if (!lg || !lg->out || level < lg->level)
        return;
    char line[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), log_level_name(level), lg->name);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    if ((size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One fputs per line so that lines from several processes sharing a stream don't interleave
     * mid-line. */
    size_t len = strlen(line);
    if (len + 1 < sizeof line) {
        line[len] = '\n';
        line[len + 1] = '\0';
    }
    fputs(line, lg->out);
    fflush(lg->out);
}

int log_ratelimit_ok(struct log_ratelimit *rl, uint64_t now_ms, uint64_t interval_ms)
{
    if (rl->last_ms != 0 && now_ms - rl->last_ms < interval_ms) {
        rl->suppressed++;
        return 0;
    }
    rl->last_ms = now_ms ? now_ms : 1;
    return 1;
}

static bool same_host(const struct mesh_addr *a, const struct mesh_addr *b)
{
    return a->family == b->family && memcmp(a->ip, b->ip, a->family == 4 ? 4 : 16) == 0;
}

/* The tail of both keyed limiters: ok or not for rl, with the count held back before. */
static int slot_ok(struct log_ratelimit *rl, uint64_t now_ms, uint64_t interval_ms,
                   uint32_t *ret_suppressed)
{
    uint32_t held = rl->suppressed;
    if (!log_ratelimit_ok(rl, now_ms, interval_ms))
        return 0;
    rl->suppressed = 0;
    if (ret_suppressed)
        *ret_suppressed = held;
    return 1;
}

int log_ratelimit_host(struct log_ratelimit_hosts *t, const struct mesh_addr *host, uint64_t now_ms,
                       uint64_t interval_ms, uint32_t *ret_suppressed)
{
    struct log_ratelimit *rl = NULL;
    for (size_t i = 0; i < LOG_RL_HOSTS && !rl; i++)
        if (t->slot[i].host.family && same_host(&t->slot[i].host, host))
            rl = &t->slot[i].rl;
    if (!rl) {
        size_t i = t->next++ % LOG_RL_HOSTS;
        t->slot[i].host = *host;
        memset(&t->slot[i].rl, 0, sizeof t->slot[i].rl);
        rl = &t->slot[i].rl;
    }
    return slot_ok(rl, now_ms, interval_ms, ret_suppressed);
}

int log_ratelimit_key(struct log_ratelimit_keys *t, const char *key, uint64_t now_ms,
                      uint64_t interval_ms, uint32_t *ret_suppressed)
{
    struct log_ratelimit *rl = NULL;
    for (size_t i = 0; i < LOG_RL_KEYS && !rl; i++)
        if (t->slot[i].key[0] && strncmp(t->slot[i].key, key, LOG_RL_KEY_MAX) == 0)
            rl = &t->slot[i].rl;
    if (!rl) {
        size_t i = t->next++ % LOG_RL_KEYS;
        snprintf(t->slot[i].key, sizeof t->slot[i].key, "%s", key[0] ? key : "-");
        memset(&t->slot[i].rl, 0, sizeof t->slot[i].rl);
        rl = &t->slot[i].rl;
    }
    return slot_ok(rl, now_ms, interval_ms, ret_suppressed);
}
