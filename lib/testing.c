/*
 * testing.c — the saga test kit (include/saga/testing.h).
 *
 * Each run registers a copy of the user's definition whose actions and
 * compensations are the kit's trampolines: they inject the run's fault or
 * call the user's function (remote steps get a stub answering OK). The
 * engine runs on its own loop with an injected clock; whenever the loop has
 * nothing left to do now, the clock jumps to the earliest timer of the
 * engine's heap and saga_engine_advance() fires it, so a 30 s timeout or a
 * backoff costs nothing.
 */
#include <stdio.h>
#include <string.h>

#include "engine_int.h"
#include "saga/testing.h"

/* A timed-out or cancelled attempt's action runs with this added to its
 * attempt, so that its completion is stale and ignored. */
#define GHOST_ATTEMPT (1u << 30)
#define T_START 1000000000000LL
#define DEFAULT_MAX_VIRTUAL_MS (7ull * 24 * 3600 * 1000)

typedef struct kit kit;

typedef struct kstep {
    kit *k;
    int idx;
    saga_action_fn act, comp;
    void *arg;
    int remote;
    uint32_t comp_failed;
} kstep;

struct kit {
    const saga_def *def;
    saga_test_fault f;
    int trigger; /* SAGA_TEST_COMP_FAILS: the step failed to start undoing */
    kstep *steps;
    unsigned char *maybe;
    int *comps; /* step of each compensation call, in order */
    size_t ncomps, ccomps;
    int64_t now;
    int done, cancelled;
    saga_state state;
};

static int64_t kit_clock(void *arg) { return ((kit *)arg)->now; }

static void kit_log(saga_log_level l, const char *id, int step, const char *msg,
                    void *arg)
{
    (void)l, (void)id, (void)step, (void)msg, (void)arg;
}

static void kit_done(saga_engine *e, const char *id, saga_state st, void *arg)
{
    (void)e, (void)id;
    kit *k = arg;
    k->done = 1;
    k->state = st;
}

/* A retriable step whose FAIL is retried without end. */
static int forever(const saga__step *s)
{
    return s->opts.kind == SAGA_STEP_RETRIABLE &&
           s->opts.retry.max_attempts == SAGA_RETRY_FOREVER;
}

static void k_action(saga_engine *e, const saga_step_ref *ref, const void *data,
                     size_t len, void *arg)
{
    kstep *ks = arg;
    kit *k = ks->k;
    int idx = ks->idx;
    const saga__step *s = &k->def->steps[idx];
    /* A retriable step retried forever fails its first attempt only. */
    int fails_here = k->f.kind == SAGA_TEST_STEP_FAILS && idx == k->f.step &&
                     (!forever(s) || ref->attempt == 1);
    if (fails_here ||
        (k->f.kind == SAGA_TEST_COMP_FAILS && idx == k->trigger)) {
        saga_step_complete(e, ref, SAGA_OUTCOME_FAIL, NULL, 0,
                           "injected failure");
        return;
    }
    int ghost = 0;
    if (k->f.kind == SAGA_TEST_STEP_TIMES_OUT && idx == k->f.step &&
        (s->opts.kind != SAGA_STEP_RETRIABLE || ref->attempt == 1))
        ghost = 1;
    if (k->f.kind == SAGA_TEST_CANCEL && idx == k->f.step && !k->cancelled)
        ghost = 2;
    saga_step_ref r = *ref;
    if (ghost) {
        r.attempt += GHOST_ATTEMPT;
        k->maybe[idx] = 1;
    }
    if (ks->remote) {
        if (!ghost)
            saga_step_complete(e, &r, SAGA_OUTCOME_OK, NULL, 0, NULL);
    } else {
        ks->act(e, &r, data, len, ks->arg);
    }
    if (ghost == 2) {
        k->cancelled = 1;
        saga_cancel(e, ref->saga_id, "injected cancel");
    }
}

static void k_comp(saga_engine *e, const saga_step_ref *ref, const void *data,
                   size_t len, void *arg)
{
    kstep *ks = arg;
    kit *k = ks->k;
    if (k->f.kind == SAGA_TEST_COMP_FAILS && ks->idx == k->f.step &&
        ks->comp_failed < k->f.times) {
        ks->comp_failed++;
        saga_step_complete(e, ref, SAGA_OUTCOME_FAIL, NULL, 0,
                           "injected compensation failure");
        return;
    }
    if (k->ncomps == k->ccomps) {
        size_t nc = k->ccomps ? k->ccomps * 2 : 16;
        int *nv = saga_realloc(k->comps, nc * sizeof *nv);
        if (nv != NULL) {
            k->comps = nv;
            k->ccomps = nc;
        }
    }
    if (k->ncomps < k->ccomps)
        k->comps[k->ncomps++] = ks->idx;
    if (ks->remote)
        saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
    else
        ks->comp(e, ref, data, len, ks->arg);
}

