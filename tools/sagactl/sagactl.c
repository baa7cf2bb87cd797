/*
 * sagactl — list, explain and repair sagas in a libsaga store
 * (docs/sagactl.md). Reads go straight to the store; operator actions go
 * through saga_op_run(), which hands them to the engine that owns the store
 * when it runs, and applies them to the store itself when nothing runs.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "console.h"
#include "sagaview.h"

typedef struct opts {
    const char *store;
    int json;
    const char *actor;
    uint32_t wait_ms;
    /* command options */
    const char *state, *definition, *since, *reason, *as, *format, *listen,
        *token;
    size_t limit;
    int help;
    const char *args[4];
    size_t nargs;
} opts;

static const char *prog = "sagactl";

static const struct cmd_help {
    const char *name, *usage, *text;
} helps[] = {
    {"list",
     "list [--state S] [--definition NAME] [--since DURATION] "
     "[--limit N] [--json]",
     "Sagas, newest first: id, definition, state, current step, age,\n"
     "attempts, last error. S is RUNNING, COMPENSATING, COMPLETED,\n"
     "COMPENSATED or FAILED; DURATION like 90s, 15m, 2h, 7d (created since).\n"
     "--limit defaults to 50."},
    {"show", "show ID [--json]",
     "One saga: its state, the journal as a timeline (time, time since the\n"
     "previous entry, step, attempt, event, error) and its data as JSON."},
    {"retry", "retry ID [--reason TEXT] [--actor WHO] [--wait MS]",
     "Resume a FAILED saga where it failed, with a fresh retry budget."},
    {"compensate", "compensate ID --reason TEXT [--actor WHO] [--wait MS]",
     "Undo a FAILED saga (or a RUNNING one before its pivot): compensate\n"
     "its completed steps in reverse order."},
    {"resolve",
     "resolve ID --as compensated|completed --reason TEXT [--actor WHO]",
     "Close a FAILED saga by hand after fixing things outside it; nothing\n"
     "runs."},
    {"graph", "graph NAME [--format mermaid|dot] [--json]",
     "Draw a definition from its recorded shape: the pivot as a hexagon,\n"
     "retriable steps rounded, compensations dashed. Default: mermaid."},
    {"stats", "stats [--json]",
     "Counts per state and definition, the oldest active saga, the outbox\n"
     "depth."},
    {"serve", "serve --listen HOST:PORT --token TOKEN",
     "Serve the operator console at http://HOST:PORT/console/ and its JSON\n"
     "admin API (token required, loopback by default: 127.0.0.1:8088).\n"
     "SAGA_CONSOLE_TOKEN may give the token instead of --token."},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--store PATH|URL] [--json] [--actor WHO] COMMAND "
            "[ARGS]\n"
            "The store is --store or $%s: a SQLite file, or a PostgreSQL\n"
            "URL postgres://USER@HOST:PORT/DB?schema=NAME (default schema "
            "saga).\n"
            "Commands:\n",
            prog, SAGA_STORE_ENV);
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++)
        fprintf(f, "  %s\n", helps[i].usage);
    fprintf(f,
            "'%s COMMAND --help' explains one. Exit codes: 0 ok, 1 error, "
            "2 usage,\n3 unknown id or definition, 4 wrong state, 5 store "
            "unreadable, 6 store locked.\n",
            prog);
}

static int command_help(const char *cmd)
{
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++)
        if (strcmp(helps[i].name, cmd) == 0) {
            printf("usage: %s [--store PATH] %s\n\n%s\n", prog, helps[i].usage,
                   helps[i].text);
            return SV_EXIT_OK;
        }
    usage(stderr);
    return SV_EXIT_USAGE;
}

static int die(int code, const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, a ? a : "", b ? b : "");
    fputc('\n', stderr);
    return code;
}

static void print_json(json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
}

/* ------------------------------------------------------------------------ */

