/*
 * fuzz_tcp_frame.c — libFuzzer target for the TCP transport's wire decoding:
 * the input is a byte stream split into frames exactly as the transport's
 * reader does (4-byte big-endian length, kind, body), each frame decoded;
 * the first line of the input is also parsed as a "host:port" address.
 * Decoding must never read out of bounds, and a decoded DATA frame's parts
 * must lie inside its body.
 *
 * Build (tests/fuzz/run.sh style):
 *   clang -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *     -Iinclude -Itransports/tcp lib/alloc.c lib/errors.c \
 *     tests/fuzz/fuzz_tcp_frame.c \
 *     $(pkg-config --libs libuv) -o fuzz_tcp_frame
 */
#include <stdlib.h>
#include <string.h>

#include "../../transports/tcp/tcp_wire.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_inside(const void *p, size_t n, const unsigned char *body,
                         size_t len)
{
    const unsigned char *q = p;
    if (n > 0 && (q < body || q + n > body + len))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy so that reads past the end are caught by ASan exactly. */
    unsigned char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);

    const uint32_t max_frame = 4096;
    size_t off = 0;
    while (size - off >= 4) {
        uint32_t l = saga__tcp_get_u32(buf + off);
        if (l == 0 || l > max_frame || size - off - 4 < l)
            break; /* the transport rejects or waits */
        const unsigned char *body = buf + off + SAGA__TCP_HDR;
        size_t blen = l - 1;
        saga__tcp_frame f;
        const char *why = NULL;
        if (saga__tcp_frame_decode(buf[off + 4], body, blen, &f, &why) ==
            SAGA_OK) {
            check_inside(f.name, f.name_len, body, blen);
            check_inside(f.topic, f.topic_len, body, blen);
            check_inside(f.key, f.key_len, body, blen);
            check_inside(f.payload, f.payload_len, body, blen);
            if (f.kind == SAGA__TCP_DATA &&
                (f.topic_len == 0 || memchr(f.topic, 0, f.topic_len)))
                abort();
        } else if (why == NULL) {
            abort(); /* a rejection always says why */
        }
        off += 4 + l;
    }

    char line[128];
    size_t n = size < sizeof line - 1 ? size : sizeof line - 1;
    memcpy(line, buf, n);
    line[n] = '\0';
    struct sockaddr_storage ss;
    (void)saga__tcp_parse_addr(line, &ss);
    free(buf);
    return 0;
}
