/*
 * metrics.c — per-definition and per-step counters and histograms, fed from
 * the journal entries the engine stages (one hook in batch.c) and from its
 * commits, and the Prometheus text renderer (include/saga/metrics.h).
 *
 * Counting at staging: a staged journal entry is committed eventually (a
 * failed commit keeps the batch and retries it), so the counters follow the
 * journal without a second pass over each committed batch.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "engine_int.h"
#include "participant_int.h"
#include "saga/admin.h"
#include "saga/metrics.h"

/* Step latency and commit latency, in seconds. */
static const double lat_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05,  0.1,    0.25,  0.5,  1,
                                    2.5,   5,      10,    30,   60};
#define NLAT (sizeof lat_bounds / sizeof lat_bounds[0])
static const double att_bounds[] = {1, 2, 3, 5, 10, 25};
#define NATT (sizeof att_bounds / sizeof att_bounds[0])
static const double batch_bounds[] = {1,  2,   4,   8,   16,  32,
                                      64, 128, 256, 512, 1024};
#define NBATCH (sizeof batch_bounds / sizeof batch_bounds[0])
#define NB_MAX 16

typedef struct hist {
    uint64_t b[NB_MAX]; /* per bucket, not cumulative */
    uint64_t count;
    double sum;
} hist;

static void hist_add(hist *h, const double *bounds, size_t nb, double v)
{
    size_t i = 0;
    while (i < nb && v > bounds[i])
        i++;
    if (i < nb)
        h->b[i]++;
    h->count++;
    h->sum += v;
}

enum { OC_OK, OC_FAIL, OC_RETRY, OC_TIMEOUT, OC_N };
static const char *const oc_names[OC_N] = {"ok", "fail", "retry", "timeout"};
static const char *const dir_names[2] = {"action", "compensation"};

typedef struct step_m {
    uint64_t outcomes[2][OC_N];
    hist latency[2];
    hist attempts; /* attempts until an action's OK */
} step_m;

typedef struct def_m {
    const saga_def *def;
    char version[16];
    uint64_t started, completed, compensated, failed;
    uint64_t ops[3]; /* retry, compensate, resolve */
    step_m *steps;
    struct def_m *next;
} def_m;

typedef struct saga__metrics {
    def_m *defs;
    hist commit_latency;
    hist batch_size;
} saga__metrics;

static def_m *def_metrics(saga_engine *e, const saga_def *def)
{
    if (e->metrics == NULL) {
        e->metrics = saga_malloc(sizeof *e->metrics);
        if (e->metrics == NULL)
            return NULL;
        memset(e->metrics, 0, sizeof *e->metrics);
    }
    def_m **pp = &e->metrics->defs;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->def == def)
            return *pp;
    def_m *d = saga_malloc(sizeof *d);
    step_m *st = saga_malloc(def->nsteps * sizeof *st);
    if (d == NULL || st == NULL) {
        saga_free(d);
        saga_free(st);
        return NULL;
    }
    memset(d, 0, sizeof *d);
    memset(st, 0, def->nsteps * sizeof *st);
    d->def = def;
    d->steps = st;
    snprintf(d->version, sizeof d->version, "%u", def->version);
    *pp = d;
    return d;
}