static int cmd_list(saga_store *s, const opts *o)
{
    sv_filter f;
    memset(&f, 0, sizeof f);
    if (o->state) {
        saga_state st = sv_parse_state(o->state);
        if (st == 0)
            return die(SV_EXIT_USAGE, "unknown state '%s'", o->state, NULL);
        f.state_mask = SAGA_STATE_BIT(st);
    }
    f.definition = o->definition;
    if (o->since && sv_parse_duration(o->since, &f.since_ms) != 0)
        return die(SV_EXIT_USAGE, "--since: a duration such as 15m, 2h, 7d",
                   NULL, NULL);
    f.limit = o->limit ? o->limit : 50;
    json_t *out;
    int rc = sv_list(s, &f, &out);
    if (rc != SAGA_OK)
        return die(sv_exit_code(rc, s->errmsg(s)), "cannot read the store: %s",
                   s->errmsg(s), NULL);
    if (o->json) {
        print_json(out);
        json_decref(out);
        return 0;
    }
    printf("%-32s  %-12s  %-12s  %-22s  %8s  %3s  %s\n", "ID", "DEFINITION",
           "STATE", "STEP", "AGE", "ATT", "LAST ERROR");
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(out, "sagas"), i, r)
    {
        char age[32], step[64];
        sv_duration(json_integer_value(json_object_get(r, "age_ms")), age,
                    sizeof age);
        const char *sn = json_string_value(json_object_get(r, "step_name"));
        int back = strcmp(json_string_value(json_object_get(r, "direction")),
                          "compensation") == 0;
        snprintf(step, sizeof step, "%s%s", sn ? sn : "?",
                 back ? " (undo)" : "");
        const char *err = json_string_value(json_object_get(r, "error"));
        printf("%-32s  %-12s  %-12s  %-22s  %8s  %3lld  %s\n",
               json_string_value(json_object_get(r, "id")),
               json_string_value(json_object_get(r, "definition")),
               json_string_value(json_object_get(r, "state")), step, age,
               (long long)json_integer_value(json_object_get(r, "attempt")),
               err ? err : "");
    }
    json_int_t total = json_integer_value(json_object_get(out, "total"));
    if ((size_t)total > json_array_size(json_object_get(out, "sagas")))
        printf("(%zu of %lld shown; --limit N for more)\n",
               json_array_size(json_object_get(out, "sagas")),
               (long long)total);
    json_decref(out);
    return 0;
}

static int cmd_show(saga_store *s, const opts *o)
{
    if (o->nargs != 1)
        return die(SV_EXIT_USAGE, "show: one saga ID expected", NULL, NULL);
    json_t *out;
    int rc = sv_show(s, o->args[0], &out);
    if (rc == SAGA_ENOTFOUND)
        return die(SV_EXIT_NOTFOUND, "no saga %s", o->args[0], NULL);
    if (rc != SAGA_OK)
        return die(sv_exit_code(rc, s->errmsg(s)), "cannot read the store: %s",
                   s->errmsg(s), NULL);
    if (o->json) {
        print_json(out);
        json_decref(out);
        return 0;
    }
    json_t *sg = json_object_get(out, "saga");
    char t[40];
    sv_iso_time(json_integer_value(json_object_get(sg, "created_ms")), t,
                sizeof t);
    const char *sn = json_string_value(json_object_get(sg, "step_name"));
    const char *err = json_string_value(json_object_get(sg, "error"));
    const char *key = json_string_value(json_object_get(sg, "idem_key"));
    printf("saga        %s\ndefinition  %s v%lld\nstate       %s\n"
           "step        %lld %s (%s, attempt %lld)\ncreated     %s\n",
           json_string_value(json_object_get(sg, "id")),
           json_string_value(json_object_get(sg, "definition")),
           (long long)json_integer_value(json_object_get(sg, "version")),
           json_string_value(json_object_get(sg, "state")),
           (long long)json_integer_value(json_object_get(sg, "step")),
           sn ? sn : "", json_string_value(json_object_get(sg, "direction")),
           (long long)json_integer_value(json_object_get(sg, "attempt")), t);
    if (key)
        printf("key         %s\n", key);
    if (err)
        printf("error       %s\n", err);
    printf("\n%-24s  %8s  %-20s  %3s  %-19s  %s\n", "TIME", "+PREV", "STEP",
           "ATT", "EVENT", "ERROR");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(out, "journal"), i, e)
    {
        char d[32];
        sv_iso_time(json_integer_value(json_object_get(e, "at_ms")), t,
                    sizeof t);
        sv_duration(json_integer_value(json_object_get(e, "since_prev_ms")), d,
                    sizeof d);
        const char *es = json_string_value(json_object_get(e, "step_name"));
        json_int_t step = json_integer_value(json_object_get(e, "step"));
        char stepbuf[64];
        if (step < 0)
            snprintf(stepbuf, sizeof stepbuf, "-");
        else
            snprintf(stepbuf, sizeof stepbuf, "%lld %s", (long long)step,
                     es ? es : "");
        json_int_t att = json_integer_value(json_object_get(e, "attempt"));
        char attbuf[24] = "-";
        if (att > 0)
            snprintf(attbuf, sizeof attbuf, "%lld", (long long)att);
        const char *ee = json_string_value(json_object_get(e, "error"));
        printf("%-24s  %8s  %-20s  %3s  %-19s  %s\n", t, i ? d : "", stepbuf,
               attbuf, json_string_value(json_object_get(e, "event")),
               ee ? ee : "");
    }
    printf("\ndata:\n");
    json_dumpf(json_object_get(out, "data"), stdout,
               JSON_INDENT(2) | JSON_SORT_KEYS);
    printf("\n");
    json_decref(out);
    return 0;
}

