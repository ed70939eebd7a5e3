/*
 * common/names.h: validation of the names clients and operators give Kiln (model names,
 * shared-memory region names): bounded length, printable ASCII without spaces, plus any
 * characters the caller forbids.
 *
 * Thread-safety: reentrant.
 */
#ifndef KILN_COMMON_NAMES_H
#define KILN_COMMON_NAMES_H

#include <stddef.h>

#include "common/status.h"

/*
 * KILN_OK if `name` is 1..max characters in 0x21..0x7e and contains none of `forbid` (may be
 * NULL); else KILN_INVALID_ARGUMENT: "<what> must be 1 to <max> characters long, got N" or
 * "<what> has a space, non-printable or forbidden character at position I".
 */
kiln_status kiln_name_check(const char *name, size_t max, const char *what, const char *forbid,
                            kiln_err *err);

#endif /* KILN_COMMON_NAMES_H */
