/* The Kafka transport from outside: made and closed against an address
 * where no broker listens (nothing waits for one). */
#include <saga/kafka.h>
#include <uv.h>

int main(void)
{
    saga_kafka_options o = SAGA_KAFKA_OPTIONS_INIT;
    o.url = "kafka://127.0.0.1:1?client.id=install-test";
    uv_loop_t loop;
    saga_transport *t;
    if (uv_loop_init(&loop) != 0 ||
        saga_transport_kafka_new(&t, &loop, &o) != SAGA_OK)
        return 1;
    saga_transport_free(t);
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop) == 0 ? 0 : 1;
}
