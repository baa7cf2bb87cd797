/*
 * fault_store.c — a forwarding store that counts calls and injects
 * failures (see fault_store.h).
 */
#include <stdio.h>
#include <string.h>

#include "fakes/fault_store.h"

struct fault_store {
    saga_store base; /* first: the wrapper is a store */
    saga_store *inner;
    uint64_t calls[FAULT__COUNT];
    uint64_t fail_at[FAULT__COUNT]; /* call number to fail; 0 = none */
    int always[FAULT__COUNT];
    uint64_t injected;
    const char *err; /* NULL: the inner store's message applies */
    char buf[128];
};

static const char *const slot_names[FAULT__COUNT] = {
    "begin",       "commit",      "rollback",       "saga_put",
    "saga_get",    "saga_scan",   "journal_append", "journal_scan",
    "idem_put",    "idem_get",    "purge",          "outbox_put",
    "outbox_scan", "outbox_done", "inbox_claim",    "inbox_reply",
    "kv_get",      "kv_put"};

const char *fault_slot_name(fault_slot slot)
{
    return slot < FAULT__COUNT ? slot_names[slot] : "?";
}

/* Count the call and decide whether it fails. */
static int inject(struct fault_store *fs, fault_slot slot)
{
    uint64_t n = ++fs->calls[slot];
    fs->err = NULL;
    if (fs->always[slot] || fs->fail_at[slot] == n) {
        if (fs->fail_at[slot] == n)
            fs->fail_at[slot] = 0;
        fs->injected++;
        snprintf(fs->buf, sizeof fs->buf, "injected I/O error (%s)",
                 slot_names[slot]);
        fs->err = fs->buf;
        return SAGA_ESTORE;
    }
    return SAGA_OK;
}

#define FS struct fault_store *fs = (struct fault_store *)self
#define FWD(slot, call)                                                        \
    do {                                                                       \
        int rc_ = inject(fs, slot);                                            \
        return rc_ ? rc_ : fs->inner->call;                                    \
    } while (0)

static int f_begin(saga_store *self)
{
    FS;
    FWD(FAULT_BEGIN, begin(fs->inner));
}

static int f_commit(saga_store *self)
{
    FS;
    if (inject(fs, FAULT_COMMIT)) {
        /* The contract: a failed commit leaves nothing of the batch. */
        fs->inner->rollback(fs->inner);
        return SAGA_ESTORE;
    }
    return fs->inner->commit(fs->inner);
}

static int f_rollback(saga_store *self)
{
    FS;
    FWD(FAULT_ROLLBACK, rollback(fs->inner));
}

static int f_saga_put(saga_store *self, const saga_record *r, unsigned fl)
{
    FS;
    FWD(FAULT_SAGA_PUT, saga_put(fs->inner, r, fl));
}

static int f_saga_get(saga_store *self, const char *id, saga_record_cb cb,
                      void *arg)
{
    FS;
    FWD(FAULT_SAGA_GET, saga_get(fs->inner, id, cb, arg));
}

static int f_saga_scan(saga_store *self, unsigned mask, saga_record_cb cb,
                       void *arg)
{
    FS;
    FWD(FAULT_SAGA_SCAN, saga_scan(fs->inner, mask, cb, arg));
}

static int f_journal_append(saga_store *self, const saga_journal_entry *e)
{
    FS;
    FWD(FAULT_JOURNAL_APPEND, journal_append(fs->inner, e));
}

static int f_journal_scan(saga_store *self, const char *id, saga_journal_cb cb,
                          void *arg)
{
    FS;
    FWD(FAULT_JOURNAL_SCAN, journal_scan(fs->inner, id, cb, arg));
}

static int f_idem_put(saga_store *self, const char *key, const char *id,
                      int64_t created_ms)
{
    FS;
    FWD(FAULT_IDEM_PUT, idem_put(fs->inner, key, id, created_ms));
}

static int f_idem_get(saga_store *self, const char *key, char out[SAGA_ID_SIZE])
{
    FS;
    FWD(FAULT_IDEM_GET, idem_get(fs->inner, key, out));
}

static int f_purge(saga_store *self, int64_t before, uint64_t *out)
{
    FS;
    FWD(FAULT_PURGE, purge(fs->inner, before, out));
}

static int f_outbox_put(saga_store *self, const saga_message *m)
{
    FS;
    FWD(FAULT_OUTBOX_PUT, outbox_put(fs->inner, m));
}

static int f_outbox_scan(saga_store *self, uint32_t limit, saga_message_cb cb,
                         void *arg)
{
    FS;
    FWD(FAULT_OUTBOX_SCAN, outbox_scan(fs->inner, limit, cb, arg));
}

static int f_outbox_done(saga_store *self, const char *id)
{
    FS;
    FWD(FAULT_OUTBOX_DONE, outbox_done(fs->inner, id));
}

static int f_inbox_claim(saga_store *self, const char *id, int64_t now,
                         saga_blob_cb cb, void *arg)
{
    FS;
    FWD(FAULT_INBOX_CLAIM, inbox_claim(fs->inner, id, now, cb, arg));
}

