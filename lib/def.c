/*
 * def.c — saga definitions and their validation.
 *
 * A definition is checked as it is built, so that the error names the step
 * that broke a rule, and once more as a whole when it is registered.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define DEFAULT_TIMEOUT_MS 30000u
#define DEFAULT_ATTEMPTS 3u
#define DEFAULT_INITIAL_BACKOFF_MS 100u
#define DEFAULT_MAX_BACKOFF_MS 30000u
#define DEFAULT_MULTIPLIER 2.0
#define DEFAULT_JITTER 0.2

int saga__valid_name(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return 0;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok || n >= SAGA_NAME_MAX)
            return 0;
    }
    return 1;
}

int saga__step_has_comp(const saga__step *s)
{
    return s->compensation != NULL ||
           (s->opts.service != NULL && s->opts.comp_command != NULL);
}

static int fail(saga_def *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(saga_def *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->errmsg, sizeof d->errmsg, fmt, ap);
    va_end(ap);
    return SAGA_EINVAL;
}

/* A registered definition is shared with running sagas: it never changes. */
static int frozen(saga_def *d)
{
    if (!d->registered)
        return 0;
    snprintf(d->errmsg, sizeof d->errmsg,
             "definition '%s' v%u is registered with an engine and can no "
             "longer change",
             d->name, d->version);
    return 1;
}

int saga_step_options_init(saga_step_options *opts, unsigned int version)
{
    if (opts == NULL)
        return SAGA_EINVAL;
    SAGA__CHECK_VERSION(&version, SAGA_STEP_OPTIONS_VERSION);
    memset(opts, 0, sizeof *opts);
    opts->version = version;
    return SAGA_OK;
}

int saga_def_new(saga_def **out, const char *name, uint32_t version)
{
    if (out == NULL)
        return SAGA_EINVAL;
    *out = NULL;
    if (!saga__valid_name(name) || version == 0)
        return SAGA_EINVAL;
    saga_def *d = saga_malloc(sizeof *d);
    if (d == NULL)
        return SAGA_ENOMEM;
    memset(d, 0, sizeof *d);
    d->name = saga__strdup(name);
    if (d->name == NULL) {
        saga_free(d);
        return SAGA_ENOMEM;
    }
    d->version = version;
    d->pivot = -1;
    *out = d;
    return SAGA_OK;
}

void saga_def_free(saga_def *d)
{
    /* A registered definition is the engine's (running sagas use it):
     * freeing it here would leave the engine a dangling pointer, so this
     * misuse is a no-op; the engine frees it with saga__def_destroy(). */
    if (d == NULL || d->registered)
        return;
    saga__def_destroy(d);
}

void saga__def_destroy(saga_def *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->nsteps; i++) {
        saga__step *s = &d->steps[i];
        saga_free(s->name);
        saga_free((char *)s->opts.service);
        saga_free((char *)s->opts.command);
        saga_free((char *)s->opts.comp_command);
    }
    saga_free(d->steps);
    saga_free(d->name);
    saga_free(d);
}

/* Fill a policy's zero fields with defaults and check it. */
static int policy_fill(saga_def *d, const char *step, const char *what,
                       saga_retry_policy *p, uint32_t default_attempts)
{
    if (p->max_attempts == 0)
        p->max_attempts = default_attempts;
    if (p->initial_backoff_ms == 0)
        p->initial_backoff_ms = DEFAULT_INITIAL_BACKOFF_MS;
    if (p->max_backoff_ms == 0)
        p->max_backoff_ms = DEFAULT_MAX_BACKOFF_MS;
    if (p->multiplier == 0)
        p->multiplier = DEFAULT_MULTIPLIER;
    if (p->jitter == 0)
        p->jitter = DEFAULT_JITTER;
    else if (p->jitter < 0)
        p->jitter = 0;
    if (!(p->multiplier >= 1.0 && p->multiplier <= 1000.0))
        return fail(d, "step '%s': %s multiplier must be in [1, 1000]", step,
                    what);
    if (!(p->jitter <= 1.0))
        return fail(d, "step '%s': %s jitter must be at most 1", step, what);
    if (p->initial_backoff_ms > p->max_backoff_ms)
        return fail(d, "step '%s': %s initial backoff exceeds max backoff",
                    step, what);
    return SAGA_OK;
}

