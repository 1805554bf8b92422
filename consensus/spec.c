/* Application specs: validation and canonical form (see spec.h for the fields and bounds).
 *
 * Every object of the spec is described by a table of its fields, sorted by key, each with a
 * function that checks the field's value (NULL when absent) and returns its canonical value
 * (NULL when omitted or wrong). check_object() walks a table: it reports keys the table does not
 * know, calls each field's function with the field's path pushed, and builds the canonical object
 * in table order, hence with sorted keys. Problems are recorded in the context and checking goes
 * on, so that one pass reports all of them. Supporting a new field is one table entry. */
#include "spec.h"

#include "names.h"
#include "size.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "err.h"

/* A host port taken by some microservice's ports[idx], to find the same port taken twice. */
struct host_port {
    uint16_t port;
    uint8_t udp;
    uint8_t ms;
    uint8_t idx;
};

struct ctx {
    struct spec_errors *errs; /* may be NULL: only `failed` is kept */
    bool failed;
    bool nomem;
    /* The path of the value being checked. Longer than what an error keeps, so that building it
     * never has to care; recording truncates. */
    char path[2 * SPEC_ERROR_PATH_MAX];
    size_t plen;
    size_t ms; /* index of the microservice being checked */
    struct host_port hp[SPEC_MAX_MICROSERVICES * SPEC_MAX_PORTS];
    size_t nhp;
    uint16_t connect_ports[SPEC_MAX_SERVICES]; /* of the microservice being checked */
    size_t nconnect;
};

typedef json_t *(*field_fn)(struct ctx *c, const json_t *v);

struct field {
    const char *key;
    field_fn fn; /* NULL: reserved for later, rejected as not supported yet */
};

#define N_(a) (sizeof(a) / sizeof((a)[0]))

/* Copies src into dst of cap bytes, replacing control characters by '?' (paths hold user keys,
 * and errors end up on terminals) and cutting only at a UTF-8 character boundary so that the
 * result is still valid for json_string(). */
static void copy_clean(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    dst[n] = '\0';
}

static void record(struct ctx *c, const char *msg)
{
    c->failed = true;
    struct spec_errors *e = c->errs;
    if (!e)
        return;
    if (e->count == SPEC_ERRORS_MAX) {
        e->more++;
        return;
    }
    struct spec_error *x = &e->e[e->count++];
    copy_clean(x->path, sizeof x->path, c->path);
    copy_clean(x->msg, sizeof x->msg, msg);
}

__attribute__((format(printf, 2, 3))) static void fail(struct ctx *c, const char *fmt, ...)
{
    char msg[2 * SPEC_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    record(c, msg);
}

static void nomem(struct ctx *c)
{
    if (!c->nomem) {
        c->nomem = true;
        record(c, "out of memory");
    }
}

/* Path pushes return the previous length for path_pop(). */
static size_t path_push(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(struct ctx *c, const char *fmt, ...)
{
    size_t old = c->plen;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->path + old, sizeof c->path - old, fmt, ap);
    va_end(ap);
    if (n > 0)
        c->plen = old + (size_t)n < sizeof c->path ? old + (size_t)n : sizeof c->path - 1;
    return old;
}

static size_t path_key(struct ctx *c, const char *key)
{
    return path_push(c, "%s%s", c->plen ? "." : "", key);
}

static size_t path_index(struct ctx *c, size_t i)
{
    return path_push(c, "[%zu]", i);
}

static void path_pop(struct ctx *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

/* Reports a problem at path.key without a field function to push it. */
static void fail_at(struct ctx *c, const char *key, const char *msg)
{
    size_t old = path_key(c, key);
    record(c, msg);
    path_pop(c, old);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The keys of obj sorted, in a new array of *ret_n pointers borrowed from obj; errors and
 * canonical objects come out in the same order whatever order the input had. */
static const char **sorted_keys(struct ctx *c, const json_t *obj, size_t *ret_n)
{
    size_t n = json_object_size(obj), i = 0;
    const char **keys = malloc((n ? n : 1) * sizeof *keys);
    if (!keys) {
        nomem(c);
        return NULL;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) keys[i++] = k;
    qsort(keys, i, sizeof *keys, cmp_str);
    *ret_n = i;
    return keys;
}

static json_t *check_object(struct ctx *c, const json_t *v, const struct field *tab, size_t n,
                            const char *unknown_msg)
{
    if (!json_is_object(v)) {
        fail(c, "must be an object");
        return NULL;
    }
    size_t nk;
    const char **keys = sorted_keys(c, v, &nk);
    if (!keys)
        return NULL;
    for (size_t i = 0; i < nk; i++) {
        size_t j = 0;
        while (j < n && strcmp(tab[j].key, keys[i]) != 0)
            j++;
        if (j == n)
            fail_at(c, keys[i], unknown_msg ? unknown_msg : "unknown field");
        else if (!tab[j].fn)
            fail_at(c, keys[i], "not supported yet");
    }
    free(keys);

    json_t *out = json_object();
    if (!out) {
        nomem(c);
        return NULL;
    }
    for (size_t j = 0; j < n; j++) {
        if (!tab[j].fn)
            continue;
        size_t old = path_key(c, tab[j].key);
        json_t *x = tab[j].fn(c, json_object_get(v, tab[j].key));
        path_pop(c, old);
        if (x && json_object_set_new(out, tab[j].key, x) != 0)
            nomem(c);
    }
    return out;
}

/* Omits empty optional collections from the canonical form: absent and empty mean the same. */
static json_t *drop_empty(json_t *v)
{
    if (v && ((json_is_object(v) && json_object_size(v) == 0) ||
              (json_is_array(v) && json_array_size(v) == 0))) {
        json_decref(v);
        return NULL;
    }
    return v;
}

static json_t *new_str(struct ctx *c, const char *s)
{
    json_t *r = json_string(s);
    if (!r)
        nomem(c);
    return r;
}

static json_t *new_int(struct ctx *c, json_int_t i)
{
    json_t *r = json_integer(i);
    if (!r)
        nomem(c);
    return r;
}

/* The value of a string field of at most max bytes without NUL, or NULL after a report. */
static const char *get_str(struct ctx *c, const json_t *v, size_t max)
{
    if (!json_is_string(v)) {
        fail(c, "must be a string");
        return NULL;
    }
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (strlen(s) != len) {
        fail(c, "must not contain NUL characters");
        return NULL;
    }
    if (len > max) {
        fail(c, "must be at most %zu bytes", max);
        return NULL;
    }
    return s;
}

static bool is_lower(char ch)
{
    return ch >= 'a' && ch <= 'z';
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_alpha(char ch)
{
    return is_lower(ch) || (ch >= 'A' && ch <= 'Z');
}

/* DNS label rules (RFC 1123), narrowed to start with a letter so that a name is never a number. */
static bool dns_name_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > SPEC_NAME_MAX || !is_lower(s[0]) || s[len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_lower(s[i]) && !is_digit(s[i]) && s[i] != '-')
            return false;
    return true;
}

/* The rules of meshd's node names and labels (meshd/config.c), which placement must match;
 * consensus/ does not link meshd/, so they are restated here. */
bool spec_name_valid(const char *s)
{
    return s && dns_name_valid(s);
}

static bool node_name_valid(const char *s)
{
    return mesh_node_name_valid(s, strlen(s));
}

static bool label_part_valid(const char *s, size_t max)
{
    return mesh_label_part_valid(s, strlen(s), max);
}

static bool env_name_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > SPEC_ENV_NAME_MAX || is_digit(s[0]))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '_')
            return false;
    return true;
}

