/*
 * bench_remote.c — remote sagas across three processes over TCP on
 * loopback: this orchestrator and two participants (bench_remote_part),
 * each on its own SQLite file.
 *
 *   bench_remote -p PART_BIN [-d DIR] [-n N] [-w WINDOW] [-l SECONDS]
 *                [-s SYNC] [-r RATE]
 *
 * A saga is 4 remote steps: s1@alpha (compensatable), s2@beta
 * (compensatable), s3@alpha (pivot), s4@beta (retriable); every step
 * succeeds. Phase 1 (throughput): N sagas, WINDOW in flight (closed loop);
 * sagas/s = N / (last end - first start). Phase 2 (latency): open loop at
 * RATE sagas/s (default half of phase 1's figure) for SECONDS; latency is
 * from the scheduled start to the saga's durable end (on_done), so a
 * stalled engine is not hidden by late starts. SYNC: 0 FULL, 1 NORMAL.
 * The last line is remote_sagas_per_s=<n>.
 *
 * Over Kafka: -m MOCK_BIN starts librdkafka's mock cluster in a process of
 * its own (tests/kafka/mock_cluster; topics orders, alpha, beta with 4
 * partitions) and runs the three processes through it; -k URL uses the
 * cluster at URL instead; -K "prop=value&..." adds librdkafka properties.
 * Phase 0 then runs WARM (-W, default 300) untimed sagas first (consumer
 * groups joined, topic metadata fetched), and the last line is
 * kafka_sagas_per_s=<n>.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <saga/saga.h>
#ifdef BENCH_WITH_KAFKA
#include <saga/kafka.h>
#endif

static saga_engine *E;
static uv_loop_t *loop;
static uv_timer_t tick, watchdog;
static uv_idle_t refill;

/* Saga id -> scheduled start (ns), open addressing keyed by the id's
 * first 16 hex digits. */
typedef struct slot {
    char id[SAGA_ID_SIZE];
    uint64_t t0;
} slot;
static slot *tab;
static size_t tab_mask;

static int phase; /* 0 warm-up, 1 throughput, 2 latency, 3 draining */
static long n_total, n_started, n_done, window = 2000, n_warm;
static double rate;
static uint64_t t_first, t_last, t_phase;
static uint64_t *lat;
static size_t nlat, clat;
static long p2_target;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t hash_id(const char *id)
{
    uint64_t h = 0;
    for (int i = 0; i < 16; i++)
        h = h * 16 + (uint64_t)(id[i] <= '9' ? id[i] - '0' : id[i] - 'a' + 10);
    return (size_t)(h * 0x9e3779b97f4a7c15ull >> 20);
}

static void tab_put(const char *id, uint64_t t0)
{
    size_t i = hash_id(id) & tab_mask;
    while (tab[i].id[0])
        i = (i + 1) & tab_mask;
    memcpy(tab[i].id, id, SAGA_ID_SIZE);
    tab[i].t0 = t0;
}

/* Take the entry out (backward-shift deletion keeps probing correct). */
static int tab_take(const char *id, uint64_t *t0)
{
    size_t i = hash_id(id) & tab_mask;
    while (tab[i].id[0] && strcmp(tab[i].id, id) != 0)
        i = (i + 1) & tab_mask;
    if (!tab[i].id[0])
        return -1;
    *t0 = tab[i].t0;
    tab[i].id[0] = 0;
    size_t j = i;
    for (;;) {
        j = (j + 1) & tab_mask;
        if (!tab[j].id[0])
            break;
        size_t k = hash_id(tab[j].id) & tab_mask;
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            tab[i] = tab[j];
            tab[j].id[0] = 0;
            i = j;
        }
    }
    return 0;
}

static int start_one(uint64_t t0)
{
    char id[SAGA_ID_SIZE];
    int rc = saga_start(E, "bench", NULL, NULL, 0, id, NULL, NULL);
    if (rc != SAGA_OK) {
        fprintf(stderr, "bench_remote: saga_start: %s\n", saga_strerror(rc));
        return rc;
    }
    tab_put(id, t0);
    n_started++;
    return 0;
}

static void begin_phase2(void);

static void refill_cb(uv_idle_t *h)
{
    /* Phases 0 and 1: keep WINDOW sagas in flight. */
    long target = phase == 0 ? n_warm : n_total;
    while (phase <= 1 && n_started < target && n_started - n_done < window)
        if (start_one(now_ns()) != 0)
            break;
    uv_idle_stop(h); /* on_done starts it again */
}

