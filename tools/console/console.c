/*
 * console.c — the operator console's HTTP side (console.h): the static page
 * built into the binary, the JSON admin API over sagaview.c, and a minimal
 * listener. JSON through jansson, HTTP through libh2o: nothing parsed by
 * hand but the path segments after /api/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "console.h"
#include "console_assets.h"
#include "sagaview.h"

struct saga_console {
    saga_store *store;
    saga_engine *engine;
    char *token;
    uint32_t op_wait_ms;
};

typedef struct api_handler {
    h2o_handler_t super;
    saga_console *c;
} api_handler;

typedef struct metrics_handler {
    h2o_handler_t super;
    saga_engine *e;
    saga_participant *const *parts;
    size_t nparts;
} metrics_handler;

#define MAX_BODY (64 * 1024)

static void respond(h2o_req_t *req, int status, const char *reason,
                    const char *ctype, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   ctype, strlen(ctype));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

static int respond_json(h2o_req_t *req, int status, const char *reason,
                        json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (s == NULL) {
        respond(req, 500, "Internal Server Error", "application/json",
                H2O_STRLIT("{\"error\":\"out of memory\"}"));
        return 0;
    }
    respond(req, status, reason, "application/json; charset=utf-8", s,
            strlen(s));
    free(s);
    return 0;
}

static int respond_error(h2o_req_t *req, int status, const char *reason,
                         const char *code, const char *msg)
{
    return respond_json(req, status, reason,
                        json_pack("{s:s, s:s}", "error", code, "message",
                                  msg ? msg : ""));
}

/* A SAGA_E* code as an HTTP status. */
static int respond_rc(h2o_req_t *req, int rc, const char *msg)
{
    switch (rc) {
    case SAGA_ENOTFOUND:
        return respond_error(req, 404, "Not Found", "not_found", msg);
    case SAGA_EBUSY:
        return respond_error(req, 409, "Conflict", "wrong_state", msg);
    case SAGA_EINVAL:
        return respond_error(req, 400, "Bad Request", "invalid", msg);
    case SAGA_ESTORE:
        return respond_error(req, 503, "Service Unavailable", "store", msg);
    default:
        return respond_error(req, 500, "Internal Server Error",
                             saga_err_name(rc), msg);
    }
}

static int authorized(saga_console *c, h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i < 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t tl = strlen(c->token);
    if (v.len != tl + 7 || memcmp(v.base, "Bearer ", 7) != 0)
        return 0;
    /* Constant time in the token's length. */
    unsigned char diff = 0;
    for (size_t k = 0; k < tl; k++)
        diff |= (unsigned char)(v.base[7 + k] ^ c->token[k]);
    return diff == 0;
}

