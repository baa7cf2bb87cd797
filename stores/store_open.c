/*
 * store_open.c — open a built-in store named by one string, as operators
 * and command lines name them: a SQLite file path, "memory:", or a
 * PostgreSQL URL. Part of the plug-in layer (it calls the constructors);
 * lib/ never calls it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga/postgres.h"
#include "saga/store.h"

static int is_pg_url(const char *spec)
{
    return strncmp(spec, "postgres://", 11) == 0 ||
           strncmp(spec, "postgresql://", 13) == 0;
}

#ifdef SAGA_WITH_POSTGRES
/* Take our own "schema=NAME", "lease_ms=N" and "owner=ID" out of the
 * URL's query (libpq refuses parameters it does not know) and open the
 * rest. */
static int open_pg(saga_store **out, const char *spec)
{
    char url[2048], schema[64] = "", owner[128] = "";
    long lease_ms = 0;
    if (strlen(spec) >= sizeof url) {
        saga_open_errmsg_set("store URL too long");
        return SAGA_EINVAL;
    }
    strcpy(url, spec);
    char *q = strchr(url, '?');
    if (q != NULL) {
        char rest[2048] = "";
        char *save = NULL;
        for (char *kv = strtok_r(q + 1, "&", &save); kv != NULL;
             kv = strtok_r(NULL, "&", &save)) {
            if (strncmp(kv, "schema=", 7) == 0) {
                snprintf(schema, sizeof schema, "%s", kv + 7);
            } else if (strncmp(kv, "lease_ms=", 9) == 0) {
                char *end = NULL;
                lease_ms = strtol(kv + 9, &end, 10);
                if (end == kv + 9 || *end != '\0' || lease_ms < 1 ||
                    lease_ms > 3600000) {
                    saga_open_errmsg_set(
                        "bad lease_ms \"%.32s\" (1000..3600000)", kv + 9);
                    return SAGA_EINVAL;
                }
            } else if (strncmp(kv, "owner=", 6) == 0) {
                snprintf(owner, sizeof owner, "%s", kv + 6);
            } else {
                if (rest[0] != '\0')
                    strcat(rest, "&");
                strcat(rest, kv);
            }
        }
        /* rest is never longer than the query it came from. */
        size_t n = strlen(rest);
        if (n > 0) {
            q[0] = '?';
            memcpy(q + 1, rest, n + 1);
        } else {
            *q = '\0';
        }
    }
    saga_pg_options o = SAGA_PG_OPTIONS_INIT;
    if (schema[0] != '\0')
        o.schema = schema;
    o.lease_ms = (uint32_t)lease_ms;
    if (owner[0] != '\0')
        o.owner_id = owner;
    int rc = saga_store_postgres_open(out, url, &o);
    if (rc != SAGA_OK)
        saga_open_errmsg_set("%s", saga_store_postgres_open_errmsg());
    return rc;
}
#endif

int saga_store_open(saga_store **out, const char *spec)
{
    saga_open_errmsg_set("%s", "");
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (spec == NULL || spec[0] == '\0') {
        saga_open_errmsg_set("no store named");
        return SAGA_EINVAL;
    }
    if (strcmp(spec, "memory:") == 0)
        return saga_store_memory_new(out);
    if (is_pg_url(spec)) {
#ifdef SAGA_WITH_POSTGRES
        return open_pg(out, spec);
#else
        saga_open_errmsg_set(
            "this libsaga was built without the PostgreSQL store");
        return SAGA_EINVAL;
#endif
    }
    /* On failure the SQLite store left its reason in saga_open_errmsg(). */
    return saga_store_sqlite_open(out, spec, NULL);
}
