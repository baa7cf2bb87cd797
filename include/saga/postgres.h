/*
 * postgres.h — the PostgreSQL store (libpq).
 *
 * A store on a PostgreSQL database that several processes may share. Its
 * tables live in a schema of their own (default "saga"), created and
 * migrated on open under an advisory lock, so two processes opening one
 * new database at once do not race. Tables are keyed by saga id (the
 * journal by (saga id, seq)), so that a distributed PostgreSQL could shard
 * them by that column.
 *
 * Several engines on one schema: give each store a lease (lease_ms > 0).
 * Each saga is then owned by one engine at a time, through the lease and a
 * fencing token (an epoch that every write of the owner checks, so that a
 * paused or partitioned old owner's late write fails with SAGA_EFENCED
 * instead of corrupting the saga); the engine renews its lease, claims the
 * sagas of engines whose lease ran out (FOR UPDATE SKIP LOCKED) and
 * resumes them as recovery does (docs/api/postgres.md, "Several engines").
 * Without a lease the store assumes one engine per schema.
 *
 * Batches commit asynchronously on the engine's loop (store interface
 * version 4: attach, submit_batch) in libpq's pipeline mode; a commit whose
 * answer was lost is resolved by reading the store's batch log back.
 *
 * Threading: one connection for writes and a second one for reads while a
 * batch is in flight, both used from the engine's loop thread only.
 */
#ifndef SAGA_POSTGRES_H
#define SAGA_POSTGRES_H

#include "saga/store.h"

SAGA_BEGIN_DECL

#define SAGA_PG_OPTIONS_VERSION 2
#define SAGA_PG_OPTIONS_INIT SAGA_INIT_VERSION(SAGA_PG_OPTIONS_VERSION)

/** PostgreSQL store options; zero selects each default. */
typedef struct saga_pg_options {
    unsigned int version;
    /** The schema that holds the store's tables; default "saga". A
     * service that shares a database with others gives each its own. */
    const char *schema;
    /** Seconds to wait for a connection (the blocking one in the
     * constructor, and each reconnection made on the loop); 0 = 10. */
    int connect_timeout_s;
    /* version 2 (since 0.2) */
    /** Lease length in ms for an engine that shares the schema with other
     * engines; 0 = no lease: this store's engine is the only one on the
     * schema (the default). With a lease the engine renews it every third
     * of its length, stops acting on its sagas once it could not renew in
     * time, and another engine claims them after it expires: a crashed
     * engine's sagas resume after about one lease. 1000..3600000. */
    uint32_t lease_ms;
    /** This engine's owner id with a lease (1..127 bytes, recorded in the
     * journal); NULL = "HOST:PID:RANDOM". A restarted process may reuse
     * its id: it then takes a new epoch, which fences the old process and
     * lets it reclaim that process's sagas at once. */
    const char *owner_id;
} saga_pg_options;

/**
 * Initialise @p opts with every default.
 * @param opts the options to fill.
 * @param version SAGA_PG_OPTIONS_VERSION.
 * @return SAGA_OK, SAGA_EINVAL (NULL @p opts) or SAGA_EVERSION.
 * Ownership: the caller's. Since: 0.2.
 */
SAGA_EXTERN int saga_pg_options_init(saga_pg_options *opts,
                                     unsigned int version);

/**
 * Open a store on the PostgreSQL database named by @p conninfo. It
 * blocks: it connects (libpq's blocking connect, bounded by
 * connect_timeout_s), migrates the schema and prepares every statement
 * before it returns, so call it before the loop runs. Once attached to an
 * engine's loop the store never connects blocking while the server is
 * unreachable: it reconnects on the loop (docs/api/postgres.md).
 * @param out receives the store on SAGA_OK, NULL otherwise.
 * @param conninfo a libpq connection string or URI ("postgresql://..."),
 *   or NULL to read it from the environment variable SAGA_PG_URL.
 * @param opts NULL for defaults.
 * @return SAGA_OK; SAGA_EINVAL (no connection string, bad schema name,
 *   lease_ms outside 1000..3600000, owner_id empty or too long);
 *   SAGA_EVERSION (bad options version, or a schema newer than this
 *   library); SAGA_ESTORE (cannot connect or migrate: the reason is
 *   given by saga_store_postgres_open_errmsg()); SAGA_ENOMEM.
 * Ownership: the caller's until an engine or participant takes it.
 * Since: 0.2.
 */
SAGA_EXTERN int saga_store_postgres_open(saga_store **out, const char *conninfo,
                                         const saga_pg_options *opts);

/**
 * Why the last saga_store_postgres_open() on this thread failed ("" if it
 * did not).
 * @return a thread-local string, valid until the next open on the thread.
 * Ownership: the library's. Since: 0.2.
 */
SAGA_EXTERN const char *saga_store_postgres_open_errmsg(void);

SAGA_END_DECL

#endif /* SAGA_POSTGRES_H */
