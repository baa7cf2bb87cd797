/*
 * test_metrics.c — per-definition and per-step metrics after a known run,
 * rendered as Prometheus text 0.0.4: the values, a +Inf bucket equal to
 * _count on every histogram, no duplicate series, one TYPE per family, and
 * `promtool check metrics` clean when promtool is installed.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static harness H;

static void setup(void) { h_init(&H); }
static void teardown(void)
{
    h_fini(&H);
    cr_expect_eq(uv_loop_close(&H.loop), 0);
}
TestSuite(metrics, .init = setup, .fini = teardown);

static void settle(void)
{
    for (int i = 0; i < 20; i++) {
        h_pump(&H);
        h_advance(&H, 60000);
    }
}

static char *render(void)
{
    char *text;
    size_t len;
    cr_assert_eq(saga_metrics_render(H.e, NULL, 0, &text, &len), SAGA_OK);
    cr_assert_eq(strlen(text), len);
    return text;
}

static void expect_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof want, "\n%s\n", line);
    cr_expect(strstr(text, want) != NULL, "missing line: %s", line);
}

/* Two sagas: A completes (s0 retried once), B fails at the pivot and is
 * compensated (s0 retried once too). */
static char *known_run(void)
{
    saga_step_options o = SAGA_STEP_OPTIONS_INIT;
    o.retry.jitter = SAGA_JITTER_NONE;
    cr_assert_eq(h_engine(&H, NULL, NULL), SAGA_OK);
    saga_def *d = h_def(&H, "cpr", &o);
    cr_assert_eq(saga_engine_register(H.e, d), SAGA_OK);
    cr_assert_eq(saga_engine_start(H.e), SAGA_OK);
    H.script[0] = "ro";
    H.script[1] = "o";
    H.script[2] = "o";
    H.comp_script[0] = "o";
    char a[SAGA_ID_SIZE], b[SAGA_ID_SIZE];
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, a, NULL, NULL), SAGA_OK);
    settle();
    cr_assert_eq(h_state(&H, a), SAGA_STATE_COMPLETED);
    H.script[1] = "f";
    cr_assert_eq(saga_start(H.e, "t", NULL, NULL, 0, b, NULL, NULL), SAGA_OK);
    settle();
    cr_assert_eq(h_state(&H, b), SAGA_STATE_COMPENSATED);
    return render();
}

Test(metrics, values_after_a_known_run)
{
    char *t = known_run();
    expect_line(t,
                "saga_sagas_started_total{definition=\"t\",version=\"1\"} 2");
    expect_line(t,
                "saga_sagas_completed_total{definition=\"t\",version=\"1\"} 1");
    expect_line(
        t, "saga_sagas_compensated_total{definition=\"t\",version=\"1\"} 1");
    expect_line(t, "saga_sagas_failed_total{definition=\"t\",version=\"1\"} 0");
    expect_line(t, "saga_step_attempts_total{definition=\"t\",step=\"s0\","
                   "direction=\"action\",outcome=\"retry\"} 2");
    expect_line(t, "saga_step_attempts_total{definition=\"t\",step=\"s0\","
                   "direction=\"action\",outcome=\"ok\"} 2");
    expect_line(t, "saga_step_attempts_total{definition=\"t\",step=\"s1\","
                   "direction=\"action\",outcome=\"fail\"} 1");
    expect_line(t, "saga_step_attempts_total{definition=\"t\",step=\"s1\","
                   "direction=\"action\",outcome=\"ok\"} 1");
    expect_line(t, "saga_step_attempts_total{definition=\"t\",step=\"s0\","
                   "direction=\"compensation\",outcome=\"ok\"} 1");
    expect_line(t, "saga_step_attempts_until_ok_count{definition=\"t\","
                   "step=\"s0\"} 2");
    expect_line(t, "saga_step_attempts_until_ok_sum{definition=\"t\","
                   "step=\"s0\"} 4");
    expect_line(t, "saga_step_attempts_until_ok_bucket{definition=\"t\","
                   "step=\"s0\",le=\"1\"} 0");
    expect_line(t, "saga_step_attempts_until_ok_bucket{definition=\"t\","
                   "step=\"s0\",le=\"2\"} 2");
    expect_line(t, "saga_retries_total 2");
    expect_line(t, "saga_sagas_active 0");
    expect_line(t, "saga_starts_refused_total 0");
    expect_line(t, "saga_outbox_depth 0");
    expect_line(t, "# TYPE saga_step_latency_seconds histogram");
    expect_line(t, "# TYPE saga_sagas_started_total counter");
    cr_expect(strstr(t, "saga_commit_batch_size_count 0\n") == NULL,
              "commits are counted");
    saga_free(t);
}

/* Every histogram series ends with a +Inf bucket equal to its _count, no
 * series appears twice, and each family has one HELP and one TYPE. */
Test(metrics, well_formed_exposition)
{
    char *t = known_run();
    cr_assert_eq(t[strlen(t) - 1], '\n');
    size_t cap = 4096, n = 0;
    char **keys = calloc(cap, sizeof *keys);
    char *copy = strdup(t);
    size_t counts = 0;
    for (char *line = strtok(copy, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') {
            char kind[8], name[200];
            cr_assert_eq(sscanf(line, "# %7s %199s", kind, name), 2);
            char key[256];
            snprintf(key, sizeof key, "#%s %s", kind, name);
            for (size_t i = 0; i < n; i++)
                cr_assert_str_neq(keys[i], key, "repeated %s", key);
            cr_assert_lt(n, cap);
            keys[n++] = strdup(key);
            continue;
        }
        char *sp = strrchr(line, ' ');
        cr_assert_not_null(sp, "%s", line);
        *sp = '\0';
        for (size_t i = 0; i < n; i++)
            cr_assert_str_neq(keys[i], line, "duplicate series %s", line);
        cr_assert_lt(n, cap);
        keys[n++] = strdup(line);
        /* NAME_count{L} V needs NAME_bucket{L,le="+Inf"} V. */
        char *c = strstr(line, "_count");
        if (c != NULL && (c[6] == '\0' || c[6] == '{')) {
            counts++;
            char want[600];
            const char *labels = c[6] == '{' ? c + 7 : "";
            size_t ll = strlen(labels);
            snprintf(want, sizeof want, "%.*s_bucket{%.*s%sle=\"+Inf\"} %s\n",
                     (int)(c - line), line, (int)(ll ? ll - 1 : 0), labels,
                     ll ? "," : "", sp + 1);
            cr_expect(strstr(t, want) != NULL, "no +Inf bucket: %s", want);
        }
    }
    cr_expect_gt(counts, 5);
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    free(copy);

    /* promtool, when installed (scripts/deps.sh installs it). */
    if (access("/usr/bin/promtool", X_OK) == 0) {
        char path[] = "/tmp/saga-metrics-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, t, strlen(t)), (ssize_t)strlen(t));
        close(fd);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "promtool check metrics < %s > %s.out 2>&1",
                 path, path);
        int rc = system(cmd);
        snprintf(cmd, sizeof cmd, "cat %s.out >&2; rm -f %s %s.out", path, path,
                 path);
        if (rc != 0)
            cr_expect_eq(system(cmd), 0);
        else
            cr_expect_eq(system(cmd), 0);
        cr_expect_eq(rc, 0, "promtool check metrics failed (see stderr)");
    }
    saga_free(t);
}