/* Whether v is the string lit exactly (a NUL inside v does not cut the comparison short). */
static bool str_is(const json_t *v, const char *lit)
{
    return json_is_string(v) && json_string_length(v) == strlen(lit) &&
           strcmp(json_string_value(v), lit) == 0;
}

static const char *const arch_names[] = {"amd64", "arm64", "arm"};

static bool arch_valid(const json_t *v)
{
    for (size_t i = 0; i < N_(arch_names); i++)
        if (str_is(v, arch_names[i]))
            return true;
    return false;
}

/* ---- field checks ------------------------------------------------------------------------ */

static json_t *f_required(struct ctx *c)
{
    fail(c, "required");
    return NULL;
}

static json_t *f_dns_name(struct ctx *c, const json_t *v)
{
    if (!v)
        return f_required(c);
    const char *s = get_str(c, v, SPEC_MAX_STRING);
    if (!s)
        return NULL;
    if (!dns_name_valid(s)) {
        fail(c, "must be 1..%d of a-z, 0-9 and '-', start with a letter and not end with '-'",
             SPEC_NAME_MAX);
        return NULL;
    }
    return new_str(c, s);
}

static json_t *f_kind(struct ctx *c, const json_t *v)
{
    if (!v)
        return f_required(c);
    if (!str_is(v, "Application")) {
        fail(c, "must be \"Application\"");
        return NULL;
    }
    return new_str(c, "Application");
}

static json_t *f_image(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL; /* image or images: checked by the microservice */
    const char *s = get_str(c, v, SPEC_MAX_STRING);
    if (!s)
        return NULL;
    bool ok = s[0] != '\0';
    for (const char *p = s; *p && ok; p++)
        ok = (unsigned char)*p > 0x20 && *p != 0x7f;
    if (!ok) {
        fail(c, "must be a non-empty image reference without spaces");
        return NULL;
    }
    return new_str(c, s);
}

static const struct field images_fields[] = {
    {"amd64", f_image},
    {"arm", f_image},
    {"arm64", f_image},
};

static json_t *f_images(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    json_t *out = check_object(c, v, images_fields, N_(images_fields),
                               "unknown architecture (use amd64, arm64 or arm)");
    if (out && json_object_size(out) == 0 && json_object_size(v) == 0)
        fail(c, "must name at least one of amd64, arm64, arm");
    return out;
}

/* The start every array field shares: v must be an array of min..max entries; returns a new
 * empty array for the checked entries, or NULL with the problem recorded. `what` names the
 * entries in the message ("an array" or "an array of strings"). */
static json_t *array_begin(struct ctx *c, const json_t *v, const char *what, size_t min, size_t max)
{
    if (!json_is_array(v)) {
        fail(c, "must be %s", what);
        return NULL;
    }
    size_t n = json_array_size(v);
    if (n < min || n > max) {
        if (min > 0)
            fail(c, "must have %zu..%zu entries", min, max);
        else
            fail(c, "must have at most %zu entries", max);
        return NULL;
    }
    json_t *out = json_array();
    if (!out)
        nomem(c);
    return out;
}

static json_t *f_command(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    json_t *out = array_begin(c, v, "an array of strings", 0, SPEC_MAX_ARGS);
    if (!out)
        return NULL;
    for (size_t i = 0; i < json_array_size(v); i++) {
        size_t old = path_index(c, i);
        const char *s = get_str(c, json_array_get(v, i), SPEC_MAX_STRING);
        if (s && json_array_append_new(out, json_string(s)) != 0)
            nomem(c);
        path_pop(c, old);
    }
    return drop_empty(out);
}

/* A string→string map (env, placement.labels). YAML turns `PORT: 8080` and `debug: true` into a
 * number and a boolean; those are taken as the strings they spell rather than refused, so the
 * common spelling works and the canonical form holds the string. */
static json_t *string_map(struct ctx *c, const json_t *v, size_t max_entries,
                          bool (*key_ok)(const char *), const char *key_msg, size_t value_max,
                          bool (*value_ok)(const char *, size_t), const char *value_msg)
{
    if (!v)
        return NULL;
    if (!json_is_object(v)) {
        fail(c, "must be an object of strings");
        return NULL;
    }
    if (json_object_size(v) > max_entries) {
        fail(c, "must have at most %zu entries", max_entries);
        return NULL;
    }
    size_t n;
    const char **keys = sorted_keys(c, v, &n);
    if (!keys)
        return NULL;
    json_t *out = json_object();
    if (!out)
        nomem(c);
    for (size_t i = 0; i < n && out; i++) {
        size_t old = path_key(c, keys[i]);
        const json_t *x = json_object_get(v, keys[i]);
        char num[32];
        const char *s = NULL;
        if (!key_ok(keys[i])) {
            fail(c, "%s", key_msg);
        } else if (json_is_integer(x)) {
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(x));
            s = num;
        } else if (json_is_boolean(x)) {
            s = json_is_true(x) ? "true" : "false";
        } else {
            s = get_str(c, x, value_max);
        }
        if (s && value_ok && !value_ok(s, value_max)) {
            fail(c, "%s", value_msg);
            s = NULL;
        }
        if (s && json_object_set_new(out, keys[i], json_string(s)) != 0)
            nomem(c);
        path_pop(c, old);
    }
    free(keys);
    return drop_empty(out);
}

static json_t *f_env(struct ctx *c, const json_t *v)
{
    return string_map(c, v, SPEC_MAX_ENV, env_name_valid,
                      "not a variable name (letters, digits and '_', not starting with a digit)",
                      SPEC_MAX_STRING, NULL, NULL);
}

static bool label_key_ok(const char *s)
{
    return label_part_valid(s, SPEC_LABEL_KEY_MAX);
}

static json_t *f_labels(struct ctx *c, const json_t *v)
{
    return string_map(c, v, SPEC_MAX_LABELS, label_key_ok,
                      "label keys are 1..63 of letters, digits, '.', '_', '-' or '/'",
                      SPEC_LABEL_VALUE_MAX, label_part_valid,
                      "label values are 1..127 of letters, digits, '.', '_', '-' or '/'");
}