/* Validation: is step @p name, with options @p o (defaults not yet filled
 * in), a step @p d can take next? Fills the defaults into @p o. SAGA_OK, or
 * SAGA_EINVAL with d->errmsg naming the problem. Changes nothing in @p d. */
static int step_check(saga_def *d, const char *name, saga_action_fn action,
                      saga_action_fn compensation, saga_step_options *o)
{
    if (name == NULL || name[0] == '\0')
        return fail(d, "step %zu: empty name", d->nsteps);
    if (!saga__valid_name(name))
        return fail(d,
                    "step '%.64s': name must be 1..%d chars of "
                    "[A-Za-z0-9._-]",
                    name, SAGA_NAME_MAX);
    for (size_t i = 0; i < d->nsteps; i++)
        if (strcmp(d->steps[i].name, name) == 0)
            return fail(d, "duplicate step '%s'", name);
    if ((int)o->kind < SAGA_STEP_COMPENSATABLE || o->kind > SAGA_STEP_RETRIABLE)
        return fail(d, "step '%s': unknown kind %d", name, (int)o->kind);
    int remote = o->service != NULL;
    if (remote && action != NULL)
        return fail(d, "step '%s': both a local action and a remote service",
                    name);
    if (!remote && action == NULL)
        return fail(d, "step '%s': no action (and no remote service)", name);
    if (remote &&
        (!saga__valid_name(o->service) || !saga__valid_name(o->command)))
        return fail(d,
                    "step '%s': a remote step needs a valid service and "
                    "command name",
                    name);
    if (remote && compensation != NULL)
        return fail(d,
                    "step '%s': a remote step names its compensation in "
                    "comp_command, not as a local function",
                    name);
    if (o->comp_command != NULL &&
        (!remote || !saga__valid_name(o->comp_command)))
        return fail(d,
                    "step '%s': comp_command needs a remote service and a "
                    "valid name",
                    name);
    int has_comp = compensation != NULL || o->comp_command != NULL;
    int seen_retriable = 0, seen_comp = 0;
    for (size_t i = 0; i < d->nsteps; i++) {
        seen_retriable |= d->steps[i].opts.kind == SAGA_STEP_RETRIABLE;
        seen_comp |= d->steps[i].opts.kind == SAGA_STEP_COMPENSATABLE;
    }
    switch (o->kind) {
    case SAGA_STEP_RETRIABLE:
        if (has_comp)
            return fail(d, "step '%s': a retriable step has no compensation",
                        name);
        if (d->pivot < 0 && seen_comp)
            return fail(d,
                        "step '%s': a retriable step after compensatable "
                        "steps needs a pivot between them",
                        name);
        break;
    case SAGA_STEP_PIVOT:
        if (d->pivot >= 0)
            return fail(d, "step '%s': second pivot (the pivot is '%s')", name,
                        d->steps[d->pivot].name);
        if (has_comp)
            return fail(d, "step '%s': the pivot has no compensation", name);
        if (seen_retriable)
            return fail(d, "step '%s': the pivot comes after a retriable step",
                        name);
        break;
    case SAGA_STEP_COMPENSATABLE:
        if (d->pivot >= 0)
            return fail(d,
                        "step '%s': a compensatable step after the pivot "
                        "'%s'",
                        name, d->steps[d->pivot].name);
        if (seen_retriable)
            return fail(d,
                        "step '%s': a compensatable step after a retriable "
                        "step",
                        name);
        break;
    }
    if (o->timeout_ms == 0)
        o->timeout_ms = DEFAULT_TIMEOUT_MS;
    uint32_t def_attempts = o->kind == SAGA_STEP_RETRIABLE ? SAGA_RETRY_FOREVER
                                                           : DEFAULT_ATTEMPTS;
    int rc = policy_fill(d, name, "retry", &o->retry, def_attempts);
    if (rc == SAGA_OK)
        rc = policy_fill(d, name, "comp_retry", &o->comp_retry,
                         SAGA_RETRY_FOREVER);
    return rc;
}

