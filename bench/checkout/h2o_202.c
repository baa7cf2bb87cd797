/*
 * bench_h2o_202: the HTTP ceiling for `bench/run checkout`.
 *
 * A plain libh2o HTTP/1.1 server on a libuv loop, set up as saga-checkout
 * serves (one loop, one thread, keep-alive, 1 MiB body cap), whose only
 * handler answers every request with 202 and a checkout-sized JSON body,
 * without libsaga, SQLite or any other work. wrk under the same load
 * against it gives the rate that HTTP alone allows on this machine.
 *
 * usage: bench_h2o_202 PORT    (prints "listening on http://127.0.0.1:PORT";
 *                               runs until SIGTERM or SIGINT)
 */
#include <h2o.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static h2o_globalconf_t config;
static h2o_context_t ctx;
static h2o_accept_ctx_t accept_ctx;
static unsigned long long counter;

/* Answers 202 with a body shaped like the checkout's (a fresh order id per
 * request), with a content length so that keep-alive holds. */
static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    char *body = h2o_mem_alloc_pool(&req->pool, 256);
    int n = snprintf(
        body, 256,
        "{\"order_id\":\"order_%016llx\",\"status\":\"PENDING\","
        "\"estimated_completion\":\"2026-01-01T00:00:03Z\","
        "\"idempotency_key\":\"k\",\"created_at\":\"2026-01-01T00:00:00Z\"}",
        ++counter);
    req->res.status = 202;
    req->res.reason = "Accepted";
    req->res.content_length = (size_t)n;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    h2o_send_inline(req, body, (size_t)n);
    return 0;
}

static void on_close(uv_handle_t *h) { free(h); }

static void on_accept(uv_stream_t *listener, int status)
{
    if (status != 0)
        return;
    uv_tcp_t *conn = malloc(sizeof(*conn));
    if (conn == NULL)
        return;
    uv_tcp_init(listener->loop, conn);
    if (uv_accept(listener, (uv_stream_t *)conn) != 0) {
        uv_close((uv_handle_t *)conn, on_close);
        return;
    }
    h2o_accept(&accept_ctx,
               h2o_uv_socket_create((uv_stream_t *)conn, on_close));
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)signum;
    uv_stop(s->loop);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: bench_h2o_202 PORT\n");
        return 2;
    }
    int port = atoi(argv[1]);
    uv_loop_t *loop = uv_default_loop();

    h2o_config_init(&config);
    config.max_request_entity_size = 1024 * 1024;
    config.http1.upgrade_to_http2 = 0;
    h2o_hostconf_t *host = h2o_config_register_host(
        &config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = on_req;
    h2o_context_init(&ctx, loop, &config);
    accept_ctx.ctx = &ctx;
    accept_ctx.hosts = config.hosts;

    uv_tcp_t listener;
    struct sockaddr_in addr;
    uv_tcp_init(loop, &listener);
    uv_ip4_addr("127.0.0.1", port, &addr);
    int rc = uv_tcp_bind(&listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&listener, 1024, on_accept);
    if (rc != 0) {
        fprintf(stderr, "bench_h2o_202: 127.0.0.1:%d: %s\n", port,
                uv_strerror(rc));
        return 1;
    }
    uv_signal_t sigterm, sigint;
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);
    printf("listening on http://127.0.0.1:%d\n", port);
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
