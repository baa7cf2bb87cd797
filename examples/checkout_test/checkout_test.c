/*
 * checkout_test — a unit test of the checkout saga, written with the test
 * kit (<saga/testing.h>): reserve inventory -> take payment (refunded on
 * failure) -> fulfil (the pivot) -> confirm (retriable).
 *
 * The kit explores every failure: each step failing, each timing out,
 * each compensation failing twice, a cancel at each step. After each run
 * the check below looks at the fakes: a COMPENSATED order must leave stock
 * and money as they were, undone in the reverse order of what was done.
 *
 * The same exploration is then run on two wrong definitions, which the kit
 * must report: one that forgets the refund, one whose compensations are
 * swapped (release wired to payment, refund to inventory).
 */
#include <saga/saga.h>
#include <stdio.h>
#include <string.h>

/* The fakes: what a real service would keep in its database. Actions run
 * at least once (a timed-out attempt may have applied and is tried
 * again), so each effect is applied once per saga, as a service keyed by
 * the saga id would. */
static struct {
    int stock, balance, shipped, confirmed;
    int reserved, paid;
    char done[256], undone[256]; /* "reserve pay ..." / "refund release" */
} shop;

static void note(char *log, const char *what)
{
    size_t n = strlen(log);
    snprintf(log + n, 256 - n, "%s%s", n ? " " : "", what);
}

static void ok(saga_engine *e, const saga_step_ref *ref)
{
    saga_step_complete(e, ref, SAGA_OUTCOME_OK, NULL, 0, NULL);
}

static void reserve(saga_engine *e, const saga_step_ref *ref, const void *d,
                    size_t n, void *arg)
{
    (void)d, (void)n, (void)arg;
    if (!shop.reserved) {
        shop.reserved = 1;
        shop.stock -= 1;
        note(shop.done, "reserve");
    }
    ok(e, ref);
}
static void release(saga_engine *e, const saga_step_ref *ref, const void *d,
                    size_t n, void *arg)
{
    (void)d, (void)n, (void)arg;
    if (shop.reserved) {
        shop.reserved = 0;
        shop.stock += 1;
        note(shop.undone, "release");
    }
    ok(e, ref);
}
static void pay(saga_engine *e, const saga_step_ref *ref, const void *d,
                size_t n, void *arg)
{
    (void)d, (void)n, (void)arg;
    if (!shop.paid) {
        shop.paid = 1;
        shop.balance -= 30;
        note(shop.done, "pay");
    }
    ok(e, ref);
}
static void refund(saga_engine *e, const saga_step_ref *ref, const void *d,
                   size_t n, void *arg)
{
    (void)d, (void)n, (void)arg;
    if (shop.paid) {
        shop.paid = 0;
        shop.balance += 30;
        note(shop.undone, "refund");
    }
    ok(e, ref);
}
static void fulfil(saga_engine *e, const saga_step_ref *ref, const void *d,
                   size_t n, void *arg)
{
    (void)d, (void)n, (void)arg;
    shop.shipped = 1;
    note(shop.done, "fulfil");
    ok(e, ref);
}
static void confirm(saga_engine *e, const saga_step_ref *ref, const void *d,
                    size_t n, void *arg)
{
    (void)d, (void)n, (void)arg;
    shop.confirmed = 1;
    ok(e, ref);
}

static void reset(void *arg)
{
    (void)arg;
    memset(&shop, 0, sizeof shop);
    shop.stock = 5;
    shop.balance = 100;
}

/* Undone in the reverse order of what was done, nothing left over. */
static int check(const saga_test_run *run, char *why, size_t len, void *arg)
{
    (void)arg;
    if (run->state != SAGA_STATE_COMPENSATED)
        return 1;
    if (shop.stock != 5 || shop.balance != 100 || shop.shipped) {
        snprintf(why, len, "compensated but stock %d, balance %d, shipped %d",
                 shop.stock, shop.balance, shop.shipped);
        return 0;
    }
    char want[256] = "";
    for (const char *p = shop.done + strlen(shop.done); p > shop.done;) {
        const char *end = p;
        while (p > shop.done && p[-1] != ' ')
            p--;
        char word[32];
        snprintf(word, sizeof word, "%.*s", (int)(end - p), p);
        if (strcmp(word, "reserve") == 0)
            note(want, "release");
        else if (strcmp(word, "pay") == 0)
            note(want, "refund");
        if (p > shop.done)
            p--;
    }
    if (strcmp(want, shop.undone) != 0) {
        snprintf(why, len, "did [%s], undid [%s], expected [%s]", shop.done,
                 shop.undone, want);
        return 0;
    }
    return 1;
}

enum variant { CORRECT, NO_REFUND, SWAPPED };

static saga_def *checkout(enum variant v)
{
    saga_def *d;
    saga_step_options pivot, retriable;
    saga_step_options_init(&pivot, SAGA_STEP_OPTIONS_VERSION);
    saga_step_options_init(&retriable, SAGA_STEP_OPTIONS_VERSION);
    pivot.kind = SAGA_STEP_PIVOT;
    retriable.kind = SAGA_STEP_RETRIABLE;
    saga_def_new(&d, "checkout", 1);
    saga_def_add_step(d, "reserve_inventory", reserve,
                      v == SWAPPED ? refund : release, NULL, NULL);
    saga_def_add_step(d, "take_payment", pay,
                      v == NO_REFUND ? NULL
                      : v == SWAPPED ? release
                                     : refund,
                      NULL, NULL);
    saga_def_add_step(d, "fulfil", fulfil, NULL, &pivot, NULL);
    saga_def_add_step(d, "confirm", confirm, NULL, &retriable, NULL);
    return d;
}

static int explore(const char *name, enum variant v, int want_violations)
{
    saga_test_options o;
    saga_test_options_init(&o, SAGA_TEST_OPTIONS_VERSION);
    o.reset = reset;
    o.check = check;
    saga_def *d = checkout(v);
    saga_test_report *r;
    if (saga_test_explore(d, NULL, 0, &o, &r) != SAGA_OK) {
        fprintf(stderr, "%s: exploration failed\n", name);
        saga_def_free(d);
        return 1;
    }
    static char text[1 << 16];
    saga_test_report_format(r, text, sizeof text);
    printf("== %s: %zu runs, %zu violations\n%s", name, r->nruns, r->nfailed,
           text);
    int bad = want_violations ? r->nfailed == 0 : r->nfailed != 0;
    /* A readable assertion on one run's journal. */
    const saga_test_run *run = saga_test_report_find(r, "'fulfil' fails");
    if (v == CORRECT &&
        (run == NULL ||
         strcmp(run->journal,
                "STARTED STEP_OK(reserve_inventory) STEP_OK(take_payment) "
                "STEP_FAIL(fulfil) COMPENSATING COMP_OK(take_payment) "
                "COMP_OK(reserve_inventory) COMPENSATED") != 0)) {
        fprintf(stderr, "%s: unexpected journal: %s\n", name,
                run ? run->journal : "(no such run)");
        bad = 1;
    }
    if (bad)
        fprintf(stderr, "%s: expected %s violations\n", name,
                want_violations ? "some" : "no");
    saga_test_report_free(r);
    saga_def_free(d);
    return bad;
}

int main(void)
{
    int bad = explore("checkout", CORRECT, 0);
    bad |= explore("checkout without refund (must be caught)", NO_REFUND, 1);
    bad |= explore("checkout with swapped compensations (must be caught)",
                   SWAPPED, 1);
    printf(bad ? "checkout_test: FAILED\n" : "checkout_test: ok\n");
    return bad;
}
