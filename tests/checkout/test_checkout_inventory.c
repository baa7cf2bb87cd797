/*
 * test_checkout_inventory.c — the checkout's inventory module with an
 * injected clock: reservations, their TTL (released by the sweep exactly
 * when they expire, never before), compensation, commit, the invariant
 * available + reserved + sold == total, and catalogue re-loading.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "ck.h"

static sqlite3 *lite;
static ck_db *db;

static void setup(void)
{
    cr_assert_eq(sqlite3_open(":memory:", &lite), SQLITE_OK);
    db = ck_db_sqlite(lite);
    cr_assert_not_null(db);
    cr_assert_eq(ck_inventory_schema(db), CK_OK);
    ck_catalog c = {0};
    ck_catalog_builtin(&c);
    cr_assert_eq(ck_inventory_seed(db, &c, 1000), 0);
    ck_catalog_free(&c);
}

static void teardown(void)
{
    ck_db_close(db);
    cr_assert_eq(sqlite3_close(lite), SQLITE_OK);
}

TestSuite(checkout_inventory, .init = setup, .fini = teardown);

static int64_t col(const char *pid, const char *column)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT %s FROM inventory WHERE product_id = ?",
             column);
    ck_stmt *st = ck_prep(db, sql);
    cr_assert_not_null(st);
    ck_bind_text(st, 1, pid);
    cr_assert_eq(ck_step(st), CK_ROW);
    int64_t v = ck_col_int(st, 0);
    ck_done(st);
    return v;
}

static json_t *items(const char *pid, int q)
{
    return json_pack("[{s:s, s:i}]", "product_id", pid, "quantity", q);
}

Test(checkout_inventory, reserve_holds_stock_and_keeps_the_invariant)
{
    json_t *it = items("prod_123", 3), *failed = NULL;
    cr_assert_eq(ck_inv_reserve(db, "o1", it, 2000, 60000, &failed), 0);
    cr_assert_null(failed);
    cr_assert_eq(col("prod_123", "available_quantity"), 97);
    cr_assert_eq(col("prod_123", "reserved_quantity"), 3);
    cr_assert(ck_inv_check(db));
    /* A retried reserve for the same order holds nothing more. */
    cr_assert_eq(ck_inv_reserve(db, "o1", it, 2100, 60000, &failed), 0);
    cr_assert_eq(col("prod_123", "reserved_quantity"), 3);
    json_decref(it);
}

Test(checkout_inventory, insufficient_stock_names_the_items_and_holds_nothing)
{
    json_t *it = json_pack("[{s:s, s:i}, {s:s, s:i}]", "product_id", "prod_123",
                           "quantity", 1, "product_id", "prod_limited",
                           "quantity", 2);
    json_t *failed = NULL;
    cr_assert_eq(ck_inv_reserve(db, "o2", it, 2000, 60000, &failed), 1);
    cr_assert_eq(json_array_size(failed), 1);
    json_t *f = json_array_get(failed, 0);
    cr_assert_str_eq(json_string_value(json_object_get(f, "product_id")),
                     "prod_limited");
    cr_assert_eq(json_integer_value(json_object_get(f, "requested")), 2);
    cr_assert_eq(json_integer_value(json_object_get(f, "available")), 1);
    cr_assert_eq(col("prod_123", "reserved_quantity"), 0);
    cr_assert_eq(col("prod_limited", "reserved_quantity"), 0);
    json_decref(failed);
    json_decref(it);
}

Test(checkout_inventory, ttl_releases_exactly_at_expiry)
{
    json_t *it = items("prod_456", 5), *failed = NULL;
    cr_assert_eq(ck_inv_reserve(db, "o3", it, 10000, 60000, &failed), 0);
    json_t *rel = json_array();
    /* One millisecond before the TTL: still held. */
    cr_assert_eq(ck_inv_sweep(db, 69999, rel), 0);
    cr_assert_eq(col("prod_456", "reserved_quantity"), 5);
    /* At the TTL: released, stock back, the order named. */
    cr_assert_eq(ck_inv_sweep(db, 70000, rel), 1);
    cr_assert_eq(col("prod_456", "reserved_quantity"), 0);
    cr_assert_eq(col("prod_456", "available_quantity"), 50);
    cr_assert_str_eq(json_string_value(
                         json_object_get(json_array_get(rel, 0), "order_id")),
                     "o3");
    cr_assert(ck_inv_check(db));
    /* A later sweep, or the saga's compensation, releases nothing twice. */
    cr_assert_eq(ck_inv_sweep(db, 999999, NULL), 0);
    int err = 0;
    cr_assert_null(ck_inv_release(db, "o3", "RELEASED", 80000, &err));
    cr_assert_eq(err, 0);
    cr_assert_eq(col("prod_456", "available_quantity"), 50);
    json_decref(rel);
    json_decref(it);
}

