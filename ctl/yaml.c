/* YAML ⇄ JSON for meshctl specs (see yaml.h). Reading walks libyaml's event stream with an
 * explicit stack bounded by YAML_MAX_DEPTH, so nesting never turns into recursion or unbounded
 * memory; writing drives libyaml's emitter and chooses scalar styles so that the text reads back
 * to the same value under the YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#103-core-schema).
 */
#include "yaml.h" /* ours: a quoted include finds the file next to this one first */
#include <yaml.h> /* libyaml: this file is compiled without ctl/ on the include path */

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_STR "tag:yaml.org,2002:str"
#define TAG_MAP "tag:yaml.org,2002:map"
#define TAG_SEQ "tag:yaml.org,2002:seq"

/* ---- plain scalars under the core schema ------------------------------------------------- */

enum resolved { R_STRING, R_VALUE, R_ERROR };

static bool word_in(const char *s, size_t len, const char *const *words, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(words[i]) == len && memcmp(s, words[i], len) == 0)
            return true;
    return false;
}

static size_t digits(const char *s, size_t len, size_t i, int (*is)(int))
{
    size_t start = i;
    while (i < len && is((unsigned char)s[i]))
        i++;
    return i - start;
}

static int is_octal(int c)
{
    return c >= '0' && c <= '7';
}

/* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static bool is_float(const char *s, size_t len)
{
    size_t i = 0;
    if (i < len && (s[i] == '-' || s[i] == '+'))
        i++;
    size_t nint = digits(s, len, i, isdigit);
    i += nint;
    size_t nfrac = 0;
    if (i < len && s[i] == '.') {
        i++;
        nfrac = digits(s, len, i, isdigit);
        i += nfrac;
    }
    if (nint == 0 && nfrac == 0)
        return false;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '-' || s[i] == '+'))
            i++;
        size_t nexp = digits(s, len, i, isdigit);
        if (nexp == 0)
            return false;
        i += nexp;
    }
    return i == len;
}

/* What a plain scalar s (len bytes, NUL-terminated) means. R_VALUE stores the value in *ret
 * (NULL when memory ran out); R_ERROR stores why in *problem. */
static enum resolved resolve_plain(const char *s, size_t len, json_t **ret, const char **problem)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    static const char *const trues[] = {"true", "True", "TRUE"};
    static const char *const falses[] = {"false", "False", "FALSE"};
    static const char *const infs[] = {".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                       "+.INF", "-.inf", "-.Inf", "-.INF"};
    static const char *const nans[] = {".nan", ".NaN", ".NAN"};
    if (word_in(s, len, nulls, 5)) {
        *ret = json_null();
        return R_VALUE;
    }
    if (word_in(s, len, trues, 3) || word_in(s, len, falses, 3)) {
        *ret = json_boolean(s[0] == 't' || s[0] == 'T');
        return R_VALUE;
    }
    if (word_in(s, len, infs, 9) || word_in(s, len, nans, 3)) {
        *problem = "infinity and NaN have no JSON form";
        return R_ERROR;
    }
    int base = 0;
    size_t skip = 0;
    size_t sign = len > 0 && (s[0] == '-' || s[0] == '+');
    if (len > sign && digits(s, len, sign, isdigit) == len - sign) {
        base = 10;
    } else if (len > 2 && s[0] == '0' && s[1] == 'o' && digits(s, len, 2, is_octal) == len - 2) {
        base = 8;
        skip = 2;
    } else if (len > 2 && s[0] == '0' && s[1] == 'x' && digits(s, len, 2, isxdigit) == len - 2) {
        base = 16;
        skip = 2;
    }
    if (base) {
        char *end;
        errno = 0;
        if (base == 10) {
            long long v = strtoll(s, &end, 10);
            if (errno || end != s + len) {
                *problem = "integer out of the 64-bit range";
                return R_ERROR;
            }
            *ret = json_integer(v);
        } else {
            unsigned long long v = strtoull(s + skip, &end, base);
            if (errno || end != s + len || v > (unsigned long long)LLONG_MAX) {
                *problem = "integer out of the 64-bit range";
                return R_ERROR;
            }
            *ret = json_integer((json_int_t)v);
        }
        return R_VALUE;
    }
    if (is_float(s, len)) {
        char *end;
        double d = strtod(s, &end);
        if (end != s + len || !isfinite(d)) {
            *problem = "number out of range";
            return R_ERROR;
        }
        *ret = json_real(d);
        return R_VALUE;
    }
    return R_STRING;
}

