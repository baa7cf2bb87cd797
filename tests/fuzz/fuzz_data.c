/*
 * fuzz_data.c — libFuzzer target for the saga data helpers (is_map, the
 * getters, merge). Built by tests/fuzz/run.sh (clang only).
 *
 * The first byte splits the rest into two maps a and b. Invariants: the
 * helpers never crash; whatever is_map accepts msgpack-c parses as one map
 * with string keys and nothing after it; a merge of two maps is a map that
 * holds every key of b with b's value; merging a map into itself changes
 * nothing.
 */
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "saga/saga.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c))                                                              \
            __builtin_trap();                                                  \
    } while (0)

static void check_is_map(const uint8_t *p, size_t n)
{
    if (!saga__data_is_map(p, n) || n == 0)
        return;
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    CHECK(msgpack_unpack_next(&u, (const char *)p, n, &off) ==
          MSGPACK_UNPACK_SUCCESS);
    CHECK(off == n && u.data.type == MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < u.data.via.map.size; i++)
        CHECK(u.data.via.map.ptr[i].key.type == MSGPACK_OBJECT_STR);
    msgpack_unpacked_destroy(&u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t cut = 1 + (size > 1 ? data[0] % size : 0);
    const uint8_t *a = data + 1, *b = data + cut;
    size_t alen = cut - 1, blen = size - cut;

    check_is_map(a, alen);
    check_is_map(b, blen);

    const char *s;
    size_t sl;
    int64_t i;
    int bo;
    int rs = saga_data_get_str(b, blen, "k", &s, &sl);
    int ri = saga_data_get_int(b, blen, "k", &i);
    int rb = saga_data_get_bool(b, blen, "k", &bo);
    if (saga__data_is_map(b, blen)) {
        CHECK(rs != SAGA_ECORRUPT && ri != SAGA_ECORRUPT &&
              rb != SAGA_ECORRUPT);
        if (rs == SAGA_OK)
            CHECK(s >= (const char *)b && s + sl <= (const char *)b + blen);
    } else {
        CHECK(rs == SAGA_ECORRUPT && ri == SAGA_ECORRUPT &&
              rb == SAGA_ECORRUPT);
    }

    void *m;
    size_t mlen;
    int rc = saga__data_merge(a, alen, b, blen, &m, &mlen);
    int both = saga__data_is_map(a, alen) && saga__data_is_map(b, blen);
    CHECK((rc == SAGA_OK) == both);
    if (rc != SAGA_OK)
        return 0;
    CHECK(saga__data_is_map(m, mlen));
    /* If b has "k", the merge has b's value for it. */
    const char *s2;
    size_t sl2;
    int rm = saga_data_get_str(m, mlen, "k", &s2, &sl2);
    if (rs != SAGA_ENOTFOUND)
        CHECK(rm == rs);
    if (rs == SAGA_OK)
        CHECK(sl2 == sl && memcmp(s2, s, sl) == 0);
    /* Merging a map into itself is the identity. */
    void *m2;
    size_t mlen2;
    CHECK(saga__data_merge(m, mlen, m, mlen, &m2, &mlen2) == SAGA_OK);
    CHECK(mlen2 == mlen && memcmp(m2, m, mlen) == 0);
    saga_free(m2);
    saga_free(m);
    return 0;
}
