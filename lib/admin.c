/*
 * admin.c — operating sagas (include/saga/admin.h): definition shapes in
 * the store's key-value space, operator actions with a reason and an actor,
 * and the control queue that lets another process (sagactl, the console)
 * act on a store that a running engine owns.
 *
 * Keys (all values msgpack):
 *   saga.defs            array of [name, version], in first-recorded order
 *   saga.def/NAME/VER    the shape: {name, version, deadline_ms, steps: [..]}
 *   saga.ctl.queue       array of pending requests
 *   saga.ctl.results     array of the last RESULTS_MAX answers
 * Every read-modify-write of these keys runs inside one store transaction;
 * the SQLite store opens it with BEGIN IMMEDIATE, so two processes never
 * both take the same request.
 */
#include <msgpack.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "data.h"
#include "engine_int.h"
#include "mpread.h"
#include "saga/admin.h"

#define KEY_DEFS "saga.defs"
#define KEY_QUEUE "saga.ctl.queue"
#define KEY_RESULTS "saga.ctl.results"
#define QUEUE_MAX 256
#define RESULTS_MAX 64
#define DEFS_MAX 1024
#define TEXT_MAX 512

/* ------------------------------------------------------------------------ */
/* Small msgpack helpers                                                    */

typedef struct blob {
    void *p;
    size_t len;
    int found;
} blob;

static void blob_cb(const void *buf, size_t len, void *arg)
{
    blob *b = arg;
    b->p = saga_malloc(len ? len : 1);
    if (b->p == NULL)
        return;
    memcpy(b->p, buf, len);
    b->len = len;
    b->found = 1;
}

/* kv_get into a copy. @return SAGA_OK (b->found says whether it exists),
 * SAGA_ESTORE or SAGA_ENOMEM. */
static int kv_read(saga_store *s, const char *key, blob *b)
{
    memset(b, 0, sizeof *b);
    int rc = s->kv_get(s, key, blob_cb, b);
    if (rc == SAGA_ENOTFOUND)
        return SAGA_OK;
    if (rc != SAGA_OK)
        return rc;
    return b->p == NULL ? SAGA_ENOMEM : SAGA_OK;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    if (s == NULL) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void pack_key(msgpack_packer *pk, const char *k) { pack_str(pk, k); }

/* A map entry: the key @p k and a string or integer value. */
static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    pack_key(pk, k);
    pack_str(pk, v);
}
static void pack_kv_int(msgpack_packer *pk, const char *k, int64_t v)
{
    pack_key(pk, k);
    msgpack_pack_int64(pk, v);
}

/* Pack a value with @p pack(@p arg) and kv_put it under @p key (in the
 * open transaction). @return kv_put's result, or SAGA_ENOMEM. */
typedef void (*pack_fn)(msgpack_packer *pk, const void *arg);
static int kv_put_packed(saga_store *s, const char *key, pack_fn pack,
                         const void *arg)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack(&pk, arg);
    int rc = sb.data ? s->kv_put(s, key, sb.data, sb.size) : SAGA_ENOMEM;
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* Pack a value with @p pack(@p arg) into @p sb (initialised here; the
 * caller destroys it). @return SAGA_OK or SAGA_ENOMEM. */
static int pack_into(msgpack_sbuffer *sb, pack_fn pack, const void *arg)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack(&pk, arg);
    return sb->data ? SAGA_OK : SAGA_ENOMEM;
}

/* Copy a STR item into @p out (truncated to @p size - 1). */
static void item_str(const saga__mp_item *it, char *out, size_t size)
{
    size_t n = it->type == SAGA__MP_STR ? it->len : 0;
    if (n >= size)
        n = size - 1;
    if (n)
        memcpy(out, it->ptr, n);
    out[n] = '\0';
}

static int item_is(const saga__mp_item *it, const char *key)
{
    return it->type == SAGA__MP_STR && strlen(key) == it->len &&
           memcmp(it->ptr, key, it->len) == 0;
}

/* ------------------------------------------------------------------------ */
/* Shapes                                                                   */

typedef struct shape_step {
    char *name, *service, *command, *comp_command;
    int kind, comp;
    uint32_t timeout_ms, max_attempts, comp_max_attempts;
} shape_step;

struct saga_shape {
    char *name;
    uint32_t version;
    uint64_t deadline_ms;
    shape_step *steps;
    size_t nsteps;
};

static void def_key(char *out, size_t size, const char *name, uint32_t v)
{
    snprintf(out, size, "saga.def/%s/%u", name, v);
}

static void pack_shape(msgpack_packer *pk, const void *arg)
{
    const saga_def *d = arg;
    msgpack_pack_map(pk, 4);
    pack_key(pk, "name");
    pack_str(pk, d->name);
    pack_key(pk, "version");
    msgpack_pack_uint32(pk, d->version);
    pack_key(pk, "deadline_ms");
    msgpack_pack_uint64(pk, d->deadline_ms);
    pack_key(pk, "steps");
    msgpack_pack_array(pk, (uint32_t)d->nsteps);
    for (size_t i = 0; i < d->nsteps; i++) {
        const saga__step *s = &d->steps[i];
        msgpack_pack_map(pk, 9);
        pack_key(pk, "name");
        pack_str(pk, s->name);
        pack_key(pk, "kind");
        msgpack_pack_int(pk, (int)s->opts.kind);
        pack_key(pk, "comp");
        if (saga__step_has_comp(s))
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        pack_key(pk, "service");
        pack_str(pk, s->opts.service);
        pack_key(pk, "command");
        pack_str(pk, s->opts.command);
        pack_key(pk, "comp_command");
        pack_str(pk, s->opts.comp_command);
        pack_key(pk, "timeout_ms");
        msgpack_pack_uint32(pk, s->opts.timeout_ms);
        pack_key(pk, "max_attempts");
        msgpack_pack_uint32(pk, s->opts.retry.max_attempts);
        pack_key(pk, "comp_max_attempts");
        msgpack_pack_uint32(pk, s->opts.comp_retry.max_attempts);
    }
}

typedef struct def_ref {
    char name[SAGA_NAME_MAX + 1];
    uint32_t version;
} def_ref;

typedef struct def_refs {
    const def_ref *refs;
    long n;
} def_refs;

static void pack_defs(msgpack_packer *pk, const void *arg)
{
    const def_refs *d = arg;
    msgpack_pack_array(pk, (uint32_t)d->n);
    for (long k = 0; k < d->n; k++) {
        msgpack_pack_array(pk, 2);
        pack_str(pk, d->refs[k].name);
        msgpack_pack_uint32(pk, d->refs[k].version);
    }
}

/* Parse saga.defs into @p out (up to @p max). @return count or -1. */
static long parse_defs(const blob *b, def_ref *out, size_t max)
{
    const uint8_t *p = b->p;
    size_t off = 0, n = 0;
    saga__mp_item it;
    if (!b->found)
        return 0;
    if (saga__mp_next(p, b->len, &off, &it) != 0 || it.type != SAGA__MP_ARRAY)
        return -1;
    for (uint32_t i = 0; i < it.len; i++) {
        saga__mp_item a, nm, v;
        if (saga__mp_next(p, b->len, &off, &a) != 0 ||
            a.type != SAGA__MP_ARRAY || a.len != 2 ||
            saga__mp_next(p, b->len, &off, &nm) != 0 ||
            nm.type != SAGA__MP_STR ||
            saga__mp_next(p, b->len, &off, &v) != 0 || v.type != SAGA__MP_UINT)
            return -1;
        if (n < max) {
            item_str(&nm, out[n].name, sizeof out[n].name);
            out[n].version = (uint32_t)v.u;
            n++;
        }
    }
    return (long)n;
}

/* Add @p def to the @p n entries of the index @p refs unless it is there.
 * @return the new count. */
static long add_ref(def_ref *refs, long n, const saga_def *def)
{
    long k = 0;
    while (k < n && !(refs[k].version == def->version &&
                      strcmp(refs[k].name, def->name) == 0))
        k++;
    if (k == n && n < DEFS_MAX) {
        snprintf(refs[n].name, sizeof refs[n].name, "%s", def->name);
        refs[n].version = def->version;
        n++;
    }
    return n;
}

/* Record the shapes of the registered definitions (at engine start). A
 * failure is logged: shapes serve the tools, never the engine itself. */