/* ---- reading ------------------------------------------------------------------------------ */

struct frame {
    json_t *node; /* an object or an array, owned by its parent (or the root) */
    char *key;    /* a mapping's key waiting for its value */
};

struct reader {
    json_t *root;
    struct frame st[YAML_MAX_DEPTH];
    size_t depth;
    struct mesh_err *err;
};

__attribute__((format(printf, 3, 4))) static int at(struct reader *r, yaml_mark_t m,
                                                    const char *fmt, ...)
{
    char msg[MESH_ERRMSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mesh_errf(r->err, MESH_EINVAL, "%zu:%zu: %s", m.line + 1, m.column + 1, msg);
}

static int nomem(struct reader *r)
{
    return mesh_errf(r->err, MESH_ENOMEM, "out of memory");
}

/* A key for an error message: at most 40 bytes, control characters shown as '?'. */
static void show_key(char *out, size_t cap, const char *s, size_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    if (n > 40)
        n = 40;
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    out[n] = '\0';
}

static bool expecting_key(const struct reader *r)
{
    return r->depth > 0 && json_is_object(r->st[r->depth - 1].node) && !r->st[r->depth - 1].key;
}

/* Attaches v (a new reference, consumed) where the stream is: the root, the next array
 * element, or the value of the pending key. */
static int attach(struct reader *r, json_t *v)
{
    if (!v)
        return nomem(r);
    if (r->depth == 0) {
        r->root = v;
        return 0;
    }
    struct frame *f = &r->st[r->depth - 1];
    int rc;
    if (json_is_array(f->node)) {
        rc = json_array_append_new(f->node, v);
    } else {
        rc = json_object_set_new_nocheck(f->node, f->key, v);
        free(f->key);
        f->key = NULL;
    }
    return rc ? nomem(r) : 0;
}

static int on_key(struct reader *r, const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    char shown[48];
    show_key(shown, sizeof shown, s, len);
    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev->data.scalar.tag) {
        json_t *v = NULL;
        const char *problem = NULL;
        enum resolved k = resolve_plain(s, len, &v, &problem);
        json_decref(v);
        if (k != R_STRING)
            return at(r, ev->start_mark, "key %s%s%s must be a string: quote it", len ? "\"" : "",
                      len ? shown : "(empty)", len ? "\"" : "");
    }
    if (memchr(s, '\0', len))
        return at(r, ev->start_mark, "key \"%s\" holds a NUL character", shown);
    struct frame *f = &r->st[r->depth - 1];
    if (json_object_get(f->node, s))
        return at(r, ev->start_mark, "duplicate key \"%s\"", shown);
    f->key = strdup(s);
    return f->key ? 0 : nomem(r);
}

static int on_scalar(struct reader *r, const yaml_event_t *ev)
{
    const char *tag = (const char *)ev->data.scalar.tag;
    if (ev->data.scalar.anchor)
        return at(r, ev->start_mark, "anchors are not supported");
    if (tag && strcmp(tag, TAG_STR) != 0)
        return at(r, ev->start_mark, "tag %.64s is not supported (only !!str)", tag);
    if (expecting_key(r))
        return on_key(r, ev);
    const char *s = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !tag) {
        json_t *v = NULL;
        const char *problem = NULL;
        switch (resolve_plain(s, len, &v, &problem)) {
        case R_VALUE:
            return attach(r, v);
        case R_ERROR:
            return at(r, ev->start_mark, "%s", problem);
        case R_STRING:
            break;
        }
    }
    json_t *v = json_stringn(s, len);
    if (!v && s)
        return at(r, ev->start_mark, "not valid UTF-8"); /* libyaml checks; kept as a guard */
    return attach(r, v);
}

