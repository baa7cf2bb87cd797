#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t h_clock(void *arg) { return ((harness *)arg)->now; }

static void h_log(saga_log_level lvl, const char *id, int step, const char *msg,
                  void *arg)
{
    harness *h = arg;
    size_t n = strlen(h->log);
    if (n + 200 < sizeof h->log)
        snprintf(h->log + n, sizeof h->log - n, "[%d %s %d] %s\n", (int)lvl,
                 id ? id : "-", step, msg);
}

static void h_done(saga_engine *e, const char *id, saga_state st, void *arg)
{
    harness *h = arg;
    (void)e;
    h->done_count++;
    h->last_state = st;
    snprintf(h->last_done, sizeof h->last_done, "%s", id);
}

void h_init(harness *h)
{
    memset(h, 0, sizeof *h);
    uv_loop_init(&h->loop);
    h->now = 1000000;
}

int h_engine(harness *h, saga_store *store,
             void (*tweak)(saga_engine_options *o))
{
    saga_engine_options o = SAGA_ENGINE_OPTIONS_INIT;
    o.loop = &h->loop;
    o.clock = h_clock;
    o.clock_arg = h;
    o.seed = 42;
    o.log = h_log;
    o.log_arg = h;
    o.log_level = SAGA_LOG_DEBUG;
    o.on_done = h_done;
    o.on_done_arg = h;
    if (tweak)
        tweak(&o);
    return saga_engine_new(&h->e, store, NULL, &o);
}

typedef struct later {
    uv_timer_t t;
    saga_engine *e;
    saga_step_ref ref;
} later;

static void later_close(uv_handle_t *hd) { free(hd->data); }
static void later_cb(uv_timer_t *t)
{
    later *l = t->data;
    saga_step_complete(l->e, &l->ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
    t->data = l;
    uv_close((uv_handle_t *)t, later_close);
}

static void scripted(saga_engine *e, const saga_step_ref *ref, const void *data,
                     size_t len, void *arg)
{
    harness *h = arg;
    (void)data, (void)len;
    if (h->ncalls < H_MAX_CALLS) {
        h->calls[h->ncalls].step = (int)ref->step;
        h->calls[h->ncalls].comp = (int)ref->compensating;
        h->calls[h->ncalls].attempt = ref->attempt;
        h->ncalls++;
    }
    const char *s = ref->compensating ? h->comp_script[ref->step]
                                      : h->script[ref->step];
    if (s == NULL || *s == '\0')
        s = "o";
    size_t n = strlen(s);
    char c = s[ref->attempt - 1 < n ? ref->attempt - 1 : n - 1];
    switch (c) {
    case 'o':
        saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
        break;
    case 'f':
        saga_step_complete(e, ref, SAGA_OUTCOME_FAIL, NULL, 0, "scripted no");
        break;
    case 'r':
        saga_step_complete(e, ref, SAGA_OUTCOME_RETRY, NULL, 0,
                           "scripted busy");
        break;
    case 'a': {
        later *l = malloc(sizeof *l);
        l->e = e;
        l->ref = *ref;
        uv_timer_init(saga_engine_loop(e), &l->t);
        l->t.data = l;
        uv_timer_start(&l->t, later_cb, 0, 0);
        break;
    }
    default: /* 'h': hang */
        h->pending = *ref;
        break;
    }
}

saga_def *h_def(harness *h, const char *kinds, const saga_step_options *opts)
{
    saga_def *d;
    if (saga_def_new(&d, "t", 1) != SAGA_OK)
        return NULL;
    for (int i = 0; kinds[i]; i++) {
        saga_step_options o = SAGA_STEP_OPTIONS_INIT;
        if (opts)
            o = *opts;
        o.kind = kinds[i] == 'p'   ? SAGA_STEP_PIVOT
                 : kinds[i] == 'r' ? SAGA_STEP_RETRIABLE
                                   : SAGA_STEP_COMPENSATABLE;
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        if (saga_def_add_step(d, name, scripted,
                              kinds[i] == 'c' ? scripted : NULL, &o,
                              h) != SAGA_OK) {
            saga_def_free(d);
            return NULL;
        }
    }
    return d;
}

void h_pump(harness *h)
{
    for (int i = 0; i < 50; i++)
        uv_run(&h->loop, UV_RUN_NOWAIT);
}

void h_advance(harness *h, int64_t ms)
{
    h->now += ms;
    saga_engine_advance(h->e);
    h_pump(h);
}

static void closed(void *arg) { *(int *)arg = 1; }

void h_fini(harness *h)
{
    if (h->e) {
        int done = 0;
        saga_engine_close(h->e, closed, &done);
        while (!done)
            uv_run(&h->loop, UV_RUN_ONCE);
        h->e = NULL;
    }
    uv_run(&h->loop, UV_RUN_DEFAULT);
}

void h_journal(harness *h, const char *id, char *out, size_t n)
{
    out[0] = '\0';
    saga_info *info;
    if (saga_get(h->e, id, &info) != SAGA_OK) {
        snprintf(out, n, "(none)");
        return;
    }
    for (size_t i = 0; i < saga_info_journal_count(info); i++) {
        const saga_journal_entry *j = saga_info_journal(info, i);
        size_t l = strlen(out);
        if (j->step >= 0)
            snprintf(out + l, n - l, "%s%s:%d", l ? " " : "",
                     saga_journal_kind_name(j->kind), j->step);
        else
            snprintf(out + l, n - l, "%s%s", l ? " " : "",
                     saga_journal_kind_name(j->kind));
    }
    saga_info_free(info);
}

void h_calls(harness *h, char *out, size_t n)
{
    out[0] = '\0';
    for (int i = 0; i < h->ncalls; i++) {
        size_t l = strlen(out);
        snprintf(out + l, n - l, "%s%s%d", l ? " " : "",
                 h->calls[i].comp ? "c" : "", h->calls[i].step);
    }
}

saga_state h_state(harness *h, const char *id)
{
    saga_info *info;
    if (saga_get(h->e, id, &info) != SAGA_OK)
        return (saga_state)0;
    saga_state s = saga_info_state(info);
    saga_info_free(info);
    return s;
}
