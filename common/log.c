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

/* Whether the table's budget has room for one more line now. */
static bool budget_ok(struct log_ratelimit_budget *b, uint64_t now_ms, uint64_t interval_ms)
{
    if (b->start_ms == 0 || now_ms - b->start_ms >= interval_ms) {
        b->start_ms = now_ms ? now_ms : 1;
        b->lines = 0;
    }
    if (b->lines >= LOG_RL_BUDGET) {
        b->over++;
        return false;
    }
    return true;
}

/* A line is let through for rl (a slot just found or taken): records it and reports what was
 * held back, by the slot and by the budget. */
static int let_through(struct log_ratelimit *rl, struct log_ratelimit_budget *b, uint64_t now_ms,
                       uint32_t *ret_suppressed)
{
    uint64_t held = (uint64_t)rl->suppressed + b->over;
    rl->last_ms = now_ms ? now_ms : 1;
    rl->suppressed = 0;
    b->over = 0;
    b->lines++;
    if (ret_suppressed)
        *ret_suppressed = held > UINT32_MAX ? UINT32_MAX : (uint32_t)held;
    return 1;
}

/* Which slot a new source takes: one never used, else the one logged longest ago (the table
 * forgets the source least likely to be still within its interval). */
static size_t victim(const struct log_ratelimit *rl, size_t stride, size_t n)
{
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        const struct log_ratelimit *r =
            (const struct log_ratelimit *)((const char *)rl + i * stride);
        if (r->last_ms == 0)
            return i;
        const struct log_ratelimit *b =
            (const struct log_ratelimit *)((const char *)rl + best * stride);
        if (r->last_ms < b->last_ms)
            best = i;
    }
    return best;
}

/* The common part of both keyed limiters; rl is the source's slot, NULL when it has none. */
static int keyed_ok(struct log_ratelimit *rl, struct log_ratelimit_budget *b, uint64_t now_ms,
                    uint64_t interval_ms)
{
    if (rl && rl->last_ms != 0 && now_ms - rl->last_ms < interval_ms) {
        rl->suppressed++;
        return 0;
    }
    return budget_ok(b, now_ms, interval_ms);
}

int log_ratelimit_host(struct log_ratelimit_hosts *t, const struct mesh_addr *host, uint64_t now_ms,
                       uint64_t interval_ms, uint32_t *ret_suppressed)
{
    struct log_ratelimit *rl = NULL;
    for (size_t i = 0; i < LOG_RL_HOSTS && !rl; i++)
        if (t->slot[i].host.family && same_host(&t->slot[i].host, host))
            rl = &t->slot[i].rl;
    if (!keyed_ok(rl, &t->budget, now_ms, interval_ms))
        return 0;
    if (!rl) {
        size_t i = victim(&t->slot[0].rl, sizeof t->slot[0], LOG_RL_HOSTS);
        t->slot[i].host = *host;
        memset(&t->slot[i].rl, 0, sizeof t->slot[i].rl);
        rl = &t->slot[i].rl;
    }
    return let_through(rl, &t->budget, now_ms, ret_suppressed);
}

int log_ratelimit_key(struct log_ratelimit_keys *t, const char *key, uint64_t now_ms,
                      uint64_t interval_ms, uint32_t *ret_suppressed)
{
    struct log_ratelimit *rl = NULL;
    const char *k = key[0] ? key : "-";
    for (size_t i = 0; i < LOG_RL_KEYS && !rl; i++)
        if (t->slot[i].key[0] && strncmp(t->slot[i].key, k, LOG_RL_KEY_MAX) == 0)
            rl = &t->slot[i].rl;
    if (!keyed_ok(rl, &t->budget, now_ms, interval_ms))
        return 0;
    if (!rl) {
        size_t i = victim(&t->slot[0].rl, sizeof t->slot[0], LOG_RL_KEYS);
        snprintf(t->slot[i].key, sizeof t->slot[i].key, "%s", k);
        memset(&t->slot[i].rl, 0, sizeof t->slot[i].rl);
        rl = &t->slot[i].rl;
    }
    return let_through(rl, &t->budget, now_ms, ret_suppressed);
}