static int on_start(struct reader *r, const yaml_event_t *ev, bool map)
{
    const yaml_char_t *anchor =
        map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
    const char *tag =
        (const char *)(map ? ev->data.mapping_start.tag : ev->data.sequence_start.tag);
    if (anchor)
        return at(r, ev->start_mark, "anchors are not supported");
    if (tag && strcmp(tag, map ? TAG_MAP : TAG_SEQ) != 0)
        return at(r, ev->start_mark, "tag %.64s is not supported", tag);
    if (expecting_key(r))
        return at(r, ev->start_mark, "keys must be strings, not %s",
                  map ? "mappings" : "sequences");
    if (r->depth == YAML_MAX_DEPTH)
        return at(r, ev->start_mark, "nested deeper than %d levels", YAML_MAX_DEPTH);
    json_t *v = map ? json_object() : json_array();
    int rc = attach(r, json_incref(v));
    json_decref(v);
    if (rc)
        return rc;
    r->st[r->depth++] = (struct frame){v, NULL};
    return 0;
}

static int parser_error(struct reader *r, const yaml_parser_t *p, const char *text, size_t len)
{
    if (p->error == YAML_MEMORY_ERROR)
        return nomem(r);
    if (p->error == YAML_READER_ERROR) {
        /* The reader only knows a byte offset; count lines up to it. */
        size_t line = 1, col = 1, end = p->problem_offset < len ? p->problem_offset : len;
        for (size_t i = 0; i < end; i++, col++)
            if (text[i] == '\n')
                line++, col = 0;
        return mesh_errf(r->err, MESH_EINVAL, "%zu:%zu: %s", line, col,
                         p->problem ? p->problem : "unreadable input");
    }
    if (p->context)
        return mesh_errf(r->err, MESH_EINVAL, "%zu:%zu: %s (%s at %zu:%zu)",
                         p->problem_mark.line + 1, p->problem_mark.column + 1,
                         p->problem ? p->problem : "syntax error", p->context,
                         p->context_mark.line + 1, p->context_mark.column + 1);
    return mesh_errf(r->err, MESH_EINVAL, "%zu:%zu: %s", p->problem_mark.line + 1,
                     p->problem_mark.column + 1, p->problem ? p->problem : "syntax error");
}

static int from_yaml(const char *text, size_t len, json_t **ret, struct mesh_err *err)
{
    struct reader r = {.err = err};
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return nomem(&r);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc = 0, docs = 0;
    for (bool done = false; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = parser_error(&r, &p, text, len);
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1)
                rc = at(&r, ev.start_mark, "more than one document");
            break;
        case YAML_ALIAS_EVENT:
            rc = at(&r, ev.start_mark, "aliases are not supported");
            break;
        case YAML_SCALAR_EVENT:
            rc = on_scalar(&r, &ev);
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            rc = on_start(&r, &ev, ev.type == YAML_MAPPING_START_EVENT);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (r.depth > 0)
                r.depth--;
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    if (rc == 0 && !r.root)
        rc = mesh_errf(err, MESH_EINVAL, "1:1: empty document");
    for (size_t i = 0; i < r.depth; i++)
        free(r.st[i].key);
    if (rc) {
        json_decref(r.root);
        return rc;
    }
    *ret = r.root;
    return 0;
}

static bool deeper_than(const json_t *v, int max)
{
    if (!json_is_object(v) && !json_is_array(v))
        return false;
    if (max == 0)
        return true;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (deeper_than(json_array_get(v, i), max - 1))
                return true;
        return false;
    }
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) if (deeper_than(x, max - 1)) return true;
    return false;
}

