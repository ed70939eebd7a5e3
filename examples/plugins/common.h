/*
 * examples/plugins/common.h: small helpers shared by the example plugins. A plugin author
 * needs only kiln_plugin.h; these just keep the examples short.
 */
#ifndef KILN_EXAMPLE_PLUGIN_COMMON_H
#define KILN_EXAMPLE_PLUGIN_COMMON_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kiln_plugin.h"

static inline int32_t plugin_fail(kiln_plugin_error *err, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline int32_t plugin_fail(kiln_plugin_error *err, int32_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}

/* Checks that io has the given KServe datatype; fails create otherwise. */
static inline int32_t plugin_expect(const kiln_plugin_io_desc *io, const char *datatype,
                                    kiln_plugin_error *err)
{
    if (strcmp(io->datatype, datatype) != 0)
        return plugin_fail(err, KILN_PLUGIN_INVALID_ARGUMENT,
                           "'%s' is %s in the config; this plugin needs %s", io->name, io->datatype,
                           datatype);
    return KILN_PLUGIN_OK;
}

/* Element count of a tensor's shape. */
static inline uint64_t plugin_numel(const DLTensor *t)
{
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (uint64_t)t->shape[i];
    return n;
}

/* The stateless plugins need a non-NULL state; this one byte serves them all. */
static char plugin_no_state __attribute__((unused));

static inline void plugin_destroy_nothing(void *state)
{
    (void)state;
}

#endif