/* Construction: append the checked step, copying its strings. SAGA_OK or
 * SAGA_ENOMEM (then @p d is unchanged). */
static int step_append(saga_def *d, const char *name, saga_action_fn action,
                       saga_action_fn compensation, saga_step_options o,
                       void *arg)
{
    if (saga__array_grow(&d->steps, &d->cap, d->nsteps + 1, sizeof *d->steps,
                         4) != SAGA_OK)
        return SAGA_ENOMEM;
    saga__step *s = &d->steps[d->nsteps];
    memset(s, 0, sizeof *s);
    const char *service = o.service, *command = o.command,
               *comp_command = o.comp_command;
    s->name = saga__strdup(name);
    o.service = saga__strdup(service);
    o.command = saga__strdup(command);
    o.comp_command = saga__strdup(comp_command);
    if (s->name == NULL || (service && !o.service) || (command && !o.command) ||
        (comp_command && !o.comp_command)) {
        saga_free(s->name);
        saga_free((char *)o.service);
        saga_free((char *)o.command);
        saga_free((char *)o.comp_command);
        return SAGA_ENOMEM;
    }
    o.version = SAGA_STEP_OPTIONS_VERSION;
    s->action = action;
    s->compensation = compensation;
    s->arg = arg;
    s->opts = o;
    if (o.kind == SAGA_STEP_PIVOT)
        d->pivot = (int)d->nsteps;
    d->nsteps++;
    return SAGA_OK;
}

int saga_def_add_step(saga_def *d, const char *name, saga_action_fn action,
                      saga_action_fn compensation,
                      const saga_step_options *opts, void *arg)
{
    if (d == NULL)
        return SAGA_EINVAL;
    d->errmsg[0] = '\0';
    if (frozen(d))
        return SAGA_EBUSY;
    saga_step_options o;
    if (opts == NULL) {
        saga_step_options_init(&o, SAGA_STEP_OPTIONS_VERSION);
    } else if (saga__check_version(opts, SAGA_STEP_OPTIONS_VERSION) !=
               SAGA_OK) {
        fail(d, "step options version %u is not supported", opts->version);
        return SAGA_EVERSION;
    } else {
        o = *opts;
    }
    int rc = step_check(d, name, action, compensation, &o);
    if (rc != SAGA_OK)
        return rc;
    return step_append(d, name, action, compensation, o, arg);
}

int saga_def_set_deadline(saga_def *d, uint64_t deadline_ms)
{
    if (d == NULL || deadline_ms > (uint64_t)INT64_MAX / 2)
        return SAGA_EINVAL;
    if (frozen(d))
        return SAGA_EBUSY;
    d->deadline_ms = deadline_ms;
    return SAGA_OK;
}

int saga_def_validate(saga_def *d)
{
    if (d == NULL)
        return SAGA_EINVAL;
    d->errmsg[0] = '\0';
    if (d->nsteps == 0)
        return fail(d, "definition '%s' v%u has no steps", d->name, d->version);
    return SAGA_OK;
}

const char *saga_def_errmsg(const saga_def *d)
{
    return d ? d->errmsg : "invalid argument";
}
const char *saga_def_name(const saga_def *d) { return d ? d->name : NULL; }
uint32_t saga_def_version(const saga_def *d) { return d ? d->version : 0; }
uint64_t saga_def_deadline(const saga_def *d) { return d ? d->deadline_ms : 0; }
size_t saga_def_step_count(const saga_def *d) { return d ? d->nsteps : 0; }

const char *saga_def_step_name(const saga_def *d, size_t i)
{
    return d && i < d->nsteps ? d->steps[i].name : NULL;
}

int saga_def_step_options(const saga_def *d, size_t i, saga_step_options *out)
{
    if (d == NULL || out == NULL)
        return SAGA_EINVAL;
    if (i >= d->nsteps)
        return SAGA_ENOTFOUND;
    *out = d->steps[i].opts;
    return SAGA_OK;
}

int saga_def_step_has_compensation(const saga_def *d, size_t i)
{
    return d && i < d->nsteps && saga__step_has_comp(&d->steps[i]);
}
