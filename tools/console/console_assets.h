/*
 * console_assets.h — the console's static files, built into the binary from
 * tools/console/www/ by embed.cmake (so nothing is looked up at run time).
 */
#ifndef SAGA_CONSOLE_ASSETS_H
#define SAGA_CONSOLE_ASSETS_H

#include <stddef.h>

typedef struct saga_console_asset {
    const char *name; /* "index.html" */
    const char *type; /* its Content-Type */
    const unsigned char *data;
    size_t len;
} saga_console_asset;

extern const saga_console_asset saga_console_assets[];
extern const size_t saga_console_nassets;

#endif
