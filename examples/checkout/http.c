/*
 * http.c — the REST front on libh2o (HTTP/1.1) on the services' libuv loop.
 *
 * Every request gets a ck_req in the request's pool, allocated with
 * h2o_mem_alloc_shared() so that its dispose callback tells a deferred
 * answer (ck_wait) that the request is gone: an answer that comes after the
 * client left is dropped instead of touching freed memory. A deferred answer
 * has its own timeout (503).
 */
#include <h2o.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#ifdef CK_HAVE_CONSOLE
#include "console.h"

static void ck_parts(ck_app *a)
{
    a->nparts = 0;
    for (int i = 0; i < CK_NSVC; i++)
        if (a->svc[i] != NULL)
            a->parts[a->nparts++] = a->svc[i];
    for (size_t i = 0; i < a->npeer_parts && a->nparts < CK_NSVC; i++)
        a->parts[a->nparts++] = a->peer_parts[i];
}

int ck_metrics_start(ck_app *a, const char *listen)
{
    static h2o_globalconf_t conf;
    h2o_config_init(&conf);
    conf.http1.upgrade_to_http2 = 0;
    h2o_hostconf_t *hc = h2o_config_register_host(
        &conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    ck_parts(a);
    saga_console_mount_metrics(hc, a->engine, a->parts, a->nparts);
    char err[256];
    saga_http_server *srv;
    if (saga_http_listen(&srv, a->loop, &conf, listen, err, sizeof err) != 0) {
        fprintf(stderr, "saga-checkout: metrics: %s\n", err);
        return -1;
    }
    a->metrics_http = srv;
    return 0;
}

void (*ck_log_sink(ck_app *a))(const saga_log_event *ev, void *arg)
{
    return a->log_json ? saga_console_log_json : NULL;
}
#else
int ck_metrics_start(ck_app *a, const char *listen)
{
    (void)a, (void)listen;
    fprintf(stderr, "saga-checkout: built without the console library\n");
    return -1;
}

void (*ck_log_sink(ck_app *a))(const saga_log_event *ev, void *arg)
{
    (void)a;
    return NULL;
}
#endif

#define CK_BODY_MAX (1024 * 1024)         /* our 413, with a JSON body */
#define CK_H2O_BODY_MAX (2 * 1024 * 1024) /* h2o's own 413 beyond this */
/* Connections open at once (CK_MAX_CONNECTIONS): one more is accepted and
 * closed at once. With h2o holding at most CK_H2O_BODY_MAX of body per
 * connection until its request timeout, this bounds what slow uploads can
 * pin in memory. */
#define CK_MAX_CONNS_DEFAULT 1024

typedef struct ck_http {
    ck_app *a;
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    uv_tcp_t listener;
    int listening;
    size_t conns_open; /* connections accepted and not yet closed */
    size_t conns_max;  /* CK_MAX_CONNECTIONS; more are closed at once */
} ck_http;

/* An accepted connection: h2o keeps its socket in the handle's data, so
 * the front it counts against rides along (the handle first, so that the
 * handle's address is the allocation's). */
typedef struct ck_conn {
    uv_tcp_t tcp;
    ck_http *h;
} ck_conn;

struct ck_wait {
    ck_req *r; /* NULL once the request is gone */
    uv_timer_t timer;
};

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 422:
        return "Unprocessable Entity";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

static void send_json(h2o_req_t *req, int status, json_t *body,
                      const char *hname, const char *hval)
{
    char *text = NULL;
    size_t len = 0;
    if (body != NULL && status != 204) {
        text = ck_dump(body);
        len = text ? strlen(text) : 0;
    }
    if (status != 204 && text == NULL) {
        /* json_pack or the dump failed (no memory, a string that is not
         * UTF-8): never a success with an empty body. */
        status = 500;
        text = strdup("{\"error\":{\"code\":\"internal\",\"message\":"
                      "\"the answer could not be encoded\"}}");
        len = text ? strlen(text) : 0;
    }
    json_decref(body);
    req->res.status = status;
    req->res.reason = reason(status);
    if (len > 0)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                       NULL, H2O_STRLIT("application/json"));
    if (hname != NULL && hval != NULL)
        h2o_add_header_by_str(&req->pool, &req->res.headers, hname,
                              strlen(hname), 0, NULL,
                              h2o_strdup(&req->pool, hval, SIZE_MAX).base,
                              strlen(hval));
    req->res.content_length = len;
    h2o_send_inline(req, text ? text : "", len);
    free(text);
}

