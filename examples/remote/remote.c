/*
 * remote.c — remote steps and participants in one process: an orchestrator
 * engine and two services (inventory, payment) on an in-memory bus. Each
 * service has its own store and writes its business effect in the same
 * transaction as its inbox record; swap the bus for the TCP transport and
 * the three run as separate processes unchanged.
 *
 * One order completes; the second is declined by payment and inventory's
 * reservation is compensated remotely.
 */
#include <saga/saga.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

/* Saga ids start with their creation time; the last 8 hex digits are the
 * random part, and tell sagas apart at a glance. */
static const char *tail(const char *id)
{
    size_t n = strlen(id);
    return n > 8 ? id + n - 8 : id;
}

/* Business state of the inventory service: units in stock, kept in its
 * store's key-value space (a real service uses its own tables through
 * saga_participant_store_handle()). */
static void read_i64(const void *v, size_t l, void *arg)
{
    if (l == sizeof(int64_t))
        memcpy(arg, v, l);
}

static int64_t stock(saga_participant *p)
{
    saga_store *s = saga_participant_store(p);
    int64_t n = 0;
    if (s->kv_get(s, "stock", read_i64, &n) != SAGA_OK)
        n = 10; /* first use: ten units */
    return n;
}

static int set_stock(saga_participant *p, int64_t n)
{
    saga_store *s = saga_participant_store(p);
    return s->kv_put(s, "stock", &n, sizeof n);
}

static int inventory(saga_participant *p, const saga_command *c, saga_reply *r,
                     void *arg)
{
    (void)arg;
    int64_t qty = 1;
    saga_data_get_int(c->payload, c->payload_len, "qty", &qty);
    if (c->compensating) {
        printf("  inventory: release %lld unit(s) for %s\n", (long long)qty,
               tail(c->saga_id));
        return set_stock(p, stock(p) + qty);
    }
    if (stock(p) < qty)
        return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0, "out of stock");
    printf("  inventory: reserve %lld unit(s) for %s\n", (long long)qty,
           tail(c->saga_id));
    return set_stock(p, stock(p) - qty);
}

static int payment(saga_participant *p, const saga_command *c, saga_reply *r,
                   void *arg)
{
    (void)p, (void)arg;
    int64_t amount = 0;
    saga_data_get_int(c->payload, c->payload_len, "amount", &amount);
    if (amount > 100) {
        printf("  payment: decline %lld for %s\n", (long long)amount,
               tail(c->saga_id));
        return saga_reply_set(r, SAGA_OUTCOME_FAIL, NULL, 0, "card declined");
    }
    printf("  payment: charge %lld for %s\n", (long long)amount,
           tail(c->saga_id));
    saga_map *m;
    const void *b;
    size_t n;
    saga_map_new(&m);
    saga_map_set_str(m, "transaction_id", "txn-7");
    saga_map_encode(m, &b, &n);
    int rc = saga_reply_set(r, SAGA_OUTCOME_OK, b, n, NULL);
    saga_map_free(m);
    return rc;
}

static saga_participant *service(uv_loop_t *loop, saga_inmem_bus *bus,
                                 const char *name, const char *cmd,
                                 saga_command_fn fn)
{
    saga_store *s;
    saga_transport *t;
    saga_participant *p;
    saga_participant_options o = SAGA_PARTICIPANT_OPTIONS_INIT;
    o.service = name;
    if (saga_store_memory_new(&s) || saga_transport_inmem_new(&t, bus) ||
        saga_participant_new(&p, loop, s, t, &o) ||
        saga_participant_on_command(p, cmd, fn, NULL) ||
        saga_participant_start(p))
        return NULL;
    return p;
}

static void on_done(saga_engine *e, const char *id, saga_state st, void *arg)
{
    (void)arg;
    saga_info *i;
    printf("order saga %s ended %s", tail(id), saga_state_name(st));
    if (saga_get(e, id, &i) == SAGA_OK && saga_info_error(i))
        printf(" (%s)", saga_info_error(i));
    printf("\n");
    saga_info_free(i);
}

int main(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    saga_inmem_bus *bus;
    saga_inmem_bus_new(&bus, &loop);
    saga_participant *inv = service(&loop, bus, "inventory", "reserve",
                                    inventory);
    saga_participant *pay = service(&loop, bus, "payment", "charge", payment);
    if (inv == NULL || pay == NULL)
        return 1;

    saga_def *d;
    saga_step_options reserve = SAGA_STEP_OPTIONS_INIT;
    reserve.service = "inventory";
    reserve.command = "reserve";
    reserve.comp_command = "reserve"; /* the same handler undoes it */
    saga_step_options charge = SAGA_STEP_OPTIONS_INIT;
    charge.kind = SAGA_STEP_PIVOT;
    charge.service = "payment";
    charge.command = "charge";
    saga_def_new(&d, "order", 1);
    saga_def_add_step(d, "reserve_inventory", NULL, NULL, &reserve, NULL);
    saga_def_add_step(d, "charge_payment", NULL, NULL, &charge, NULL);

    saga_transport *t;
    saga_engine *e;
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &loop;
    o.service = "orders";
    o.on_done = on_done;
    saga_transport_inmem_new(&t, bus);
    if (saga_engine_new(&e, NULL, t, &o) || saga_engine_register(e, d) ||
        saga_engine_start(e)) {
        fprintf(stderr, "engine: %s\n", saga_engine_errmsg(e));
        return 1;
    }
    int64_t amounts[] = {40, 400};
    for (int i = 0; i < 2; i++) {
        saga_map *m;
        const void *b;
        size_t n;
        char key[32], id[SAGA_ID_SIZE];
        saga_map_new(&m);
        saga_map_set_int(m, "qty", 2);
        saga_map_set_int(m, "amount", amounts[i]);
        saga_map_encode(m, &b, &n);
        snprintf(key, sizeof key, "order-%d", i + 1);
        printf("%s (amount %lld):\n", key, (long long)amounts[i]);
        saga_start(e, "order", key, b, n, id, NULL, NULL);
        saga_map_free(m);
        /* Run until this order's saga has ended. */
        saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
        do {
            uv_run(&loop, UV_RUN_ONCE);
            saga_engine_stats(e, &st);
        } while (st.active > 0);
    }
    printf("inventory stock at the end: %lld (10 - 2 reserved; the declined "
           "order's reservation was released)\n",
           (long long)stock(inv));
    saga_engine_close(e, NULL, NULL);
    saga_participant_close(inv, NULL, NULL);
    saga_participant_close(pay, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    saga_inmem_bus_free(bus);
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop) == 0 ? 0 : 1;
}
