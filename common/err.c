#include "err.h"

#include <stdio.h>
#include <string.h>

const char *mesh_strerror(int code)
{
    switch (code) {
    case MESH_OK:
        return "success";
#define MESH_ERR_CASE_(name, msg) \
    case MESH_E##name:            \
        return msg;
        MESH_ERR_MAP(MESH_ERR_CASE_)
#undef MESH_ERR_CASE_
    default:
        break;
    }
    if (code < 0 && code > MESH_ERR_FIRST_)
        return strerror(-code);
    return "unknown error";
}

int mesh_errf(struct mesh_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int mesh_err_wrapf(struct mesh_err *err, const char *fmt, ...)
{
    if (!err)
        return MESH_EINVAL;
    char prefix[MESH_ERRMSG_LEN];
    char old[MESH_ERRMSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Truncation keeps the outermost context, which is what a user reads first. */
    size_t plen = strlen(prefix);
    if (plen + 2 < sizeof err->msg) {
        memcpy(err->msg, prefix, plen);
        memcpy(err->msg + plen, ": ", 2);
        size_t room = sizeof err->msg - plen - 3;
        size_t olen = strnlen(old, room);
        memcpy(err->msg + plen + 2, old, olen);
        err->msg[plen + 2 + olen] = '\0';
    } else {
        memcpy(err->msg, prefix, sizeof err->msg - 1);
        err->msg[sizeof err->msg - 1] = '\0';
    }
    return err->code;
}
