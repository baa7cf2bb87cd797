/*
 * pg_proxy.h — a TCP proxy between a PostgreSQL store and the test server,
 * for the tests that lose answers, make the server silent or slow, or
 * count round trips (test_pg_async.c, test_pg_loop.c, test_pg_part.c).
 * Static: included by one test file each. The includer provides criterion, stdatomic, pthread, poll and the
 * socket headers.
 */
#ifndef SAGA_TEST_PG_PROXY_H
#define SAGA_TEST_PG_PROXY_H

/* A TCP proxy between the store and the server. drop_answers: what the
 * server sends is swallowed; cut: every open connection is closed;
 * hold_ms: an outage of that long (the proxy's clock): every open
 * connection is closed, and new ones are accepted and then held without a
 * byte either way (a server that does not answer), until the outage ends
 * and they are closed; holding is set meanwhile, outages counts the ended
 * ones. With freeze, the open connections are held too instead of closed
 * at the outage's start (a silent partition).
 *
 * Round trips: rtt counts the client's bursts that follow an answer of
 * the server (the first bytes of a connection start one). delay_ms holds
 * every answer that long before passing it on (a slow server). The
 * answers that follow round trip number drop_at are swallowed (silent
 * is set meanwhile) and that connection is closed drop_hold_ms later
 * (0: 200 ms; a commit whose answer was lost); cuts counts such closes. */
typedef struct proxy {
    int lfd;
    int port, up_port;
    pthread_t th;
    atomic_int drop_answers, cut, stop, hold_ms, holding, outages, freeze;
    atomic_int delay_ms, drop_hold_ms, silent, cuts;
    atomic_long rtt, drop_at;
} proxy;

static int64_t proxy_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_up(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *proxy_main(void *arg)
{
    proxy *p = arg;
    int down[8], up[8], last[8], n = 0, held[64], nheld = 0, dropping = -1;
    int64_t hold_until = 0, cut_at = 0;
    char buf[65536];
    while (!atomic_load(&p->stop)) {
        if (dropping >= 0 && proxy_now_ms() >= cut_at) {
            close(down[dropping]);
            close(up[dropping]);
            down[dropping] = down[n - 1];
            up[dropping] = up[n - 1];
            last[dropping] = last[n - 1];
            n--;
            dropping = -1;
            atomic_fetch_add(&p->cuts, 1);
            atomic_store(&p->silent, 0);
        }
        int hold = atomic_exchange(&p->hold_ms, 0);
        if (hold > 0) {
            hold_until = proxy_now_ms() + hold;
            atomic_store(&p->holding, 1);
            if (atomic_load(&p->freeze)) {
                /* A silent partition: open connections stay open and
                 * carry nothing (no reset tells the client). */
                for (int i = 0; i < n && nheld + 2 <= 64; i++) {
                    held[nheld++] = down[i];
                    held[nheld++] = up[i];
                }
                n = 0;
                dropping = -1;
                atomic_store(&p->silent, 0);
            } else {
                atomic_store(&p->cut, 1);
            }
        }
        if (atomic_load(&p->holding) && proxy_now_ms() >= hold_until) {
            for (int i = 0; i < nheld; i++)
                close(held[i]);
            nheld = 0;
            atomic_store(&p->holding, 0);
            atomic_fetch_add(&p->outages, 1);
        }
        if (atomic_exchange(&p->cut, 0)) {
            for (int i = 0; i < n; i++) {
                close(down[i]);
                close(up[i]);
            }
            n = 0;
            dropping = -1;
            atomic_store(&p->silent, 0);
        }
        struct pollfd pf[17];
        pf[0].fd = p->lfd;
        pf[0].events = POLLIN;
        for (int i = 0; i < n; i++) {
            pf[1 + 2 * i] = (struct pollfd){down[i], POLLIN, 0};
            pf[2 + 2 * i] = (struct pollfd){up[i], POLLIN, 0};
        }
        if (poll(pf, (nfds_t)(1 + 2 * n), 20) <= 0)
            continue;
        if ((pf[0].revents & POLLIN) && atomic_load(&p->holding)) {
            int d = accept(p->lfd, NULL, NULL);
            if (d >= 0 && nheld < 64)
                held[nheld++] = d;
            else if (d >= 0)
                close(d);
            continue;
        }
        if ((pf[0].revents & POLLIN) && n < 8) {
            int d = accept(p->lfd, NULL, NULL);
            int u = d >= 0 ? connect_up(p->up_port) : -1;
            if (u >= 0) {
                down[n] = d;
                last[n] = 1; /* the first bytes start a round trip */
                up[n++] = u;
            } else if (d >= 0) {
                close(d);
            }
            continue;
        }
        for (int i = 0; i < n; i++) {
            int dead = 0;
            if (pf[1 + 2 * i].revents) {
                ssize_t k = read(down[i], buf, sizeof buf);
                if (k > 0 && last[i]) {
                    long r = atomic_fetch_add(&p->rtt, 1) + 1;
                    last[i] = 0;
                    if (r == atomic_load(&p->drop_at) && dropping < 0) {
                        int ms = atomic_load(&p->drop_hold_ms);
                        dropping = i;
                        cut_at = proxy_now_ms() + (ms > 0 ? ms : 200);
                        atomic_store(&p->silent, 1);
                    }
                }
                dead = k <= 0 || write(up[i], buf, (size_t)k) != k;
            }
            if (!dead && pf[2 + 2 * i].revents) {
                ssize_t k = read(up[i], buf, sizeof buf);
                int ms = atomic_load(&p->delay_ms);
                if (k > 0 && ms > 0)
                    usleep((useconds_t)ms * 1000);
                last[i] = 1;
                dead = k <= 0 ||
                       (!atomic_load(&p->drop_answers) && i != dropping &&
                        write(down[i], buf, (size_t)k) != k);
            }
            if (dead) {
                if (dropping == i) {
                    dropping = -1;
                    atomic_store(&p->silent, 0);
                } else if (dropping == n - 1) {
                    dropping = i;
                }
                close(down[i]);
                close(up[i]);
                down[i] = down[n - 1];
                up[i] = up[n - 1];
                last[i] = last[n - 1];
                n--;
                break; /* the poll set changed */
            }
        }
    }
    for (int i = 0; i < n; i++) {
        close(down[i]);
        close(up[i]);
    }
    for (int i = 0; i < nheld; i++)
        close(held[i]);
    return NULL;
}

static void proxy_start(proxy *p)
{
    memset(p, 0, sizeof *p);
    const char *url = getenv("SAGA_PG_URL");
    const char *at = url ? strstr(url, "127.0.0.1:") : NULL;
    cr_assert_not_null(at, "SAGA_PG_URL names 127.0.0.1:PORT: %s", url);
    p->up_port = atoi(at + strlen("127.0.0.1:"));
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(p->lfd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(p->lfd, 8), 0);
    socklen_t len = sizeof a;
    getsockname(p->lfd, (struct sockaddr *)&a, &len);
    p->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&p->th, NULL, proxy_main, p), 0);
}

static void proxy_stop(proxy *p)
{
    atomic_store(&p->stop, 1);
    pthread_join(p->th, NULL);
    close(p->lfd);
}

#endif /* SAGA_TEST_PG_PROXY_H */