static int record_shapes(saga_engine *e)
{
    saga_store *s = e->store;
    def_ref *refs = saga_malloc(DEFS_MAX * sizeof *refs);
    if (refs == NULL)
        return SAGA_ENOMEM;
    int rc = s->begin(s);
    if (rc != SAGA_OK) {
        saga_free(refs);
        return rc;
    }
    blob b;
    rc = kv_read(s, KEY_DEFS, &b);
    long n = rc == SAGA_OK ? parse_defs(&b, refs, DEFS_MAX) : 0;
    saga_free(b.p);
    if (n < 0)
        n = 0; /* a malformed index is rebuilt from what runs now */
    for (saga__defent *d = e->defs; d && rc == SAGA_OK; d = d->next) {
        char key[SAGA_NAME_MAX + 32];
        def_key(key, sizeof key, d->def->name, d->def->version);
        rc = kv_put_packed(s, key, pack_shape, d->def);
        n = add_ref(refs, n, d->def);
    }
    if (rc == SAGA_OK) {
        def_refs all = {refs, n};
        rc = kv_put_packed(s, KEY_DEFS, pack_defs, &all);
    }
    saga_free(refs);
    if (rc == SAGA_OK)
        return s->commit(s);
    s->rollback(s);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Key-value writes on the loop (store interface version 13)                */

/* Whether the engine writes its keys (shapes, the control queue) on the
 * loop: read with kv_get_submit, written as a batch of key-value writes
 * only (submit_batch), each read-modify-write checked with SAGA_KV_EXPECT
 * against the value read. */
static int kv_on_loop(const saga_engine *e)
{
    const saga_store *s = e->store;
    return e->gc.async && s->version >= 13 && s->kv_get_submit != NULL;
}

/* A request in flight on the loop. Linked into the engine until it ends:
 * a batch in flight when the store closes is dropped without its
 * callback, so saga__admin_fini() frees what is left. */
typedef struct saga__kvop {
    saga__list link;
    saga_engine *e;
    int tries; /* reads again after SAGA_EBUSY (another writer) */
    void (*release)(struct saga__kvop *k); /* frees it */
} kvop;

#define KV_TRIES 8

static void kvop_link(saga_engine *e, kvop *k, void (*release)(kvop *k))
{
    k->e = e;
    k->tries = 0;
    k->release = release;
    if (e->kvops.next == NULL)
        saga__list_init(&e->kvops);
    saga__list_push_back(&e->kvops, &k->link);
}

static void kvop_unlink(kvop *k) { saga__list_remove(&k->link); }

/* Submit the @p n key-value writes @p kv as a batch of their own. */
static int kv_submit(saga_engine *e, const saga_kv_write *kv, size_t n,
                     saga_store_done_cb done, void *arg)
{
    saga_batch_writes w;
    memset(&w, 0, sizeof w);
    w.kv = kv;
    w.nkv = n;
    return e->store->submit_batch(e->store, &w, done, arg);
}

/* The shapes: the index read, merged with the engine's definitions, and
 * written with every shape, the index expected to be as read. */
typedef struct shapes_op {
    kvop k; /* first */
} shapes_op;

static void shapes_got(void *arg, int rc, const void *val, size_t len);

static void shapes_release(kvop *k) { saga_free(k); }

static void shapes_end(shapes_op *op, int rc)
{
    saga_engine *e = op->k.e;
    if (rc == SAGA_ESTORE && !e->closing) {
        /* The server away (refused, or the answer lost): tried again at
         * the control-queue polls. */
        e->shapes_due = 1;
        saga__log(e, SAGA_LOG_DEBUG, NULL, -1,
                  "definition shapes not recorded yet: %s",
                  e->store->errmsg(e->store));
    } else if (rc != SAGA_OK && !e->closing)
        saga__log(e, SAGA_LOG_WARN, NULL, -1,
                  "cannot record definition shapes (%s): %s", saga_err_name(rc),
                  e->store->errmsg(e->store));
    kvop_unlink(&op->k);
    shapes_release(&op->k);
}

static int shapes_read(shapes_op *op)
{
    saga_store *s = op->k.e->store;
    return s->kv_get_submit(s, KEY_DEFS, shapes_got, op);
}

static void shapes_done(void *arg, int rc)
{
    shapes_op *op = arg;
    if (rc == SAGA_EBUSY && !op->k.e->closing && ++op->k.tries < KV_TRIES &&
        (rc = shapes_read(op)) == SAGA_OK)
        return; /* another engine wrote the index meanwhile: read again */
    shapes_end(op, rc);
}

static int shapes_write(shapes_op *op, const blob *b)
{
    saga_engine *e = op->k.e;
    size_t ndefs = 0;
    for (saga__defent *d = e->defs; d; d = d->next)
        ndefs++;
    def_ref *refs = saga_malloc(DEFS_MAX * sizeof *refs);
    saga_kv_write *kv = saga_malloc((ndefs + 1) * sizeof *kv);
    msgpack_sbuffer *sb = saga_malloc((ndefs + 1) * sizeof *sb);
    char(*keys)[SAGA_NAME_MAX + 32] = saga_malloc(ndefs ? ndefs * sizeof *keys
                                                        : 1);
    int rc = refs && kv && sb && keys ? SAGA_OK : SAGA_ENOMEM;
    size_t npacked = 0;
    long n = rc == SAGA_OK ? parse_defs(b, refs, DEFS_MAX) : 0;
    if (n < 0)
        n = 0; /* a malformed index is rebuilt from what runs now */
    size_t i = 0;
    for (saga__defent *d = e->defs; d && rc == SAGA_OK; d = d->next, i++) {
        def_key(keys[i], sizeof keys[i], d->def->name, d->def->version);
        rc = pack_into(&sb[i], pack_shape, d->def);
        npacked++;
        saga_kv_write w = {keys[i], sb[i].data, sb[i].size, 0, NULL, 0};
        kv[i] = w;
        n = add_ref(refs, n, d->def);
    }
    if (rc == SAGA_OK) {
        def_refs all = {refs, n};
        rc = pack_into(&sb[ndefs], pack_defs, &all);
        npacked++;
        saga_kv_write w = {
            KEY_DEFS,       sb[ndefs].data,         sb[ndefs].size,
            SAGA_KV_EXPECT, b->found ? b->p : NULL, b->found ? b->len : 0};
        kv[ndefs] = w;
    }
    if (rc == SAGA_OK)
        rc = kv_submit(e, kv, ndefs + 1, shapes_done, op);
    for (size_t j = 0; j < npacked; j++)
        msgpack_sbuffer_destroy(&sb[j]);
    saga_free(refs);
    saga_free(kv);
    saga_free(sb);
    saga_free(keys);
    return rc;
}

static void shapes_got(void *arg, int rc, const void *val, size_t len)
{
    shapes_op *op = arg;
    if (op->k.e->closing) {
        shapes_end(op, SAGA_ECLOSED);
        return;
    }
    if (rc != SAGA_OK && rc != SAGA_ENOTFOUND) {
        shapes_end(op, rc);
        return;
    }
    blob b = {(void *)val, len, rc == SAGA_OK};
    rc = shapes_write(op, &b);
    if (rc != SAGA_OK)
        shapes_end(op, rc);
}

/* @return SAGA_OK (on its way), or the refusal. */
static int record_shapes_on_loop(saga_engine *e)
{
    shapes_op *op = saga_malloc(sizeof *op);
    if (op == NULL)
        return SAGA_ENOMEM;
    memset(op, 0, sizeof *op);
    kvop_link(e, &op->k, shapes_release);
    int rc = shapes_read(op);
    if (rc != SAGA_OK) {
        kvop_unlink(&op->k);
        saga_free(op);
    }
    return rc;
}

void saga_shape_free(saga_shape *sh)
{
    if (sh == NULL)
        return;
    for (size_t i = 0; i < sh->nsteps; i++) {
        saga_free(sh->steps[i].name);
        saga_free(sh->steps[i].service);
        saga_free(sh->steps[i].command);
        saga_free(sh->steps[i].comp_command);
    }
    saga_free(sh->steps);
    saga_free(sh->name);
    saga_free(sh);
}

static char *item_dup(const saga__mp_item *it)
{
    if (it->type != SAGA__MP_STR)
        return NULL;
    char *s = saga_malloc((size_t)it->len + 1);
    if (s != NULL) {
        memcpy(s, it->ptr, it->len);
        s[it->len] = '\0';
    }
    return s;
}

static int parse_step(const uint8_t *p, size_t len, size_t *off, shape_step *st)
{
    saga__mp_item m, k, v;
    if (saga__mp_next(p, len, off, &m) != 0 || m.type != SAGA__MP_MAP)
        return SAGA_ECORRUPT;
    for (uint32_t i = 0; i < m.len; i++) {
        if (saga__mp_next(p, len, off, &k) != 0 || k.type != SAGA__MP_STR)
            return SAGA_ECORRUPT;
        size_t save = *off;
        if (saga__mp_next(p, len, off, &v) != 0)
            return SAGA_ECORRUPT;
        char **sp = item_is(&k, "name")           ? &st->name
                    : item_is(&k, "service")      ? &st->service
                    : item_is(&k, "command")      ? &st->command
                    : item_is(&k, "comp_command") ? &st->comp_command
                                                  : NULL;
        if (sp != NULL) {
            if (v.type == SAGA__MP_STR && *sp == NULL &&
                (*sp = item_dup(&v)) == NULL)
                return SAGA_ENOMEM;
        } else if (item_is(&k, "kind") && v.type == SAGA__MP_UINT) {
            st->kind = (int)v.u;
        } else if (item_is(&k, "comp") && v.type == SAGA__MP_BOOL) {
            st->comp = (int)v.u;
        } else if (item_is(&k, "timeout_ms") && v.type == SAGA__MP_UINT) {
            st->timeout_ms = (uint32_t)v.u;
        } else if (item_is(&k, "max_attempts") && v.type == SAGA__MP_UINT) {
            st->max_attempts = (uint32_t)v.u;
        } else if (item_is(&k, "comp_max_attempts") &&
                   v.type == SAGA__MP_UINT) {
            st->comp_max_attempts = (uint32_t)v.u;
        } else {
            *off = save;
            if (saga__mp_skip(p, len, off, 8) != 0)
                return SAGA_ECORRUPT;
        }
    }
    return st->name != NULL ? SAGA_OK : SAGA_ECORRUPT;
}

static int parse_shape(const blob *b, saga_shape *sh)
{
    const uint8_t *p = b->p;
    size_t off = 0;
    saga__mp_item m, k, v;
    if (saga__mp_next(p, b->len, &off, &m) != 0 || m.type != SAGA__MP_MAP)
        return SAGA_ECORRUPT;
    for (uint32_t i = 0; i < m.len; i++) {
        if (saga__mp_next(p, b->len, &off, &k) != 0 || k.type != SAGA__MP_STR)
            return SAGA_ECORRUPT;
        size_t save = off;
        if (saga__mp_next(p, b->len, &off, &v) != 0)
            return SAGA_ECORRUPT;
        if (item_is(&k, "name") && v.type == SAGA__MP_STR && !sh->name) {
            if ((sh->name = item_dup(&v)) == NULL)
                return SAGA_ENOMEM;
        } else if (item_is(&k, "version") && v.type == SAGA__MP_UINT) {
            sh->version = (uint32_t)v.u;
        } else if (item_is(&k, "deadline_ms") && v.type == SAGA__MP_UINT) {
            sh->deadline_ms = v.u;
        } else if (item_is(&k, "steps") && v.type == SAGA__MP_ARRAY &&
                   sh->steps == NULL && v.len <= 4096) {
            sh->steps = saga_malloc((v.len ? v.len : 1) * sizeof *sh->steps);
            if (sh->steps == NULL)
                return SAGA_ENOMEM;
            memset(sh->steps, 0, (v.len ? v.len : 1) * sizeof *sh->steps);
            for (uint32_t j = 0; j < v.len; j++) {
                sh->nsteps = j + 1;
                int rc = parse_step(p, b->len, &off, &sh->steps[j]);
                if (rc != SAGA_OK)
                    return rc;
            }
        } else {
            off = save;
            if (saga__mp_skip(p, b->len, &off, 8) != 0)
                return SAGA_ECORRUPT;
        }
    }
    return sh->name != NULL && sh->steps != NULL ? SAGA_OK : SAGA_ECORRUPT;
}

int saga_shape_load(saga_shape **out, saga_store *s, const char *name,
                    uint32_t version)
{
    if (s == NULL || name == NULL || out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    blob b;
    int rc;
    if (version == 0) {
        def_ref *refs = saga_malloc(DEFS_MAX * sizeof *refs);
        if (refs == NULL)
            return SAGA_ENOMEM;
        rc = kv_read(s, KEY_DEFS, &b);
        long n = rc == SAGA_OK ? parse_defs(&b, refs, DEFS_MAX) : 0;
        saga_free(b.p);
        for (long k = 0; k < n; k++)
            if (strcmp(refs[k].name, name) == 0 && refs[k].version > version)
                version = refs[k].version;
        saga_free(refs);
        if (rc != SAGA_OK)
            return rc == SAGA_ENOMEM ? rc : SAGA_ESTORE;
        if (n < 0)
            return SAGA_ECORRUPT;
        if (version == 0)
            return SAGA_ENOTFOUND;
    }
    char key[SAGA_NAME_MAX + 32];
    def_key(key, sizeof key, name, version);
    rc = kv_read(s, key, &b);
    if (rc != SAGA_OK)
        return rc == SAGA_ENOMEM ? rc : SAGA_ESTORE;
    if (!b.found)
        return SAGA_ENOTFOUND;
    saga_shape *sh = saga_malloc(sizeof *sh);
    if (sh == NULL) {
        saga_free(b.p);
        return SAGA_ENOMEM;
    }
    memset(sh, 0, sizeof *sh);
    rc = parse_shape(&b, sh);
    saga_free(b.p);
    if (rc != SAGA_OK) {
        saga_shape_free(sh);
        return rc;
    }
    *out = sh;
    return SAGA_OK;
}

const char *saga_shape_name(const saga_shape *sh)
{
    return sh ? sh->name : NULL;
}
uint32_t saga_shape_version(const saga_shape *sh)
{
    return sh ? sh->version : 0;
}
uint64_t saga_shape_deadline(const saga_shape *sh)
{
    return sh ? sh->deadline_ms : 0;
}
size_t saga_shape_step_count(const saga_shape *sh)
{
    return sh ? sh->nsteps : 0;
}

int saga_shape_step(const saga_shape *sh, size_t i, saga_shape_step_info *out)
{
    if (sh == NULL || out == NULL || i >= sh->nsteps)
        return SAGA_ENOTFOUND;
    const shape_step *s = &sh->steps[i];
    out->name = s->name;
    out->kind = s->kind;
    out->has_compensation = s->comp;
    out->service = s->service;
    out->command = s->command;
    out->comp_command = s->comp_command;
    out->timeout_ms = s->timeout_ms;
    out->max_attempts = s->max_attempts;
    out->comp_max_attempts = s->comp_max_attempts;
    return SAGA_OK;
}

int saga_shape_list(saga_store *s, saga_shape_list_cb cb, void *arg)
{
    if (s == NULL || cb == NULL)
        return SAGA_EINVAL;
    def_ref *refs = saga_malloc(DEFS_MAX * sizeof *refs);
    if (refs == NULL)
        return SAGA_ENOMEM;
    blob b;
    int rc = kv_read(s, KEY_DEFS, &b);
    long n = rc == SAGA_OK ? parse_defs(&b, refs, DEFS_MAX) : 0;
    saga_free(b.p);
    if (rc == SAGA_OK && n < 0)
        rc = SAGA_ECORRUPT;
    for (long k = 0; rc == SAGA_OK && k < n; k++)
        if (cb(refs[k].name, refs[k].version, arg) != 0)
            break;
    saga_free(refs);
    return rc == SAGA_OK || rc == SAGA_ECORRUPT || rc == SAGA_ENOMEM
               ? rc
               : SAGA_ESTORE;
}

/* ------------------------------------------------------------------------ */
/* Operator actions on a running engine                                     */

const char *saga_op_name(saga_op_kind op)
{
    switch (op) {
    case SAGA_OP_RETRY:
        return "retry";
    case SAGA_OP_COMPENSATE:
        return "compensate";
    case SAGA_OP_RESOLVE:
        return "resolve";
    }
    return "unknown";
}

static void op_why(char *out, size_t size, const char *reason,
                   const char *actor)
{
    snprintf(out, size, "by %.100s: %.380s",
             actor && *actor ? actor : "operator",
             reason && *reason ? reason : "no reason given");
}

/* Apply operator action @p op to saga @p id, found as @p in (NULL: not in
 * memory, and not FAILED in the store) in state @p st. */
static int op_apply(saga_engine *e, saga_op_kind op, const char *id,
                    saga__inst *in, saga_state st, saga_state as,
                    const char *reason, const char *actor)
{
    int ok = in != NULL &&
             (op == SAGA_OP_COMPENSATE ? saga__op_can_compensate(in)
                                       : in->state == SAGA_STATE_FAILED);
    if (!ok && op == SAGA_OP_COMPENSATE)
        return saga__err(e, SAGA_EBUSY, "saga %s is %s%s", id,
                         saga_state_name(st),
                         st == SAGA_STATE_RUNNING ? " past its pivot" : "");
    if (!ok)
        return saga__err(e, SAGA_EBUSY, "saga %s is %s, not FAILED", id,
                         saga_state_name(st));
    char why[TEXT_MAX];
    op_why(why, sizeof why, reason, actor);
    switch (op) {
    case SAGA_OP_RETRY:
        saga__op_retry(e, in, why);
        break;
    case SAGA_OP_COMPENSATE:
        saga__op_compensate(e, in, why);
        break;
    case SAGA_OP_RESOLVE:
        saga__op_resolve(e, in, as, why);
        break;
    }
    return SAGA_OK;
}

static int op_run(saga_engine *e, saga_op_kind op, const char *saga_id,
                  saga_state as, const char *reason, const char *actor)
{
    if (e == NULL || saga_id == NULL)
        return SAGA_EINVAL;
    saga__inst *in;
    saga_state st;
    int rc = saga__op_find(e, saga_id, &in, &st);
    if (rc != SAGA_OK)
        return rc;
    return op_apply(e, op, saga_id, in, st, as, reason, actor);
}

int saga_retry_op(saga_engine *e, const char *saga_id, const char *reason,
                  const char *actor)
{
    return op_run(e, SAGA_OP_RETRY, saga_id, SAGA_STATE_FAILED, reason, actor);
}

int saga_compensate(saga_engine *e, const char *saga_id, const char *reason,
                    const char *actor)
{
    return op_run(e, SAGA_OP_COMPENSATE, saga_id, SAGA_STATE_FAILED, reason,
                  actor);
}

int saga_resolve(saga_engine *e, const char *saga_id, saga_state as,
                 const char *reason, const char *actor)
{
    if (as != SAGA_STATE_COMPLETED && as != SAGA_STATE_COMPENSATED)
        return SAGA_EINVAL;
    return op_run(e, SAGA_OP_RESOLVE, saga_id, as, reason, actor);
}

/* saga_op_async(): the saga read on the loop (loaded if FAILED), then the
 * action applied as saga_retry_op() and the others would. */
typedef struct op_async {
    saga_op_kind op;
    saga_state as;
    char id[SAGA_ID_SIZE];
    char reason[TEXT_MAX];
    char actor[128];
    saga_op_cb cb;
    void *arg;
} op_async;

static void op_loaded(saga_engine *e, int rc, saga__inst *in, saga_state st,
                      void *arg)
{
    op_async *q = arg;
    if (rc == SAGA_OK && e->closing)
        rc = saga__err(e, SAGA_ECLOSED, "the engine is closing");
    if (rc == SAGA_OK)
        rc = op_apply(e, q->op, q->id, in, st, q->as, q->reason, q->actor);
    q->cb(e, rc, q->id, q->arg);
    saga_free(q);
}

int saga_op_async(saga_engine *e, const saga_op_request *req, saga_op_cb cb,
                  void *arg)
{
    if (e == NULL || req == NULL || req->saga_id == NULL || cb == NULL ||
        (req->op != SAGA_OP_RETRY && req->op != SAGA_OP_COMPENSATE &&
         req->op != SAGA_OP_RESOLVE) ||
        (req->op == SAGA_OP_RESOLVE && req->as != SAGA_STATE_COMPLETED &&
         req->as != SAGA_STATE_COMPENSATED))
        return SAGA_EINVAL;
    if (e->closing)
        return saga__err(e, SAGA_ECLOSED, "the engine is closing");
    if (!saga__loads_on_loop(e))
        return saga__err(e, SAGA_EINVAL,
                         "saga_op_async(): the store does not read on the "
                         "loop (store interface version 13): use "
                         "saga_retry_op(), saga_compensate(), saga_resolve()");
    if (strnlen(req->saga_id, SAGA_ID_SIZE) > SAGA_ID_LEN)
        return saga__err(e, SAGA_ENOTFOUND, "no saga %.40s", req->saga_id);
    op_async *q = saga_malloc(sizeof *q);
    if (q == NULL)
        return saga__err(e, SAGA_ENOMEM, "out of memory");
    memset(q, 0, sizeof *q);
    q->op = req->op;
    q->as = req->as;
    snprintf(q->id, sizeof q->id, "%s", req->saga_id);
    snprintf(q->reason, sizeof q->reason, "%s", req->reason ? req->reason : "");
    snprintf(q->actor, sizeof q->actor, "%s", req->actor ? req->actor : "");
    q->cb = cb;
    q->arg = arg;
    int rc = saga__load_submit(e, q->id, op_loaded, q);
    if (rc != SAGA_OK)
        saga_free(q);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The control queue                                                        */

typedef struct ctl_req {
    char id[SAGA_ID_SIZE];
    int op, as;
    char saga[SAGA_NAME_MAX + 1];
    char reason[TEXT_MAX];
    char actor[128];
    int64_t at;
} ctl_req;

typedef struct ctl_res {
    char id[SAGA_ID_SIZE];
    int rc;
    char msg[TEXT_MAX];
} ctl_res;

static int parse_map_fields(const uint8_t *p, size_t len, size_t *off,
                            ctl_req *q, ctl_res *r)
{
    saga__mp_item m, k, v;
    if (saga__mp_next(p, len, off, &m) != 0 || m.type != SAGA__MP_MAP)
        return -1;
    for (uint32_t i = 0; i < m.len; i++) {
        if (saga__mp_next(p, len, off, &k) != 0 || k.type != SAGA__MP_STR)
            return -1;
        size_t save = *off;
        if (saga__mp_next(p, len, off, &v) != 0)
            return -1;
        int64_t iv = v.type == SAGA__MP_UINT  ? (int64_t)v.u
                     : v.type == SAGA__MP_INT ? v.i
                                              : 0;
        if (item_is(&k, "id"))
            item_str(&v, q ? q->id : r->id, SAGA_ID_SIZE);
        else if (q && item_is(&k, "op"))
            q->op = (int)iv;
        else if (q && item_is(&k, "as"))
            q->as = (int)iv;
        else if (q && item_is(&k, "saga"))
            item_str(&v, q->saga, sizeof q->saga);
        else if (q && item_is(&k, "reason"))
            item_str(&v, q->reason, sizeof q->reason);
        else if (q && item_is(&k, "actor"))
            item_str(&v, q->actor, sizeof q->actor);
        else if (q && item_is(&k, "at"))
            q->at = iv;
        else if (r && item_is(&k, "rc"))
            r->rc = (int)iv;
        else if (r && item_is(&k, "msg"))
            item_str(&v, r->msg, sizeof r->msg);
        else {
            *off = save;
            if (saga__mp_skip(p, len, off, 8) != 0)
                return -1;
        }
    }
    return 0;
}

/* Parse an array of requests or results. @return count, or -1. */
static long parse_list(const blob *b, ctl_req *qs, ctl_res *rs, size_t max)
{
    const uint8_t *p = b->p;
    size_t off = 0, n = 0;
    saga__mp_item a;
    if (!b->found)
        return 0;
    if (saga__mp_next(p, b->len, &off, &a) != 0 || a.type != SAGA__MP_ARRAY)
        return -1;
    for (uint32_t i = 0; i < a.len; i++) {
        ctl_req q;
        ctl_res r;
        memset(&q, 0, sizeof q);
        memset(&r, 0, sizeof r);
        if (parse_map_fields(p, b->len, &off, qs ? &q : NULL, rs ? &r : NULL) !=
            0)
            return -1;
        if (n < max) {
            if (qs)
                qs[n] = q;
            else
                rs[n] = r;
            n++;
        }
    }
    return (long)n;
}

typedef struct req_list {
    const ctl_req *qs;
    const ctl_res *rs;
    size_t n;
} req_list;

/* The queue (@p arg's qs) or the results (its rs) as a msgpack array. */
static void pack_list(msgpack_packer *pk, const void *arg)
{
    const req_list *l = arg;
    msgpack_pack_array(pk, (uint32_t)l->n);
    for (size_t i = 0; i < l->n; i++) {
        if (l->qs != NULL) {
            const ctl_req *q = &l->qs[i];
            msgpack_pack_map(pk, 7);
            pack_kv_str(pk, "id", q->id);
            pack_kv_int(pk, "op", q->op);
            pack_kv_int(pk, "as", q->as);
            pack_kv_str(pk, "saga", q->saga);
            pack_kv_str(pk, "reason", q->reason);
            pack_kv_str(pk, "actor", q->actor);
            pack_kv_int(pk, "at", q->at);
        } else {
            const ctl_res *r = &l->rs[i];
            msgpack_pack_map(pk, 3);
            pack_kv_str(pk, "id", r->id);
            pack_kv_int(pk, "rc", r->rc);
            pack_kv_str(pk, "msg", r->msg);
        }
    }
}

static int write_reqs(saga_store *s, const ctl_req *qs, size_t n)
{
    static const ctl_req none[1];
    req_list l = {qs != NULL ? qs : none, NULL, n};
    return kv_put_packed(s, KEY_QUEUE, pack_list, &l);
}

/* Append answers to saga.ctl.results (keeping the last RESULTS_MAX), in
 * the open transaction. */
static int append_results(saga_store *s, const ctl_res *add, size_t nadd)
{
    ctl_res *rs = saga_malloc((RESULTS_MAX + nadd) * sizeof *rs);
    if (rs == NULL)
        return SAGA_ENOMEM;
    blob b;
    int rc = kv_read(s, KEY_RESULTS, &b);
    long n = rc == SAGA_OK ? parse_list(&b, NULL, rs, RESULTS_MAX) : 0;
    saga_free(b.p);
    if (n < 0)
        n = 0;
    memcpy(rs + n, add, nadd * sizeof *rs);
    size_t total = (size_t)n + nadd;
    size_t first = total > RESULTS_MAX ? total - RESULTS_MAX : 0;
    if (rc == SAGA_OK) {
        req_list l = {NULL, rs + first, total - first};
        rc = kv_put_packed(s, KEY_RESULTS, pack_list, &l);
    }
    saga_free(rs);
    return rc;
}

/* Take every queued request (one transaction). @return count, or < 0. */
static long take_all(saga_store *s, ctl_req *qs, size_t max)
{
    blob b;
    int rc = kv_read(s, KEY_QUEUE, &b);
    if (rc != SAGA_OK)
        return rc;
    if (!b.found || b.len <= 1) { /* absent, or the empty array 0x90 */
        saga_free(b.p);
        return 0;
    }
    saga_free(b.p);
    rc = s->begin(s);
    if (rc != SAGA_OK)
        return rc;
    rc = kv_read(s, KEY_QUEUE, &b);
    long n = rc == SAGA_OK ? parse_list(&b, qs, NULL, max) : rc;
    saga_free(b.p);
    if (n < 0)
        n = 0; /* a malformed queue is dropped, not retried forever */
    if (rc == SAGA_OK)
        rc = write_reqs(s, NULL, 0);
    if (rc == SAGA_OK)
        rc = s->commit(s);
    else
        s->rollback(s);
    return rc == SAGA_OK ? n : rc;
}

typedef struct saga__admin {
    uv_timer_t timer;
    saga_engine *e;     /* NULL once the engine closed */
    int busy;           /* a kv_get_submit() read is in flight */
    struct ctl_op *ctl; /* requests being taken and applied on the loop */
    int timer_closed;   /* the last of the two frees this */
} saga__admin;

static int apply_on_engine(saga_engine *e, const ctl_req *q)
{
    switch (q->op) {
    case SAGA_OP_RETRY:
        return saga_retry_op(e, q->saga, q->reason, q->actor);
    case SAGA_OP_COMPENSATE:
        return saga_compensate(e, q->saga, q->reason, q->actor);
    case SAGA_OP_RESOLVE:
        return saga_resolve(e, q->saga, (saga_state)q->as, q->reason, q->actor);
    }
    return saga__err(e, SAGA_EINVAL, "unknown operator action %d", q->op);
}

static void control_poll(saga_engine *e)
{
    saga_store *s = e->store;
    ctl_req *qs = saga_malloc(QUEUE_MAX * sizeof *qs);
    ctl_res *rs = saga_malloc(QUEUE_MAX * sizeof *rs);
    long n = qs && rs ? take_all(s, qs, QUEUE_MAX) : 0;
    if (n < 0)
        saga__log(e, SAGA_LOG_WARN, NULL, -1,
                  "reading the control queue failed: %s", s->errmsg(s));
    for (long i = 0; i < n; i++) {
        e->errmsg[0] = '\0';
        int rc = apply_on_engine(e, &qs[i]);
        memcpy(rs[i].id, qs[i].id, SAGA_ID_SIZE);
        rs[i].rc = rc;
        snprintf(rs[i].msg, sizeof rs[i].msg, "%s",
                 rc == SAGA_OK ? "" : e->errmsg);
        saga__log(e, rc == SAGA_OK ? SAGA_LOG_INFO : SAGA_LOG_WARN, qs[i].saga,
                  -1, "operator %s by %s (%s): %s",
                  saga_op_name((saga_op_kind)qs[i].op),
                  qs[i].actor[0] ? qs[i].actor : "operator", qs[i].reason,
                  rc == SAGA_OK ? "applied" : e->errmsg);
    }
    if (n > 0) {
        /* The transitions are durable before the answer says so. */
        saga_engine_flush(e);
        int rc = s->begin(s);
        if (rc == SAGA_OK) {
            rc = append_results(s, rs, (size_t)n);
            if (rc == SAGA_OK)
                rc = s->commit(s);
            else
                s->rollback(s);
        }
        if (rc != SAGA_OK)
            saga__log(e, SAGA_LOG_WARN, NULL, -1,
                      "writing operator results failed: %s", s->errmsg(s));
    }
    saga_free(qs);
    saga_free(rs);
}

/* The control queue on the loop (store version 13). The queue read by the
 * poll is taken with a batch that empties it, expecting it as read (an
 * operator's request queued meanwhile fails the take: the next poll reads
 * again); each request is then read (and loaded, if FAILED) on the loop
 * and applied; once the batch with their transitions committed (an effect
 * of the engine's open batch), the answers are added to the results with
 * a batch that expects them as read (reading again if another engine
 * wrote them meanwhile). */
typedef struct ctl_op {
    kvop k;      /* first */
    void *queue; /* the queue as read: what the take expects */
    size_t qlen;
    ctl_req *qs;
    ctl_res *rs;
    long n, i;
    struct ctl_check *cks; /* one per request: the reads back */
    long checks;           /* reads back not answered yet */
} ctl_op;

static void ctl_release(kvop *k)
{
    ctl_op *op = (ctl_op *)k;
    saga_free(op->queue);
    saga_free(op->qs);
    saga_free(op->rs);
    saga_free(op->cks);
    saga_free(op);
}

static void ctl_end(ctl_op *op, int rc, const char *what)
{
    saga_engine *e = op->k.e;
    if (rc != SAGA_OK && !e->closing)
        saga__log(e, rc == SAGA_EBUSY ? SAGA_LOG_DEBUG : SAGA_LOG_WARN, NULL,
                  -1, "%s: %s", what,
                  rc == SAGA_EBUSY ? "changed meanwhile, next poll"
                                   : e->store->errmsg(e->store));
    if (e->admin != NULL)
        e->admin->ctl = NULL;
    kvop_unlink(&op->k);
    ctl_release(&op->k);
}

static void ctl_results_got(void *arg, int rc, const void *val, size_t len);

static int ctl_results_read(ctl_op *op)
{
    saga_store *s = op->k.e->store;
    return s->kv_get_submit(s, KEY_RESULTS, ctl_results_got, op);
}

static void ctl_results_done(void *arg, int rc)
{
    ctl_op *op = arg;
    if (rc == SAGA_EBUSY && !op->k.e->closing && ++op->k.tries < KV_TRIES &&
        (rc = ctl_results_read(op)) == SAGA_OK)
        return;
    ctl_end(op, rc, "writing operator results");
}

static void ctl_results_got(void *arg, int rc, const void *val, size_t len)
{
    ctl_op *op = arg;
    saga_engine *e = op->k.e;
    if (e->closing || (rc != SAGA_OK && rc != SAGA_ENOTFOUND)) {
        ctl_end(op, e->closing ? SAGA_ECLOSED : rc, "reading operator results");
        return;
    }
    blob b = {(void *)val, len, rc == SAGA_OK};
    ctl_res *rs = saga_malloc((RESULTS_MAX + (size_t)op->n) * sizeof *rs);
    if (rs == NULL) {
        ctl_end(op, SAGA_ENOMEM, "writing operator results");
        return;
    }
    long n = parse_list(&b, NULL, rs, RESULTS_MAX);
    if (n < 0)
        n = 0;
    memcpy(rs + n, op->rs, (size_t)op->n * sizeof *rs);
    size_t total = (size_t)n + (size_t)op->n;
    size_t first = total > RESULTS_MAX ? total - RESULTS_MAX : 0;
    req_list l = {NULL, rs + first, total - first};
    msgpack_sbuffer sb;
    rc = pack_into(&sb, pack_list, &l);
    if (rc == SAGA_OK) {
        saga_kv_write w = {
            KEY_RESULTS,          sb.data,          sb.size, SAGA_KV_EXPECT,
            b.found ? val : NULL, b.found ? len : 0};
        rc = kv_submit(e, &w, 1, ctl_results_done, op);
    }
    msgpack_sbuffer_destroy(&sb);
    saga_free(rs);
    if (rc != SAGA_OK)
        ctl_end(op, rc, "writing operator results");
}

/* One applied request's saga read back after the commit. */
typedef struct ctl_check {
    ctl_op *op;
    long i;
} ctl_check;

static void ctl_checked(void *arg, int rc, const saga_record *rec)
{
    ctl_check *c = arg;
    ctl_op *op = c->op;
    saga_engine *e = op->k.e;
    ctl_res *r = &op->rs[c->i];
    if (rc == SAGA_OK && rec->state == SAGA_STATE_FAILED) {
        /* Dropped with the batch (this engine lost its lease meanwhile,
         * and the saga with it): not applied. */
        r->rc = SAGA_ESTORE;
        snprintf(r->msg, sizeof r->msg,
                 "not applied: the engine lost saga %s before its commit; "
                 "ask again",
                 rec->id);
    } else if (rc != SAGA_OK && rc != SAGA_ENOTFOUND) {
        r->rc = SAGA_ESTORE;
        snprintf(r->msg, sizeof r->msg,
                 "applied, but its commit could not be confirmed: %s",
                 e->store->errmsg(e->store));
    }
    if (--op->checks > 0)
        return;
    rc = e->closing ? SAGA_ECLOSED : ctl_results_read(op);
    if (rc != SAGA_OK)
        ctl_end(op, rc, "writing operator results");
}

/* The engine's batch with the requests' transitions was released: each
 * applied request's saga is read back (a saga that the engine lost with
 * its lease was dropped from that batch, and is still FAILED), then the
 * answers are written. */
static void ctl_durable(saga_engine *e, const char *id, saga_state st,
                        void *arg)
{
    (void)id, (void)st;
    ctl_op *op = arg;
    if (e->closing) {
        ctl_end(op, SAGA_ECLOSED, "writing operator results");
        return;
    }
    op->checks = 1; /* held until every read went out */
    saga_store *s = e->store;
    for (long i = 0; i < op->n; i++) {
        if (op->rs[i].rc != SAGA_OK)
            continue;
        op->cks[i].op = op;
        op->cks[i].i = i;
        if (s->saga_get_submit(s, op->qs[i].saga, ctl_checked, &op->cks[i]) ==
            SAGA_OK) {
            op->checks++;
        } else {
            op->rs[i].rc = SAGA_ESTORE;
            snprintf(op->rs[i].msg, sizeof op->rs[i].msg,
                     "applied, but its commit could not be confirmed: %s",
                     s->errmsg(s));
        }
    }
    if (--op->checks > 0)
        return;
    int rc = ctl_results_read(op);
    if (rc != SAGA_OK)
        ctl_end(op, rc, "writing operator results");
}

static void ctl_next(ctl_op *op);

static void ctl_record(ctl_op *op, int rc)
{
    saga_engine *e = op->k.e;
    const ctl_req *q = &op->qs[op->i];
    ctl_res *r = &op->rs[op->i];
    memcpy(r->id, q->id, SAGA_ID_SIZE);
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", rc == SAGA_OK ? "" : e->errmsg);
    saga__log(e, rc == SAGA_OK ? SAGA_LOG_INFO : SAGA_LOG_WARN, q->saga, -1,
              "operator %s by %s (%s): %s", saga_op_name((saga_op_kind)q->op),
              q->actor[0] ? q->actor : "operator", q->reason,
              rc == SAGA_OK ? "applied" : e->errmsg);
    op->i++;
}

static void ctl_loaded(saga_engine *e, int rc, saga__inst *in, saga_state st,
                       void *arg)
{
    ctl_op *op = arg;
    if (e->closing) {
        ctl_end(op, SAGA_ECLOSED, "operator request");
        return;
    }
    const ctl_req *q = &op->qs[op->i];
    if (rc == SAGA_OK)
        rc = op_apply(e, (saga_op_kind)q->op, q->saga, in, st,
                      (saga_state)q->as, q->reason, q->actor);
    ctl_record(op, rc);
    ctl_next(op);
}

/* Apply the requests one by one (each read on the loop), then answer once
 * their transitions are durable. */
static void ctl_next(ctl_op *op)
{
    saga_engine *e = op->k.e;
    while (op->i < op->n) {
        const ctl_req *q = &op->qs[op->i];
        e->errmsg[0] = '\0';
        int rc;
        if (q->op != SAGA_OP_RETRY && q->op != SAGA_OP_COMPENSATE &&
            q->op != SAGA_OP_RESOLVE)
            rc = saga__err(e, SAGA_EINVAL, "unknown operator action %d", q->op);
        else if (q->op == SAGA_OP_RESOLVE && q->as != SAGA_STATE_COMPLETED &&
                 q->as != SAGA_STATE_COMPENSATED)
            rc = saga__err(e, SAGA_EINVAL, "bad resolve state %d", q->as);
        else if ((rc = saga__load_submit(e, q->saga, ctl_loaded, op)) ==
                 SAGA_OK)
            return; /* ctl_loaded goes on */
        ctl_record(op, rc);
    }
    saga__effect f;
    memset(&f, 0, sizeof f);
    f.kind = EFF_DONE_CB;
    f.done_cb = ctl_durable;
    f.arg = op;
    if (saga__push_effect(e, &f) != SAGA_OK)
        ctl_end(op, SAGA_ENOMEM, "writing operator results");
}

static void ctl_taken(void *arg, int rc)
{
    ctl_op *op = arg;
    saga_engine *e = op->k.e;
    if (rc != SAGA_OK || e->closing) {
        ctl_end(op, e->closing ? SAGA_ECLOSED : rc, "taking operator requests");
        return;
    }
    blob b = {op->queue, op->qlen, 1};
    op->n = parse_list(&b, op->qs, NULL, QUEUE_MAX);
    if (op->n < 0)
        op->n = 0; /* a malformed queue is dropped, not retried forever */
    ctl_next(op);
}

/* Take the queue @p val as read by the poll. */
static void control_take_on_loop(saga_engine *e, const void *val, size_t len)
{
    ctl_op *op = saga_malloc(sizeof *op);
    if (op == NULL)
        return;
    memset(op, 0, sizeof *op);
    op->queue = saga_malloc(len);
    op->qs = saga_malloc(QUEUE_MAX * sizeof *op->qs);
    op->rs = saga_malloc(QUEUE_MAX * sizeof *op->rs);
    op->cks = saga_malloc(QUEUE_MAX * sizeof *op->cks);
    kvop_link(e, &op->k, ctl_release);
    if (e->admin != NULL)
        e->admin->ctl = op;
    if (op->queue == NULL || op->qs == NULL || op->rs == NULL ||
        op->cks == NULL) {
        ctl_end(op, SAGA_ENOMEM, "taking operator requests");
        return;
    }
    memcpy(op->queue, val, len);
    op->qlen = len;
    msgpack_sbuffer sb;
    static const ctl_req none[1];
    req_list l = {none, NULL, 0};
    int rc = pack_into(&sb, pack_list, &l);
    if (rc == SAGA_OK) {
        saga_kv_write w = {KEY_QUEUE,      sb.data,   sb.size,
                           SAGA_KV_EXPECT, op->queue, op->qlen};
        rc = kv_submit(e, &w, 1, ctl_taken, op);
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc != SAGA_OK)
        ctl_end(op, rc, "taking operator requests");
}

/* After the store closed: the requests whose batch it dropped. */
void saga__admin_fini(saga_engine *e)
{
    if (e->kvops.next == NULL)
        return;
    while (e->kvops.next != &e->kvops) {
        kvop *k = SAGA__CONTAINER(e->kvops.next, kvop, link);
        kvop_unlink(k);
        k->release(k);
    }
}

/* The read of the queue on the loop came back: only a queue that holds
 * requests (an operator acted: rare) is taken, on the loop when the store
 * takes key-value writes in a batch (version 13), else with the
 * synchronous slots. An empty one, the common case, never waited for the
 * server. */
static void control_got(void *arg, int rc, const void *val, size_t len)
{
    saga__admin *a = arg;
    a->busy = 0;
    if (a->e == NULL) {
        if (a->timer_closed)
            saga_free(a);
        return;
    }
    saga_engine *e = a->e;
    if (rc == SAGA_OK && len > 1 && !e->closing) { /* 0x90: empty array */
        if (kv_on_loop(e))
            control_take_on_loop(e, val, len);
        else
            control_poll(e);
    } else if (rc != SAGA_OK && rc != SAGA_ENOTFOUND)
        saga__log(e, SAGA_LOG_DEBUG, NULL, -1,
                  "reading the control queue failed: %s",
                  e->store->errmsg(e->store));
}

static void control_timer_cb(uv_timer_t *t)
{
    saga__admin *a = t->data;
    saga_engine *e = a->e;
    if (e->closing)
        return;
    if (e->shapes_due) {
        e->shapes_due = 0;
        if (record_shapes_on_loop(e) != SAGA_OK)
            e->shapes_due = 1;
    }
    if (a->busy || a->ctl != NULL)
        return;
    saga_store *s = e->store;
    if (s->version >= 7 && s->kv_get_submit != NULL) {
        /* Refused (not connected, reconnecting): the next tick asks. */
        if (s->kv_get_submit(s, KEY_QUEUE, control_got, a) == SAGA_OK)
            a->busy = 1;
        return;
    }
    control_poll(e);
}

static void admin_closed(uv_handle_t *h)
{
    saga__admin *a = h->data;
    a->timer_closed = 1;
    if (!a->busy)
        saga_free(a);
}

void saga__admin_shapes(saga_engine *e, int after_lease)
{
    if (after_lease != kv_on_loop(e))
        return;
    int rc = after_lease ? record_shapes_on_loop(e) : record_shapes(e);
    if (rc == SAGA_ESTORE && kv_on_loop(e)) {
        e->shapes_due = 1; /* refused (reconnecting): the polls try again */
        return;
    }
    if (rc != SAGA_OK)
        saga__log(e, SAGA_LOG_WARN, NULL, -1,
                  "cannot record definition shapes (%s): %s", saga_err_name(rc),
                  e->store->errmsg(e->store));
}

void saga__admin_start(saga_engine *e)
{
    if (e->control_poll_ms == 0 || e->admin != NULL)
        return;
    saga__admin *a = saga_malloc(sizeof *a);
    if (a == NULL) {
        saga__log(e, SAGA_LOG_ERROR, NULL, -1,
                  "out of memory: operator requests are not polled");
        return;
    }
    memset(a, 0, sizeof *a);
    a->e = e;
    uv_timer_init(e->loop, &a->timer);
    a->timer.data = a;
    /* Polling alone must not keep a loop alive (as housekeeping). */
    uv_unref((uv_handle_t *)&a->timer);
    uv_timer_start(&a->timer, control_timer_cb, e->control_poll_ms,
                   e->control_poll_ms);
    e->admin = a;
}

void saga__admin_close(saga_engine *e)
{
    if (e->admin == NULL)
        return;
    saga__admin *a = e->admin;
    e->admin = NULL;
    a->e = NULL; /* a read in flight frees it when it comes back */
    uv_timer_stop(&a->timer);
    uv_close((uv_handle_t *)&a->timer, admin_closed);
}

int saga_engine_set_control_poll(saga_engine *e, uint32_t interval_ms)
{
    if (e == NULL || e->closing)
        return SAGA_EINVAL;
    e->control_poll_ms = interval_ms;
    if (e->admin != NULL) {
        if (interval_ms == 0)
            uv_timer_stop(&e->admin->timer);
        else
            uv_timer_start(&e->admin->timer, control_timer_cb, interval_ms,
                           interval_ms);
    } else if (e->started && interval_ms != 0) {
        saga__admin_start(e);
    }
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Applying a request to the stored saga (nothing runs on the store)        */

typedef struct rec_copy {
    char id[SAGA_ID_SIZE];
    char def_name[SAGA_NAME_MAX + 1];
    saga_record r;
    int found;
} rec_copy;

static int rec_copy_cb(const saga_record *r, void *arg)
{
    rec_copy *c = arg;
    c->r = *r;
    snprintf(c->id, sizeof c->id, "%s", r->id);
    snprintf(c->def_name, sizeof c->def_name, "%s", r->def_name);
    c->r.id = c->id;
    c->r.def_name = c->def_name;
    /* Written back without SAGA_PUT_DATA: data and key stay as stored. */
    c->r.idem_key = NULL;
    c->r.error = NULL;
    c->r.data = NULL;
    c->r.data_len = 0;
    c->found = 1;
    return 0;
}

static int max_seq_cb(const saga_journal_entry *j, void *arg)
{
    uint32_t *m = arg;
    if (j->seq > *m)
        *m = j->seq;
    return 0;
}

static int journal_add(saga_store *s, const char *id, uint32_t *seq,
                       saga_journal_kind ev, int64_t now, const char *err)
{
    saga_journal_entry j;
    memset(&j, 0, sizeof j);
    j.saga_id = id;
    j.seq = ++*seq;
    j.kind = ev;
    j.step = -1;
    j.at_ms = now;
    j.error = err;
    return s->journal_append(s, &j);
}

#define FAILF(code, ...)                                                       \
    do {                                                                       \
        snprintf(msg, msg_size, __VA_ARGS__);                                  \
        return (code);                                                         \
    } while (0)

/* In the caller's transaction. */
static int apply_on_store(saga_store *s, const ctl_req *q, int64_t now,
                          char *msg, size_t msg_size)
{
    rec_copy c;
    memset(&c, 0, sizeof c);
    int rc = s->saga_get(s, q->saga, rec_copy_cb, &c);
    if (rc == SAGA_ENOTFOUND)
        FAILF(SAGA_ENOTFOUND, "no saga %.40s", q->saga);
    if (rc != SAGA_OK)
        FAILF(SAGA_ESTORE, "%s", s->errmsg(s));
    uint32_t seq = 0;
    rc = s->journal_scan(s, q->saga, max_seq_cb, &seq);
    if (rc != SAGA_OK)
        FAILF(SAGA_ESTORE, "%s", s->errmsg(s));
    saga_record *r = &c.r;
    char why[TEXT_MAX];
    op_why(why, sizeof why, q->reason, q->actor);
    int backward = (r->flags & SAGA_REC_BACKWARD) != 0;
    r->updated_ms = now;
    switch (q->op) {
    case SAGA_OP_RETRY:
        if (r->state != SAGA_STATE_FAILED)
            FAILF(SAGA_EBUSY, "saga %s is %s, not FAILED", q->saga,
                  saga_state_name(r->state));
        r->state = backward ? SAGA_STATE_COMPENSATING : SAGA_STATE_RUNNING;
        /* Due now, not in flight: the engine that opens the store next
         * starts a fresh attempt at once (numbered from the stored 0). */
        r->attempt = 0;
        r->flags &= ~SAGA_REC_INFLIGHT;
        r->due_ms = now;
        rc = journal_add(s, q->saga, &seq, SAGA_JOURNAL_OPERATOR_RETRY, now,
                         why);
        break;
    case SAGA_OP_COMPENSATE: {
        saga_shape *sh = NULL;
        rc = saga_shape_load(&sh, s, r->def_name, r->def_version);
        if (rc != SAGA_OK)
            FAILF(rc == SAGA_ESTORE || rc == SAGA_ENOMEM ? rc : SAGA_ECORRUPT,
                  "the shape of definition '%s' v%u is not recorded in the "
                  "store: start its service once first",
                  r->def_name, r->def_version);
        int ok = r->state == SAGA_STATE_FAILED;
        if (r->state == SAGA_STATE_RUNNING && !(r->flags & SAGA_REC_PIVOTED) &&
            r->step >= 0 && (size_t)r->step < sh->nsteps &&
            sh->steps[r->step].kind == SAGA_STEP_COMPENSATABLE)
            ok = 1;
        if (!ok) {
            saga_shape_free(sh);
            FAILF(SAGA_EBUSY, "saga %s is %s%s", q->saga,
                  saga_state_name(r->state),
                  r->state == SAGA_STATE_RUNNING ? " past its pivot" : "");
        }
        int include = backward ||
                      (r->flags & (SAGA_REC_MAYBE | SAGA_REC_INFLIGHT));
        int32_t from = include ? r->step : r->step - 1;
        if (from >= (int32_t)sh->nsteps)
            from = (int32_t)sh->nsteps - 1;
        while (from >= 0 && !sh->steps[from].comp)
            from--;
        saga_shape_free(sh);
        rc = journal_add(s, q->saga, &seq, SAGA_JOURNAL_OPERATOR_COMPENSATE,
                         now, why);
        r->flags |= SAGA_REC_BACKWARD;
        r->flags &= ~(SAGA_REC_INFLIGHT | SAGA_REC_MAYBE);
        r->error = why;
        if (from < 0) {
            r->state = SAGA_STATE_COMPENSATED;
            r->due_ms = 0;
            if (rc == SAGA_OK)
                rc = journal_add(s, q->saga, &seq, SAGA_JOURNAL_COMPENSATED,
                                 now, NULL);
        } else {
            r->state = SAGA_STATE_COMPENSATING;
            r->step = from;
            r->attempt = 0;
            r->due_ms = now;
            if (rc == SAGA_OK)
                rc = journal_add(s, q->saga, &seq, SAGA_JOURNAL_COMPENSATING,
                                 now, why);
        }
        break;
    }
    case SAGA_OP_RESOLVE:
        if (q->as != SAGA_STATE_COMPLETED && q->as != SAGA_STATE_COMPENSATED)
            FAILF(SAGA_EINVAL, "resolve as COMPLETED or COMPENSATED");
        if (r->state != SAGA_STATE_FAILED)
            FAILF(SAGA_EBUSY, "saga %s is %s, not FAILED", q->saga,
                  saga_state_name(r->state));
        r->state = (saga_state)q->as;
        r->flags &= ~SAGA_REC_INFLIGHT;
        r->due_ms = 0;
        rc = journal_add(s, q->saga, &seq, SAGA_JOURNAL_OPERATOR_RESOLVE, now,
                         why);
        if (rc == SAGA_OK)
            rc = journal_add(s, q->saga, &seq,
                             q->as == SAGA_STATE_COMPLETED
                                 ? SAGA_JOURNAL_COMPLETED
                                 : SAGA_JOURNAL_COMPENSATED,
                             now, NULL);
        break;
    default:
        FAILF(SAGA_EINVAL, "unknown operator action %d", q->op);
    }
    if (rc == SAGA_OK)
        rc = s->saga_put(s, r, 0);
    if (rc != SAGA_OK)
        FAILF(SAGA_ESTORE, "%s", s->errmsg(s));
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* saga_op_run(): queue, wait, else take back and apply                     */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void new_req_id(char out[SAGA_ID_SIZE], int64_t now)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t seed = saga__os_seed();
    uint64_t a = saga__splitmix64(&seed), b = (uint64_t)now;
    for (int i = 0; i < 16; i++)
        out[i] = hex[(b >> (60 - 4 * i)) & 15];
    for (int i = 0; i < 16; i++)
        out[16 + i] = hex[(a >> (60 - 4 * i)) & 15];
    out[SAGA_ID_LEN] = '\0';
}

/* In one transaction: is request @p id still queued? Then remove it and
 * apply it here. @return 1 if it was taken here (*rc its result), 0 if an
 * engine had it, < 0 on a store error. */
static int take_back(saga_store *s, const ctl_req *q, int64_t now, int *rc_out,
                     char *msg, size_t msg_size)
{
    ctl_req *qs = saga_malloc(QUEUE_MAX * sizeof *qs);
    if (qs == NULL)
        return SAGA_ENOMEM;
    int rc = s->begin(s);
    if (rc != SAGA_OK) {
        saga_free(qs);
        return rc;
    }
    blob b;
    rc = kv_read(s, KEY_QUEUE, &b);
    long n = rc == SAGA_OK ? parse_list(&b, qs, NULL, QUEUE_MAX) : 0;
    saga_free(b.p);
    long at = -1;
    for (long i = 0; i < n; i++)
        if (strcmp(qs[i].id, q->id) == 0)
            at = i;
    int taken = 0;
    if (rc == SAGA_OK && at >= 0) {
        memmove(&qs[at], &qs[at + 1], (size_t)(n - at - 1) * sizeof *qs);
        rc = write_reqs(s, qs, (size_t)(n - 1));
        if (rc == SAGA_OK) {
            taken = 1;
            *rc_out = apply_on_store(s, q, now, msg, msg_size);
            if (*rc_out == SAGA_ESTORE)
                rc = SAGA_ESTORE;
        }
    }
    saga_free(qs);
    if (rc != SAGA_OK) {
        s->rollback(s);
        return rc;
    }
    /* A refused action changes nothing but the queue: commit that too. */
    rc = s->commit(s);
    return rc == SAGA_OK ? taken : rc;
}

static int find_result(saga_store *s, const char *id, int *rc_out, char *msg,
                       size_t msg_size)
{
    ctl_res *rs = saga_malloc(RESULTS_MAX * sizeof *rs);
    if (rs == NULL)
        return SAGA_ENOMEM;
    blob b;
    int rc = kv_read(s, KEY_RESULTS, &b);
    long n = rc == SAGA_OK ? parse_list(&b, NULL, rs, RESULTS_MAX) : 0;
    saga_free(b.p);
    int found = 0;
    for (long i = 0; i < n; i++) {
        if (strcmp(rs[i].id, id) == 0) {
            *rc_out = rs[i].rc;
            snprintf(msg, msg_size, "%s", rs[i].msg);
            found = 1;
        }
    }
    saga_free(rs);
    return rc != SAGA_OK ? rc : found;
}

int saga_op_run(saga_store *s, const saga_op_request *req, uint32_t wait_ms,
                int64_t now_ms, char *msg, size_t msg_size, saga_op_by *by_out)
{
    char dummy[1];
    if (msg == NULL || msg_size == 0) {
        msg = dummy;
        msg_size = sizeof dummy;
    }
    msg[0] = '\0';
    if (s == NULL || req == NULL || req->saga_id == NULL ||
        req->saga_id[0] == '\0' || strlen(req->saga_id) > SAGA_NAME_MAX ||
        req->op < SAGA_OP_RETRY || req->op > SAGA_OP_RESOLVE ||
        (req->op == SAGA_OP_RESOLVE && req->as != SAGA_STATE_COMPLETED &&
         req->as != SAGA_STATE_COMPENSATED))
        FAILF(SAGA_EINVAL, "invalid operator request");
    ctl_req q;
    memset(&q, 0, sizeof q);
    new_req_id(q.id, now_ms);
    q.op = req->op;
    q.as = req->as;
    snprintf(q.saga, sizeof q.saga, "%s", req->saga_id);
    snprintf(q.reason, sizeof q.reason, "%s", req->reason ? req->reason : "");
    snprintf(q.actor, sizeof q.actor, "%s", req->actor ? req->actor : "");
    q.at = now_ms;

    /* The saga must exist: say so at once rather than after the wait. */
    rec_copy c;
    memset(&c, 0, sizeof c);
    int rc = s->saga_get(s, q.saga, rec_copy_cb, &c);
    if (rc == SAGA_ENOTFOUND)
        FAILF(SAGA_ENOTFOUND, "no saga %.40s", q.saga);
    if (rc != SAGA_OK)
        FAILF(SAGA_ESTORE, "%s", s->errmsg(s));
    /* A state that cannot allow the action is refused at once (the engine
     * or take_back() decides again, atomically, for the others). */
    saga_state st = c.r.state;
    if (st != SAGA_STATE_FAILED &&
        !(q.op == SAGA_OP_COMPENSATE && st == SAGA_STATE_RUNNING))
        FAILF(SAGA_EBUSY, "saga %s is %s, not FAILED", q.saga,
              saga_state_name(st));

    ctl_req *qs = saga_malloc(QUEUE_MAX * sizeof *qs);
    if (qs == NULL)
        return SAGA_ENOMEM;
    rc = s->begin(s);
    if (rc == SAGA_OK) {
        blob b;
        rc = kv_read(s, KEY_QUEUE, &b);
        long n = rc == SAGA_OK ? parse_list(&b, qs, NULL, QUEUE_MAX) : 0;
        saga_free(b.p);
        if (n < 0)
            n = 0;
        if (rc == SAGA_OK && n >= QUEUE_MAX)
            rc = SAGA_EFULL;
        if (rc == SAGA_OK) {
            qs[n] = q;
            rc = write_reqs(s, qs, (size_t)n + 1);
        }
        if (rc == SAGA_OK)
            rc = s->commit(s);
        else
            s->rollback(s);
    }
    saga_free(qs);
    if (rc == SAGA_EFULL)
        FAILF(SAGA_EBUSY, "the control queue is full");
    if (rc != SAGA_OK)
        FAILF(SAGA_ESTORE, "%s", s->errmsg(s));

    uint32_t waited = 0;
    for (;;) {
        int res = 0;
        int f = find_result(s, q.id, &res, msg, msg_size);
        if (f == 1) {
            if (by_out)
                *by_out = SAGA_OP_BY_ENGINE;
            return res;
        }
        if (waited >= wait_ms) {
            int taken = take_back(s, &q, now_ms + waited, &res, msg, msg_size);
            if (taken == 1) {
                if (by_out)
                    *by_out = SAGA_OP_BY_CALLER;
                return res;
            }
            if (taken < 0)
                FAILF(SAGA_ESTORE, "%s", s->errmsg(s));
            /* An engine took it meanwhile: its answer comes shortly. */
            if (waited >= wait_ms + 10000)
                FAILF(SAGA_ESTORE, "an engine took the request but did not "
                                   "answer");
        }
        sleep_ms(50);
        waited += 50;
    }
}
