/* common/names.c: one validation for every name Kiln accepts from outside. */
#include "common/names.h"

#include <string.h>

kiln_status kiln_name_check(const char *name, size_t max, const char *what, const char *forbid,
                            kiln_err *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > max)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                            "%s must be 1 to %zu characters long, got %zu", what, max, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x21 || c > 0x7e || (forbid && strchr(forbid, c)))
            return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                "%s has a space, non-printable or forbidden character at "
                                "position %zu",
                                what, i);
    }
    return KILN_OK;
}