static json_t *f_port_number(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535) {
        fail(c, "must be 1..65535");
        return NULL;
    }
    return new_int(c, json_integer_value(v));
}

static json_t *f_port_container(struct ctx *c, const json_t *v)
{
    return v ? f_port_number(c, v) : f_required(c);
}

static json_t *f_protocol(struct ctx *c, const json_t *v)
{
    if (!v)
        return new_str(c, "tcp");
    if (!str_is(v, "tcp") && !str_is(v, "udp")) {
        fail(c, "must be tcp or udp");
        return NULL;
    }
    return new_str(c, json_string_value(v));
}

static const struct field port_fields[] = {
    {"container", f_port_container},
    {"host", f_port_number},
    {"protocol", f_protocol},
};

static bool port_is_udp(const json_t *p)
{
    const char *proto = json_string_value(json_object_get(p, "protocol"));
    return proto && strcmp(proto, "udp") == 0;
}

static json_t *f_ports(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    json_t *out = array_begin(c, v, "an array", 0, SPEC_MAX_PORTS);
    if (!out)
        return NULL;
    for (size_t i = 0; i < json_array_size(v); i++) {
        size_t old = path_index(c, i);
        json_t *p = check_object(c, json_array_get(v, i), port_fields, N_(port_fields), NULL);
        if (!p) {
            path_pop(c, old);
            continue;
        }
        /* A container port (per protocol) is published once per microservice. */
        const json_t *cport = json_object_get(p, "container");
        for (size_t j = 0; cport && j < json_array_size(out); j++) {
            const json_t *q = json_array_get(out, j);
            if (json_equal(json_object_get(q, "container"), (json_t *)cport) &&
                port_is_udp(q) == port_is_udp(p)) {
                char msg[64];
                snprintf(msg, sizeof msg, "same port and protocol as ports[%zu]", j);
                fail_at(c, "container", msg);
                break;
            }
        }
        /* A host port (per protocol: DNS takes 53/tcp and 53/udp) is bound once per app. */
        const json_t *hport = json_object_get(p, "host");
        if (hport) {
            struct host_port hp = {.port = (uint16_t)json_integer_value(hport),
                                   .udp = port_is_udp(p),
                                   .ms = (uint8_t)c->ms,
                                   .idx = (uint8_t)i};
            size_t k = 0;
            while (k < c->nhp && (c->hp[k].port != hp.port || c->hp[k].udp != hp.udp))
                k++;
            if (k < c->nhp) {
                char msg[96];
                snprintf(msg, sizeof msg,
                         "host port %u/%s already used by microservices[%u].ports[%u]", hp.port,
                         hp.udp ? "udp" : "tcp", c->hp[k].ms, c->hp[k].idx);
                fail_at(c, "host", msg);
            } else if (c->nhp < N_(c->hp)) {
                c->hp[c->nhp++] = hp;
            }
        }
        if (json_array_append_new(out, p) != 0)
            nomem(c);
        path_pop(c, old);
    }
    return drop_empty(out);
}

/* ---- expose and connect (services, issue 6) ---- */

static json_t *f_port_required(struct ctx *c, const json_t *v)
{
    return v ? f_port_number(c, v) : f_required(c);
}

static const struct field expose_fields[] = {
    {"name", f_dns_name},
    {"port", f_port_required},
};

static const struct field connect_fields[] = {
    {"port", f_port_required},
    {"service", f_dns_name},
};

/* An array of {name|service, port} objects where `unique` (a key) and `port` are each used
 * once; `what` names the elements in messages. */
static json_t *service_list(struct ctx *c, const json_t *v, const struct field *fields,
                            size_t nfields, const char *unique)
{
    if (!v)
        return NULL;
    json_t *out = array_begin(c, v, "an array", 0, SPEC_MAX_SERVICES);
    if (!out)
        return NULL;
    for (size_t i = 0; i < json_array_size(v); i++) {
        size_t old = path_index(c, i);
        json_t *e = check_object(c, json_array_get(v, i), fields, nfields, NULL);
        if (!e) {
            path_pop(c, old);
            continue;
        }
        for (size_t j = 0; j < json_array_size(out); j++) {
            const json_t *q = json_array_get(out, j);
            const char *keys[] = {unique, "port"};
            for (size_t k = 0; k < 2; k++) {
                const json_t *a = json_object_get(e, keys[k]);
                if (a && json_equal((json_t *)a, json_object_get(q, keys[k]))) {
                    char msg[64];
                    snprintf(msg, sizeof msg, "same %s as [%zu]", keys[k], j);
                    fail_at(c, keys[k], msg);
                }
            }
        }
        if (json_array_append_new(out, e) != 0)
            nomem(c);
        path_pop(c, old);
    }
    return drop_empty(out);
}

static json_t *f_expose(struct ctx *c, const json_t *v)
{
    return service_list(c, v, expose_fields, N_(expose_fields), "name");
}

static json_t *f_connect(struct ctx *c, const json_t *v)
{
    json_t *out = service_list(c, v, connect_fields, N_(connect_fields), "service");
    /* meshd listens on a connect port on the microservice's node, where the microservice
     * itself listens on its exposed ports (host networking): they must differ. */
    if (out && json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(out, i, e)
        {
            (void)i;
            c->connect_ports[c->nconnect < N_(c->connect_ports) ? c->nconnect++ : 0] =
                (uint16_t)json_integer_value(json_object_get(e, "port"));
        }
    }
    return out;
}

static json_t *f_path(struct ctx *c, const json_t *v)
{
    if (!v)
        return f_required(c);
    const char *s = get_str(c, v, SPEC_MAX_STRING);
    if (!s)
        return NULL;
    /* ':' separates host, container and options in the engine's bind syntax. */
    if (s[0] != '/' || strchr(s, ':')) {
        fail(c, "must be an absolute path without ':'");
        return NULL;
    }
    return new_str(c, s);
}

static json_t *f_readonly(struct ctx *c, const json_t *v)
{
    if (!v)
        return json_false();
    if (!json_is_boolean(v)) {
        fail(c, "must be true or false");
        return NULL;
    }
    return json_boolean(json_is_true(v));
}

static const struct field volume_fields[] = {
    {"container", f_path},
    {"host", f_path},
    {"readonly", f_readonly},
};

/* A list of up to max objects, each checked by tab (fix, when not NULL, completes or checks
 * each one further), in which the value at `key` appears once: a second one is reported as
 * "same <what>[j]" at that key. Volumes, devices and tmpfs mounts. */