static int f_inbox_reply(saga_store *self, const char *id, const void *r,
                         size_t len)
{
    FS;
    FWD(FAULT_INBOX_REPLY, inbox_reply(fs->inner, id, r, len));
}

static int f_kv_get(saga_store *self, const char *key, saga_blob_cb cb,
                    void *arg)
{
    FS;
    FWD(FAULT_KV_GET, kv_get(fs->inner, key, cb, arg));
}

static int f_kv_put(saga_store *self, const char *key, const void *val,
                    size_t len)
{
    FS;
    FWD(FAULT_KV_PUT, kv_put(fs->inner, key, val, len));
}

/* Version 2 slots: forwarded without injection (set only if the inner
 * store has them). */
static int f_kv_scan(saga_store *self, const char *prefix, saga_kv_cb cb,
                     void *arg)
{
    FS;
    fs->err = NULL;
    return fs->inner->kv_scan(fs->inner, prefix, cb, arg);
}

static int f_kv_del(saga_store *self, const char *key)
{
    FS;
    fs->err = NULL;
    return fs->inner->kv_del(fs->inner, key);
}

static int f_savepoint(saga_store *self)
{
    FS;
    fs->err = NULL;
    return fs->inner->savepoint(fs->inner);
}

static int f_savepoint_rollback(saga_store *self)
{
    FS;
    fs->err = NULL;
    return fs->inner->savepoint_rollback(fs->inner);
}

static int f_savepoint_release(saga_store *self)
{
    FS;
    fs->err = NULL;
    return fs->inner->savepoint_release(fs->inner);
}

static void *f_native_handle(saga_store *self)
{
    FS;
    return fs->inner->native_handle ? fs->inner->native_handle(fs->inner)
                                    : NULL;
}

static const char *f_errmsg(saga_store *self)
{
    FS;
    return fs->err ? fs->err : fs->inner->errmsg(fs->inner);
}

static void f_close(saga_store *self)
{
    FS;
    saga_store_free(fs->inner);
    saga_free(fs);
}

static const saga_store f_ops = {
    .version = SAGA_STORE_VERSION,
    /* version 1 */
    .begin = f_begin,
    .commit = f_commit,
    .rollback = f_rollback,
    .saga_put = f_saga_put,
    .saga_get = f_saga_get,
    .saga_scan = f_saga_scan,
    .journal_append = f_journal_append,
    .journal_scan = f_journal_scan,
    .idem_put = f_idem_put,
    .idem_get = f_idem_get,
    .purge = f_purge,
    .outbox_put = f_outbox_put,
    .outbox_scan = f_outbox_scan,
    .outbox_done = f_outbox_done,
    .inbox_claim = f_inbox_claim,
    .inbox_reply = f_inbox_reply,
    .kv_get = f_kv_get,
    .kv_put = f_kv_put,
    .native_handle = f_native_handle,
    .errmsg = f_errmsg,
    .close = f_close,
    /* version 2 */
    .kv_scan = f_kv_scan,
    .kv_del = f_kv_del,
    .savepoint = f_savepoint,
    .savepoint_rollback = f_savepoint_rollback,
    .savepoint_release = f_savepoint_release,
};

int fault_store_new(saga_store **out, saga_store *inner, fault_store **handle)
{
    if (out == NULL || inner == NULL)
        return SAGA_EINVAL;
    struct fault_store *fs = saga_malloc(sizeof *fs);
    if (fs == NULL)
        return SAGA_ENOMEM;
    memset(fs, 0, sizeof *fs);
    fs->base = f_ops;
    fs->inner = inner;
    saga_store *b = &fs->base;
    /* The wrapper offers an optional slot only where the inner store does. */
    if (inner->version < 2 || inner->kv_scan == NULL)
        b->kv_scan = NULL;
    if (inner->version < 2 || inner->kv_del == NULL)
        b->kv_del = NULL;
    if (inner->version < 2 || !inner->savepoint || !inner->savepoint_rollback ||
        !inner->savepoint_release) {
        b->savepoint = NULL;
        b->savepoint_rollback = NULL;
        b->savepoint_release = NULL;
    }
    *out = b;
    if (handle)
        *handle = fs;
    return SAGA_OK;
}

void fault_store_fail_nth(fault_store *fs, fault_slot slot, uint64_t n)
{
    if (slot < FAULT__COUNT && n > 0)
        fs->fail_at[slot] = fs->calls[slot] + n;
}

void fault_store_fail_always(fault_store *fs, fault_slot slot, int on)
{
    for (int i = 0; i < FAULT__COUNT; i++)
        if (slot == FAULT_ALL || (int)slot == i)
            fs->always[i] = on != 0;
}

void fault_store_clear(fault_store *fs)
{
    memset(fs->fail_at, 0, sizeof fs->fail_at);
    memset(fs->always, 0, sizeof fs->always);
}

uint64_t fault_store_calls(const fault_store *fs, fault_slot slot)
{
    return slot < FAULT__COUNT ? fs->calls[slot] : 0;
}

uint64_t fault_store_injected(const fault_store *fs) { return fs->injected; }

saga_store *fault_store_inner(fault_store *fs) { return fs->inner; }
