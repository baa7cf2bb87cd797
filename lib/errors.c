/*
 * errors.c — the error codes' texts and names (saga_strerror(),
 * saga_err_name(), from SAGA_ERRNO_MAP) and the reason the last constructor
 * on this thread failed (saga_open_errmsg()).
 */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

const char *saga_strerror(int err)
{
    switch (err) {
    case SAGA_OK:
        return "success";
#define XX(name, val, msg)                                                     \
    case SAGA_##name:                                                          \
        return msg;
        SAGA_ERRNO_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

const char *saga_err_name(int err)
{
    switch (err) {
    case SAGA_OK:
        return "SAGA_OK";
#define XX(name, val, msg)                                                     \
    case SAGA_##name:                                                          \
        return "SAGA_" #name;
        SAGA_ERRNO_MAP(XX)
#undef XX
    default:
        return "SAGA_UNKNOWN";
    }
}

/* The reason the last constructor on this thread failed: constructors have
 * no object yet to keep it in (saga_open_errmsg()). */
static _Thread_local char open_err[512];

const char *saga_open_errmsg(void) { return open_err; }

void saga_open_errmsg_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(open_err, sizeof open_err, fmt, ap);
    va_end(ap);
}