static json_t *object_list(struct ctx *c, const json_t *v, size_t max, const struct field *tab,
                           size_t n, const char *key, const char *what,
                           void (*fix)(struct ctx *c, json_t *o))
{
    if (!v)
        return NULL;
    json_t *out = array_begin(c, v, "an array", 0, max);
    if (!out)
        return NULL;
    for (size_t i = 0; i < json_array_size(v); i++) {
        size_t old = path_index(c, i);
        json_t *o = check_object(c, json_array_get(v, i), tab, n, NULL);
        if (o && fix)
            fix(c, o);
        const json_t *k = json_object_get(o, key);
        for (size_t j = 0; k && j < json_array_size(out); j++) {
            if (json_equal(json_object_get(json_array_get(out, j), key), (json_t *)k)) {
                char msg[64];
                snprintf(msg, sizeof msg, "same %s[%zu]", what, j);
                fail_at(c, key, msg);
                break;
            }
        }
        if (o && json_array_append_new(out, o) != 0)
            nomem(c);
        path_pop(c, old);
    }
    return drop_empty(out);
}

static json_t *f_volumes(struct ctx *c, const json_t *v)
{
    return object_list(c, v, SPEC_MAX_VOLUMES, volume_fields, N_(volume_fields), "container",
                       "container path as volumes", NULL);
}

static json_t *f_cpus(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    double d = json_number_value(v);
    if (!json_is_number(v) || !(d > 0) || d > SPEC_MAX_CPUS) {
        fail(c, "must be a number of CPUs > 0 and at most %d", SPEC_MAX_CPUS);
        return NULL;
    }
    /* Kept to thousandths (the engine's unit is the millicpu), so that 0.5 and 0.5000001 are the
     * same spec. Rounding a value already rounded gives it back, as canonical needs. */
    long long milli = (long long)(d * 1000 + 0.5);
    if (milli < 1) {
        fail(c, "must be at least 0.001");
        return NULL;
    }
    json_t *r = json_real((double)milli / 1000);
    if (!r)
        nomem(c);
    return r;
}

static bool memory_in_range(json_int_t i)
{
    return i >= 1 && (uint64_t)i <= SPEC_MAX_MEMORY;
}

/* Both memory fields become their byte count here; f_resources spells memory out again. */
static json_t *f_memory(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    uint64_t bytes;
    if (json_is_integer(v) && memory_in_range(json_integer_value(v)))
        return new_int(c, json_integer_value(v));
    if (json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v) &&
        mesh_size_parse(json_string_value(v), &bytes) == 0)
        return new_int(c, (json_int_t)bytes);
    fail(c, "must be a size such as 64Mi, 1Gi, 512M or 100k (at most 1Pi)");
    return NULL;
}

static json_t *f_memory_bytes(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    if (!json_is_integer(v) || !memory_in_range(json_integer_value(v))) {
        fail(c, "must be a number of bytes, 1..2^50");
        return NULL;
    }
    return new_int(c, json_integer_value(v));
}

static const struct field resources_fields[] = {
    {"cpus", f_cpus},
    {"memory", f_memory},
    {"memory_bytes", f_memory_bytes},
};

static json_t *f_resources(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    json_t *r = check_object(c, v, resources_fields, N_(resources_fields), NULL);
    if (!r)
        return NULL;
    json_t *mem = json_object_get(r, "memory");
    json_t *mb = json_object_get(r, "memory_bytes");
    if (mem && mb && !json_equal(mem, mb)) {
        char msg[96];
        snprintf(msg, sizeof msg, "does not match memory (%" JSON_INTEGER_FORMAT " bytes)",
                 json_integer_value(mem));
        fail_at(c, "memory_bytes", msg);
    }
    if (!mem)
        mem = mb;
    json_t *out = json_object();
    if (!out) {
        nomem(c);
        json_decref(r);
        return NULL;
    }
    json_t *cpus = json_object_get(r, "cpus");
    if (cpus && json_object_set(out, "cpus", cpus) != 0)
        nomem(c);
    if (mem) {
        char s[MESH_SIZE_STRLEN];
        mesh_size_format((uint64_t)json_integer_value(mem), s, sizeof s);
        if (json_object_set_new(out, "memory", json_string(s)) != 0 ||
            json_object_set(out, "memory_bytes", mem) != 0)
            nomem(c);
    }
    json_decref(r);
    return drop_empty(out);
}

static json_t *f_replicas(struct ctx *c, const json_t *v)
{
    if (!v)
        return new_int(c, 1);
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > SPEC_MAX_REPLICAS) {
        fail(c, "must be an integer 1..%d", SPEC_MAX_REPLICAS);
        return NULL;
    }
    return new_int(c, json_integer_value(v));
}

static json_t *f_arch(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    if (!arch_valid(v)) {
        fail(c, "must be amd64, arm64 or arm");
        return NULL;
    }
    return new_str(c, json_string_value(v));
}

static json_t *f_node(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    const char *s = get_str(c, v, SPEC_MAX_STRING);
    if (!s)
        return NULL;
    if (!node_name_valid(s)) {
        fail(c,
             "must be a node name: 1..%d of letters, digits, '.', '_' or '-', starting with a "
             "letter or digit",
             SPEC_NODE_NAME_MAX);
        return NULL;
    }
    return new_str(c, s);
}

static const struct field placement_fields[] = {
    {"arch", f_arch},
    {"labels", f_labels},
    {"node", f_node},
};

static json_t *f_placement(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    return drop_empty(check_object(c, v, placement_fields, N_(placement_fields), NULL));
}

/* Counts encoded bytes for json_dump_callback, stopping the dump once past the limit so that the
 * work done on an oversized value stays bounded. */
struct counter {
    size_t n, max;
};

static int count_cb(const char *buf, size_t size, void *data)
{
    (void)buf;
    struct counter *k = data;
    k->n += size;
    return k->n > k->max ? -1 : 0;
}

/* Whether v encodes (compact) within max bytes. */
static bool encoded_within(const json_t *v, size_t max)
{
    struct counter k = {0, max};
    return json_dump_callback(v, count_cb, &k, JSON_COMPACT | JSON_ENCODE_ANY) == 0;
}

/* A copy of a config value with object keys inserted in sorted order; checks depth and NULs.
 * depth counts the containers above v. */
static json_t *config_copy(struct ctx *c, const json_t *v, int depth, const char **problem)
{
    if (json_is_object(v) || json_is_array(v)) {
        if (depth >= SPEC_MAX_CONFIG_DEPTH) {
            *problem = "must be at most 32 levels deep";
            return NULL;
        }
    }
    if (json_is_object(v)) {
        size_t n;
        const char **keys = sorted_keys(c, v, &n);
        json_t *out = keys ? json_object() : NULL;
        for (size_t i = 0; out && i < n; i++) {
            json_t *x = config_copy(c, json_object_get(v, keys[i]), depth + 1, problem);
            if (!x || json_object_set_new(out, keys[i], x) != 0) {
                json_decref(out);
                out = NULL;
            }
        }
        free(keys);
        return out;
    }
    if (json_is_array(v)) {
        json_t *out = json_array();
        for (size_t i = 0; out && i < json_array_size(v); i++) {
            json_t *x = config_copy(c, json_array_get(v, i), depth + 1, problem);
            if (!x || json_array_append_new(out, x) != 0) {
                json_decref(out);
                out = NULL;
            }
        }
        return out;
    }
    if (json_is_string(v) && strlen(json_string_value(v)) != json_string_length(v)) {
        *problem = "must not contain NUL characters";
        return NULL;
    }
    return json_copy((json_t *)v);
}