void ck_reply_hdr(ck_req *r, int status, json_t *body, const char *hname,
                  const char *hval)
{
    if (r->h2o == NULL) {
        json_decref(body);
        return;
    }
    h2o_req_t *req = r->h2o;
    r->h2o = NULL; /* answered */
    send_json(req, status, body, hname, hval);
}

void ck_reply(ck_req *r, int status, json_t *body)
{
    ck_reply_hdr(r, status, body, NULL, NULL);
}

void ck_error(ck_req *r, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ck_reply(r, status,
             json_pack("{s:{s:s, s:s}}", "error", "code", code, "message",
                       msg));
}

/* --- deferred answers ---------------------------------------------------- */

static void wait_free(uv_handle_t *h) { free(h->data); }

static void wait_done(ck_wait *w)
{
    if (w->r != NULL)
        w->r->wait = NULL;
    w->r = NULL;
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, wait_free);
}

/* The request is answered 503 and let go; @p w stays its owner's until
 * ck_wait_reply(), whose answer then goes nowhere. Freed here, a later
 * ck_wait_reply() wrote into freed memory, or into the ck_wait of another
 * request allocated there since: that request got this one's answer
 * (hostile_killloop_distributed_pg with the server restarted: user u2's
 * checkout answered with user u0's order, its saga start answered after
 * the timeout). */
static void wait_timeout(uv_timer_t *t)
{
    ck_wait *w = t->data;
    ck_req *r = w->r;
    if (r == NULL)
        return;
    r->wait = NULL;
    w->r = NULL;
    ck_error(r, 503, "timeout",
             "the request could not be completed in time; retry it with "
             "the same Idempotency-Key");
}

ck_wait *ck_defer(ck_req *r, uint32_t timeout_ms)
{
    ck_wait *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->r = r;
    r->wait = w;
    uv_timer_init(r->a->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, wait_timeout, timeout_ms, 0);
    return w;
}

int ck_wait_gone(const ck_wait *w) { return w->r == NULL || w->r->h2o == NULL; }

void ck_wait_reply(ck_wait *w, int status, json_t *body, const char *hname,
                   const char *hval)
{
    if (w->r != NULL)
        ck_reply_hdr(w->r, status, body, hname, hval);
    else
        json_decref(body);
    wait_done(w);
}

void ck_wait_error(ck_wait *w, int status, const char *code, const char *msg)
{
    ck_wait_reply(w, status,
                  json_pack("{s:{s:s, s:s}}", "error", "code", code, "message",
                            msg),
                  NULL, NULL);
}

/* The request's pool is being freed: the client is gone (or answered). */
static void req_dispose(void *p)
{
    ck_req *r = p;
    r->h2o = NULL;
    if (r->wait != NULL) {
        r->wait->r = NULL;
        r->wait = NULL;
    }
}

/* --- requests ------------------------------------------------------------ */

static int hexv(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes %XX (and '+') into out; returns the decoded length, which is
 * more than strlen(out) when the text held an encoded NUL. */
static size_t url_decode(const char *s, size_t n, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < size; i++) {
        if (s[i] == '%' && i + 2 < n && hexv(s[i + 1]) >= 0 &&
            hexv(s[i + 2]) >= 0) {
            out[o++] = (char)(hexv(s[i + 1]) * 16 + hexv(s[i + 2]));
            i += 2;
        } else
            out[o++] = s[i] == '+' ? ' ' : s[i];
    }
    out[o] = '\0';
    return o;
}

