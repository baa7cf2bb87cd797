/*
 * metrics.h — counters and histograms of an engine (per definition and
 * step) and of participants, and their rendering in the Prometheus text
 * exposition format 0.0.4 (docs/api/metrics.md).
 *
 * Read them with a visitor (saga_engine_metrics(),
 * saga_participant_metrics()) or render them all at once
 * (saga_metrics_render()) for a `GET /metrics` endpoint. Every function
 * here runs on the loop thread of the engine or participant it reads.
 *
 * Families: saga_sagas_started_total, saga_sagas_completed_total,
 * saga_sagas_compensated_total, saga_sagas_failed_total,
 * saga_operator_actions_total, saga_step_attempts_total,
 * saga_step_latency_seconds, saga_step_attempts_until_ok,
 * saga_sagas_active, saga_starts_refused_total, saga_retries_total, saga_timeouts_total,
 * saga_stale_completions_total, saga_replies_rejected_total,
 * saga_commits_total, saga_commit_failures_total, saga_purged_total,
 * saga_commit_latency_seconds, saga_commit_batch_size, saga_outbox_depth,
 * saga_outbox_oldest_age_seconds, saga_participant_commands_total,
 * saga_participant_duplicates_total, saga_participant_null_compensations_total,
 * saga_participant_hanging_refused_total, saga_participant_events_total,
 * saga_participant_rejected_total, saga_participant_commits_total,
 * saga_participant_commit_failures_total, saga_codec_rejections_total,
 * saga_codec_decoded_total.
 */
#ifndef SAGA_METRICS_H
#define SAGA_METRICS_H

#include "saga/saga.h"

SAGA_BEGIN_DECL

struct saga_participant;

/** The type of a metric family (Prometheus TYPE). */
typedef enum saga_metric_type {
    SAGA_METRIC_COUNTER = 1,
    SAGA_METRIC_GAUGE = 2,
    SAGA_METRIC_HISTOGRAM = 3
} saga_metric_type;

/** The most labels one series carries. */
#define SAGA_METRIC_LABELS_MAX 4

/**
 * One series, borrowed for the visitor call. Series of one family (same
 * @c name) are visited one after another.
 */
typedef struct saga_metric {
    const char *name; /* "saga_sagas_started_total", ... */
    const char *help;
    saga_metric_type type;
    size_t nlabels;
    const char *label_names[SAGA_METRIC_LABELS_MAX];
    const char *label_values[SAGA_METRIC_LABELS_MAX];
    /** Counter or gauge value. */
    double value;
    /** Histograms: @c nbuckets upper bounds (ascending, +Inf excluded)
     * and cumulative counts; @c count is the +Inf bucket. */
    size_t nbuckets;
    const double *bounds;
    const uint64_t *cumulative;
    uint64_t count;
    double sum;
} saga_metric;

/** A series: return non-zero to stop. */
typedef int (*saga_metric_cb)(const saga_metric *m, void *arg);

/**
 * Visit the engine's metrics: sagas started, completed, compensated and
 * failed per definition; step attempts by outcome, retries, timeouts,
 * latency and attempts-until-OK per definition and step; operator actions;
 * active sagas; outbox depth and oldest-entry age (read from the store);
 * commit latency, batch size and failures; stale completions, replies and
 * codec rejections.
 * @return SAGA_OK, SAGA_EINVAL, SAGA_ENOMEM. Since: 0.2.
 * Ownership: what @p cb receives is borrowed for the call only; @p arg is
 *   passed to @p cb untouched.
 */
SAGA_EXTERN int saga_engine_metrics(saga_engine *e, saga_metric_cb cb,
                                    void *arg);

/**
 * Visit a participant's metrics (commands, inbox duplicates dropped, null
 * compensations, hanging actions refused, events, rejected messages,
 * commits), labelled with its service name.
 * @return SAGA_OK, SAGA_EINVAL. Since: 0.2.
 * Ownership: what @p cb receives is borrowed for the call only; @p arg is
 *   passed to @p cb untouched.
 */
SAGA_EXTERN int saga_participant_metrics(struct saga_participant *p,
                                         saga_metric_cb cb, void *arg);

/**
 * Render the metrics of @p e (may be NULL) and of @p nparts participants
 * as Prometheus text format 0.0.4: `# HELP` and `# TYPE` once per family,
 * label values escaped, histograms as `_bucket{le=...}` (ending with
 * `le="+Inf"`), `_sum` and `_count`; codec rejections are included once.
 * @return SAGA_OK, SAGA_EINVAL, SAGA_ENOMEM.
 * Ownership: free *out with saga_free(); *len excludes the final NUL.
 * Since: 0.2.
 */
SAGA_EXTERN int saga_metrics_render(saga_engine *e,
                                    struct saga_participant *const *parts,
                                    size_t nparts, char **out, size_t *len);

SAGA_END_DECL

#endif /* SAGA_METRICS_H */