int yaml_to_json(const char *text, size_t len, json_t **ret, struct mesh_err *err)
{
    if (len > YAML_MAX_INPUT)
        return mesh_errf(err, MESH_ETOOBIG, "input is larger than %d bytes", YAML_MAX_INPUT);
    size_t i = 0;
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        i = 3;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
        i++;
    if (i < len && text[i] == '{') {
        json_error_t je;
        json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
        if (v) {
            /* jansson's own limit is far deeper; hold JSON to the same bound as YAML. */
            if (deeper_than(v, YAML_MAX_DEPTH)) {
                json_decref(v);
                return mesh_errf(err, MESH_EINVAL, "nested deeper than %d levels", YAML_MAX_DEPTH);
            }
            *ret = v;
            return 0;
        }
        /* `{name: x}` is YAML flow style, not JSON: give YAML a chance, but a user who wrote
         * '{' most likely meant JSON, so its error is the one to show. */
        json_t *y = NULL;
        if (from_yaml(text, len, &y, NULL) == 0) {
            *ret = y;
            return 0;
        }
        return mesh_errf(err, MESH_EINVAL, "%d:%d: %s", je.line, je.column, je.text);
    }
    return from_yaml(text, len, ret, err);
}

/* ---- writing ------------------------------------------------------------------------------ */

struct out {
    char *buf;
    size_t len, cap;
};

static int write_cb(void *data, unsigned char *buffer, size_t size)
{
    struct out *o = data;
    if (o->len + size + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + size + 1)
            cap *= 2;
        char *b = realloc(o->buf, cap);
        if (!b)
            return 0;
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, buffer, size);
    o->len += size;
    o->buf[o->len] = '\0';
    return 1;
}

/* Whether a string must be quoted to read back as the same string: it resolves to something
 * else under the core schema, or would under YAML 1.1 (yes/no/on/off, 0777, 1:30, 1_000), which
 * other tools reading our output may use. Special characters are the emitter's business.
 * s is NUL-terminated (jansson strings are) but may hold NULs before len. */
static bool needs_quotes(const char *s, size_t len)
{
    static const char *const yaml11[] = {"y", "n", "yes", "no", "on", "off"};
    json_t *v = NULL;
    const char *problem;
    enum resolved k = resolve_plain(s, len, &v, &problem);
    json_decref(v);
    if (k != R_STRING || memchr(s, '\0', len))
        return true;
    for (size_t i = 0; i < sizeof yaml11 / sizeof yaml11[0]; i++)
        if (strlen(yaml11[i]) == len && strncasecmp(s, yaml11[i], len) == 0)
            return true;
    /* Number-like under 1.1 (0b1, 0777, 1_000, 1:30, 0x_1F): a digit first, after an optional
     * sign or dot, and nothing but digits and number punctuation. "64Mi" stays plain. */
    size_t i = len > 0 && (s[0] == '-' || s[0] == '+' || s[0] == '.');
    return i < len && isdigit((unsigned char)s[i]) &&
           strspn(s, "0123456789abcdefABCDEF_.:+-xXoO") == len;
}

static int emit_scalar(yaml_emitter_t *e, const char *s, size_t len, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)len, 1, 1, style))
        return MESH_ENOMEM;
    return yaml_emitter_emit(e, &ev) ? 0 : MESH_EINVAL;
}

static int emit_string(yaml_emitter_t *e, const char *s, size_t len)
{
    yaml_scalar_style_t style = YAML_PLAIN_SCALAR_STYLE;
    if (needs_quotes(s, len))
        style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    else if (memchr(s, '\n', len))
        style = YAML_LITERAL_SCALAR_STYLE; /* the emitter falls back to quotes when it must */
    return emit_scalar(e, s, len, style);
}

/* The shortest %g spelling that reads back to d, with a '.' or an exponent so that it reads
 * back as a float and not an integer. */
static void format_real(double d, char *buf, size_t cap)
{
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    /* %g writes 1500 as 1.5e+03; people write 1500.0. Keep exponents for the very large and
     * the very small only. */
    const char *e = strchr(buf, 'e');
    int exp10 = e ? atoi(e + 1) : 0;
    if (e && exp10 >= -5 && exp10 < 16) {
        char fixed[64];
        int decimals = prec - 1 - exp10 > 0 ? prec - 1 - exp10 : 0;
        snprintf(fixed, sizeof fixed, "%.*f", decimals, d);
        if (strtod(fixed, NULL) == d && strlen(fixed) < cap)
            memcpy(buf, fixed, strlen(fixed) + 1);
    }
    if (!strpbrk(buf, ".eE"))
        strncat(buf, ".0", cap - strlen(buf) - 1);
}

