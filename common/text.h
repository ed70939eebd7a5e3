/*
 * common/text.h: a growable NUL-terminated text buffer, for code that writes text of a size it
 * does not know in advance (the metrics page, JSON, a generated config).
 *
 * A zeroed kiln_text is empty. Appends grow it through kiln_realloc; after an allocation
 * failure every later append does nothing and `oom` stays set, so a writer checks once, at
 * the end. p is NULL until the first append.
 * Thread-safety: none; one writer at a time.
 */
#ifndef KILN_COMMON_TEXT_H
#define KILN_COMMON_TEXT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct kiln_text {
    char *p;
    size_t len, cap;
    bool oom;
} kiln_text;

/* Appends n bytes of s. */
void kiln_text_add(kiln_text *t, const char *s, size_t n);

/* Appends printf output (any length). */
void kiln_text_printf(kiln_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Frees the buffer and zeroes t. */
void kiln_text_fini(kiln_text *t);

#endif /* KILN_COMMON_TEXT_H */