/* ------------------------------------------------------------------------ */

int saga_test_options_init(saga_test_options *opts, unsigned int version)
{
    if (opts == NULL)
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(&version, SAGA_TEST_OPTIONS_VERSION);
    memset(opts, 0, sizeof *opts);
    opts->version = version;
    return SAGA_OK;
}

static void appendf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void appendf(char *buf, size_t cap, const char *fmt, ...)
{
    size_t n = strlen(buf);
    if (n + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
}

/* The step whose failure starts undoing step @p c: the next one that can
 * still fail before the pivot; -1 if none. */
static int trigger_for(const saga_def *d, int c)
{
    for (size_t t = (size_t)c + 1; t < d->nsteps; t++)
        if (d->steps[t].opts.kind != SAGA_STEP_RETRIABLE)
            return (int)t;
    return -1;
}

static void make_label(const saga_def *d, const saga_test_fault *f, char *out,
                       size_t n)
{
    const char *name = f->step >= 0 && (size_t)f->step < d->nsteps
                           ? d->steps[f->step].name
                           : "?";
    switch (f->kind) {
    case SAGA_TEST_STEP_FAILS:
        snprintf(out, n, "step '%s' fails", name);
        break;
    case SAGA_TEST_STEP_TIMES_OUT:
        snprintf(out, n, "step '%s' times out", name);
        break;
    case SAGA_TEST_COMP_FAILS:
        snprintf(out, n, "compensation of '%s' fails %u times", name, f->times);
        break;
    case SAGA_TEST_CANCEL:
        snprintf(out, n, "cancelled at '%s'", name);
        break;
    default:
        snprintf(out, n, "no fault");
        break;
    }
}

/* Whether @p f applies to @p d; sets run->why if not. */
static int fault_ok(const saga_def *d, const saga_test_fault *f,
                    saga_test_run *run)
{
    if (f->kind == SAGA_TEST_NO_FAULT)
        return 1;
    if (f->kind < SAGA_TEST_NO_FAULT || f->kind > SAGA_TEST_CANCEL) {
        snprintf(run->why, sizeof run->why, "unknown fault kind %d",
                 (int)f->kind);
        return 0;
    }
    if (f->step < 0 || (size_t)f->step >= d->nsteps) {
        snprintf(run->why, sizeof run->why, "no step %d", (int)f->step);
        return 0;
    }
    const saga__step *s = &d->steps[f->step];
    if (f->kind == SAGA_TEST_COMP_FAILS &&
        (!saga__step_has_comp(s) || trigger_for(d, f->step) < 0)) {
        snprintf(run->why, sizeof run->why,
                 "step '%s' has no compensation, or no later step can fail "
                 "before the pivot",
                 s->name);
        return 0;
    }
    if (f->kind == SAGA_TEST_CANCEL &&
        s->opts.kind != SAGA_STEP_COMPENSATABLE) {
        snprintf(run->why, sizeof run->why,
                 "step '%s' is not compensatable: a saga cannot be "
                 "cancelled there",
                 s->name);
        return 0;
    }
    return 1;
}

static saga_state expected_state(const saga_def *d, const saga_test_fault *f)
{
    if (f->kind == SAGA_TEST_NO_FAULT)
        return SAGA_STATE_COMPLETED;
    const saga__step *s = &d->steps[f->step];
    switch (f->kind) {
    case SAGA_TEST_STEP_FAILS:
        /* Past the pivot a FAIL is retried under the step's policy. */
        return s->opts.kind != SAGA_STEP_RETRIABLE ? SAGA_STATE_COMPENSATED
               : forever(s)                        ? SAGA_STATE_COMPLETED
                                                   : SAGA_STATE_FAILED;
    case SAGA_TEST_STEP_TIMES_OUT:
        return s->opts.kind == SAGA_STEP_COMPENSATABLE ? SAGA_STATE_COMPENSATED
               : s->opts.kind == SAGA_STEP_PIVOT       ? SAGA_STATE_FAILED
                                                       : SAGA_STATE_COMPLETED;
    case SAGA_TEST_COMP_FAILS: {
        uint32_t max = s->opts.comp_retry.max_attempts;
        return max == SAGA_RETRY_FOREVER || max > f->times
                   ? SAGA_STATE_COMPENSATED
                   : SAGA_STATE_FAILED;
    }
    default:
        return SAGA_STATE_COMPENSATED;
    }
}

static saga_def *wrap_def(kit *k)
{
    const saga_def *def = k->def;
    saga_def *d;
    if (saga_def_new(&d, def->name, def->version) != SAGA_OK)
        return NULL;
    for (size_t i = 0; i < def->nsteps; i++) {
        const saga__step *s = &def->steps[i];
        kstep *ks = &k->steps[i];
        ks->k = k;
        ks->idx = (int)i;
        ks->act = s->action;
        ks->comp = s->compensation;
        ks->arg = s->arg;
        ks->remote = s->opts.service != NULL;
        saga_step_options o = s->opts;
        o.service = o.command = o.comp_command = NULL;
        /* Effective options: a jitter of 0 means none here. */
        if (o.retry.jitter == 0)
            o.retry.jitter = SAGA_JITTER_NONE;
        if (o.comp_retry.jitter == 0)
            o.comp_retry.jitter = SAGA_JITTER_NONE;
        if (saga_def_add_step(d, s->name, k_action,
                              saga__step_has_comp(s) ? k_comp : NULL, &o,
                              ks) != SAGA_OK) {
            saga_def_free(d);
            return NULL;
        }
    }
    if (def->deadline_ms)
        saga_def_set_deadline(d, def->deadline_ms);
    return d;
}

/* Run the engine until the saga ends or the virtual budget is spent. */
static void drive(saga_engine *e, kit *k, uint64_t max_ms)
{
    for (long it = 0; it < 10000000 && !k->done; it++) {
        saga_engine_run(e, SAGA_RUN_NOWAIT);
        if (k->done || uv_is_active((uv_handle_t *)&e->gc.idle))
            continue;
        if (saga__index_first(&e->idx) != NULL) {
            int64_t due = saga__index_first(&e->idx)->heap_key;
            if (due > k->now)
                k->now = due;
            if (k->now - T_START > (int64_t)max_ms)
                return;
            saga_engine_advance(e);
            continue;
        }
        if (!uv_loop_alive(e->loop))
            return;                        /* nothing will ever happen */
        saga_engine_run(e, SAGA_RUN_ONCE); /* the user's own timers */
    }
}

static void journal_text(const saga_def *d, const saga_info *info,
                         saga_test_run *run)
{
    for (size_t i = 0; i < saga_info_journal_count(info); i++) {
        const saga_journal_entry *j = saga_info_journal(info, i);
        appendf(run->journal, sizeof run->journal, "%s%s", i ? " " : "",
                saga_journal_kind_name(j->kind));
        if (j->step >= 0 && (size_t)j->step < d->nsteps)
            appendf(run->journal, sizeof run->journal, "(%s)",
                    d->steps[j->step].name);
    }
}

static void judge(kit *k, const saga_info *info, const saga_test_options *o,
                  saga_test_run *run)
{
    const saga_def *d = k->def;
    size_t n = d->nsteps;
    /* Steps that completed or may have run. */
    unsigned char *need = saga_malloc(n ? n : 1);
    if (need == NULL) {
        snprintf(run->why, sizeof run->why, "out of memory");
        run->ok = 0;
        return;
    }
    memset(need, 0, n ? n : 1);
    for (size_t i = 0; info && i < saga_info_journal_count(info); i++) {
        const saga_journal_entry *j = saga_info_journal(info, i);
        if (j->kind == SAGA_JOURNAL_STEP_OK && j->step >= 0 &&
            (size_t)j->step < n)
            need[j->step] = 1;
    }
    for (size_t i = 0; i < n; i++)
        need[i] = (need[i] || k->maybe[i]) && saga__step_has_comp(&d->steps[i]);
    /* What should have been compensated, highest step first. */
    int comp_ends = run->expected != SAGA_STATE_FAILED ||
                    run->fault.kind == SAGA_TEST_COMP_FAILS;
    int stop_below = run->expected == SAGA_STATE_FAILED &&
                             run->fault.kind == SAGA_TEST_COMP_FAILS
                         ? run->fault.step
                         : -1;
    int *want = saga_malloc((n ? n : 1) * sizeof *want);
    size_t nwant = 0;
    if (want != NULL && run->expected != SAGA_STATE_COMPLETED && comp_ends)
        for (size_t i = n; i-- > 0;)
            if (need[i] && (int)i > stop_below)
                want[nwant++] = (int)i;
    for (size_t i = 0; i < nwant; i++)
        appendf(run->expected_compensated, sizeof run->expected_compensated,
                "%s%s", i ? " " : "", d->steps[want[i]].name);
    /* What ran (a compensation retried by the user counts once). */
    size_t ngot = 0;
    int *got = saga_malloc((k->ncomps ? k->ncomps : 1) * sizeof *got);
    for (size_t i = 0; got && i < k->ncomps; i++)
        if (ngot == 0 || got[ngot - 1] != k->comps[i])
            got[ngot++] = k->comps[i];
    for (size_t i = 0; i < ngot; i++)
        appendf(run->compensated, sizeof run->compensated, "%s%s", i ? " " : "",
                d->steps[got[i]].name);

    run->ok = 1;
    if (run->state == 0) {
        snprintf(run->why, sizeof run->why,
                 "the saga did not end (journal: %.300s)", run->journal);
        run->ok = 0;
    } else if (run->state != run->expected) {
        snprintf(run->why, sizeof run->why, "ended %s, expected %s",
                 saga_state_name(run->state), saga_state_name(run->expected));
        run->ok = 0;
    } else if (want == NULL || got == NULL) {
        snprintf(run->why, sizeof run->why, "out of memory");
        run->ok = 0;
    } else {
        for (size_t i = 1; i < ngot && run->ok; i++)
            if (got[i] >= got[i - 1]) {
                snprintf(run->why, sizeof run->why,
                         "compensations out of order: '%s' after '%s' "
                         "(compensated: %.200s)",
                         d->steps[got[i]].name, d->steps[got[i - 1]].name,
                         run->compensated);
                run->ok = 0;
            }
        if (run->ok &&
            (ngot != nwant || memcmp(got, want, ngot * sizeof *got) != 0)) {
            snprintf(run->why, sizeof run->why,
                     "compensated [%.200s], expected [%.200s] (the steps that "
                     "completed or may have run, in reverse order)",
                     run->compensated, run->expected_compensated);
            run->ok = 0;
        }
    }
    if (run->ok && o && o->check) {
        char why[sizeof run->why];
        why[0] = '\0';
        if (!o->check(run, why, sizeof why, o->arg)) {
            snprintf(run->why, sizeof run->why, "check: %.480s",
                     why[0] ? why : "failed");
            run->ok = 0;
        }
    }
    saga_free(need);
    saga_free(want);
    saga_free(got);
}

int saga_test_run_one(const saga_def *def, const void *data, size_t len,
                      const saga_test_fault *fault,
                      const saga_test_options *opts, saga_test_run *out)
{
    if (def == NULL || out == NULL)
        return SAGA_EINVAL;
    memset(out, 0, sizeof *out);
    saga_test_fault none;
    memset(&none, 0, sizeof none);
    out->fault = fault ? *fault : none;
    SAGA__CHECK_VERSION(opts, SAGA_TEST_OPTIONS_VERSION);
    make_label(def, &out->fault, out->label, sizeof out->label);
    if (def->nsteps == 0 || !fault_ok(def, &out->fault, out)) {
        if (out->why[0] == '\0')
            snprintf(out->why, sizeof out->why, "the definition has no step");
        return SAGA_EINVAL;
    }
    out->expected = expected_state(def, &out->fault);
    kit k;
    memset(&k, 0, sizeof k);
    k.def = def;
    k.f = out->fault;
    k.trigger = k.f.kind == SAGA_TEST_COMP_FAILS ? trigger_for(def, k.f.step)
                                                 : -1;
    k.now = T_START;
    k.steps = saga_malloc(def->nsteps * sizeof *k.steps);
    k.maybe = saga_malloc(def->nsteps);
    if (k.steps == NULL || k.maybe == NULL) {
        saga_free(k.steps);
        saga_free(k.maybe);
        return SAGA_ENOMEM;
    }
    memset(k.steps, 0, def->nsteps * sizeof *k.steps);
    memset(k.maybe, 0, def->nsteps);
    if (opts && opts->reset)
        opts->reset(opts->arg);

    int rc = SAGA_ENOMEM;
    saga_engine *e = NULL;
    saga_def *copy = wrap_def(&k);
    saga_engine_options eo;
    saga_engine_options_init(&eo, SAGA_ENGINE_OPTIONS_VERSION);
    eo.clock = kit_clock;
    eo.clock_arg = &k;
    eo.seed = opts && opts->seed ? opts->seed : 1;
    eo.log = kit_log;
    eo.log_level = SAGA_LOG_ERROR;
    eo.on_done = kit_done;
    eo.on_done_arg = &k;
    eo.housekeeping_interval_ms = 365ull * 24 * 3600 * 1000;
    if (copy == NULL)
        goto done;
    rc = saga_engine_new(&e, NULL, NULL, &eo);
    if (rc == SAGA_OK)
        rc = saga_engine_register(e, copy);
    if (rc != SAGA_OK) {
        snprintf(out->why, sizeof out->why, "%s",
                 e ? saga_engine_errmsg(e) : "cannot create an engine");
        saga_def_free(copy);
        goto done;
    }
    char id[SAGA_ID_SIZE];
    rc = saga_engine_start(e);
    if (rc == SAGA_OK)
        rc = saga_start(e, def->name, NULL, data, len, id, NULL, NULL);
    if (rc != SAGA_OK) {
        snprintf(out->why, sizeof out->why, "%s", saga_engine_errmsg(e));
        goto done;
    }
    drive(e, &k,
          opts && opts->max_virtual_ms ? opts->max_virtual_ms
                                       : DEFAULT_MAX_VIRTUAL_MS);
    out->state = k.done ? k.state : 0;
    saga_engine_flush(e);
    saga_info *info = NULL;
    if (saga_get(e, id, &info) == SAGA_OK)
        journal_text(def, info, out);
    judge(&k, info, opts, out);
    saga_info_free(info);
done:
    saga_engine_free(e);
    saga_free(k.steps);
    saga_free(k.maybe);
    saga_free(k.comps);
    return rc;
}

static int add_run(saga_test_report *r, size_t *cap, const saga_def *def,
                   const void *data, size_t len, saga_test_fault f,
                   const saga_test_options *opts)
{
    if (r->nruns == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        saga_test_run *nr = saga_realloc(r->runs, nc * sizeof *nr);
        if (nr == NULL)
            return SAGA_ENOMEM;
        r->runs = nr;
        *cap = nc;
    }
    saga_test_run *run = &r->runs[r->nruns];
    int rc = saga_test_run_one(def, data, len, &f, opts, run);
    if (rc == SAGA_EINVAL)
        return SAGA_OK; /* that fault does not apply to this step */
    if (rc != SAGA_OK)
        return rc;
    r->nruns++;
    if (!run->ok)
        r->nfailed++;
    return SAGA_OK;
}

int saga_test_explore(const saga_def *def, const void *data, size_t len,
                      const saga_test_options *opts, saga_test_report **out)
{
    if (def == NULL || out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (def->nsteps == 0)
        return SAGA_EINVAL;
    saga_test_report *r = saga_malloc(sizeof *r);
    if (r == NULL)
        return SAGA_ENOMEM;
    memset(r, 0, sizeof *r);
    size_t cap = 0;
    uint32_t times = opts && opts->comp_failures ? opts->comp_failures : 2;
    saga_test_fault f;
    memset(&f, 0, sizeof f);
    int rc = add_run(r, &cap, def, data, len, f, opts);
    static const saga_test_fault_kind kinds[] = {SAGA_TEST_STEP_FAILS,
                                                 SAGA_TEST_STEP_TIMES_OUT,
                                                 SAGA_TEST_COMP_FAILS,
                                                 SAGA_TEST_CANCEL};
    for (size_t ki = 0; ki < 4 && rc == SAGA_OK; ki++)
        for (size_t s = 0; s < def->nsteps && rc == SAGA_OK; s++) {
            f.kind = kinds[ki];
            f.step = (int32_t)s;
            f.times = kinds[ki] == SAGA_TEST_COMP_FAILS ? times : 0;
            rc = add_run(r, &cap, def, data, len, f, opts);
        }
    if (rc != SAGA_OK) {
        saga_test_report_free(r);
        return rc;
    }
    *out = r;
    return SAGA_OK;
}

void saga_test_report_free(saga_test_report *r)
{
    if (r == NULL)
        return;
    saga_free(r->runs);
    saga_free(r);
}

size_t saga_test_report_format(const saga_test_report *r, char *buf, size_t len)
{
    size_t need = 0;
    if (buf != NULL && len > 0)
        buf[0] = '\0';
    for (size_t i = 0; r != NULL && i < r->nruns; i++) {
        const saga_test_run *run = &r->runs[i];
        char line[SAGA_TEST_TEXT_MAX + 1200];
        if (run->ok)
            snprintf(line, sizeof line, "ok        %s: %s\n", run->label,
                     saga_state_name(run->state));
        else
            snprintf(line, sizeof line, "VIOLATION %s: %s\n    journal: %s\n",
                     run->label, run->why, run->journal);
        need += strlen(line);
        if (buf != NULL && len > 0)
            appendf(buf, len, "%s", line);
    }
    return need;
}

const saga_test_run *saga_test_report_find(const saga_test_report *r,
                                           const char *label_part)
{
    for (size_t i = 0; r != NULL && label_part != NULL && i < r->nruns; i++)
        if (strstr(r->runs[i].label, label_part) != NULL)
            return &r->runs[i];
    return NULL;
}
