/*
 * test_data.c — saga data helpers: the map builder, the getters,
 * saga__data_is_map and saga__data_merge.
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saga/saga.h"
#include "data.h"

Test(data, build_and_read_every_type)
{
    saga_map *m;
    const void *d;
    size_t n;
    cr_assert_eq(saga_map_new(&m), SAGA_OK);
    cr_assert_eq(saga_map_set_str(m, "order", "o-17"), SAGA_OK);
    cr_assert_eq(saga_map_set_int(m, "qty", -42), SAGA_OK);
    cr_assert_eq(saga_map_set_int(m, "big", INT64_MAX), SAGA_OK);
    cr_assert_eq(saga_map_set_bool(m, "paid", 7), SAGA_OK);
    cr_assert_eq(saga_map_set_bin(m, "blob", "\0\1\2", 3), SAGA_OK);
    cr_assert_eq(saga_map_set_str(m, "", "empty key"), SAGA_OK);
    cr_assert_eq(saga_map_encode(m, &d, &n), SAGA_OK);
    cr_assert_eq(saga__data_is_map(d, n), 1);

    const char *s;
    size_t sl;
    int64_t i;
    int b;
    cr_assert_eq(saga_data_get_str(d, n, "order", &s, &sl), SAGA_OK);
    cr_assert_eq(sl, 4);
    cr_assert_eq(memcmp(s, "o-17", 4), 0);
    cr_assert(s > (const char *)d && s < (const char *)d + n); /* borrowed */
    cr_assert_eq(saga_data_get_int(d, n, "qty", &i), SAGA_OK);
    cr_assert_eq(i, -42);
    cr_assert_eq(saga_data_get_int(d, n, "big", &i), SAGA_OK);
    cr_assert_eq(i, INT64_MAX);
    cr_assert_eq(saga_data_get_bool(d, n, "paid", &b), SAGA_OK);
    cr_assert_eq(b, 1);
    cr_assert_eq(saga_data_get_str(d, n, "", &s, &sl), SAGA_OK);
    cr_assert_eq(sl, 9);

    /* The bin value, checked with msgpack-c as an independent reader. */
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&u, d, n, &off), MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(u.data.type, MSGPACK_OBJECT_MAP);
    cr_assert_eq(u.data.via.map.size, 6);
    msgpack_object_kv *kv = &u.data.via.map.ptr[4];
    cr_assert_eq(kv->val.type, MSGPACK_OBJECT_BIN);
    cr_assert_eq(kv->val.via.bin.size, 3);
    cr_assert_eq(memcmp(kv->val.via.bin.ptr, "\0\1\2", 3), 0);
    msgpack_unpacked_destroy(&u);
    saga_map_free(m);
}

Test(data, later_set_wins_and_encode_is_stable)
{
    saga_map *m;
    const void *d, *d2;
    size_t n, n2;
    int64_t i;
    saga_map_new(&m);
    saga_map_set_int(m, "a", 1);
    saga_map_set_int(m, "b", 2);
    saga_map_set_str(m, "a", "x");
    saga_map_set_int(m, "a", 3);
    cr_assert_eq(saga_map_encode(m, &d, &n), SAGA_OK);
    cr_assert_eq(saga_map_encode(m, &d2, &n2), SAGA_OK);
    cr_assert_eq(d, d2);
    cr_assert_eq(n, n2);
    cr_assert_eq(((const uint8_t *)d)[0], 0x82); /* two keys */
    cr_assert_eq(saga_data_get_int(d, n, "a", &i), SAGA_OK);
    cr_assert_eq(i, 3);
    saga_map_free(m);
    saga_map_free(NULL);
}

Test(data, builder_arguments)
{
    saga_map *m;
    cr_assert_eq(saga_map_new(NULL), SAGA_EINVAL);
    saga_map_new(&m);
    cr_assert_eq(saga_map_set_str(m, NULL, "v"), SAGA_EINVAL);
    cr_assert_eq(saga_map_set_str(m, "k", NULL), SAGA_EINVAL);
    cr_assert_eq(saga_map_set_int(NULL, "k", 1), SAGA_EINVAL);
    cr_assert_eq(saga_map_set_bin(m, "k", NULL, 1), SAGA_EINVAL);
    cr_assert_eq(saga_map_set_bin(m, "k", NULL, 0), SAGA_OK);
    const void *d;
    size_t n;
    cr_assert_eq(saga_map_encode(m, NULL, &n), SAGA_EINVAL);
    cr_assert_eq(saga_map_encode(m, &d, &n), SAGA_OK);
    cr_assert_eq(n, 5); /* 81 a1 6b c4 00 */
    saga_map_free(m);
}

