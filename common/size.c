/* Sizes as specs spell them (common/size.h). */
#include "size.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

struct unit {
    const char *suffix;
    uint64_t mult;
};

/* Binary first, larger first: the order mesh_size_format prefers on ties. */
static const struct unit units[] = {
    {"Pi", 1ull << 50},
    {"Ti", 1ull << 40},
    {"Gi", 1ull << 30},
    {"Mi", 1ull << 20},
    {"Ki", 1ull << 10},
    {"P", 1000000000000000ull},
    {"T", 1000000000000ull},
    {"G", 1000000000ull},
    {"M", 1000000ull},
    {"k", 1000ull},
    {"", 1},
};

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int mesh_size_parse(const char *s, uint64_t *ret_bytes)
{
    const char *p = s;
    uint64_t ip = 0, frac = 0, scale = 1;
    if (!s || !is_digit(*p))
        return MESH_EINVAL;
    for (; is_digit(*p); p++) {
        if (ip > MESH_SIZE_MAX)
            return MESH_EINVAL; /* keeps ip * 10 far from overflow */
        ip = ip * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        p++;
        if (!is_digit(*p))
            return MESH_EINVAL;
        for (; is_digit(*p); p++) {
            if (scale >= 1000000000ull)
                return MESH_EINVAL; /* nine fractional digits are plenty */
            frac = frac * 10 + (uint64_t)(*p - '0');
            scale *= 10;
        }
    }
    size_t u = 0;
    while (u < sizeof units / sizeof units[0] && strcmp(p, units[u].suffix) != 0)
        u++;
    if (u == sizeof units / sizeof units[0])
        return MESH_EINVAL;
    uint64_t mult = units[u].mult;
    if (ip > MESH_SIZE_MAX / mult)
        return MESH_EINVAL;
    /* frac / scale * mult must be whole: reduce by the common factor first so nothing
     * overflows (frac < scale <= 10^9, and the result is below mult). */
    uint64_t g = gcd(mult, scale);
    if (frac % (scale / g) != 0)
        return MESH_EINVAL;
    uint64_t bytes = ip * mult + frac / (scale / g) * (mult / g);
    if (bytes < 1 || bytes > MESH_SIZE_MAX)
        return MESH_EINVAL;
    *ret_bytes = bytes;
    return 0;
}

size_t mesh_size_format(uint64_t bytes, char *buf, size_t len)
{
    char best[MESH_SIZE_STRLEN] = "0";
    size_t best_len = SIZE_MAX;
    for (size_t u = 0; bytes && u < sizeof units / sizeof units[0]; u++) {
        if (bytes % units[u].mult != 0)
            continue;
        char s[MESH_SIZE_STRLEN];
        int n = snprintf(s, sizeof s, "%llu%s", (unsigned long long)(bytes / units[u].mult),
                         units[u].suffix);
        if (n > 0 && (size_t)n < best_len) {
            best_len = (size_t)n;
            memcpy(best, s, (size_t)n + 1);
        }
    }
    return (size_t)snprintf(buf, len, "%s", best);
}
