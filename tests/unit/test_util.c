/* test_util.c — lib/util.h: the list, the hash table, the buffer, the
 * version check and the message and log setters. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

typedef struct item {
    saga__list node;
    saga__hnode h;
    char key[16];
} item;

Test(util, list_keeps_order_and_splices)
{
    saga__list a, b;
    item it[4];
    saga__list_init(&a);
    saga__list_init(&b);
    for (int i = 0; i < 4; i++)
        saga__list_push_back(i < 2 ? &a : &b, &it[i].node);
    saga__list_splice_front(&a, &b); /* 2 3 0 1 */
    cr_assert(saga__list_empty(&b));
    const int want[] = {2, 3, 0, 1};
    int n = 0;
    SAGA__LIST_FOREACH(l, &a)
    {
        cr_assert_eq(SAGA__CONTAINER(l, item, node), &it[want[n]]);
        n++;
    }
    cr_assert_eq(n, 4);
    saga__list_remove(&it[3].node);
    saga__list_remove(&it[3].node); /* twice is harmless */
    cr_assert_eq(SAGA__CONTAINER(saga__list_pop_front(&a), item, node), &it[2]);
}

Test(util, htable_finds_after_growth_and_removes)
{
    saga__htable t = {0};
    static item it[200];
    for (int i = 0; i < 200; i++) {
        snprintf(it[i].key, sizeof it[i].key, "k%d", i);
        it[i].h.key = it[i].key;
        cr_assert_eq(saga__htable_reserve(&t), SAGA_OK);
        saga__htable_insert(&t, &it[i].h);
    }
    cr_assert_eq(t.count, 200);
    cr_assert_eq(saga__htable_find(&t, "k137"), &it[137].h);
    saga__htable_remove(&t, &it[137].h);
    cr_assert_null(saga__htable_find(&t, "k137"));
    cr_assert_null(saga__htable_find(&t, "nope"));
    cr_assert_eq(t.count, 199);
    saga__htable_free(&t);
    cr_assert_null(saga__htable_find(&t, "k1"));
}

Test(util, buf_appends_and_grows)
{
    saga__buf b = {0};
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(saga__buf_append(&b, "abc", 3), SAGA_OK);
    cr_assert_eq(saga__buf_append(&b, NULL, 0), SAGA_OK);
    cr_assert_eq(b.len, 3000);
    cr_assert_eq(memcmp(b.data + 2997, "abc", 3), 0);
    saga__buf_free(&b);
    cr_assert_null(b.data);
}

Test(util, array_grow_and_strdup)
{
    int *v = NULL;
    size_t cap = 0;
    cr_assert_eq(saga__array_grow(&v, &cap, 9, sizeof *v, 4), SAGA_OK);
    cr_assert_eq(cap, 16);
    v[15] = 1;
    saga_free(v);
    char *s = saga__strndup("hello world", 5);
    cr_assert_str_eq(s, "hello");
    saga_free(s);
    cr_assert_null(saga__strdup(NULL));
}

Test(util, version_check_gives_eversion)
{
    struct {
        unsigned int version;
    } o = {0};
    cr_assert_eq(saga__check_version(NULL, 2), SAGA_OK);
    cr_assert_eq(saga__check_version(&o, 2), SAGA_EVERSION);
    o.version = 3;
    cr_assert_eq(saga__check_version(&o, 2), SAGA_EVERSION);
    o.version = 2;
    cr_assert_eq(saga__check_version(&o, 2), SAGA_OK);
}

static char got[64];
static void logcb(saga_log_level l, const char *id, int step, const char *msg,
                  void *arg)
{
    (void)l;
    (void)id;
    (void)step;
    (void)arg;
    snprintf(got, sizeof got, "%s", msg);
}

Test(util, errf_and_logf_format)
{
    char e[8];
    cr_assert_eq(saga__errf(e, sizeof e, SAGA_EINVAL, "x=%d long", 42),
                 SAGA_EINVAL);
    cr_assert_str_eq(e, "x=42 lo");
    saga__logf(logcb, NULL, SAGA_LOG_INFO, "n=%d", 7);
    cr_assert_str_eq(got, "n=7");
    saga__logf(NULL, NULL, SAGA_LOG_INFO, "ignored");
}

static char owner_got[64];
static void event_cb(void *owner, saga_log_level l, const char *id, int step,
                     const char *line)
{
    snprintf(owner_got, sizeof owner_got, "%s %d %s %d %s", (char *)owner,
             (int)l, id ? id : "-", step, line);
}

static void vlog(saga_log_level min, saga_log_level lvl,
                 saga__log_line_fn event, saga_log_fn log, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void vlog(saga_log_level min, saga_log_level lvl,
                 saga__log_line_fn event, saga_log_fn log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    saga__vlog(min, lvl, "s1", 2, event, "own", log, NULL, "svc", fmt, ap);
    va_end(ap);
}

Test(util, vlog_filters_then_prefers_the_event_sink)
{
    got[0] = owner_got[0] = '\0';
    vlog(SAGA_LOG_WARN, SAGA_LOG_INFO, event_cb, logcb, "dropped %d", 1);
    cr_assert_str_eq(owner_got, "");
    cr_assert_str_eq(got, "");
    vlog(SAGA_LOG_WARN, SAGA_LOG_ERROR, event_cb, logcb, "to %s", "event");
    cr_assert_str_eq(owner_got, "own 4 s1 2 to event");
    cr_assert_str_eq(got, "");
    vlog(SAGA_LOG_WARN, SAGA_LOG_WARN, NULL, logcb, "to %s", "log");
    cr_assert_str_eq(got, "to log");
    /* Neither sink: a line on stderr, nothing else. */
    owner_got[0] = got[0] = '\0';
    vlog(SAGA_LOG_WARN, SAGA_LOG_WARN, NULL, NULL, "to %s", "stderr");
    cr_assert_str_eq(owner_got, "");
    cr_assert_str_eq(got, "");
}