static json_t *f_config(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    if (!json_is_object(v)) {
        fail(c, "must be an object");
        return NULL;
    }
    const char *problem = NULL;
    json_t *out = config_copy(c, v, 0, &problem);
    if (!out) {
        if (problem)
            fail(c, "%s", problem);
        else
            nomem(c);
        return NULL;
    }
    if (!encoded_within(out, SPEC_MAX_CONFIG)) {
        fail(c, "must be at most %d bytes encoded as JSON", SPEC_MAX_CONFIG);
        json_decref(out);
        return NULL;
    }
    return drop_empty(out);
}

/* ---- security settings (issue 16) --------------------------------------------------------
 * Passed to the engine as they are (runtime/reconcile.c's rt_create_body); checked here so that
 * a typo is a spec error on the node that took the deploy, not an engine error on every node
 * that tries to run it. */

static json_t *f_bool(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    if (!json_is_boolean(v)) {
        fail(c, "must be true or false");
        return NULL;
    }
    return json_boolean(json_is_true(v));
}

/* A numeric id (at most 2^32-2: -1 is "no id" to the kernel) or a POSIX user or group name. */
static bool id_part_valid(const char *s, size_t len)
{
    if (len == 0 || len > 32)
        return false;
    if (is_digit(s[0])) {
        uint64_t v = 0;
        for (size_t i = 0; i < len; i++) {
            if (!is_digit(s[i]) || i >= 10)
                return false;
            v = v * 10 + (uint64_t)(s[i] - '0');
        }
        return v <= 0xfffffffeu;
    }
    if (!is_lower(s[0]) && s[0] != '_')
        return false;
    for (size_t i = 1; i < len; i++)
        if (!is_lower(s[i]) && !is_digit(s[i]) && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

static json_t *f_user(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    char num[24];
    const char *s = num;
    if (json_is_integer(v) && json_integer_value(v) >= 0) /* YAML's `user: 1000` */
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (!(s = get_str(c, v, 65)))
        return NULL;
    const char *colon = strchr(s, ':');
    size_t ulen = colon ? (size_t)(colon - s) : strlen(s);
    if (!id_part_valid(s, ulen) || (colon && !id_part_valid(colon + 1, strlen(colon + 1)))) {
        fail(c, "must be uid[:gid] (numbers up to 4294967294, or user and group names)");
        return NULL;
    }
    return new_str(c, s);
}

/* Linux capabilities (capability(7)), without the CAP_ prefix, as the engines take them. */
static const char *const capabilities[] = {
    "AUDIT_CONTROL",   "AUDIT_READ",   "AUDIT_WRITE",
    "BLOCK_SUSPEND",   "BPF",          "CHECKPOINT_RESTORE",
    "CHOWN",           "DAC_OVERRIDE", "DAC_READ_SEARCH",
    "FOWNER",          "FSETID",       "IPC_LOCK",
    "IPC_OWNER",       "KILL",         "LEASE",
    "LINUX_IMMUTABLE", "MAC_ADMIN",    "MAC_OVERRIDE",
    "MKNOD",           "NET_ADMIN",    "NET_BIND_SERVICE",
    "NET_BROADCAST",   "NET_RAW",      "PERFMON",
    "SETFCAP",         "SETGID",       "SETPCAP",
    "SETUID",          "SYSLOG",       "SYS_ADMIN",
    "SYS_BOOT",        "SYS_CHROOT",   "SYS_MODULE",
    "SYS_NICE",        "SYS_PACCT",    "SYS_PTRACE",
    "SYS_RAWIO",       "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG",  "WAKE_ALARM",   "ALL",
};

#define SPEC_MAX_CAPS 48

/* cap_add / cap_drop: names in any case, with or without CAP_; canonical: upper case without
 * the prefix, sorted, each once. */
static json_t *f_caps(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    json_t *out = array_begin(c, v, "an array of capability names", 0, SPEC_MAX_CAPS);
    if (!out)
        return NULL;
    const char *names[SPEC_MAX_CAPS];
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(v); i++) {
        size_t old = path_index(c, i);
        const char *s = get_str(c, json_array_get(v, i), 64);
        char up[65];
        size_t k = 0;
        if (s) {
            if (strncasecmp(s, "CAP_", 4) == 0)
                s += 4;
            for (; s[k] && k < sizeof up - 1; k++)
                up[k] = (char)(s[k] >= 'a' && s[k] <= 'z' ? s[k] - 'a' + 'A' : s[k]);
            up[k] = '\0';
            size_t j = 0;
            while (j < N_(capabilities) && strcmp(capabilities[j], up) != 0)
                j++;
            if (j == N_(capabilities))
                fail(c, "not a Linux capability (e.g. NET_ADMIN, SYS_TIME, ALL)");
            else {
                size_t d = 0;
                while (d < n && strcmp(names[d], capabilities[j]) != 0)
                    d++;
                if (d == n)
                    names[n++] = capabilities[j];
            }
        }
        path_pop(c, old);
    }
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(out, json_string(names[i])) != 0)
            nomem(c);
    return drop_empty(out);
}

static bool perms_valid(const char *s)
{
    bool seen[3] = {false, false, false};
    if (!*s)
        return false;
    for (; *s; s++) {
        const char *p = strchr("rwm", *s);
        if (!p || seen[p - "rwm"])
            return false;
        seen[p - "rwm"] = true;
    }
    return true;
}

static json_t *f_dev_host(struct ctx *c, const json_t *v)
{
    json_t *p = f_path(c, v);
    const char *s = p ? json_string_value(p) : NULL;
    if (s && (strncmp(s, "/dev/", 5) != 0 || strstr(s, "/../") || strstr(s, "/./") ||
              (strlen(s) >= 3 && strcmp(s + strlen(s) - 3, "/..") == 0))) {
        fail(c, "must be a device under /dev/ (no . or .. in the path)");
        json_decref(p);
        return NULL;
    }
    return p;
}

static json_t *f_dev_container(struct ctx *c, const json_t *v)
{
    return v ? f_path(c, v) : NULL; /* default: the host path (check_device) */
}

static json_t *f_dev_perms(struct ctx *c, const json_t *v)
{
    if (!v)
        return new_str(c, "rwm");
    const char *s = get_str(c, v, 3);
    if (!s)
        return NULL;
    if (!perms_valid(s)) {
        fail(c, "must be some of r, w and m, each once (e.g. rw)");
        return NULL;
    }
    /* Canonical order r, w, m. */
    char out[4];
    size_t k = 0;
    for (const char *p = "rwm"; *p; p++)
        if (strchr(s, *p))
            out[k++] = *p;
    out[k] = '\0';
    return new_str(c, out);
}