static int cmd_action(saga_store *s, const opts *o, saga_op_kind op)
{
    if (o->nargs != 1)
        return die(SV_EXIT_USAGE, "%s: one saga ID expected", saga_op_name(op),
                   NULL);
    saga_op_request q;
    memset(&q, 0, sizeof q);
    q.op = op;
    q.saga_id = o->args[0];
    q.reason = o->reason;
    q.actor = o->actor;
    if (op != SAGA_OP_RETRY && (o->reason == NULL || *o->reason == '\0'))
        return die(SV_EXIT_USAGE, "%s: --reason TEXT is required",
                   saga_op_name(op), NULL);
    if (op == SAGA_OP_RESOLVE) {
        q.as = sv_parse_state(o->as);
        if (q.as != SAGA_STATE_COMPLETED && q.as != SAGA_STATE_COMPENSATED)
            return die(SV_EXIT_USAGE,
                       "resolve: --as compensated|completed is required", NULL,
                       NULL);
    }
    char msg[512];
    saga_op_by by = 0;
    int rc = saga_op_run(s, &q, o->wait_ms, sv_now_ms(), msg, sizeof msg, &by);
    if (rc != SAGA_OK)
        return die(sv_exit_code(rc, msg), "%s",
                   msg[0] ? msg : saga_strerror(rc), NULL);
    if (o->json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "id", q.saga_id, "action",
                              saga_op_name(op), "applied_by",
                              by == SAGA_OP_BY_ENGINE ? "engine" : "store",
                              "actor", q.actor);
        print_json(j);
        json_decref(j);
    } else {
        printf("%s %s: done by %s (%s)\n", saga_op_name(op), q.saga_id, q.actor,
               by == SAGA_OP_BY_ENGINE
                   ? "the running engine applied it"
                   : "no engine runs on this store: applied to the store; "
                     "the service resumes it when it starts");
    }
    return 0;
}

static int cmd_graph(saga_store *s, const opts *o)
{
    if (o->nargs != 1)
        return die(SV_EXIT_USAGE, "graph: one definition NAME expected", NULL,
                   NULL);
    const char *fmt = o->format ? o->format : "mermaid";
    if (strcmp(fmt, "mermaid") != 0 && strcmp(fmt, "dot") != 0)
        return die(SV_EXIT_USAGE, "graph: --format mermaid or dot", NULL, NULL);
    saga_shape *sh = NULL;
    int rc = saga_shape_load(&sh, s, o->args[0], 0);
    if (rc == SAGA_ENOTFOUND)
        return die(SV_EXIT_NOTFOUND,
                   "no definition '%s' is recorded in this store (its "
                   "service records it when it starts)",
                   o->args[0], NULL);
    if (rc != SAGA_OK)
        return die(sv_exit_code(rc, s->errmsg(s)), "cannot read the shape: %s",
                   saga_strerror(rc), NULL);
    if (o->json) {
        json_t *j = sv_shape_json(sh);
        print_json(j);
        json_decref(j);
    } else {
        char *g = sv_graph(sh, fmt, -1);
        fputs(g ? g : "", stdout);
        free(g);
    }
    saga_shape_free(sh);
    return 0;
}