void saga__metrics_journal(saga_engine *e, const saga__inst *in,
                           const saga_journal_entry *j)
{
    def_m *d = def_metrics(e, in->def);
    if (d == NULL)
        return;
    int dir = -1, oc = -1;
    switch (j->kind) {
    case SAGA_JOURNAL_STARTED:
        d->started++;
        return;
    case SAGA_JOURNAL_COMPLETED:
        d->completed++;
        return;
    case SAGA_JOURNAL_COMPENSATED:
        d->compensated++;
        return;
    case SAGA_JOURNAL_FAILED:
        d->failed++;
        return;
    case SAGA_JOURNAL_OPERATOR_RETRY:
        d->ops[0]++;
        return;
    case SAGA_JOURNAL_OPERATOR_COMPENSATE:
        d->ops[1]++;
        return;
    case SAGA_JOURNAL_OPERATOR_RESOLVE:
        d->ops[2]++;
        return;
    case SAGA_JOURNAL_STEP_OK:
        dir = 0, oc = OC_OK;
        break;
    case SAGA_JOURNAL_STEP_FAIL:
        dir = 0, oc = OC_FAIL;
        break;
    case SAGA_JOURNAL_STEP_RETRY:
        dir = 0, oc = OC_RETRY;
        break;
    case SAGA_JOURNAL_STEP_TIMEOUT:
        dir = 0, oc = OC_TIMEOUT;
        break;
    case SAGA_JOURNAL_COMP_OK:
        dir = 1, oc = OC_OK;
        break;
    case SAGA_JOURNAL_COMP_FAIL:
        dir = 1, oc = OC_FAIL;
        break;
    case SAGA_JOURNAL_COMP_TIMEOUT:
        dir = 1, oc = OC_TIMEOUT;
        break;
    default:
        return;
    }
    if (j->step < 0 || (size_t)j->step >= in->def->nsteps)
        return;
    step_m *s = &d->steps[j->step];
    s->outcomes[dir][oc]++;
    if (j->started_ms > 0 && j->at_ms >= j->started_ms)
        hist_add(&s->latency[dir], lat_bounds, NLAT,
                 (double)(j->at_ms - j->started_ms) / 1000.0);
    if (dir == 0 && oc == OC_OK)
        hist_add(&s->attempts, att_bounds, NATT, (double)j->attempt);
}

void saga__metrics_commit(saga_engine *e, size_t transitions,
                          int64_t latency_us, int ok)
{
    if (e->metrics == NULL) {
        e->metrics = saga_malloc(sizeof *e->metrics);
        if (e->metrics == NULL)
            return;
        memset(e->metrics, 0, sizeof *e->metrics);
    }
    hist_add(&e->metrics->commit_latency, lat_bounds, NLAT,
             (double)latency_us / 1e6);
    if (ok)
        hist_add(&e->metrics->batch_size, batch_bounds, NBATCH,
                 (double)transitions);
}

void saga__metrics_free(saga_engine *e)
{
    if (e->metrics == NULL)
        return;
    for (def_m *d = e->metrics->defs, *nx; d; d = nx) {
        nx = d->next;
        saga_free(d->steps);
        saga_free(d);
    }
    saga_free(e->metrics);
    e->metrics = NULL;
}

/* ------------------------------------------------------------------------ */
/* Visitors                                                                 */

static void m_init(saga_metric *m, const char *name, const char *help,
                   saga_metric_type t)
{
    memset(m, 0, sizeof *m);
    m->name = name;
    m->help = help;
    m->type = t;
}

static void m_label(saga_metric *m, const char *k, const char *v)
{
    if (m->nlabels < SAGA_METRIC_LABELS_MAX) {
        m->label_names[m->nlabels] = k;
        m->label_values[m->nlabels] = v;
        m->nlabels++;
    }
}

static int emit_hist(saga_metric *m, const hist *h, const double *bounds,
                     size_t nb, saga_metric_cb cb, void *arg)
{
    uint64_t cum[NB_MAX], c = 0;
    for (size_t i = 0; i < nb; i++)
        cum[i] = c += h->b[i];
    m->nbuckets = nb;
    m->bounds = bounds;
    m->cumulative = cum;
    m->count = h->count;
    m->sum = h->sum;
    return cb(m, arg);
}

typedef struct def_counter {
    const char *name, *help;
    size_t off;
} def_counter;

static const def_counter def_counters[] = {
    {"saga_sagas_started_total", "Sagas started.", offsetof(def_m, started)},
    {"saga_sagas_completed_total", "Sagas that reached COMPLETED.",
     offsetof(def_m, completed)},
    {"saga_sagas_compensated_total", "Sagas that reached COMPENSATED.",
     offsetof(def_m, compensated)},
    {"saga_sagas_failed_total",
     "Sagas that reached FAILED (they wait for an operator).",
     offsetof(def_m, failed)},
};

