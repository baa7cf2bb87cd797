/*
 * names.c — the library's version, and the names of its enums: saga states
 * and journal entry kinds.
 */
#include "saga/saga.h"

int saga_version(void) { return SAGA_VERSION_NUMBER; }
const char *saga_version_string(void) { return SAGA_VERSION_STRING; }

const char *saga_state_name(saga_state s)
{
    switch (s) {
    case SAGA_STATE_RUNNING:
        return "RUNNING";
    case SAGA_STATE_COMPENSATING:
        return "COMPENSATING";
    case SAGA_STATE_COMPLETED:
        return "COMPLETED";
    case SAGA_STATE_COMPENSATED:
        return "COMPENSATED";
    case SAGA_STATE_FAILED:
        return "FAILED";
    }
    return "UNKNOWN";
}

const char *saga_journal_kind_name(saga_journal_kind ev)
{
    static const char *const names[] = {
        "UNKNOWN",         "STARTED",        "STEP_OK",
        "STEP_FAIL",       "STEP_RETRY",     "STEP_TIMEOUT",
        "COMP_OK",         "COMP_FAIL",      "COMP_TIMEOUT",
        "COMPLETED",       "COMPENSATING",   "COMPENSATED",
        "FAILED",          "OPERATOR_RETRY", "OPERATOR_COMPENSATE",
        "OPERATOR_RESOLVE"};
    if ((int)ev < 1 || (size_t)ev >= sizeof names / sizeof names[0])
        return names[0];
    return names[ev];
}