Test(data, getter_errors)
{
    /* {"s": "x", "i": 5} */
    static const char d[] = "\x82\xa1s\xa1x\xa1i\x05";
    size_t n = sizeof(d) - 1;
    const char *s;
    size_t sl;
    int64_t i;
    int b;
    cr_assert_eq(saga_data_get_str(d, n, "nope", &s, &sl), SAGA_ENOTFOUND);
    cr_assert_eq(saga_data_get_str(d, n, "i", &s, &sl), SAGA_EINVAL);
    cr_assert_eq(saga_data_get_int(d, n, "s", &i), SAGA_EINVAL);
    cr_assert_eq(saga_data_get_bool(d, n, "i", &b), SAGA_EINVAL);
    cr_assert_eq(saga_data_get_int(d, n, NULL, &i), SAGA_EINVAL);
    cr_assert_eq(saga_data_get_int(d, n, "i", NULL), SAGA_EINVAL);
    cr_assert_eq(saga_data_get_int(NULL, 0, "i", &i), SAGA_ENOTFOUND);
    cr_assert_eq(saga_data_get_int(NULL, 3, "i", &i), SAGA_EINVAL);
    cr_assert_eq(saga_data_get_int(d, n - 1, "i", &i), SAGA_ECORRUPT);
    cr_assert_eq(saga_data_get_int("\x92\x01\x02", 3, "i", &i), SAGA_ECORRUPT);
    /* A uint64 above INT64_MAX does not fit an int64_t. */
    static const char u[] = "\x81\xa1u\xcf\xff\xff\xff\xff\xff\xff\xff\xff";
    cr_assert_eq(saga_data_get_int(u, sizeof(u) - 1, "u", &i), SAGA_EINVAL);
    /* Negative int8 and int64 encodings. */
    static const char neg[] = "\x82\xa1"
                              "a\xd0\x80\xa1"
                              "b\xd3\x80\0\0\0\0\0\0\0";
    cr_assert_eq(saga_data_get_int(neg, sizeof(neg) - 1, "a", &i), SAGA_OK);
    cr_assert_eq(i, -128);
    cr_assert_eq(saga_data_get_int(neg, sizeof(neg) - 1, "b", &i), SAGA_OK);
    cr_assert_eq(i, INT64_MIN);
}

Test(data, is_map_cases)
{
    static const struct {
        const char *b;
        size_t n;
        int ok;
    } c[] = {
        {"\x80", 1, 1},
        {"\x81\xa1k\xc0", 4, 1},
        {"\x81\xa1k\x91\x81\xa1z\xc3", 8, 1}, /* nested values are fine */
        {"\x80\x00", 2, 0},                   /* trailing byte */
        {"\x90", 1, 0},                       /* array */
        {"\x81\x01\xc0", 3, 0},               /* integer key */
        {"\x82\xa1k\xc0\xa1k\xc2", 7, 0},     /* duplicate key */
        {"\x81\xa1k", 3, 0},                  /* value missing */
        {"\xdf\xff\xff\xff\xff", 5, 0},       /* lying count */
        {"\xc1", 1, 0},
    };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
        cr_assert_eq(saga__data_is_map(c[i].b, c[i].n), c[i].ok, "case %zu", i);
    cr_assert_eq(saga__data_is_map(NULL, 0), 1);
    cr_assert_eq(saga__data_is_map(NULL, 1), 0);
}

/* A map of @p n keys "k<i>" (i from @p first) with int values @p base + i. */
static void *many(int first, int n, int base, size_t *len)
{
    saga_map *m;
    const void *d;
    char key[32];
    saga_map_new(&m);
    for (int i = first; i < first + n; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        saga_map_set_int(m, key, base + i);
    }
    saga_map_encode(m, &d, len);
    void *copy = malloc(*len);
    memcpy(copy, d, *len);
    saga_map_free(m);
    return copy;
}

Test(data, duplicates_in_big_maps_and_depth)
{
    size_t n;
    uint8_t *d = many(0, 100, 0, &n);
    cr_assert_eq(saga__data_is_map(d, n), 1);
    /* Rename key "k99" to "k98". */
    uint8_t *p = memmem(d, n, "k99", 3);
    cr_assert_not_null(p);
    p[2] = '8';
    cr_assert_eq(saga__data_is_map(d, n), 0);
    free(d);

    /* {"k": [[[[...]]]]} nested 1000 deep. */
    size_t deep = 3 + 1000 + 1;
    uint8_t *b = malloc(deep);
    memcpy(b, "\x81\xa1k", 3);
    memset(b + 3, 0x91, 1000);
    b[deep - 1] = 0xc0;
    cr_assert_eq(saga__data_is_map(b, deep), 0);
    /* ... and 20 deep is fine. */
    b[3 + 20] = 0xc0;
    cr_assert_eq(saga__data_is_map(b, 3 + 20 + 1), 1);
    free(b);
}