static int cmd_stats(saga_store *s, const opts *o)
{
    json_t *out;
    int rc = sv_stats(s, &out);
    if (rc != SAGA_OK)
        return die(sv_exit_code(rc, s->errmsg(s)), "cannot read the store: %s",
                   s->errmsg(s), NULL);
    if (o->json) {
        print_json(out);
        json_decref(out);
        return 0;
    }
    printf("%-16s", "DEFINITION");
    for (int st = SAGA_STATE_RUNNING; st <= SAGA_STATE_FAILED; st++)
        printf("  %12s", saga_state_name((saga_state)st));
    printf("\n");
    const char *name;
    json_t *d;
    json_object_foreach(json_object_get(out, "definitions"), name, d)
    {
        printf("%-16s", name);
        for (int st = SAGA_STATE_RUNNING; st <= SAGA_STATE_FAILED; st++)
            printf("  %12lld",
                   (long long)json_integer_value(
                       json_object_get(d, saga_state_name((saga_state)st))));
        printf("\n");
    }
    printf("%-16s", "(all)");
    for (int st = SAGA_STATE_RUNNING; st <= SAGA_STATE_FAILED; st++)
        printf("  %12lld",
               (long long)json_integer_value(
                   json_object_get(json_object_get(out, "states"),
                                   saga_state_name((saga_state)st))));
    printf("\n\n");
    json_t *old = json_object_get(out, "oldest_active");
    if (json_is_object(old)) {
        char age[32];
        sv_duration(json_integer_value(json_object_get(old, "age_ms")), age,
                    sizeof age);
        printf("oldest active  %s (%s, %s old)\n",
               json_string_value(json_object_get(old, "id")),
               json_string_value(json_object_get(old, "state")), age);
    } else {
        printf("oldest active  none\n");
    }
    printf("outbox depth   %lld\n",
           (long long)json_integer_value(json_object_get(out, "outbox_depth")));
    json_decref(out);
    return 0;
}

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void stop_check(uv_timer_t *t)
{
    if (stop_flag)
        uv_stop(t->loop);
}

