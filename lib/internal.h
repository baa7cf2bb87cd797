/*
 * internal.h — declarations shared by the engine's own source files.
 * Nothing here is public; names are saga__*.
 */
#ifndef SAGA_INTERNAL_H
#define SAGA_INTERNAL_H

#include <stdarg.h>

#include "saga/saga.h"
#include "util.h"

/* Known bugs, compiled only into the simulator's test build of the library
 * (tests/sim, CMake option SAGA_SIM_BUGS) and selected at run time there;
 * the shipped library never contains them. SAGA__BUG(n) is 0 otherwise. */
#ifdef SAGA_SIM_BUGS
extern int saga__sim_bug;
#define SAGA__BUG(n) (saga__sim_bug == (n))
#else
#define SAGA__BUG(n) 0
#endif
#define SAGA__BUG_INBOX 1       /* the inbox claim is skipped */
#define SAGA__BUG_COMP_NEVER 2  /* a step that never ran is compensated */
#define SAGA__BUG_EARLY_REPLY 3 /* a reply is released before its commit */
#define SAGA__BUG_NO_HANGING 4  /* the barrier's hanging-action check */
/* Bugs saga-sim found and that are fixed: put back, to show it still would */
#define SAGA__BUG_FAIL_NOT_FINAL 5 /* no 'F' barrier after an action FAIL */
#define SAGA__BUG_RETRY_SAME_ID 6  /* an operator retry reuses command ids */

/* One step of a definition, with every default filled in. */
typedef struct saga__step {
    char *name;
    saga_action_fn action;
    saga_action_fn compensation;
    void *arg;
    saga_step_options opts; /* effective; strings are owned copies */
} saga__step;

struct saga_def {
    char *name;
    uint32_t version;
    uint64_t deadline_ms;
    saga__step *steps;
    size_t nsteps;
    size_t cap;
    int pivot; /* index of the pivot step, -1 if none */
    /* Owned by an engine (saga_engine_register()): frozen from then on. */
    int registered;
    char errmsg[256];
};

/* Free @p d whether or not an engine owns it (saga_def_free() refuses a
 * registered one): for the engine that owns it. */
void saga__def_destroy(saga_def *d);
/* 1 if step @p s has a compensation (local or remote). */
int saga__step_has_comp(const saga__step *s);
/* 1 if @p name is a valid definition/step name. */
int saga__valid_name(const char *name);
/* Milliseconds since the epoch, from the real-time clock. */
int64_t saga__wall_ms(void);
/* One step of splitmix64 over *state. */
uint64_t saga__splitmix64(uint64_t *state);
/* A non-zero seed from /dev/urandom (or the time and pid without it). */
uint64_t saga__os_seed(void);

/* Check the plug-ins handed to a constructor (either may be NULL: not
 * checked): a version this library knows (else SAGA_EVERSION) and every
 * required slot set (else SAGA_EINVAL). The reason, naming the slot, goes
 * to @p log (NULL: stderr) at SAGA_LOG_ERROR, since the constructor has no
 * object to keep it in. */
typedef void (*saga__log_fn)(saga_log_level level, const char *saga_id,
                             int step, const char *msg, void *arg);
int saga__plugins_check(const saga_store *s, const saga_transport *t,
                        saga__log_fn log, void *log_arg);

#endif /* SAGA_INTERNAL_H */