static const struct field device_fields[] = {
    {"container", f_dev_container},
    {"host", f_dev_host},
    {"permissions", f_dev_perms},
};

#define SPEC_MAX_DEVICES 32

/* A device's container path defaults to its host path. */
static void device_fix(struct ctx *c, json_t *d)
{
    json_t *host = json_object_get(d, "host");
    if (host && !json_object_get(d, "container") && json_object_set(d, "container", host) != 0)
        nomem(c);
}

static json_t *f_devices(struct ctx *c, const json_t *v)
{
    return object_list(c, v, SPEC_MAX_DEVICES, device_fields, N_(device_fields), "container",
                       "container path as devices", device_fix);
}

/* A CDI device name (the Container Device Interface spec): vendor.example/class=name. */
static bool cdi_name_valid(const char *s)
{
    const char *slash = strchr(s, '/');
    const char *eq = slash ? strchr(slash, '=') : NULL;
    if (!slash || !eq || slash == s || eq == slash + 1 || !eq[1])
        return false;
    for (const char *p = s; p < slash; p++)
        if (!is_lower(*p) && !is_digit(*p) && *p != '.' && *p != '-')
            return false;
    for (const char *p = slash + 1; p < eq; p++)
        if (!is_alpha(*p) && !is_digit(*p) && *p != '.' && *p != '-' && *p != '_')
            return false;
    for (const char *p = eq + 1; *p; p++)
        if (!is_alpha(*p) && !is_digit(*p) && *p != '.' && *p != '-' && *p != '_' && *p != ':')
            return false;
    return true;
}

#define SPEC_MAX_CDI 16

static json_t *f_cdi(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    json_t *out = array_begin(c, v, "an array of CDI device names", 0, SPEC_MAX_CDI);
    if (!out)
        return NULL;
    for (size_t i = 0; i < json_array_size(v); i++) {
        size_t old = path_index(c, i);
        const char *s = get_str(c, json_array_get(v, i), 255);
        if (s && !cdi_name_valid(s))
            fail(c, "must be a CDI device name, vendor/class=name (e.g. nvidia.com/gpu=all)");
        else if (s && json_array_append_new(out, json_string(s)) != 0)
            nomem(c);
        path_pop(c, old);
    }
    return drop_empty(out);
}

static json_t *f_gpus(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    if (str_is(v, "all"))
        return new_str(c, "all");
    if (json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= 64)
        return new_int(c, json_integer_value(v));
    fail(c, "must be \"all\" or a number of GPUs 1..64");
    return NULL;
}

static json_t *f_runtime(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    const char *s = get_str(c, v, 64);
    if (!s)
        return NULL;
    bool ok = *s && (is_lower(*s) || is_digit(*s));
    for (const char *p = s; ok && *p; p++)
        ok = is_lower(*p) || is_digit(*p) || *p == '.' || *p == '_' || *p == '-';
    if (!ok) {
        fail(c, "must be an OCI runtime name (e.g. runc, crun, nvidia)");
        return NULL;
    }
    return new_str(c, s);
}

/* A size as resources.memory takes it, canonical in its shortest exact spelling. */
static json_t *f_size(struct ctx *c, const json_t *v)
{
    json_t *bytes = f_memory(c, v);
    if (!bytes)
        return NULL;
    char s[MESH_SIZE_STRLEN];
    mesh_size_format((uint64_t)json_integer_value(bytes), s, sizeof s);
    json_decref(bytes);
    return new_str(c, s);
}

/* An octal file mode as a string ("1777", "01777" or "0o1777"), canonical without a prefix.
 * Numbers are refused: YAML reads `mode: 01777` as the decimal 1777, which is a valid but
 * different mode, so a number cannot be trusted to mean what was typed. */
static json_t *f_tmpfs_mode(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    const char *s = json_is_string(v) ? get_str(c, v, 8) : NULL;
    if (!json_is_string(v))
        fail(c, "must be an octal mode as a string, e.g. \"1777\"");
    if (!s)
        return NULL;
    if (s[0] == '0' && s[1] == 'o')
        s += 2;
    unsigned long m = 0;
    bool ok = *s != '\0';
    for (const char *p = s; ok && *p; p++) {
        ok = *p >= '0' && *p <= '7';
        m = m * 8 + (unsigned long)(*p - '0');
        ok = ok && m <= 07777;
    }
    if (!ok) {
        fail(c, "must be an octal mode 0..7777 as a string, e.g. \"1777\"");
        return NULL;
    }
    char out[8];
    snprintf(out, sizeof out, "%lo", m);
    return new_str(c, out);
}

static const struct field tmpfs_fields[] = {
    {"mode", f_tmpfs_mode},
    {"path", f_path},
    {"size", f_size},
};

#define SPEC_MAX_TMPFS 16

static void tmpfs_fix(struct ctx *c, json_t *t)
{
    const json_t *p = json_object_get(t, "path");
    if (p && strcmp(json_string_value(p), "/") == 0)
        fail_at(c, "path", "cannot be /");
}

static json_t *f_tmpfs(struct ctx *c, const json_t *v)
{
    return object_list(c, v, SPEC_MAX_TMPFS, tmpfs_fields, N_(tmpfs_fields), "path",
                       "path as tmpfs", tmpfs_fix);
}

/* Only sysctls of the IPC namespace: every container shares the host's network namespace
 * (NetworkMode host, so that services reach it on loopback), where a net.* sysctl would change
 * the host's own settings. */
static bool sysctl_name_ok(const char *s)
{
    static const char *const names[] = {"kernel.msgmax", "kernel.msgmnb",         "kernel.msgmni",
                                        "kernel.sem",    "kernel.shmall",         "kernel.shmmax",
                                        "kernel.shmmni", "kernel.shm_rmid_forced"};
    for (size_t i = 0; i < N_(names); i++)
        if (strcmp(s, names[i]) == 0)
            return true;
    if (strncmp(s, "fs.mqueue.", 10) != 0 || !s[10])
        return false;
    for (s += 10; *s; s++)
        if (!is_lower(*s) && !is_digit(*s) && *s != '_')
            return false;
    return true;
}

static bool sysctl_value_ok(const char *s, size_t max)
{
    (void)max;
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_digit(*s) && *s != ' ' && *s != '\t')
            return false;
    return true;
}

static json_t *f_sysctls(struct ctx *c, const json_t *v)
{
    return string_map(c, v, 16, sysctl_name_ok,
                      "not allowed: only IPC sysctls (kernel.msg*, kernel.sem, kernel.shm*, "
                      "fs.mqueue.*), as containers share the host's network",
                      64, sysctl_value_ok, "must be numbers separated by spaces");
}