Test(checkout_inventory, a_saga_that_goes_on_after_expiry_still_sells)
{
    json_t *it = items("prod_789", 4), *failed = NULL;
    cr_assert_eq(ck_inv_reserve(db, "o4", it, 0, 1000, &failed), 0);
    cr_assert_eq(ck_inv_sweep(db, 1000, NULL), 1);
    cr_assert_eq(ck_inv_commit(db, "o4", 2000), 0);
    cr_assert_eq(col("prod_789", "sold_quantity"), 4);
    cr_assert_eq(col("prod_789", "available_quantity"), 496);
    cr_assert_eq(col("prod_789", "reserved_quantity"), 0);
    cr_assert(ck_inv_check(db));
    /* Commit again (a retried step): nothing moves. */
    cr_assert_eq(ck_inv_commit(db, "o4", 3000), 0);
    cr_assert_eq(col("prod_789", "sold_quantity"), 4);
    json_decref(it);
}

Test(checkout_inventory, release_and_commit)
{
    json_t *it = items("prod_123", 2), *failed = NULL;
    cr_assert_eq(ck_inv_reserve(db, "o5", it, 0, 60000, &failed), 0);
    cr_assert_eq(ck_inv_reserve(db, "o6", it, 0, 60000, &failed), 0);
    int err = 0;
    json_t *rel = ck_inv_release(db, "o5", "RELEASED", 100, &err);
    cr_assert_not_null(rel);
    cr_assert_eq(json_array_size(rel), 1);
    json_decref(rel);
    cr_assert_null(ck_inv_release(db, "o5", "RELEASED", 200, &err));
    cr_assert_eq(ck_inv_commit(db, "o6", 300), 0);
    cr_assert_eq(col("prod_123", "available_quantity"), 98);
    cr_assert_eq(col("prod_123", "reserved_quantity"), 0);
    cr_assert_eq(col("prod_123", "sold_quantity"), 2);
    /* A committed hold is never swept. */
    cr_assert_eq(ck_inv_sweep(db, 10000000, NULL), 0);
    cr_assert(ck_inv_check(db));
    json_decref(it);
}

Test(checkout_inventory, the_invariant_is_enforced_by_the_database)
{
    cr_assert_neq(sqlite3_exec(lite,
                               "UPDATE inventory SET available_quantity = "
                               "available_quantity + 1 WHERE product_id = "
                               "'prod_123'",
                               NULL, NULL, NULL),
                  SQLITE_OK);
    cr_assert_neq(sqlite3_exec(lite,
                               "UPDATE inventory SET available_quantity = -1,"
                               " total_quantity = total_quantity - "
                               "available_quantity - 1 WHERE product_id = "
                               "'prod_limited'",
                               NULL, NULL, NULL),
                  SQLITE_OK);
    cr_assert(ck_inv_check(db));
}

Test(checkout_inventory, reloading_the_catalogue_keeps_moved_stock)
{
    json_t *it = items("prod_limited", 1), *failed = NULL;
    cr_assert_eq(ck_inv_reserve(db, "o7", it, 0, 60000, &failed), 0);
    cr_assert_eq(ck_inv_commit(db, "o7", 1), 0);
    ck_catalog c = {0};
    ck_catalog_builtin(&c);
    cr_assert_eq(ck_inventory_seed(db, &c, 5000), 0);
    ck_catalog_free(&c);
    cr_assert_eq(col("prod_limited", "available_quantity"), 0);
    cr_assert_eq(col("prod_limited", "sold_quantity"), 1);
    ck_stmt *st = ck_prep(db, "SELECT COUNT(*) FROM inventory");
    cr_assert_eq(ck_step(st), CK_ROW);
    cr_assert_eq(ck_col_int(st, 0), 6);
    ck_done(st);
    json_decref(it);
}