static int emit_value(yaml_emitter_t *e, const json_t *v)
{
    yaml_event_t ev;
    char num[64];
    int rc = 0;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        yaml_mapping_style_t style =
            json_object_size(v) ? YAML_BLOCK_MAPPING_STYLE : YAML_FLOW_MAPPING_STYLE;
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, style))
            return MESH_ENOMEM;
        if (!yaml_emitter_emit(e, &ev))
            return MESH_EINVAL;
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
        {
            if ((rc = emit_string(e, k, strlen(k))) || (rc = emit_value(e, x)))
                return rc;
        }
        yaml_mapping_end_event_initialize(&ev);
        return yaml_emitter_emit(e, &ev) ? 0 : MESH_EINVAL;
    }
    case JSON_ARRAY: {
        yaml_sequence_style_t style =
            json_array_size(v) ? YAML_BLOCK_SEQUENCE_STYLE : YAML_FLOW_SEQUENCE_STYLE;
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, style))
            return MESH_ENOMEM;
        if (!yaml_emitter_emit(e, &ev))
            return MESH_EINVAL;
        for (size_t i = 0; i < json_array_size(v); i++)
            if ((rc = emit_value(e, json_array_get(v, i))))
                return rc;
        yaml_sequence_end_event_initialize(&ev);
        return yaml_emitter_emit(e, &ev) ? 0 : MESH_EINVAL;
    }
    case JSON_STRING:
        return emit_string(e, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return emit_scalar(e, num, strlen(num), YAML_PLAIN_SCALAR_STYLE);
    case JSON_REAL:
        format_real(json_real_value(v), num, sizeof num);
        return emit_scalar(e, num, strlen(num), YAML_PLAIN_SCALAR_STYLE);
    case JSON_TRUE:
        return emit_scalar(e, "true", 4, YAML_PLAIN_SCALAR_STYLE);
    case JSON_FALSE:
        return emit_scalar(e, "false", 5, YAML_PLAIN_SCALAR_STYLE);
    case JSON_NULL:
        return emit_scalar(e, "null", 4, YAML_PLAIN_SCALAR_STYLE);
    }
    return MESH_EINVAL;
}

int json_to_yaml(const json_t *v, char **ret_text)
{
    if (!v)
        return MESH_EINVAL;
    yaml_emitter_t e;
    struct out o = {0};
    if (!yaml_emitter_initialize(&e))
        return MESH_ENOMEM;
    yaml_emitter_set_output(&e, write_cb, &o);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, -1); /* no folding: long values stay on one line */
    yaml_emitter_set_indent(&e, 2);
    yaml_event_t ev;
    int rc = 0;
    if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) ||
        !yaml_emitter_emit(&e, &ev) ||
        !yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) ||
        !yaml_emitter_emit(&e, &ev))
        rc = MESH_EINVAL;
    if (rc == 0)
        rc = emit_value(&e, v);
    if (rc == 0 && (!yaml_document_end_event_initialize(&ev, 1) || !yaml_emitter_emit(&e, &ev) ||
                    !yaml_stream_end_event_initialize(&ev) || !yaml_emitter_emit(&e, &ev) ||
                    !yaml_emitter_flush(&e)))
        rc = MESH_EINVAL;
    if (rc == MESH_EINVAL && e.error == YAML_MEMORY_ERROR)
        rc = MESH_ENOMEM;
    if (rc == MESH_EINVAL && e.error == YAML_WRITER_ERROR)
        rc = MESH_ENOMEM; /* write_cb fails only when realloc does */
    yaml_emitter_delete(&e);
    if (rc == 0 && !o.buf)
        rc = MESH_EINVAL;
    if (rc) {
        free(o.buf);
        return rc;
    }
    *ret_text = o.buf;
    return 0;
}