/* 1 when s[0..n) is UTF-8 without NUL: what may go into a JSON answer (a
 * string jansson refuses would turn the answer into an empty body). */
static int text_ok(const char *s, size_t n)
{
    if (memchr(s, '\0', n) != NULL)
        return 0;
    json_t *j = json_stringn(s, n);
    json_decref(j);
    return j != NULL;
}

const char *ck_query(const ck_req *r, const char *name, char *buf, size_t size)
{
    size_t nl = strlen(name);
    const char *p = r->query;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            /* A value that holds a NUL or does not fit is "" (which every
             * caller refuses), not its prefix: user_id=alice%00x or an
             * over-long user_id must not read alice's orders. */
            size_t want = 0;
            for (size_t i = nl + 1; i < len; i++, want++)
                if (p[i] == '%' && i + 2 < len && hexv(p[i + 1]) >= 0 &&
                    hexv(p[i + 2]) >= 0)
                    i += 2;
            size_t got = url_decode(p + nl + 1, len - nl - 1, buf, size);
            if (got != want || strlen(buf) != got)
                buf[0] = '\0';
            return buf;
        }
        if (len == nl && strncmp(p, name, nl) == 0) {
            buf[0] = '\0';
            return buf;
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

/* A string no client sends: stands in for a number jansson cannot hold,
 * so that the field holding it can be named. */
#define CK_RANGE_MARK "\\u0001ck\\u0002out-of-range\\u0003"

/* The path of the first string @p mark in @p j ("quantity",
 * "shipping_address.zip", "x[2]") into @p out; 1 if found. */
static int find_mark(json_t *j, const char *mark, char *out, size_t size)
{
    size_t len = strlen(out);
    if (json_is_string(j))
        return strcmp(json_string_value(j), mark) == 0;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            snprintf(out + len, size - len, "%s%s", len ? "." : "", k);
            if (find_mark(v, mark, out, size))
                return 1;
            out[len] = '\0';
        }
    } else if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++) {
            snprintf(out + len, size - len, "[%zu]", i);
            if (find_mark(json_array_get(j, i), mark, out, size))
                return 1;
            out[len] = '\0';
        }
    }
    return 0;
}

/* The body holds a number that JSON allows but jansson cannot hold (an
 * integer beyond 64 bits, 1e400): well-formed JSON with a field out of
 * range, so 422 invalid_field naming it, not 400 invalid_json. jansson
 * stops at the first such number and gives its end; the number (a run of
 * [-+.eE0-9] before that) is replaced by a marker string, up to 16 of
 * them, and the document parsed again to find the marker's path. 1 if it
 * answered 422; 0 if the body is malformed after all (the caller answers
 * 400 with @p je, the first error). */
static int out_of_range(ck_req *r, const json_error_t *je)
{
    size_t n = r->body_len, cap = n + 16 * sizeof CK_RANGE_MARK + 1;
    char *buf = r->body != NULL ? malloc(cap) : NULL;
    if (buf == NULL)
        return 0;
    memcpy(buf, r->body, n);
    json_error_t e = *je;
    json_t *j = NULL;
    for (int k = 0; k < 16 && j == NULL; k++) {
        size_t end = (size_t)e.position, start = end;
        if (json_error_code(&e) != json_error_numeric_overflow || end > n)
            break;
        while (start > 0 && strchr("-+.eE0123456789", buf[start - 1]) &&
               buf[start - 1] != '\0')
            start--;
        if (start == end)
            break;
        /* The first one is named; the others become 0. */
        const char *rep = k == 0 ? "\"" CK_RANGE_MARK "\"" : "0";
        size_t rl = strlen(rep);
        memmove(buf + start + rl, buf + end, n - end);
        memcpy(buf + start, rep, rl);
        n = n - (end - start) + rl;
        j = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &e);
    }
    free(buf);
    if (j == NULL)
        return 0;
    char path[256] = "";
    if (!json_is_object(j) ||
        !find_mark(j, "\001ck\002out-of-range\003", path, sizeof path)) {
        json_decref(j);
        return 0;
    }
    json_decref(j);
    ck_error(r, 422, "invalid_field",
             "%s is a number out of range (beyond what this service can "
             "hold)",
             path);
    return 1;
}