static bool ulimit_name_ok(const char *s)
{
    static const char *const names[] = {"core",    "cpu",      "data",   "fsize",      "locks",
                                        "memlock", "msgqueue", "nice",   "nofile",     "nproc",
                                        "rss",     "rtprio",   "rttime", "sigpending", "stack"};
    for (size_t i = 0; i < N_(names); i++)
        if (strcmp(s, names[i]) == 0)
            return true;
    return false;
}

/* A limit: a number >= 0 or "unlimited" (-1 here and to the engine; the canonical form
 * spells it out). */
static bool ulimit_value(const json_t *v, json_int_t *ret)
{
    if (str_is(v, "unlimited")) {
        *ret = -1;
        return true;
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *ret = json_integer_value(v);
        return true;
    }
    return false;
}

static json_t *ulimit_json(json_int_t v)
{
    return v == -1 ? json_string("unlimited") : json_integer(v);
}

/* ulimits: {nofile: 1024} (soft and hard) or {nofile: {soft: 1024, hard: 4096}}; canonical
 * always the second form. */
static json_t *f_ulimits(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    if (!json_is_object(v) || json_object_size(v) > 16) {
        fail(c, "must be an object of at most 16 limits");
        return NULL;
    }
    size_t n;
    const char **keys = sorted_keys(c, v, &n);
    if (!keys)
        return NULL;
    json_t *out = json_object();
    if (!out)
        nomem(c);
    for (size_t i = 0; i < n && out; i++) {
        size_t old = path_key(c, keys[i]);
        const json_t *x = json_object_get(v, keys[i]);
        json_int_t soft, hard;
        if (!ulimit_name_ok(keys[i])) {
            fail(c, "not a resource limit (nofile, nproc, memlock, core, stack, ...)");
        } else if (ulimit_value(x, &soft)) {
            hard = soft;
        } else if (!json_is_object(x) || json_object_size(x) != 2 ||
                   !ulimit_value(json_object_get(x, "soft"), &soft) ||
                   !ulimit_value(json_object_get(x, "hard"), &hard)) {
            fail(c, "must be a number, \"unlimited\" or {soft, hard}");
            goto next;
        }
        if (ulimit_name_ok(keys[i])) {
            if (hard != -1 && (soft == -1 || soft > hard))
                fail(c, "soft must not exceed hard");
            else if (json_object_set_new(out, keys[i],
                                         json_pack("{s:o, s:o}", "hard", ulimit_json(hard), "soft",
                                                   ulimit_json(soft))) != 0)
                nomem(c);
        }
    next:
        path_pop(c, old);
    }
    free(keys);
    return drop_empty(out);
}

static json_t *f_network(struct ctx *c, const json_t *v)
{
    if (!v)
        return NULL;
    if (str_is(v, "host"))
        return new_str(c, "host");
    fail(c, "must be host: every microservice shares its node's network and reaches others "
            "through services (expose/connect)");
    return NULL;
}

static json_t *f_restart(struct ctx *c, const json_t *v)
{
    static const char *const policies[] = {"always", "on-failure", "never"};
    if (!v)
        return new_str(c, "always");
    for (size_t i = 0; i < N_(policies); i++)
        if (str_is(v, policies[i]))
            return new_str(c, policies[i]);
    fail(c, "must be always, on-failure or never");
    return NULL;
}

static json_t *f_ms_name(struct ctx *c, const json_t *v)
{
    return f_dns_name(c, v);
}

static const struct field microservice_fields[] = {
    {"cap_add", f_caps},
    {"cap_drop", f_caps},
    {"cdi", f_cdi},
    {"command", f_command},
    {"config", f_config},
    {"connect", f_connect},
    {"devices", f_devices},
    {"env", f_env},
    {"expose", f_expose},
    {"gpus", f_gpus},
    {"image", f_image},
    {"images", f_images},
    {"name", f_ms_name},
    {"network", f_network},
    {"no_new_privileges", f_bool},
    {"placement", f_placement},
    {"ports", f_ports},
    {"privileged", f_bool},
    {"read_only_rootfs", f_bool},
    {"replicas", f_replicas},
    {"resources", f_resources},
    {"restart", f_restart},
    {"runtime", f_runtime},
    {"shm_size", f_size},
    {"sysctls", f_sysctls},
    {"tmpfs", f_tmpfs},
    {"ulimits", f_ulimits},
    {"user", f_user},
    {"volumes", f_volumes},
};

static json_t *check_microservice(struct ctx *c, const json_t *v)
{
    c->nconnect = 0;
    json_t *ms = check_object(c, v, microservice_fields, N_(microservice_fields), NULL);
    if (!ms)
        return NULL;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(ms, "expose"), i, e)
    {
        uint16_t port = (uint16_t)json_integer_value(json_object_get(e, "port"));
        for (size_t k = 0; k < c->nconnect; k++) {
            if (c->connect_ports[k] == port) {
                size_t old = path_key(c, "expose");
                path_index(c, i);
                fail_at(c, "port", "also a connect port of this microservice");
                path_pop(c, old);
            }
        }
    }
    size_t j;
    json_t *cap;
    json_array_foreach(json_object_get(ms, "cap_add"), j, cap)
    {
        json_t *d;
        json_array_foreach(json_object_get(ms, "cap_drop"), i, d)
        {
            if (json_equal(cap, d)) {
                char msg[96];
                snprintf(msg, sizeof msg, "%s is also in cap_add", json_string_value(d));
                fail_at(c, "cap_drop", msg);
            }
        }
    }
    const json_t *image = json_object_get(v, "image");
    const json_t *images = json_object_get(v, "images");
    if (image && images)
        fail_at(c, "images", "cannot be given together with image");
    else if (!image && !images)
        fail_at(c, "image", "required (or images)");
    /* A pinned architecture needs an image for it. */
    const char *arch = json_string_value(json_object_get(json_object_get(ms, "placement"), "arch"));
    json_t *imgs = json_object_get(ms, "images");
    if (arch && imgs && json_object_size(imgs) > 0 && !json_object_get(imgs, arch)) {
        size_t old = path_key(c, "placement");
        fail_at(c, "arch", "images has no entry for this architecture");
        path_pop(c, old);
    }
    return ms;
}

static json_t *f_microservices(struct ctx *c, const json_t *v)
{
    if (!v)
        return f_required(c);
    json_t *out = array_begin(c, v, "an array", 1, SPEC_MAX_MICROSERVICES);
    if (!out)
        return NULL;
    size_t n = json_array_size(v);
    for (size_t i = 0; i < n; i++) {
        size_t old = path_index(c, i);
        c->ms = i;
        json_t *ms = check_microservice(c, json_array_get(v, i));
        const json_t *name = json_object_get(ms, "name");
        for (size_t j = 0; name && j < json_array_size(out); j++) {
            if (json_equal(json_object_get(json_array_get(out, j), "name"), (json_t *)name)) {
                char msg[64];
                snprintf(msg, sizeof msg, "same name as microservices[%zu]", j);
                fail_at(c, "name", msg);
                break;
            }
        }
        /* On a problem the array is discarded anyway; keeping positions is not needed. */
        if (ms && json_array_append_new(out, ms) != 0)
            nomem(c);
        path_pop(c, old);
    }
    return out;
}

