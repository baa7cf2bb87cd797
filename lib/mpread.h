/*
 * mpread.h — a small, bounds-checked msgpack reader (internal).
 *
 * msgpack-c's unpacker allocates `count * sizeof(msgpack_object)` as soon as
 * it sees an array or map header, before it knows the elements exist: a
 * five-byte input (0xdd ff ff ff ff) asks for ~100 GB. Everything that reads
 * untrusted bytes therefore walks them with this reader first. It never
 * allocates, never recurses, never reads past @c len, and bounds nesting.
 */
#ifndef SAGA_MPREAD_H
#define SAGA_MPREAD_H

#include <stddef.h>
#include <stdint.h>

/* Deepest nesting accepted (the top-level object is depth 1). msgpack-c's
 * own parser stops at 32, so this stays safely below it. */
#define SAGA__MP_MAX_DEPTH 24

typedef enum saga__mp_type {
    SAGA__MP_NIL = 1,
    SAGA__MP_BOOL,
    SAGA__MP_UINT, /* any non-negative integer */
    SAGA__MP_INT,  /* a negative integer */
    SAGA__MP_FLOAT,
    SAGA__MP_STR,
    SAGA__MP_BIN,
    SAGA__MP_EXT,
    SAGA__MP_ARRAY,
    SAGA__MP_MAP
} saga__mp_type;

/* The head of one msgpack object. For STR/BIN/EXT the body was consumed and
 * @c ptr/@c len describe it (ptr points into the input); for ARRAY/MAP only
 * the header was consumed and @c len is the element (pair) count. */
typedef struct saga__mp_item {
    saga__mp_type type;
    int ext_type;       /* EXT only */
    uint64_t u;         /* UINT value; BOOL as 0/1 */
    int64_t i;          /* INT value */
    double f;           /* FLOAT value */
    const uint8_t *ptr; /* STR/BIN/EXT body */
    uint32_t len;       /* body length, or ARRAY/MAP count */
} saga__mp_item;

/*
 * Read the head of the object at @p *off (and the body of a STR/BIN/EXT).
 * On success @p *off is past what was consumed.
 * @return 0, or -1 if the bytes are truncated or not msgpack (0xc1).
 */
int saga__mp_next(const uint8_t *p, size_t len, size_t *off, saga__mp_item *it);

/*
 * Validate and step over exactly one complete object at @p *off, including
 * everything nested in it, nested at most @p max_depth deep.
 * @return 0, or -1 (truncated, malformed, too deep); @p *off is then unchanged.
 */
int saga__mp_skip(const uint8_t *p, size_t len, size_t *off,
                  unsigned max_depth);

#endif /* SAGA_MPREAD_H */