static int is_method(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

/* Split the path into at most @p max segments (NUL-terminated copies). */
static size_t split_path(h2o_req_t *req, char seg[][SAGA_NAME_MAX + 1],
                         size_t max)
{
    h2o_iovec_t p = req->path_normalized;
    size_t n = 0, i = 0;
    while (i < p.len && n < max) {
        while (i < p.len && p.base[i] == '/')
            i++;
        size_t s = i;
        while (i < p.len && p.base[i] != '/' && p.base[i] != '?')
            i++;
        if (i > s) {
            size_t l = i - s < SAGA_NAME_MAX ? i - s : SAGA_NAME_MAX;
            memcpy(seg[n], p.base + s, l);
            seg[n][l] = '\0';
            n++;
        }
        if (i < p.len && p.base[i] == '?')
            break;
    }
    return n;
}

static json_t *body_json(h2o_req_t *req)
{
    if (req->entity.base == NULL || req->entity.len == 0)
        return json_object();
    if (req->entity.len > MAX_BODY)
        return NULL;
    json_error_t err;
    json_t *j = json_loadb(req->entity.base, req->entity.len, 0, &err);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static int api_list(saga_console *c, h2o_req_t *req)
{
    json_t *b = body_json(req);
    if (b == NULL)
        return respond_error(req, 400, "Bad Request", "invalid",
                             "the body must be a JSON object");
    sv_filter f;
    memset(&f, 0, sizeof f);
    const char *st = json_string_value(json_object_get(b, "state"));
    if (st && *st) {
        saga_state s = sv_parse_state(st);
        if (s == 0) {
            json_decref(b);
            return respond_error(req, 400, "Bad Request", "invalid",
                                 "unknown state");
        }
        f.state_mask = SAGA_STATE_BIT(s);
    }
    const char *def = json_string_value(json_object_get(b, "definition"));
    if (def && *def)
        f.definition = def;
    const char *since = json_string_value(json_object_get(b, "since"));
    if (since && *since && sv_parse_duration(since, &f.since_ms) != 0) {
        json_decref(b);
        return respond_error(req, 400, "Bad Request", "invalid",
                             "since: a duration such as 15m, 2h, 7d");
    }
    json_int_t off = json_integer_value(json_object_get(b, "offset"));
    json_int_t lim = json_integer_value(json_object_get(b, "limit"));
    f.offset = off > 0 ? (size_t)off : 0;
    f.limit = lim > 0 ? (size_t)lim : 50;
    json_t *out = NULL;
    int rc = sv_list(c->store, &f, &out);
    json_decref(b);
    if (rc != SAGA_OK)
        return respond_rc(req, rc, c->store->errmsg(c->store));
    return respond_json(req, 200, "OK", out);
}

static int api_action(saga_console *c, h2o_req_t *req, const char *id,
                      const char *verb)
{
    json_t *b = body_json(req);
    if (b == NULL)
        return respond_error(req, 400, "Bad Request", "invalid",
                             "the body must be a JSON object");
    saga_op_request q;
    memset(&q, 0, sizeof q);
    q.saga_id = id;
    q.reason = json_string_value(json_object_get(b, "reason"));
    char actor[128] = "console";
    ssize_t ai = h2o_find_header_by_str(&req->headers,
                                        H2O_STRLIT("x-saga-actor"), -1);
    if (ai >= 0) {
        h2o_iovec_t v = req->headers.entries[ai].value;
        size_t l = v.len < sizeof actor - 1 ? v.len : sizeof actor - 1;
        memcpy(actor, v.base, l);
        actor[l] = '\0';
    }
    q.actor = actor;
    if (strcmp(verb, "retry") == 0) {
        q.op = SAGA_OP_RETRY;
    } else if (strcmp(verb, "compensate") == 0) {
        q.op = SAGA_OP_COMPENSATE;
    } else if (strcmp(verb, "resolve") == 0) {
        q.op = SAGA_OP_RESOLVE;
        q.as = sv_parse_state(json_string_value(json_object_get(b, "as")));
    } else {
        json_decref(b);
        return respond_error(req, 404, "Not Found", "not_found",
                             "no such action");
    }
    if ((q.op != SAGA_OP_RETRY) && (q.reason == NULL || *q.reason == '\0')) {
        json_decref(b);
        return respond_error(req, 400, "Bad Request", "invalid",
                             "a reason is required");
    }
    if (q.op == SAGA_OP_RESOLVE && q.as != SAGA_STATE_COMPLETED &&
        q.as != SAGA_STATE_COMPENSATED) {
        json_decref(b);
        return respond_error(req, 400, "Bad Request", "invalid",
                             "as: COMPLETED or COMPENSATED");
    }
    int rc;
    char msg[512] = "";
    const char *by;
    if (c->engine != NULL) {
        rc = q.op == SAGA_OP_RETRY
                 ? saga_retry_op(c->engine, id, q.reason, actor)
             : q.op == SAGA_OP_COMPENSATE
                 ? saga_compensate(c->engine, id, q.reason, actor)
                 : saga_resolve(c->engine, id, q.as, q.reason, actor);
        if (rc == SAGA_OK)
            rc = saga_engine_flush(c->engine);
        if (rc != SAGA_OK)
            snprintf(msg, sizeof msg, "%s", saga_engine_errmsg(c->engine));
        by = "engine";
    } else {
        saga_op_by who = 0;
        rc = saga_op_run(c->store, &q, c->op_wait_ms, sv_now_ms(), msg,
                         sizeof msg, &who);
        by = who == SAGA_OP_BY_ENGINE ? "engine" : "store";
    }
    json_decref(b);
    if (rc != SAGA_OK)
        return respond_rc(req, rc, msg);
    return respond_json(req, 200, "OK",
                        json_pack("{s:s, s:s, s:s, s:s}", "id", id, "action",
                                  verb, "applied_by", by, "actor", actor));
}

static int api_definition(saga_console *c, h2o_req_t *req, const char *name,
                          const char *ver, const char *current)
{
    saga_shape *sh = NULL;
    int rc = saga_shape_load(&sh, c->store, name,
                             ver ? (uint32_t)strtoul(ver, NULL, 10) : 0);
    if (rc != SAGA_OK)
        return respond_rc(req, rc, "no such definition recorded");
    (void)current;
    json_t *j = sv_shape_json(sh);
    char *m = sv_graph(sh, "mermaid", -1), *d = sv_graph(sh, "dot", -1);
    json_object_set_new(j, "mermaid", json_string(m ? m : ""));
    json_object_set_new(j, "dot", json_string(d ? d : ""));
    free(m);
    free(d);
    saga_shape_free(sh);
    return respond_json(req, 200, "OK", j);
}

static int api_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    saga_console *c = ((api_handler *)self)->c;
    if (!authorized(c, req)) {
        h2o_add_header(&req->pool, &req->res.headers,
                       H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer realm=\"saga-admin\""));
        return respond_error(req, 401, "Unauthorized", "unauthorized",
                             "an Authorization: Bearer token is required");
    }
    /* /console/api/X/Y/Z: drop "console" so that seg[1] is X. */
    char all[5][SAGA_NAME_MAX + 1];
    size_t n = split_path(req, all, 5);
    n = n > 0 ? n - 1 : 0;
    char(*seg)[SAGA_NAME_MAX + 1] = all + 1;
    int get = is_method(req, "GET"), post = is_method(req, "POST");
    json_t *out = NULL;
    int rc;
    if (n == 2 && get && strcmp(seg[1], "stats") == 0) {
        rc = sv_stats(c->store, &out);
        if (rc != SAGA_OK)
            return respond_rc(req, rc, c->store->errmsg(c->store));
        return respond_json(req, 200, "OK", out);
    }
    if (n == 2 && (post || get) && strcmp(seg[1], "sagas") == 0)
        return api_list(c, req);
    if (n == 3 && get && strcmp(seg[1], "sagas") == 0) {
        rc = sv_show(c->store, seg[2], &out);
        if (rc != SAGA_OK)
            return respond_rc(req, rc,
                              rc == SAGA_ENOTFOUND
                                  ? "no such saga"
                                  : c->store->errmsg(c->store));
        return respond_json(req, 200, "OK", out);
    }
    if (n == 4 && post && strcmp(seg[1], "sagas") == 0)
        return api_action(c, req, seg[2], seg[3]);
    if (n == 2 && get && strcmp(seg[1], "definitions") == 0) {
        rc = sv_definitions(c->store, &out);
        if (rc != SAGA_OK)
            return respond_rc(req, rc, c->store->errmsg(c->store));
        return respond_json(req, 200, "OK", out);
    }
    if ((n == 3 || n == 4) && get && strcmp(seg[1], "definitions") == 0)
        return api_definition(c, req, seg[2], n == 4 ? seg[3] : NULL, NULL);
    return respond_error(req, 404, "Not Found", "not_found",
                         "no such endpoint");
}