static const struct field app_fields[] = {
    {"kind", f_kind},
    {"microservices", f_microservices},
    {"name", f_dns_name},
};

int spec_validate(const json_t *in, json_t **ret_canonical, struct spec_errors *errs)
{
    if (errs)
        memset(errs, 0, sizeof *errs);
    struct ctx *c = calloc(1, sizeof *c);
    if (!c) {
        if (errs) {
            errs->count = 1;
            strcpy(errs->e[0].msg, "out of memory");
        }
        return MESH_ENOMEM;
    }
    c->errs = errs;
    int rc = MESH_OK;
    json_t *out = NULL;
    if (!json_is_object(in)) {
        fail(c, "a spec must be an object");
        rc = MESH_EINVAL;
        goto done;
    }
    if (!encoded_within(in, SPEC_MAX_ENCODED)) {
        fail(c, "too large: at most %d bytes encoded as JSON", SPEC_MAX_ENCODED);
        rc = MESH_ETOOBIG;
        goto done;
    }
    out = check_object(c, in, app_fields, N_(app_fields), NULL);
    if (c->nomem)
        rc = MESH_ENOMEM;
    else if (c->failed || !out)
        rc = MESH_EINVAL;
    if (rc == MESH_OK && ret_canonical) {
        *ret_canonical = out;
        out = NULL;
    }
done:
    json_decref(out);
    free(c);
    return rc;
}

/* ---- errors out ------------------------------------------------------------------------- */

struct sbuf {
    char *buf;
    size_t len, need;
};

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t off = b->need < b->len ? b->need : b->len;
    int n = vsnprintf(b->buf ? b->buf + off : NULL, b->len - off, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->need += (size_t)n;
}

size_t spec_errors_format(const struct spec_errors *errs, char *buf, size_t len)
{
    struct sbuf b = {buf, len, 0};
    if (len > 0)
        buf[0] = '\0';
    if (!buf)
        b.len = 0;
    for (size_t i = 0; errs && i < errs->count && i < SPEC_ERRORS_MAX; i++)
        sb_printf(&b, "%s%s%s%s", i ? "; " : "", errs->e[i].path, errs->e[i].path[0] ? ": " : "",
                  errs->e[i].msg);
    if (errs && errs->more)
        sb_printf(&b, " (and %zu more)", errs->more);
    return b.need;
}

json_t *spec_errors_to_json(const struct spec_errors *errs)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && errs && i < errs->count && i < SPEC_ERRORS_MAX; i++) {
        if (json_array_append_new(arr, json_pack("{s:s, s:s}", "path", errs->e[i].path, "message",
                                                 errs->e[i].msg)) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    if (arr && errs && errs->more) {
        char msg[64];
        snprintf(msg, sizeof msg, "%zu more problems", errs->more);
        if (json_array_append_new(arr, json_pack("{s:s, s:s}", "path", "", "message", msg)) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

const char *spec_images_for_arch(const json_t *canonical, size_t ms_index, const char *arch)
{
    const json_t *ms = json_array_get(json_object_get(canonical, "microservices"), ms_index);
    if (!ms || !arch)
        return NULL;
    const char *pinned =
        json_string_value(json_object_get(json_object_get(ms, "placement"), "arch"));
    if (pinned && strcmp(pinned, arch) != 0)
        return NULL;
    const char *image = json_string_value(json_object_get(ms, "image"));
    if (image)
        return image;
    return json_string_value(json_object_get(json_object_get(ms, "images"), arch));
}

int spec_from_bytes(const void *buf, size_t len, json_t **ret_canonical, struct spec_errors *errs)
{
    if (errs)
        memset(errs, 0, sizeof *errs);
    if (!buf || len == 0 || len > SPEC_MAX_ENCODED) {
        if (errs) {
            errs->count = 1;
            snprintf(errs->e[0].msg, sizeof errs->e[0].msg, "%s",
                     len ? "too large to be a spec" : "empty");
        }
        return len ? MESH_ETOOBIG : MESH_EMALFORMED;
    }
    json_error_t jerr;
    json_t *in = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!in) {
        if (errs) {
            errs->count = 1;
            char msg[sizeof jerr.text + 16];
            snprintf(msg, sizeof msg, "not JSON: %s", jerr.text);
            copy_clean(errs->e[0].msg, sizeof errs->e[0].msg, msg);
        }
        return MESH_EMALFORMED;
    }
    int rc = spec_validate(in, ret_canonical, errs);
    json_decref(in);
    return rc;
}

char *spec_dump(const json_t *canonical)
{
    return json_dumps(canonical, JSON_COMPACT | JSON_SORT_KEYS);
}

json_t *spec_stored(json_t *cache, const char *name, uint64_t mod_rev, const void *bytes,
                    size_t len, struct spec_errors *errs, bool *ret_new_invalid)
{
    if (ret_new_invalid)
        *ret_new_invalid = false;
    json_t *hit = json_object_get(cache, name);
    if (hit && (uint64_t)json_integer_value(json_array_get(hit, 0)) == mod_rev) {
        json_t *spec = json_array_get(hit, 1);
        return json_is_null(spec) ? NULL : json_incref(spec);
    }
    struct spec_errors local;
    if (!errs)
        errs = &local;
    json_t *spec = NULL;
    int rc = spec_from_bytes(bytes, len, &spec, errs);
    const char *specname = json_string_value(json_object_get(spec, "name"));
    if (rc == 0 && (!specname || strcmp(specname, name) != 0)) {
        rc = MESH_EINVAL;
        memset(errs, 0, sizeof *errs);
        errs->count = 1;
        snprintf(errs->e[0].msg, sizeof errs->e[0].msg, "it names another application");
        json_decref(spec);
        spec = NULL;
    }
    if (rc == MESH_ENOMEM)
        return NULL; /* no verdict: asked again next time */
    if (rc < 0 && ret_new_invalid)
        *ret_new_invalid = true;
    if (cache)
        json_object_set_new(cache, name,
                            json_pack("[I, O]", (json_int_t)mod_rev, spec ? spec : json_null()));
    return spec;
}

const json_t *spec_microservice(const json_t *canonical, const char *ms, size_t *ret_index)
{
    size_t i;
    const json_t *m;
    json_array_foreach(json_object_get(canonical, "microservices"), i, m)
    {
        const char *name = json_string_value(json_object_get(m, "name"));
        if (name && ms && strcmp(name, ms) == 0) {
            if (ret_index)
                *ret_index = i;
            return m;
        }
    }
    return NULL;
}