typedef struct outbox_ctx {
    uint64_t n;
    int64_t oldest;
} outbox_ctx;

static int outbox_cb(const saga_message *msg, void *arg)
{
    outbox_ctx *c = arg;
    if (c->n == 0 || msg->created_ms < c->oldest)
        c->oldest = msg->created_ms;
    c->n++;
    return 0;
}

#define OUTBOX_SCAN_MAX 100000u

int saga_engine_metrics(saga_engine *e, saga_metric_cb cb, void *arg)
{
    if (e == NULL || cb == NULL)
        return SAGA_EINVAL;
    saga_metric m;
    def_m *defs = e->metrics ? e->metrics->defs : NULL;
    for (size_t k = 0; k < sizeof def_counters / sizeof def_counters[0]; k++) {
        for (def_m *d = defs; d; d = d->next) {
            m_init(&m, def_counters[k].name, def_counters[k].help,
                   SAGA_METRIC_COUNTER);
            m_label(&m, "definition", d->def->name);
            m_label(&m, "version", d->version);
            m.value = (double)*(const uint64_t *)((const char *)d +
                                                  def_counters[k].off);
            if (cb(&m, arg))
                return SAGA_OK;
        }
    }
    for (def_m *d = defs; d; d = d->next)
        for (int op = 0; op < 3; op++) {
            m_init(&m, "saga_operator_actions_total",
                   "Operator actions applied (retry, compensate, resolve).",
                   SAGA_METRIC_COUNTER);
            m_label(&m, "definition", d->def->name);
            m_label(&m, "version", d->version);
            m_label(&m, "action", saga_op_name((saga_op_kind)(op + 1)));
            m.value = (double)d->ops[op];
            if (cb(&m, arg))
                return SAGA_OK;
        }
    for (def_m *d = defs; d; d = d->next)
        for (size_t i = 0; i < d->def->nsteps; i++)
            for (int dir = 0; dir < 2; dir++)
                for (int oc = 0; oc < OC_N; oc++) {
                    if (dir == 1 && oc == OC_RETRY)
                        continue; /* a compensation's RETRY counts as FAIL */
                    m_init(&m, "saga_step_attempts_total",
                           "Step attempts by direction and outcome (retry and "
                           "timeout outcomes are retried).",
                           SAGA_METRIC_COUNTER);
                    m_label(&m, "definition", d->def->name);
                    m_label(&m, "step", d->def->steps[i].name);
                    m_label(&m, "direction", dir_names[dir]);
                    m_label(&m, "outcome", oc_names[oc]);
                    m.value = (double)d->steps[i].outcomes[dir][oc];
                    if (cb(&m, arg))
                        return SAGA_OK;
                }
    for (def_m *d = defs; d; d = d->next)
        for (size_t i = 0; i < d->def->nsteps; i++)
            for (int dir = 0; dir < 2; dir++) {
                m_init(&m, "saga_step_latency_seconds",
                       "Time from an attempt's start to its outcome.",
                       SAGA_METRIC_HISTOGRAM);
                m_label(&m, "definition", d->def->name);
                m_label(&m, "step", d->def->steps[i].name);
                m_label(&m, "direction", dir_names[dir]);
                if (emit_hist(&m, &d->steps[i].latency[dir], lat_bounds, NLAT,
                              cb, arg))
                    return SAGA_OK;
            }
    for (def_m *d = defs; d; d = d->next)
        for (size_t i = 0; i < d->def->nsteps; i++) {
            m_init(&m, "saga_step_attempts_until_ok",
                   "Attempts a step's action took until it reported OK.",
                   SAGA_METRIC_HISTOGRAM);
            m_label(&m, "definition", d->def->name);
            m_label(&m, "step", d->def->steps[i].name);
            if (emit_hist(&m, &d->steps[i].attempts, att_bounds, NATT, cb, arg))
                return SAGA_OK;
        }
    struct {
        const char *name, *help;
        saga_metric_type t;
        double v;
    } flat[] = {
        {"saga_sagas_active", "Sagas RUNNING or COMPENSATING in memory.",
         SAGA_METRIC_GAUGE, (double)e->idx.ninst},
        {"saga_starts_refused_total",
         "New sagas refused by the admission limit (max_active).",
         SAGA_METRIC_COUNTER, (double)e->stats.starts_refused},
        {"saga_retries_total",
         "Attempts scheduled again after RETRY, FAIL "
         "of a compensation, or a timeout.",
         SAGA_METRIC_COUNTER, (double)e->stats.retries},
        {"saga_timeouts_total", "Attempts that timed out.", SAGA_METRIC_COUNTER,
         (double)e->stats.timeouts},
        {"saga_stale_completions_total",
         "Completions ignored because their attempt was no longer current.",
         SAGA_METRIC_COUNTER, (double)e->stats.stale_completions},
        {"saga_replies_rejected_total",
         "Replies from participants that could not be decoded or matched.",
         SAGA_METRIC_COUNTER, (double)e->replies_rejected},
        {"saga_commits_total", "Store transactions committed.",
         SAGA_METRIC_COUNTER, (double)e->stats.commits},
        {"saga_commit_failures_total", "Store commits that failed (retried).",
         SAGA_METRIC_COUNTER, (double)e->stats.commit_failures},
        {"saga_purged_total", "Ended sagas purged after their retention.",
         SAGA_METRIC_COUNTER, (double)e->stats.purged},
    };
    for (size_t k = 0; k < sizeof flat / sizeof flat[0]; k++) {
        m_init(&m, flat[k].name, flat[k].help, flat[k].t);
        m.value = flat[k].v;
        if (cb(&m, arg))
            return SAGA_OK;
    }
    hist empty;
    memset(&empty, 0, sizeof empty);
    m_init(&m, "saga_commit_latency_seconds",
           "Time to write and commit one group-commit batch.",
           SAGA_METRIC_HISTOGRAM);
    if (emit_hist(&m, e->metrics ? &e->metrics->commit_latency : &empty,
                  lat_bounds, NLAT, cb, arg))
        return SAGA_OK;
    m_init(&m, "saga_commit_batch_size",
           "Journal entries (transitions) per committed batch.",
           SAGA_METRIC_HISTOGRAM);
    if (emit_hist(&m, e->metrics ? &e->metrics->batch_size : &empty,
                  batch_bounds, NBATCH, cb, arg))
        return SAGA_OK;
    outbox_ctx oc = {0, 0};
    if (e->store->outbox_scan(e->store, OUTBOX_SCAN_MAX, outbox_cb, &oc) !=
        SAGA_OK)
        oc.n = 0;
    m_init(&m, "saga_outbox_depth",
           "Messages in the outbox not yet "
           "confirmed by the transport (counted up to 100000).",
           SAGA_METRIC_GAUGE);
    m.value = (double)oc.n;
    if (cb(&m, arg))
        return SAGA_OK;
    m_init(&m, "saga_outbox_oldest_age_seconds",
           "Age of the oldest message in the outbox; 0 when empty.",
           SAGA_METRIC_GAUGE);
    int64_t age = oc.n ? saga__now(e) - oc.oldest : 0;
    m.value = age > 0 ? (double)age / 1000.0 : 0.0;
    cb(&m, arg);
    return SAGA_OK;
}