json_t *ck_body_object(ck_req *r)
{
    json_error_t je;
    json_t *j = json_loadb(r->body ? r->body : "", r->body_len,
                           JSON_REJECT_DUPLICATES, &je);
    if (j == NULL) {
        if (json_error_code(&je) == json_error_numeric_overflow &&
            out_of_range(r, &je))
            return NULL;
        ck_error(r, 400, "invalid_json", "malformed JSON at line %d: %s",
                 je.line, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        ck_error(r, 400, "invalid_json", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

static const char *header(h2o_req_t *req, const char *lname)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, lname, strlen(lname), -1);
    if (i < 0)
        return NULL;
    h2o_iovec_t v = req->headers.entries[i].value;
    return h2o_strdup(&req->pool, v.base, v.len).base;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    ck_http *h = *(ck_http **)(self + 1);
    ck_req *r = h2o_mem_alloc_shared(&req->pool, sizeof *r, req_dispose);
    memset(r, 0, sizeof *r);
    r->a = h->a;
    r->h2o = req;
    r->method = h2o_strdup(&req->pool, req->method.base, req->method.len).base;
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        /* HEAD is GET without the body (RFC 9110 9.3.2): routed as GET,
         * same status and headers; h2o_send_inline() sends no body for
         * it, Content-Length stays the GET body's. */
        r->method = "GET";
        r->head = 1;
    }
    r->body = req->entity.base;
    r->body_len = req->entity.base ? req->entity.len : 0;
    r->user_id = header(req, "x-user-id");
    r->idem_key = header(req, "idempotency-key");
    r->traceparent = header(req, "traceparent");
    r->query = "";
    if (req->query_at != SIZE_MAX)
        r->query = h2o_strdup(&req->pool, req->path.base + req->query_at + 1,
                              req->path.len - req->query_at - 1)
                       .base;
    char *path = h2o_strdup(&req->pool, req->path_normalized.base,
                            req->path_normalized.len)
                     .base;
    if (memchr(req->path_normalized.base, '\0', req->path_normalized.len)) {
        /* h2o decoded a %00: the segments would be cut short. */
        ck_error(r, 404, "not_found", "no such path (it holds a NUL)");
        return 0;
    }
    /* h2o's path_normalized is decoded once already (%XX, dot segments):
     * the segments are used as they are, never decoded again (a second
     * decode turned %2541 into "A"). */
    char *save = NULL;
    for (char *s = strtok_r(path, "/", &save); s != NULL;
         s = strtok_r(NULL, "/", &save)) {
        if (r->nsegs == CK_MAX_SEGS) {
            ck_error(r, 404, "not_found", "no such path");
            return 0;
        }
        if (!text_ok(s, strlen(s))) {
            ck_error(r, 404, "not_found",
                     "no such path (a segment is not UTF-8 text)");
            return 0;
        }
        r->segs[r->nsegs++] = s;
    }
    if (r->user_id != NULL && !text_ok(r->user_id, strlen(r->user_id))) {
        ck_error(r, 400, "invalid_user_id", "X-User-Id must be UTF-8 text");
        return 0;
    }
    if (r->user_id != NULL && strlen(r->user_id) > CK_USER_ID_MAX) {
        ck_error(r, 400, "invalid_user_id",
                 "X-User-Id must be at most %d bytes", CK_USER_ID_MAX);
        return 0;
    }
    if (r->idem_key != NULL && !text_ok(r->idem_key, strlen(r->idem_key))) {
        ck_error(r, 400, "invalid_idempotency_key",
                 "the Idempotency-Key header must be UTF-8 text");
        return 0;
    }
    if (r->body_len > CK_BODY_MAX) {
        ck_error(r, 413, "payload_too_large",
                 "the request body is larger than 1 MiB");
        return 0;
    }
    if (h->a->closing) {
        ck_error(r, 503, "shutting_down", "the service is shutting down");
        return 0;
    }
    ck_route(r);
    return 0;
}

static void on_conn_closed(uv_handle_t *handle)
{
    ck_conn *c = (ck_conn *)handle;
    c->h->conns_open--;
    free(c);
}

static void on_accept(uv_stream_t *listener, int status)
{
    ck_http *h = listener->data;
    if (status != 0)
        return;
    ck_conn *c = h2o_mem_alloc(sizeof *c);
    c->h = h;
    uv_tcp_init(listener->loop, &c->tcp);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
        h->conns_open >= h->conns_max) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    h->conns_open++;
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp,
                                              on_conn_closed);
    h2o_accept(&h->accept_ctx, sock);
}

