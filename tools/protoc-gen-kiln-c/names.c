/*
 * tools/protoc-gen-kiln-c/names.c: the growable text buffer and protoc-c's naming rules.
 *
 * The rules are protoc-c's (1.4), restated here because the generated code names protoc-c's
 * symbols: a full name splits at '.'; for lower-case names each piece has '_' inserted before
 * an upper-case letter that follows a character that is not upper case, and is lowered; for
 * C types each piece has its first letter and every letter after '_' raised, the '_' dropped;
 * the pieces join with "__". The test fixture (tests/fixtures/proto) checks this by compiling
 * the generated code against protoc-c's.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "tools/protoc-gen-kiln-c/gen.h"

void gen_printf(gen_text *t, const char *fmt, ...)
{
    if (t->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = t->cap - t->len;
        int n = vsnprintf(t->buf ? t->buf + t->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = true;
            return;
        }
        if ((size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap - t->len <= (size_t)n)
            cap *= 2;
        char *bigger = kiln_realloc(t->buf, cap);
        if (!bigger) {
            t->oom = true;
            return;
        }
        t->buf = bigger;
        t->cap = cap;
    }
}

char *gen_take(gen_text *t)
{
    char *s = t->buf;
    t->buf = NULL;
    t->len = t->cap = 0;
    return s;
}

void gen_text_fini(gen_text *t)
{
    kiln_free(t->buf);
    memset(t, 0, sizeof(*t));
}

/* Appends c to out[*n], failing when the name grows past GEN_NAME_MAX. */
static bool put(char *out, size_t *n, char c)
{
    if (*n + 1 >= GEN_NAME_MAX)
        return false;
    out[(*n)++] = c;
    out[*n] = '\0';
    return true;
}

/* One piece of a full name in lower case (CamelCase -> camel_case). */
static bool lower_piece(const char *p, size_t len, char *out, size_t *n)
{
    bool was_upper = true; /* no '_' before the first letter */
    for (size_t i = 0; i < len; i++) {
        bool upper = isupper((unsigned char)p[i]) != 0;
        if (upper && !was_upper && !put(out, n, '_'))
            return false;
        if (!put(out, n, upper ? (char)tolower((unsigned char)p[i]) : p[i]))
            return false;
        was_upper = upper;
    }
    return true;
}

/* One piece as a C type (snake_case -> SnakeCase, first letter raised). */
static bool ctype_piece(const char *p, size_t len, char *out, size_t *n)
{
    bool raise = true;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '_') {
            raise = true;
            continue;
        }
        if (!put(out, n, raise ? (char)toupper((unsigned char)p[i]) : p[i]))
            return false;
        raise = false;
    }
    return true;
}

static kiln_status convert(const char *full_name, char *out, bool lower, kiln_err *err)
{
    size_t n = 0;
    out[0] = '\0';
    const char *p = full_name;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (len > 0) {
            bool ok = (n == 0 || (put(out, &n, '_') && put(out, &n, '_'))) &&
                      (lower ? lower_piece(p, len, out, &n) : ctype_piece(p, len, out, &n));
            if (!ok)
                return kiln_err_set(err, KILN_INVALID_ARGUMENT,
                                    "'%.60s%s' makes a C name longer than %d characters", full_name,
                                    strlen(full_name) > 60 ? "..." : "", GEN_NAME_MAX - 1);
        }
        p += len + (dot ? 1 : 0);
    }
    if (n == 0)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "'%s' is not a type or service name",
                            full_name);
    return KILN_OK;
}

kiln_status gen_lower(const char *full_name, char *out, kiln_err *err)
{
    return convert(full_name, out, true, err);
}

kiln_status gen_ctype(const char *full_name, char *out, kiln_err *err)
{
    return convert(full_name, out, false, err);
}

void gen_upper(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s && n + 1 < cap; s++)
        out[n++] = isalnum((unsigned char)*s) ? (char)toupper((unsigned char)*s) : '_';
    out[n] = '\0';
}

kiln_status gen_base_name(const char *proto_name, char *out, kiln_err *err)
{
    size_t len = strlen(proto_name);
    if (len > 6 && strcmp(proto_name + len - 6, ".proto") == 0)
        len -= 6;
    if (len == 0 || len >= GEN_NAME_MAX)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "file name '%s' is empty or too long",
                            proto_name);
    memcpy(out, proto_name, len);
    out[len] = '\0';
    return KILN_OK;
}
