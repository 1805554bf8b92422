/* Logging for the edges of the program (meshd/ and ctl/); library folders return errors instead.
 * A logger is a value owned by whoever logs (the node object): no global state. Lines go to the
 * logger's stream as "2026-11-26T06:39:32.123Z info  node-a: message". */
#ifndef FOGMESH_COMMON_LOG_H
#define FOGMESH_COMMON_LOG_H

#include <stdint.h>
#include <stdio.h>

#include "addr.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

struct logger {
    FILE *out;
    enum log_level level;
    char name[65]; /* shown on every line */
};

void log_init(struct logger *lg, FILE *out, enum log_level level, const char *name);

/* "debug", "info", "warn" or "error"; returns 0 or MESH_EINVAL. */
int log_level_parse(const char *s, enum log_level *ret_level);
const char *log_level_name(enum log_level level);

void log_msg(const struct logger *lg, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(lg, ...) log_msg((lg), LOG_DEBUG, __VA_ARGS__)
#define log_info(lg, ...)  log_msg((lg), LOG_INFO, __VA_ARGS__)
#define log_warn(lg, ...)  log_msg((lg), LOG_WARN, __VA_ARGS__)
#define log_error(lg, ...) log_msg((lg), LOG_ERROR, __VA_ARGS__)

/* Rate limiter for messages about one peer or cause ("logged once per peer per minute"): returns
 * 1 when a message may be logged now (and records now), 0 when it must be suppressed. */
struct log_ratelimit {
    uint64_t last_ms;
    uint32_t suppressed;
};
int log_ratelimit_ok(struct log_ratelimit *rl, uint64_t now_ms, uint64_t interval_ms);

/* Keyed limiters (per remote host, per cause) are bounded twice: in memory, by a fixed table
 * of the last sources seen, and in output, by a budget of LOG_RL_BUDGET lines per interval for
 * the whole table. The table alone is not enough: more sources than slots evict each other, and
 * a source evicted is new again, so 64 spoofed UDP sources got 19,008 lines out of 20,000
 * packets (issue 10). A message over the budget is counted, not logged, and no slot is taken
 * for it; the next line let through carries the count (*ret_suppressed), for a summary
 * ("and N more suppressed"). */
#define LOG_RL_BUDGET 16
struct log_ratelimit_budget {
    uint64_t start_ms; /* of the current interval; 0 before the first line */
    uint32_t lines;    /* let through in it */
    uint32_t over;     /* held back by the budget since the last line let through */
};

/* The same per remote host (address without the port: a peer reconnecting from new ports is
 * still one peer), for the last LOG_RL_HOSTS hosts seen. Returns 1 when a message about `host`
 * may be logged now; *ret_suppressed (optional) tells how many were held back since the last
 * line (this host's, and the table's over the budget). */
#define LOG_RL_HOSTS 32
struct log_ratelimit_hosts {
    struct {
        struct mesh_addr host;
        struct log_ratelimit rl;
    } slot[LOG_RL_HOSTS];
    struct log_ratelimit_budget budget;
};
int log_ratelimit_host(struct log_ratelimit_hosts *t, const struct mesh_addr *host, uint64_t now_ms,
                       uint64_t interval_ms, uint32_t *ret_suppressed);

/* The same per cause, named by a string (a service, a reason), for the last LOG_RL_KEYS keys;
 * keys longer than LOG_RL_KEY_MAX bytes are told apart by their first LOG_RL_KEY_MAX. */
#define LOG_RL_KEYS    32
#define LOG_RL_KEY_MAX 63
struct log_ratelimit_keys {
    struct {
        char key[LOG_RL_KEY_MAX + 1];
        struct log_ratelimit rl;
    } slot[LOG_RL_KEYS];
    struct log_ratelimit_budget budget;
};
int log_ratelimit_key(struct log_ratelimit_keys *t, const char *key, uint64_t now_ms,
                      uint64_t interval_ms, uint32_t *ret_suppressed);

#endif
