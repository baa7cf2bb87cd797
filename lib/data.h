/*
 * data.h — saga data internals (msgpack maps with string keys).
 * The public helpers (saga_map_*, saga_data_get_*) are in saga/saga.h.
 */
#ifndef SAGA_DATA_H
#define SAGA_DATA_H

#include <stddef.h>

/*
 * Merge msgpack map @p b into map @p a key by key; on a key in both, @p b's
 * value wins. NULL/0 counts as an empty map. The result keeps a's keys that b
 * does not have (in a's order), then b's keys (in b's order); values are
 * copied byte for byte, not re-encoded.
 * @return SAGA_OK; SAGA_EINVAL (out/out_len NULL, or a NULL pointer with a
 * length); SAGA_ECORRUPT (a or b is not a well-formed map, see
 * saga__data_is_map); SAGA_ENOMEM.
 * Ownership: @p *out comes from saga_malloc(), freed with saga_free(); it is
 * always a map (0x80 for two empty inputs), never NULL on success.
 */
int saga__data_merge(const void *a, size_t alen, const void *b, size_t blen,
                     void **out, size_t *out_len);

/*
 * 1 if @p p/@p len is exactly one well-formed msgpack map with string keys,
 * no key twice, nesting within SAGA__MP_MAX_DEPTH and nothing after it;
 * NULL/0 counts as an empty map. 0 otherwise (also when out of memory while
 * checking a map with many keys).
 */
int saga__data_is_map(const void *p, size_t len);

#endif /* SAGA_DATA_H */
