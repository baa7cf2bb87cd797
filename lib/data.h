/*
 * data.h — internal helpers on saga data (a msgpack map with string keys).
 */
#ifndef SAGA_DATA_H
#define SAGA_DATA_H

#include "saga/saga.h"

/* 1 if @p p / @p len is exactly one msgpack map whose keys are all strings
 * (NULL / 0 counts as the empty map), else 0. */
int saga__data_is_map(const void *p, size_t len);

/* Merge map @p b into map @p a key by key (b wins) into a new buffer from
 * saga_malloc. @return SAGA_OK, SAGA_ECORRUPT (not maps), SAGA_ENOMEM. */
int saga__data_merge(const void *a, size_t alen, const void *b, size_t blen,
                     void **out, size_t *out_len);

#endif /* SAGA_DATA_H */
