/*
 * hello.c — the smallest useful libsaga program: a three-step "checkout"
 * saga on SQLite, run twice: one order succeeds, one is declined at payment
 * and compensated in reverse order.
 *
 *   saga_hello [path.db]
 */
#include <saga/saga.h>
#include <stdio.h>
#include <string.h>

/* Saga ids start with their creation time; the last 8 hex digits are the
 * random part, and tell sagas apart at a glance. */
static const char *tail(const char *id)
{
    size_t n = strlen(id);
    return n > 8 ? id + n - 8 : id;
}

static int decline_next_payment;

static void reserve(saga_engine *e, const saga_step_ref *ref, const void *data,
                    size_t len, void *arg)
{
    (void)arg;
    const char *item = "";
    size_t n = 0;
    saga_data_get_str(data, len, "item", &item, &n);
    printf("  [%s] reserve inventory: %.*s\n", tail(ref->saga_id), (int)n,
           item);
    /* Output merged into the saga's data: the compensation will need it. */
    saga_map *out;
    const void *buf;
    size_t blen;
    saga_map_new(&out);
    saga_map_set_str(out, "reservation_id", "rsv-42");
    saga_map_encode(out, &buf, &blen);
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, buf, blen, NULL);
    saga_map_free(out);
}

static void release(saga_engine *e, const saga_step_ref *ref, const void *data,
                    size_t len, void *arg)
{
    (void)arg;
    const char *rsv = "?";
    size_t n = 1;
    saga_data_get_str(data, len, "reservation_id", &rsv, &n);
    printf("  [%s] compensate: release reservation %.*s\n", tail(ref->saga_id),
           (int)n, rsv);
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static void charge(saga_engine *e, const saga_step_ref *ref, const void *data,
                   size_t len, void *arg)
{
    (void)data, (void)len, (void)arg;
    if (decline_next_payment) {
        printf("  [%s] charge payment: DECLINED\n", tail(ref->saga_id));
        saga_step_complete(e, ref, SAGA_OUTCOME_FAIL, NULL, 0, "card declined");
        return;
    }
    printf("  [%s] charge payment: ok (the pivot)\n", tail(ref->saga_id));
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static void notify(saga_engine *e, const saga_step_ref *ref, const void *data,
                   size_t len, void *arg)
{
    (void)data, (void)len, (void)arg;
    printf("  [%s] notify warehouse\n", tail(ref->saga_id));
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static void on_done(saga_engine *e, const char *id, saga_state st, void *arg)
{
    (void)e, (void)arg;
    printf("saga %s ended %s\n", tail(id), saga_state_name(st));
}

static void on_started(saga_engine *e, int status, const char *id, int existed,
                       void *arg)
{
    (void)e, (void)status, (void)id;
    *(int *)arg = existed;
}

static int check(int rc, const char *what, saga_engine *e)
{
    if (rc != SAGA_OK)
        fprintf(stderr, "%s: %s (%s)\n", what, saga_strerror(rc),
                e ? saga_engine_errmsg(e) : "");
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "hello.db";
    printf("libsaga %s, store %s\n", saga_version_string(), path);

    saga_def *def;
    saga_step_options retriable = SAGA_STEP_OPTIONS_INIT;
    saga_step_options pivot = SAGA_STEP_OPTIONS_INIT;
    retriable.kind = SAGA_STEP_RETRIABLE;
    pivot.kind = SAGA_STEP_PIVOT;
    if (saga_def_new(&def, "checkout", 1) != SAGA_OK ||
        saga_def_add_step(def, "reserve_inventory", reserve, release, NULL,
                          NULL) != SAGA_OK ||
        saga_def_add_step(def, "charge_payment", charge, NULL, &pivot, NULL) !=
            SAGA_OK ||
        saga_def_add_step(def, "notify_warehouse", notify, NULL, &retriable,
                          NULL) != SAGA_OK) {
        fprintf(stderr, "definition: %s\n", saga_def_errmsg(def));
        return 1;
    }

    saga_store *store;
    if (check(saga_store_sqlite_open(&store, path, NULL), "open", NULL))
        return 1;
    saga_engine_options opts = SAGA_ENGINE_OPTIONS_INIT;
    opts.on_done = on_done;
    saga_engine *e;
    if (check(saga_engine_new(&e, store, NULL, &opts), "engine", NULL))
        return 1;
    if (check(saga_engine_register(e, def), "register", e) ||
        check(saga_engine_start(e), "start", e))
        return 1;

    const char *orders[] = {"order-1001", "order-1002"};
    for (int i = 0; i < 2; i++) {
        decline_next_payment = i == 1;
        printf("%s:\n", orders[i]);
        saga_map *m;
        const void *buf;
        size_t len;
        saga_map_new(&m);
        saga_map_set_str(m, "item", i ? "blue mug" : "red kettle");
        saga_map_encode(m, &buf, &len);
        char id[SAGA_ID_SIZE];
        /* The order number is the idempotency key: run the program again
         * on the same file and the orders are found, not started twice. */
        int existed = 0;
        int rc = saga_start(e, "checkout", orders[i], buf, len, id, on_started,
                            &existed);
        saga_map_free(m);
        if (check(rc, "start saga", e))
            return 1;
        saga_engine_run(e, SAGA_RUN_DEFAULT);
        if (existed)
            printf("  (key %s was used before: saga %s, not started again)\n",
                   orders[i], tail(id));

        saga_info *info;
        if (saga_get(e, id, &info) == SAGA_OK) {
            printf("  journal of %s (%s):\n", tail(id),
                   saga_state_name(saga_info_state(info)));
            for (size_t k = 0; k < saga_info_journal_count(info); k++) {
                const saga_journal_entry *j = saga_info_journal(info, k);
                printf("    %2u %-13s step %2d attempt %u%s%s\n", j->seq,
                       saga_journal_kind_name(j->kind), j->step, j->attempt,
                       j->error ? "  " : "", j->error ? j->error : "");
            }
            saga_info_free(info);
        }
    }
    saga_engine_free(e);
    return 0;
}