static void on_done(saga_engine *e, const char *id, saga_state st, void *arg)
{
    (void)e, (void)arg;
    uint64_t t = now_ns(), t0;
    uv_timer_again(&watchdog);
    if (st != SAGA_STATE_COMPLETED)
        fprintf(stderr, "bench_remote: saga %s ended %s\n", id,
                saga_state_name(st));
    if (tab_take(id, &t0) != 0)
        return;
    n_done++;
    t_last = t;
    if (phase == 0) {
        if (n_done == n_warm) {
            /* Warm: everyone joined. Now the measured run. */
            phase = 1;
            n_started = n_done = 0;
            t_first = now_ns();
        }
        uv_idle_start(&refill, refill_cb);
        return;
    }
    if (phase == 1) {
        if (n_done == n_total)
            begin_phase2();
        else if (n_started < n_total)
            uv_idle_start(&refill, refill_cb);
        return;
    }
    if (nlat == clat) {
        clat = clat ? clat * 2 : 65536;
        lat = realloc(lat, clat * sizeof *lat);
    }
    lat[nlat++] = t - t0;
    if (phase == 3 && n_done == n_started)
        uv_stop(loop);
}

static void tick_cb(uv_timer_t *h)
{
    /* Phase 2: the starts due by now, on schedule (open loop). */
    uint64_t now = now_ns();
    for (;;) {
        long k = n_started - n_total;
        if (k >= p2_target)
            break;
        uint64_t due = t_phase + (uint64_t)((double)k * 1e9 / rate);
        if (due > now || start_one(due) != 0)
            break;
    }
    if (n_started - n_total >= p2_target) {
        uv_timer_stop(h);
        phase = 3;
        if (n_done == n_started)
            uv_stop(loop);
    }
}

static double secs_p2;

static void begin_phase2(void)
{
    double el = (double)(t_last - t_first) / 1e9;
    double tput = (double)n_total / el;
    printf("throughput: %ld sagas (4 remote steps each) in %.2f s, window "
           "%ld: %.0f sagas/s\n",
           n_total, el, window, tput);
    fflush(stdout);
    if (rate <= 0)
        rate = tput / 2;
    p2_target = (long)(rate * secs_p2);
    if (p2_target < 1)
        p2_target = 1;
    phase = 2;
    t_phase = now_ns();
    uv_timer_start(&tick, tick_cb, 0, 1);
}

static pid_t pa, pb, mock_pid = -1;

static void on_watchdog(uv_timer_t *h)
{
    (void)h;
    fprintf(stderr,
            "bench_remote: no progress for 30 s (started %ld, done "
            "%ld); giving up\n",
            n_started, n_done);
    kill(pa, SIGKILL);
    kill(pb, SIGKILL);
    if (mock_pid > 0)
        kill(mock_pid, SIGKILL);
    exit(1);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- processes ----------------------------------------------------------- */

static int pick_ports(int *ports, int n)
{
    int fds[8];
    for (int i = 0; i < n; i++) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t l = sizeof a;
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&a, &l) != 0)
            return -1;
        ports[i] = ntohs(a.sin_port);
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    return 0;
}