static int static_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (!is_method(req, "GET") && !is_method(req, "HEAD"))
        return respond_error(req, 405, "Method Not Allowed", "method",
                             "GET only");
    char seg[4][SAGA_NAME_MAX + 1];
    size_t n = split_path(req, seg, 4);
    const char *file = n >= 2 ? seg[1] : "index.html";
    for (size_t i = 0; i < saga_console_nassets; i++) {
        const saga_console_asset *a = &saga_console_assets[i];
        if (strcmp(a->name, file) == 0) {
            respond(req, 200, "OK", a->type, (const char *)a->data, a->len);
            return 0;
        }
    }
    return respond_error(req, 404, "Not Found", "not_found", "no such file");
}

static int metrics_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    metrics_handler *h = (metrics_handler *)self;
    char *text = NULL;
    size_t len = 0;
    int rc = saga_metrics_render(h->e, h->parts, h->nparts, &text, &len);
    if (rc != SAGA_OK)
        return respond_rc(req, rc, "cannot render the metrics");
    respond(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text,
            len);
    saga_free(text);
    return 0;
}

int saga_console_new(saga_console **out, const saga_console_config *cfg)
{
    *out = NULL;
    if (cfg == NULL || cfg->store == NULL || cfg->token == NULL ||
        strlen(cfg->token) < 8)
        return SAGA_EINVAL;
    saga_console *c = calloc(1, sizeof *c);
    if (c == NULL || (c->token = strdup(cfg->token)) == NULL) {
        free(c);
        return SAGA_ENOMEM;
    }
    c->store = cfg->store;
    c->engine = cfg->engine;
    c->op_wait_ms = cfg->op_wait_ms ? cfg->op_wait_ms : 2000;
    *out = c;
    return SAGA_OK;
}