static int cmd_serve(saga_store *s, const opts *o)
{
    const char *token = o->token ? o->token : getenv("SAGA_CONSOLE_TOKEN");
    if (token == NULL || strlen(token) < 8)
        return die(SV_EXIT_USAGE,
                   "serve: --token TOKEN (at least 8 characters) is required: "
                   "the admin API changes sagas",
                   NULL, NULL);
    const char *listen = o->listen ? o->listen : "127.0.0.1:8088";
    h2o_globalconf_t conf;
    h2o_config_init(&conf);
    conf.http1.upgrade_to_http2 = 0;
    conf.max_request_entity_size = 64 * 1024;
    h2o_hostconf_t *host = h2o_config_register_host(
        &conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    saga_console_config cc = {s, NULL, token, o->wait_ms};
    saga_console *c;
    if (saga_console_new(&c, &cc) != SAGA_OK)
        return die(SV_EXIT_ERROR, "serve: cannot create the console", NULL,
                   NULL);
    saga_console_mount(c, host);
    uv_loop_t *loop = uv_default_loop();
    saga_http_server *srv;
    char err[256];
    if (saga_http_listen(&srv, loop, &conf, listen, err, sizeof err) != 0) {
        saga_console_free(c);
        return die(SV_EXIT_ERROR, "serve: %s", err, NULL);
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, stop_check, 100, 100);
    printf("console: http://%s/console/ (admin API token required)\n", listen);
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    saga_console_free(c);
    return 0;
}

/* ------------------------------------------------------------------------ */

static int take_value(int argc, char **argv, int *i, const char **out)
{
    const char *a = argv[*i];
    const char *eq = strchr(a, '=');
    if (eq != NULL) {
        *out = eq + 1;
        return 0;
    }
    if (*i + 1 >= argc)
        return -1;
    *out = argv[++*i];
    return 0;
}

static int opt_is(const char *a, const char *name)
{
    size_t n = strlen(name);
    return strncmp(a, name, n) == 0 && (a[n] == '\0' || a[n] == '=');
}

int main(int argc, char **argv)
{
    opts o;
    memset(&o, 0, sizeof o);
    o.store = getenv(SAGA_STORE_ENV);
    o.actor = getenv("USER");
    o.wait_ms = 2000;
    const char *cmd = NULL;
    /* The options that take a string value, and where it goes. */
    const struct {
        const char *name;
        const char **slot;
    } str_opts[] = {
        {"--store", &o.store},   {"--actor", &o.actor},
        {"--state", &o.state},   {"--definition", &o.definition},
        {"--since", &o.since},   {"--reason", &o.reason},
        {"--as", &o.as},         {"--format", &o.format},
        {"--listen", &o.listen}, {"--token", &o.token},
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        const char **slot = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            o.help = 1;
            continue;
        }
        if (strcmp(a, "--json") == 0) {
            o.json = 1;
            continue;
        }
        for (size_t k = 0; k < sizeof str_opts / sizeof *str_opts; k++)
            if (opt_is(a, str_opts[k].name))
                slot = str_opts[k].slot;
        if (slot != NULL) {
            if (take_value(argc, argv, &i, slot) != 0)
                return die(SV_EXIT_USAGE, "%s needs a value", a, NULL);
            continue;
        }
        if (opt_is(a, "--limit") || opt_is(a, "--wait")) {
            if (take_value(argc, argv, &i, &v) != 0)
                return die(SV_EXIT_USAGE, "%s needs a value", a, NULL);
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (*end != '\0' || n > 100000000ul)
                return die(SV_EXIT_USAGE, "%s: a number expected", a, NULL);
            if (opt_is(a, "--limit"))
                o.limit = n;
            else
                o.wait_ms = (uint32_t)n;
            continue;
        }
        if (a[0] == '-' && a[1] != '\0')
            return die(SV_EXIT_USAGE, "unknown option %s (try --help)", a,
                       NULL);
        if (cmd == NULL)
            cmd = a;
        else if (o.nargs < 4)
            o.args[o.nargs++] = a;
        else
            return die(SV_EXIT_USAGE, "too many arguments", NULL, NULL);
    }
    if (o.actor == NULL || *o.actor == '\0')
        o.actor = "operator";
    if (cmd == NULL) {
        usage(o.help ? stdout : stderr);
        return o.help ? SV_EXIT_OK : SV_EXIT_USAGE;
    }
    if (o.help)
        return command_help(cmd);
    int known = 0;
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++)
        known |= strcmp(helps[i].name, cmd) == 0;
    if (!known) {
        fprintf(stderr, "%s: unknown command '%s'\n", prog, cmd);
        usage(stderr);
        return SV_EXIT_USAGE;
    }
    saga_store *s = NULL;
    char err[512];
    int rc = sv_open_store(o.store, &s, err, sizeof err);
    if (rc != SAGA_OK)
        return die(rc == SAGA_EINVAL ? SV_EXIT_USAGE : sv_exit_code(rc, err),
                   "%s", err, NULL);
    int code;
    if (strcmp(cmd, "list") == 0)
        code = cmd_list(s, &o);
    else if (strcmp(cmd, "show") == 0)
        code = cmd_show(s, &o);
    else if (strcmp(cmd, "retry") == 0)
        code = cmd_action(s, &o, SAGA_OP_RETRY);
    else if (strcmp(cmd, "compensate") == 0)
        code = cmd_action(s, &o, SAGA_OP_COMPENSATE);
    else if (strcmp(cmd, "resolve") == 0)
        code = cmd_action(s, &o, SAGA_OP_RESOLVE);
    else if (strcmp(cmd, "graph") == 0)
        code = cmd_graph(s, &o);
    else if (strcmp(cmd, "stats") == 0)
        code = cmd_stats(s, &o);
    else
        code = cmd_serve(s, &o);
    saga_store_free(s);
    return code;
}