int saga_participant_metrics(saga_participant *p, saga_metric_cb cb, void *arg)
{
    if (p == NULL || cb == NULL)
        return SAGA_EINVAL;
    const saga_participant_counters *s = &p->stats;
    struct {
        const char *name, *help;
        uint64_t v;
    } c[] = {
        {"saga_participant_commands_total", "Commands applied.", s->commands},
        {"saga_participant_duplicates_total",
         "Redelivered messages dropped by the inbox (answered from it).",
         s->duplicates},
        {"saga_participant_null_compensations_total",
         "Compensations for actions never applied (recorded as no-ops).",
         s->null_compensations},
        {"saga_participant_hanging_refused_total",
         "Actions refused because their compensation came first.",
         s->hanging_refused},
        {"saga_participant_events_total", "Events handled.", s->events},
        {"saga_participant_rejected_total",
         "Messages rejected (undecodable or unknown).", s->rejected},
        {"saga_participant_commits_total", "Store transactions committed.",
         s->commits},
        {"saga_participant_commit_failures_total",
         "Store commits that failed (retried).", s->commit_failures},
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
        saga_metric m;
        m_init(&m, c[k].name, c[k].help, SAGA_METRIC_COUNTER);
        m_label(&m, "service", p->opts.service);
        m.value = (double)c[k].v;
        if (cb(&m, arg))
            break;
    }
    return SAGA_OK;
}