static pid_t spawn_part(const char *bin, const char *db, const char *svc,
                        int port, int orch_port, int sync)
{
    char p[16], op[16], s[16];
    snprintf(p, sizeof p, "%d", port);
    snprintf(op, sizeof op, "%d", orch_port);
    snprintf(s, sizeof s, "%d", sync);
    pid_t pid = fork();
    if (pid == 0) {
        execl(bin, bin, db, svc, p, op, s, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* ---- the mock Kafka cluster (-m) -------------------------------------------- */

static FILE *mock_in;

static int start_mock(const char *bin, char *bs, size_t cap)
{
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0)
        return -1;
    mock_pid = fork();
    if (mock_pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execl(bin, bin, "-t", "orders:4", "-t", "alpha:4", "-t", "beta:4",
              (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    mock_in = fdopen(in[1], "w"); /* the mock lives until we close it */
    FILE *o = fdopen(out[0], "r");
    if (mock_pid < 0 || mock_in == NULL || o == NULL ||
        fgets(bs, (int)cap, o) == NULL)
        return -1;
    fclose(o);
    bs[strcspn(bs, "\n")] = '\0';
    return bs[0] ? 0 : -1;
}

static double cpu_s(const struct rusage *ru)
{
    return (double)(ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) +
           (double)(ru->ru_utime.tv_usec + ru->ru_stime.tv_usec) / 1e6;
}

static int define(void)
{
    saga_def *d;
    saga_def_new(&d, "bench", 1);
    const char *names[4] = {"s1", "s2", "s3", "s4"};
    const char *svc[4] = {"alpha", "beta", "alpha", "beta"};
    saga_step_kind kinds[4] = {SAGA_STEP_COMPENSATABLE, SAGA_STEP_COMPENSATABLE,
                               SAGA_STEP_PIVOT, SAGA_STEP_RETRIABLE};
    for (int i = 0; i < 4; i++) {
        saga_step_options o = SAGA_STEP_OPTIONS_INIT;
        o.kind = kinds[i];
        o.service = svc[i];
        o.command = names[i];
        o.comp_command = kinds[i] == SAGA_STEP_COMPENSATABLE ? names[i] : NULL;
        o.timeout_ms = 10000;
        if (saga_def_add_step(d, names[i], NULL, NULL, &o, NULL) != SAGA_OK) {
            fprintf(stderr, "bench_remote: %s\n", saga_def_errmsg(d));
            return -1;
        }
    }
    return saga_engine_register(E, d) == SAGA_OK ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *part = NULL, *dir = NULL;
    int sync = 0, c;
    n_total = 50000;
    secs_p2 = 5;
    const char *kafka_url = NULL, *mock_bin = NULL, *kprops = "";
    n_warm = -1;
    while ((c = getopt(argc, argv, "p:d:n:w:l:s:r:k:m:K:W:h")) != -1) {
        switch (c) {
        case 'k':
            kafka_url = optarg;
            break;
        case 'm':
            mock_bin = optarg;
            break;
        case 'K':
            kprops = optarg;
            break;
        case 'W':
            n_warm = atol(optarg);
            break;
        case 'p':
            part = optarg;
            break;
        case 'd':
            dir = optarg;
            break;
        case 'n':
            n_total = atol(optarg);
            break;
        case 'w':
            window = atol(optarg);
            break;
        case 'l':
            secs_p2 = atof(optarg);
            break;
        case 's':
            sync = atoi(optarg);
            break;
        case 'r':
            rate = atof(optarg);
            break;
        default:
            fprintf(stderr, "usage: bench_remote -p PART_BIN [-d DIR] [-n N] "
                            "[-w WINDOW] [-l SECONDS] [-s SYNC 0|1] "
                            "[-r RATE] [-m MOCK_BIN | -k KAFKA_URL] "
                            "[-K PROPS] [-W WARM]\n");
            return 2;
        }
    }
    if (part == NULL || n_total <= 0 || window <= 0)
        return 2;
    char tmpl[] = "/tmp/bench_remote.XXXXXX";
    if (dir == NULL && (dir = mkdtemp(tmpl)) == NULL)
        return 1;
    size_t cap = 1;
    while (cap < (size_t)(window * 4 + 1024) ||
           cap < (size_t)((rate > 0 ? rate : 50000) * secs_p2 * 2))
        cap *= 2;
    tab = calloc(cap, sizeof *tab);
    tab_mask = cap - 1;
    signal(SIGPIPE, SIG_IGN);
    int ports[3];
    if (pick_ports(ports, 3) != 0)
        return 1;
    char db[3][4200];
    const char *names[3] = {"orders", "alpha", "beta"};
    for (int i = 0; i < 3; i++) {
        snprintf(db[i], sizeof db[i], "%s/%s.db", dir, names[i]);
        unlink(db[i]);
    }
    char url[2048];
    int kafka = kafka_url != NULL || mock_bin != NULL;
    if (n_warm < 0)
        n_warm = kafka ? 300 : 0;
    if (mock_bin != NULL) {
        char bs[512];
        if (start_mock(mock_bin, bs, sizeof bs) != 0) {
            fprintf(stderr, "bench_remote: cannot start %s\n", mock_bin);
            return 1;
        }
        snprintf(url, sizeof url, "kafka://%s", bs);
    } else if (kafka_url != NULL) {
        snprintf(url, sizeof url, "%s", kafka_url);
    }
    if (kafka) {
        /* Properties for all three processes: the URL carries them. */
        size_t l = strlen(url);
        snprintf(url + l, sizeof url - l, "%s%s", strchr(url, '?') ? "&" : "?",
                 kprops);
        if (kprops[0] == '\0')
            url[l] = '\0';
        setenv("BENCH_KAFKA", url, 1);
    }
    pa = spawn_part(part, db[1], "alpha", ports[1], ports[0], sync);
    pb = spawn_part(part, db[2], "beta", ports[2], ports[0], sync);

    loop = uv_default_loop();
    saga_sqlite_options so = SAGA_SQLITE_OPTIONS_INIT;
    so.synchronous = sync;
    saga_store *store;
    if (saga_store_sqlite_open(&store, db[0], &so) != SAGA_OK)
        return 1;
    char listen[64], a[64], b[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", ports[0]);
    snprintf(a, sizeof a, "127.0.0.1:%d", ports[1]);
    snprintf(b, sizeof b, "127.0.0.1:%d", ports[2]);
    saga_tcp_peer peers[2] = {{"alpha", a}, {"beta", b}};
    saga_tcp_options to = SAGA_TCP_OPTIONS_INIT;
    to.service = "orders";
    to.listen = listen;
    to.peers = peers;
    to.npeers = 2;
    saga_transport *t;
    if (kafka) {
#ifdef BENCH_WITH_KAFKA
        saga_kafka_options ko = SAGA_KAFKA_OPTIONS_INIT;
        ko.url = url;
        if (saga_transport_kafka_new(&t, loop, &ko) != SAGA_OK)
            return 1;
#else
        fprintf(stderr, "bench_remote: built without the Kafka transport\n");
        return 2;
#endif
    } else if (saga_transport_tcp_new(&t, loop, &to) != SAGA_OK) {
        return 1;
    }
    saga_engine_options eo = SAGA_ENGINE_OPTIONS_INIT;
    eo.loop = loop;
    eo.service = "orders";
    eo.on_done = on_done;
    if (saga_engine_new(&E, store, t, &eo) != SAGA_OK || define() != 0 ||
        saga_engine_start(E) != SAGA_OK) {
        fprintf(stderr, "bench_remote: %s\n", saga_engine_errmsg(E));
        return 1;
    }
    printf("bench remote: orchestrator + 2 participants on %s, "
           "SQLite WAL synchronous=%s, 4 remote steps per saga\n",
           kafka ? url : "loopback TCP",
           sync == 1   ? "NORMAL"
           : sync == 2 ? "OFF"
                       : "FULL");
    uv_timer_init(loop, &tick);
    uv_idle_init(loop, &refill);
    /* A participant that cannot start (or a hang) fails the run rather
     * than blocking it: 30 s without a saga ending. */
    uv_timer_init(loop, &watchdog);
    uv_timer_start(&watchdog, on_watchdog, 30000, 30000);
    uv_unref((uv_handle_t *)&watchdog);
    phase = n_warm > 0 ? 0 : 1;
    t_first = now_ns();
    uv_idle_start(&refill, refill_cb);
    uv_run(loop, UV_RUN_DEFAULT);

    double tput = (double)n_total / ((double)(t_phase - t_first) / 1e9);
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    double p50 = nlat ? (double)lat[nlat / 2] / 1e6 : 0;
    double p99 = nlat ? (double)lat[(size_t)((double)nlat * 0.99)] / 1e6 : 0;
    double mx = nlat ? (double)lat[nlat - 1] / 1e6 : 0;
    printf("latency: open loop at %.0f sagas/s for %.1f s (%zu sagas): "
           "p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           rate, secs_p2, nlat, p50, p99, mx);
    saga_engine_counters st = SAGA_ENGINE_COUNTERS_INIT;
    saga_engine_stats(E, &st);
    printf("engine: commits=%llu (%.1f transitions/commit) timeouts=%llu\n",
           (unsigned long long)st.commits,
           st.commits ? (double)st.transitions / (double)st.commits : 0.0,
           (unsigned long long)st.timeouts);
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_close((uv_handle_t *)&refill, NULL);
    saga_engine_free(E);
    /* Where the CPU went (user + sys, whole run): this process, the
     * participants, and the mock broker (not a real broker's cost). */
    struct rusage ru;
    double cpu_o = 0, cpu_p = 0, cpu_m = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu_o = cpu_s(&ru);
    kill(pa, SIGTERM);
    kill(pb, SIGTERM);
    if (wait4(pa, NULL, 0, &ru) == pa)
        cpu_p += cpu_s(&ru);
    if (wait4(pb, NULL, 0, &ru) == pb)
        cpu_p += cpu_s(&ru);
    if (mock_pid > 0) {
        fclose(mock_in);
        if (wait4(mock_pid, NULL, 0, &ru) == mock_pid)
            cpu_m = cpu_s(&ru);
        mock_pid = -1;
    }
    printf("cpu: orchestrator %.2f s, participants %.2f s", cpu_o, cpu_p);
    if (cpu_m > 0)
        printf(", mock broker %.2f s (%.0f%% of the total)", cpu_m,
               100 * cpu_m / (cpu_o + cpu_p + cpu_m));
    printf("\n");
    printf("%s_sagas_per_s=%.0f\n", kafka ? "kafka" : "remote", tput);
    free(tab);
    free(lat);
    return 0;
}