Test(data, truncated_at_every_offset)
{
    size_t n;
    uint8_t *d = many(0, 40, 1000, &n);
    for (size_t i = 0; i < n; i++) {
        uint8_t *cut = malloc(i ? i : 1);
        memcpy(cut, d, i);
        int64_t v;
        cr_assert_eq(saga__data_is_map(cut, i), i == 0, "cut %zu", i);
        if (i > 0)
            cr_assert_eq(saga_data_get_int(cut, i, "k0", &v), SAGA_ECORRUPT);
        free(cut);
    }
    free(d);
}

Test(data, merge_b_wins_and_order)
{
    saga_map *a, *b;
    const void *da, *db;
    size_t la, lb;
    saga_map_new(&a);
    saga_map_new(&b);
    saga_map_set_str(a, "order", "o-1");
    saga_map_set_int(a, "qty", 1);
    saga_map_set_bool(a, "paid", 0);
    saga_map_set_int(b, "qty", 5);
    saga_map_set_str(b, "res", "r-9");
    saga_map_encode(a, &da, &la);
    saga_map_encode(b, &db, &lb);

    void *out;
    size_t n;
    cr_assert_eq(saga__data_merge(da, la, db, lb, &out, &n), SAGA_OK);
    cr_assert_eq(saga__data_is_map(out, n), 1);
    int64_t i;
    int bo;
    const char *s;
    size_t sl;
    cr_assert_eq(saga_data_get_int(out, n, "qty", &i), SAGA_OK);
    cr_assert_eq(i, 5);
    cr_assert_eq(saga_data_get_bool(out, n, "paid", &bo), SAGA_OK);
    cr_assert_eq(bo, 0);
    cr_assert_eq(saga_data_get_str(out, n, "res", &s, &sl), SAGA_OK);
    cr_assert_eq(saga_data_get_str(out, n, "order", &s, &sl), SAGA_OK);
    /* a's surviving keys first, then b's: order, paid, qty, res. */
    static const uint8_t want[] = "\x84\xa5order\xa3o-1\xa4paid\xc2"
                                  "\xa3qty\x05\xa3res\xa3r-9";
    cr_assert_eq(n, sizeof(want) - 1);
    cr_assert_eq(memcmp(out, want, n), 0);
    saga_free(out);
    saga_map_free(a);
    saga_map_free(b);
}

Test(data, merge_empty_and_errors)
{
    void *out;
    size_t n;
    static const char m1[] = "\x81\xa1k\x01";
    cr_assert_eq(saga__data_merge(NULL, 0, NULL, 0, &out, &n), SAGA_OK);
    cr_assert_eq(n, 1);
    cr_assert_eq(((uint8_t *)out)[0], 0x80);
    saga_free(out);
    cr_assert_eq(saga__data_merge(m1, 3 + 1, NULL, 0, &out, &n), SAGA_OK);
    cr_assert_eq(n, 4);
    cr_assert_eq(memcmp(out, m1, 4), 0);
    saga_free(out);
    cr_assert_eq(saga__data_merge(NULL, 0, m1, 4, &out, &n), SAGA_OK);
    cr_assert_eq(memcmp(out, m1, 4), 0);
    saga_free(out);
    cr_assert_eq(saga__data_merge("\x80", 1, m1, 4, &out, &n), SAGA_OK);
    saga_free(out);

    out = (void *)1;
    cr_assert_eq(saga__data_merge(m1, 3, m1, 4, &out, &n), SAGA_ECORRUPT);
    cr_assert_null(out);
    cr_assert_eq(saga__data_merge(m1, 4, "\x91\x01", 2, &out, &n),
                 SAGA_ECORRUPT);
    cr_assert_eq(saga__data_merge(m1, 4, "\x82\xa1k\x01\xa1k\x02", 7, &out, &n),
                 SAGA_ECORRUPT);
    cr_assert_eq(saga__data_merge(NULL, 2, m1, 4, &out, &n), SAGA_EINVAL);
    cr_assert_eq(saga__data_merge(m1, 4, m1, 4, NULL, &n), SAGA_EINVAL);
}

Test(data, merge_big_maps)
{
    size_t la, lb, n;
    void *a = many(0, 300, 0, &la);       /* k0..k299 = i */
    void *b = many(200, 300, 10000, &lb); /* k200..k499 = 10000 + i */
    void *out;
    cr_assert_eq(saga__data_merge(a, la, b, lb, &out, &n), SAGA_OK);
    cr_assert_eq(saga__data_is_map(out, n), 1);
    cr_assert_eq(((uint8_t *)out)[0], 0xde); /* map16 */
    cr_assert_eq(((uint8_t *)out)[1] * 256 + ((uint8_t *)out)[2], 500);
    char key[32];
    for (int i = 0; i < 500; i++) {
        int64_t v;
        snprintf(key, sizeof(key), "k%d", i);
        cr_assert_eq(saga_data_get_int(out, n, key, &v), SAGA_OK);
        cr_assert_eq(v, i < 200 ? i : 10000 + i);
    }
    saga_free(out);
    free(a);
    free(b);
}