/* ------------------------------------------------------------------------ */
/* Prometheus text format 0.0.4                                             */

typedef struct textbuf {
    char *p;
    size_t len, cap;
    int oom;
    char last[128]; /* the family being written */
} textbuf;

static void put(textbuf *t, const char *s, size_t n)
{
    if (t->oom)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 8192;
        while (nc < t->len + n + 1)
            nc *= 2;
        char *np = saga_realloc(t->p, nc);
        if (np == NULL) {
            t->oom = 1;
            return;
        }
        t->p = np;
        t->cap = nc;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void puts_(textbuf *t, const char *s) { put(t, s, strlen(s)); }

static void putf(textbuf *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void putf(textbuf *t, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(t, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* A label value: backslash, double quote and newline are escaped. */
static void put_escaped(textbuf *t, const char *s, int help)
{
    for (; s && *s; s++) {
        if (*s == '\\')
            puts_(t, "\\\\");
        else if (*s == '\n')
            puts_(t, "\\n");
        else if (*s == '"' && !help)
            puts_(t, "\\\"");
        else
            put(t, s, 1);
    }
}

static void put_num(textbuf *t, double v)
{
    if (isinf(v))
        puts_(t, v > 0 ? "+Inf" : "-Inf");
    else if (v > -1e15 && v < 1e15 && v == (double)(int64_t)v)
        putf(t, "%.0f", v);
    else
        putf(t, "%.9g", v);
}

static void put_labels(textbuf *t, const saga_metric *m, const char *le)
{
    if (m->nlabels == 0 && le == NULL)
        return;
    puts_(t, "{");
    for (size_t i = 0; i < m->nlabels; i++) {
        if (i)
            puts_(t, ",");
        puts_(t, m->label_names[i]);
        puts_(t, "=\"");
        put_escaped(t, m->label_values[i], 0);
        puts_(t, "\"");
    }
    if (le != NULL) {
        if (m->nlabels)
            puts_(t, ",");
        puts_(t, "le=\"");
        puts_(t, le);
        puts_(t, "\"");
    }
    puts_(t, "}");
}

static int render_cb(const saga_metric *m, void *arg)
{
    textbuf *t = arg;
    static const char *const types[] = {"untyped", "counter", "gauge",
                                        "histogram"};
    if (strcmp(t->last, m->name) != 0) {
        snprintf(t->last, sizeof t->last, "%s", m->name);
        puts_(t, "# HELP ");
        puts_(t, m->name);
        puts_(t, " ");
        put_escaped(t, m->help, 1);
        puts_(t, "\n# TYPE ");
        puts_(t, m->name);
        puts_(t, " ");
        puts_(t, types[m->type <= 3 ? m->type : 0]);
        puts_(t, "\n");
    }
    if (m->type != SAGA_METRIC_HISTOGRAM) {
        puts_(t, m->name);
        put_labels(t, m, NULL);
        puts_(t, " ");
        put_num(t, m->value);
        puts_(t, "\n");
        return 0;
    }
    for (size_t i = 0; i <= m->nbuckets; i++) {
        char le[32];
        if (i < m->nbuckets)
            snprintf(le, sizeof le, "%g", m->bounds[i]);
        else
            snprintf(le, sizeof le, "+Inf");
        puts_(t, m->name);
        puts_(t, "_bucket");
        put_labels(t, m, le);
        puts_(t, " ");
        put_num(t, (double)(i < m->nbuckets ? m->cumulative[i] : m->count));
        puts_(t, "\n");
    }
    puts_(t, m->name);
    puts_(t, "_sum");
    put_labels(t, m, NULL);
    puts_(t, " ");
    put_num(t, m->sum);
    puts_(t, "\n");
    puts_(t, m->name);
    puts_(t, "_count");
    put_labels(t, m, NULL);
    puts_(t, " ");
    put_num(t, (double)m->count);
    puts_(t, "\n");
    return 0;
}

static void codec_metrics(textbuf *t)
{
    saga_codec_counters c = SAGA_CODEC_COUNTERS_INIT;
    saga_codec_stats(&c);
    struct {
        const char *reason;
        uint64_t v;
    } r[] = {{"malformed", c.rej_malformed}, {"oversize", c.rej_oversize},
             {"version", c.rej_version},     {"type", c.rej_type},
             {"missing", c.rej_missing},     {"duplicate", c.rej_duplicate},
             {"invalid", c.rej_invalid}};
    for (size_t k = 0; k < sizeof r / sizeof r[0]; k++) {
        saga_metric m;
        m_init(&m, "saga_codec_rejections_total",
               "Messages the envelope decoder rejected, by reason "
               "(process-wide).",
               SAGA_METRIC_COUNTER);
        m_label(&m, "reason", r[k].reason);
        m.value = (double)r[k].v;
        render_cb(&m, t);
    }
    saga_metric m;
    m_init(&m, "saga_codec_decoded_total",
           "Messages the envelope decoder accepted (process-wide).",
           SAGA_METRIC_COUNTER);
    m.value = (double)c.decoded;
    render_cb(&m, t);
}

/* Participants' families interleave per participant; render them family
 * by family so that each family's series stay together. */
typedef struct family_filter {
    textbuf *t;
    const char *name;
} family_filter;

static int family_cb(const saga_metric *m, void *arg)
{
    family_filter *f = arg;
    if (strcmp(m->name, f->name) == 0)
        render_cb(m, f->t);
    return 0;
}

typedef struct name_collect {
    const char *names[32];
    size_t n;
} name_collect;

static int name_cb(const saga_metric *m, void *arg)
{
    name_collect *c = arg;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->names[i], m->name) == 0)
            return 0;
    if (c->n < 32)
        c->names[c->n++] = m->name; /* static strings */
    return 0;
}

int saga_metrics_render(saga_engine *e, saga_participant *const *parts,
                        size_t nparts, char **out, size_t *len)
{
    if (out == NULL || (nparts && parts == NULL))
        return SAGA_EINVAL;
    *out = NULL;
    if (len)
        *len = 0;
    textbuf t;
    memset(&t, 0, sizeof t);
    if (e != NULL)
        saga_engine_metrics(e, render_cb, &t);
    if (nparts > 0) {
        name_collect names;
        names.n = 0;
        for (size_t i = 0; i < nparts; i++)
            saga_participant_metrics(parts[i], name_cb, &names);
        for (size_t k = 0; k < names.n; k++) {
            family_filter f = {&t, names.names[k]};
            for (size_t i = 0; i < nparts; i++)
                saga_participant_metrics(parts[i], family_cb, &f);
        }
    }
    codec_metrics(&t);
    if (t.oom) {
        saga_free(t.p);
        return SAGA_ENOMEM;
    }
    *out = t.p;
    if (len)
        *len = t.len;
    return SAGA_OK;
}
