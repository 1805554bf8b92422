#include "pulls.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reconcile.h"

/* An image being pulled, or whose pull failed and waits for its retry. */
struct rt_pull {
    struct rt_pulls *ps;
    struct rt_call pull_call, check_call;
    char *image;   /* NULL: the slot is free */
    bool active;   /* the pull is in flight */
    bool checking; /* an image inspect is in flight */
    bool used;     /* a replica of this pass wants it */
    unsigned failures;
    uint64_t retry_at_ms;
    uint64_t checked_ms;
    char message[RT_PULL_MSG_MAX];
};

struct rt_pulls {
    const struct rt_io *io;
    struct rt_pull slot[RT_PULLS_MAX];
};

static void note(struct rt_pulls *ps, enum rt_note level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note(struct rt_pulls *ps, enum rt_note level, const char *fmt, ...)
{
    char msg[RT_PULL_MSG_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ps->io->note(ps->io->ud, level, msg);
}

int rt_pulls_new(const struct rt_io *io, struct rt_pulls **ret)
{
    struct rt_pulls *ps = calloc(1, sizeof *ps);
    if (!ps)
        return MESH_ENOMEM;
    ps->io = io;
    for (size_t i = 0; i < RT_PULLS_MAX; i++)
        ps->slot[i].ps = ps;
    *ret = ps;
    return 0;
}

void rt_pulls_free(struct rt_pulls *ps)
{
    if (!ps)
        return;
    for (size_t i = 0; i < RT_PULLS_MAX; i++)
        free(ps->slot[i].image);
    free(ps);
}

struct rt_pull *rt_pulls_find(struct rt_pulls *ps, const char *image)
{
    for (size_t i = 0; i < RT_PULLS_MAX; i++)
        if (ps->slot[i].image && strcmp(ps->slot[i].image, image) == 0)
            return &ps->slot[i];
    return NULL;
}

static void pull_release(struct rt_pull *pl)
{
    if (pl->checking) {
        pl->used = false; /* freed when the inspect answers */
        return;
    }
    free(pl->image);
    pl->image = NULL;
    pl->active = pl->used = false;
    pl->failures = 0;
    pl->message[0] = '\0';
}

static void on_pull_progress(struct rt_call *c, const json_t *line)
{
    struct rt_pull *pl = c->data;
    const char *status = json_string_value(json_object_get(line, "status"));
    const char *progress = json_string_value(json_object_get(line, "progress"));
    if (status)
        snprintf(pl->message, sizeof pl->message, "pulling %s: %s%s%s", pl->image, status,
                 progress ? " " : "", progress ? progress : "");
}

static void on_pull_done(struct rt_call *c, const struct rt_result *res)
{
    struct rt_pull *pl = c->data;
    struct rt_pulls *ps = pl->ps;
    pl->active = false;
    if (res->status == MESH_ECLOSED) {
        pull_release(pl);
        return;
    }
    if (res->status == 0) {
        note(ps, RT_NOTE_INFO, "runtime: pulled image %s", pl->image);
        pull_release(pl); /* the image is there: the next pass creates */
        return;
    }
    pl->failures++;
    uint64_t wait = rt_backoff_ms(pl->failures, RT_PULL_RETRY_MS, RT_PULL_RETRY_MAX_MS);
    pl->retry_at_ms = ps->io->now_ms(ps->io->ud) + wait;
    snprintf(pl->message, sizeof pl->message, "image not found: %.200s (%.240s); next pull in %us",
             pl->image, res->msg ? res->msg : "", (unsigned)(wait / 1000));
    note(ps, RT_NOTE_WARN, "runtime: %s", pl->message);
}

static void pull_start(struct rt_pull *pl)
{
    struct rt_pulls *ps = pl->ps;
    char repo[RT_IMAGE_REF_MAX], tag[RT_IMAGE_REF_MAX];
    int rc = rt_image_ref(pl->image, repo, sizeof repo, tag, sizeof tag);
    if (rc == 0) {
        pl->pull_call =
            (struct rt_call){.done = on_pull_done, .progress = on_pull_progress, .data = pl};
        rc = ps->io->image_pull(ps->io->ud, repo, tag, &pl->pull_call);
    }
    if (rc < 0) {
        pl->failures++;
        pl->retry_at_ms = ps->io->now_ms(ps->io->ud) +
                          rt_backoff_ms(pl->failures, RT_PULL_RETRY_MS, RT_PULL_RETRY_MAX_MS);
        snprintf(pl->message, sizeof pl->message, "image %s: cannot pull: %s", pl->image,
                 mesh_strerror(rc));
        return;
    }
    pl->active = true;
    snprintf(pl->message, sizeof pl->message, "pulling %s", pl->image);
    note(ps, RT_NOTE_INFO, "runtime: pulling image %s", pl->image);
}

static void on_image_check(struct rt_call *c, const struct rt_result *res)
{
    struct rt_pull *pl = c->data;
    pl->checking = false;
    pl->checked_ms = pl->ps->io->now_ms(pl->ps->io->ud);
    if (res->status == 0 && !pl->active) {
        note(pl->ps, RT_NOTE_INFO, "runtime: image %s is there now", pl->image);
        pull_release(pl); /* loaded or imported meanwhile: the next pass creates */
    } else if (res->status == MESH_ECLOSED) {
        pull_release(pl);
    }
}

void rt_pull_wait(struct rt_pull *pl, uint64_t now)
{
    pl->used = true;
    if (!pl->active && now >= pl->retry_at_ms) {
        pull_start(pl);
        return;
    }
    if (pl->active || pl->checking || now - pl->checked_ms < RT_PULL_CHECK_MS)
        return;
    pl->check_call = (struct rt_call){.done = on_image_check, .data = pl};
    if (pl->ps->io->image_inspect(pl->ps->io->ud, pl->image, &pl->check_call) == 0)
        pl->checking = true;
}

struct rt_pull *rt_pulls_want(struct rt_pulls *ps, const char *image)
{
    struct rt_pull *pl = rt_pulls_find(ps, image);
    if (pl)
        return pl;
    for (size_t i = 0; i < RT_PULLS_MAX && !pl; i++)
        if (!ps->slot[i].image)
            pl = &ps->slot[i];
    if (!pl || !(pl->image = strdup(image)))
        return NULL;
    pl->used = true;
    pull_start(pl);
    return pl;
}

void rt_pulls_unmark(struct rt_pulls *ps)
{
    for (size_t i = 0; i < RT_PULLS_MAX; i++)
        ps->slot[i].used = false;
}

void rt_pulls_sweep(struct rt_pulls *ps)
{
    for (size_t i = 0; i < RT_PULLS_MAX; i++) {
        struct rt_pull *pl = &ps->slot[i];
        if (pl->image && !pl->used && !pl->active && !pl->checking)
            pull_release(pl);
    }
}

bool rt_pull_active(const struct rt_pull *pl)
{
    return pl->active;
}

const char *rt_pull_message(const struct rt_pull *pl)
{
    return pl->message;
}

unsigned rt_pull_failures(const struct rt_pull *pl)
{
    return pl->failures;
}

unsigned rt_pulls_count(const struct rt_pulls *ps)
{
    unsigned n = 0;
    for (size_t i = 0; i < RT_PULLS_MAX; i++)
        n += ps->slot[i].image != NULL;
    return n;
}