void saga_console_mount(saga_console *c, h2o_hostconf_t *host)
{
    h2o_pathconf_t *pc = h2o_config_register_path(host, "/console/api", 0);
    api_handler *h = (api_handler *)h2o_create_handler(pc, sizeof *h);
    h->super.on_req = api_on_req;
    h->c = c;
    pc = h2o_config_register_path(host, "/console", 0);
    h2o_handler_t *s = h2o_create_handler(pc, sizeof *s);
    s->on_req = static_on_req;
}

void saga_console_mount_metrics(h2o_hostconf_t *host, saga_engine *e,
                                saga_participant *const *parts, size_t nparts)
{
    h2o_pathconf_t *pc = h2o_config_register_path(host, "/metrics", 0);
    metrics_handler *h = (metrics_handler *)h2o_create_handler(pc, sizeof *h);
    h->super.on_req = metrics_on_req;
    h->e = e;
    h->parts = parts;
    h->nparts = nparts;
}

void saga_console_free(saga_console *c)
{
    if (c == NULL)
        return;
    free(c->token);
    free(c);
}

void saga_console_log_json(const saga_log_event *ev, void *arg)
{
    FILE *f = arg ? arg : stderr;
    char ts[40];
    sv_iso_time(ev->at_ms, ts, sizeof ts);
    json_t *j = json_pack("{s:s, s:s, s:s?, s:s?, s:s}", "ts", ts, "level",
                          saga_log_level_name(ev->level), "service",
                          ev->service, "saga_id", ev->saga_id, "msg",
                          ev->message ? ev->message : "");
    if (j == NULL)
        return;
    if (ev->saga_id != NULL) {
        json_object_set_new(j, "step", json_integer(ev->step));
        json_object_set_new(j, "attempt", json_integer(ev->attempt));
        if (ev->trace_id)
            json_object_set_new(j, "trace_id", json_string(ev->trace_id));
    }
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s != NULL) {
        fprintf(f, "%s\n", s);
        fflush(f);
        free(s);
    }
}

/* ------------------------------------------------------------------------ */
/* Listener                                                                 */

struct saga_http_server {
    uv_tcp_t listener;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
};

static void conn_closed(uv_handle_t *h) { free(h); }

static void on_accept(uv_stream_t *listener, int status)
{
    saga_http_server *s = listener->data;
    if (status != 0)
        return;
    uv_tcp_t *conn = malloc(sizeof *conn);
    if (conn == NULL)
        return;
    uv_tcp_init(listener->loop, conn);
    if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, conn_closed);
        return;
    }
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)conn, conn_closed);
    h2o_accept(&s->accept_ctx, sock);
}

int saga_http_listen(saga_http_server **out, uv_loop_t *loop,
                     h2o_globalconf_t *conf, const char *listen, char *err,
                     size_t errsize)
{
    *out = NULL;
    char host[64];
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || (size_t)(colon - listen) >= sizeof host) {
        snprintf(err, errsize, "listen: HOST:PORT expected, got '%s'", listen);
        return UV_EINVAL;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    int port = atoi(colon + 1);
    struct sockaddr_in addr;
    int rc = uv_ip4_addr(host, port, &addr);
    if (rc != 0 || port <= 0 || port > 65535) {
        snprintf(err, errsize, "listen: bad address '%s'", listen);
        return rc ? rc : UV_EINVAL;
    }
    saga_http_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return UV_ENOMEM;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 128, on_accept);
    if (rc != 0) {
        snprintf(err, errsize, "listen on %s: %s", listen, uv_strerror(rc));
        uv_close((uv_handle_t *)&s->listener, conn_closed);
        return rc;
    }
    h2o_context_init(&s->ctx, loop, conf);
    s->accept_ctx.ctx = &s->ctx;
    s->accept_ctx.hosts = conf->hosts;
    *out = s;
    return 0;
}

void saga_http_close(saga_http_server *s)
{
    if (s == NULL)
        return;
    uv_close((uv_handle_t *)&s->listener, conn_closed);
}