int ck_http_start(ck_app *a, const char *listen, char *bound, size_t bsize)
{
    char host[256];
    int port = 0;
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || (size_t)(colon - listen) >= sizeof host ||
        sscanf(colon + 1, "%d", &port) != 1 || port < 0 || port > 65535) {
        fprintf(stderr, "saga-checkout: --listen wants HOST:PORT, got %s\n",
                listen);
        return -1;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    ck_http *h = calloc(1, sizeof *h);
    if (h == NULL)
        return -1;
    h->a = a;
    const char *mc = getenv("CK_MAX_CONNECTIONS");
    h->conns_max = mc != NULL && atoi(mc) > 0 ? (size_t)atoi(mc)
                                              : CK_MAX_CONNS_DEFAULT;
    h2o_config_init(&h->config);
    h->config.max_request_entity_size = CK_H2O_BODY_MAX;
    h->config.http1.upgrade_to_http2 = 0;
    h2o_hostconf_t *hc = h2o_config_register_host(
        &h->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
#ifdef CK_HAVE_CONSOLE
    /* Before "/": h2o takes the first path that matches. GET /metrics is
     * always served; the console only with an admin token. */
    ck_parts(a);
    saga_console_mount_metrics(hc, a->engine, a->parts, a->nparts);
    if (a->admin_token != NULL && a->engine != NULL) {
        saga_console_config cc = {saga_engine_store(a->engine), a->engine,
                                  a->admin_token, 0};
        saga_console *con;
        if (saga_console_new(&con, &cc) != SAGA_OK) {
            fprintf(stderr, "saga-checkout: CK_ADMIN_TOKEN must have at "
                            "least 8 characters\n");
            return -1;
        }
        saga_console_mount(con, hc);
    }
#endif
    h2o_pathconf_t *pc = h2o_config_register_path(hc, "/", 0);
    h2o_handler_t *hd = h2o_create_handler(pc, sizeof *hd + sizeof(ck_http *));
    *(ck_http **)(hd + 1) = h;
    hd->on_req = on_req;
    h2o_context_init(&h->ctx, a->loop, &h->config);
    h->accept_ctx.ctx = &h->ctx;
    h->accept_ctx.hosts = h->config.hosts;

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        fprintf(stderr, "saga-checkout: bad listen address %s\n", listen);
        return -1;
    }
    uv_tcp_init(a->loop, &h->listener);
    h->listener.data = h;
    int rc = uv_tcp_bind(&h->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->listener, 512, on_accept);
    if (rc != 0) {
        fprintf(stderr, "saga-checkout: cannot listen on %s: %s\n", listen,
                uv_strerror(rc));
        uv_close((uv_handle_t *)&h->listener, NULL);
        a->http = h;
        return -1;
    }
    h->listening = 1;
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_getsockname(&h->listener, (struct sockaddr *)&got, &len);
    int p = ntohs(((struct sockaddr_in *)&got)->sin_port);
    snprintf(bound, bsize, "%s:%d", host, p);
    a->http = h;
    return 0;
}

void ck_http_stop(ck_app *a)
{
    ck_http *h = a->http;
    if (h == NULL || !h->listening)
        return;
    h->listening = 0;
    uv_close((uv_handle_t *)&h->listener, NULL);
}
