/*
 * fuzz_envelope.c — libFuzzer target for saga_envelope_decode() and the
 * msgpack walker under it. Built by tests/fuzz/run.sh (clang only).
 *
 * Beyond "no crash, no out-of-bounds read" it checks invariants:
 *  - a rejection returns ECORRUPT or EVERSION with a reason;
 *  - an accepted envelope has terminated strings within their limits and a
 *    payload inside the input, and survives encode -> decode unchanged;
 *  - differential: whenever the walker accepts an object, msgpack-c parses
 *    the same bytes to the same end (the walker runs first, so msgpack-c
 *    never sees a lying container header).
 */
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpread.h"
#include "saga/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c))                                                              \
            __builtin_trap();                                                  \
    } while (0)

static void check_accepted(const saga_envelope *e, const uint8_t *data,
                           size_t size)
{
    CHECK(e->v == SAGA_ENVELOPE_VERSION);
    CHECK(e->kind >= SAGA_MSG_COMMAND && e->kind <= SAGA_MSG_EVENT);
    CHECK(strlen(e->msg_id) >= 1 && strlen(e->msg_id) <= SAGA_NAME_MAX);
    CHECK(strlen(e->saga_id) >= 1 && strlen(e->saga_id) <= SAGA_NAME_MAX);
    CHECK(strlen(e->name) >= 1 && strlen(e->name) <= SAGA_NAME_MAX);
    CHECK(strlen(e->trace) <= SAGA_ENVELOPE_TRACE_MAX);
    CHECK(strlen(e->error) <= SAGA_ENVELOPE_ERROR_MAX);
    CHECK(strlen(e->reply_to) <= SAGA_NAME_MAX);
    CHECK(e->outcome <= SAGA_OUTCOME_RETRY);
    if (e->payload_len > 0)
        CHECK((const uint8_t *)e->payload >= data &&
              (const uint8_t *)e->payload + e->payload_len <= data + size);

    /* Round trip: what we accepted we can write, and read back the same. */
    void *buf;
    size_t len;
    saga_envelope back;
    CHECK(saga_envelope_encode(e, &buf, &len) == SAGA_OK);
    CHECK(saga_envelope_decode(&back, buf, len, 0, NULL) == SAGA_OK);
    CHECK(back.kind == e->kind && back.step == e->step &&
          back.attempt == e->attempt && back.payload_len == e->payload_len);
    CHECK(strcmp(back.msg_id, e->msg_id) == 0);
    CHECK(strcmp(back.saga_id, e->saga_id) == 0);
    CHECK(strcmp(back.name, e->name) == 0);
    CHECK(strcmp(back.trace, e->trace) == 0);
    CHECK(strcmp(back.reply_to, e->reply_to) == 0);
    if (e->kind == SAGA_MSG_REPLY) {
        CHECK(back.outcome == e->outcome);
        CHECK(strcmp(back.error, e->error) == 0);
    }
    if (e->kind == SAGA_MSG_COMMAND || e->kind == SAGA_MSG_REPLY)
        CHECK(back.comp == e->comp);
    if (e->payload_len > 0)
        CHECK(memcmp(back.payload, e->payload, e->payload_len) == 0);
    saga_free(buf);
}

static void differential(const uint8_t *data, size_t size)
{
    size_t off = 0;
    if (saga__mp_skip(data, size, &off, SAGA__MP_MAX_DEPTH) < 0)
        return;
    msgpack_unpacked u;
    size_t moff = 0;
    msgpack_unpacked_init(&u);
    msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *)data, size,
                                                  &moff);
    CHECK(r == MSGPACK_UNPACK_SUCCESS || r == MSGPACK_UNPACK_EXTRA_BYTES);
    CHECK(moff == off);
    msgpack_unpacked_destroy(&u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    saga_envelope e;
    const char *why = NULL;
    int rc = saga_envelope_decode(&e, data, size, 0, &why);
    if (rc == SAGA_OK) {
        CHECK(why == NULL);
        check_accepted(&e, data, size);
    } else {
        CHECK(rc == SAGA_ECORRUPT || rc == SAGA_EVERSION);
        CHECK(why != NULL);
    }
    /* A tight payload limit exercises the size checks too. */
    rc = saga_envelope_decode(&e, data, size, 16, NULL);
    CHECK(rc == SAGA_OK || rc == SAGA_ECORRUPT || rc == SAGA_EVERSION);
    if (rc == SAGA_OK)
        CHECK(e.payload_len <= 16);
    differential(data, size);
    return 0;
}
