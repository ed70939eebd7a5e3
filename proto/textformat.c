/* proto/textformat.c: protobuf text format, parsed over protobuf-c descriptors. */
#include "proto/textformat.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"

/* ---------------------------------------------------------------- allocator */

static void *pb_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return kiln_malloc(size);
}

static void pb_free(void *ctx, void *p)
{
    (void)ctx;
    kiln_free(p);
}

static ProtobufCAllocator kiln_pb_allocator = {pb_alloc, pb_free, NULL};

ProtobufCAllocator *kiln_protobuf_allocator(void)
{
    return &kiln_pb_allocator;
}

void kiln_textformat_free(ProtobufCMessage *msg)
{
    if (msg)
        protobuf_c_message_free_unpacked(msg, &kiln_pb_allocator);
}

/* ---------------------------------------------------------------- lexer */

typedef enum tok_kind { T_EOF, T_IDENT, T_NUMBER, T_STRING, T_PUNCT } tok_kind;

typedef struct token {
    tok_kind kind;
    const char *start;
    size_t len;
    int line, col;
} token;

typedef struct parser {
    const char *p, *end;
    int line, col;
    token tok;
    const char *source;
    kiln_err *err;
    int depth;
} parser;

#define MAX_DEPTH 64

static kiln_status fail_at(parser *ps, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static kiln_status fail_at(parser *ps, int line, int col, const char *fmt, ...)
{
    char msg[KILN_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return kiln_err_set(ps->err, KILN_INVALID_ARGUMENT, "%s%s%d:%d: %s",
                        ps->source ? ps->source : "", ps->source ? ":" : "", line, col, msg);
}

#define FAIL(ps, ...) fail_at((ps), (ps)->tok.line, (ps)->tok.col, __VA_ARGS__)

static void advance_char(parser *ps)
{
    if (*ps->p == '\n') {
        ps->line++;
        ps->col = 1;
    } else {
        ps->col++;
    }
    ps->p++;
}

/* Reads the next token into ps->tok. */
static kiln_status next(parser *ps)
{
    for (;;) {
        while (ps->p < ps->end && isspace((unsigned char)*ps->p))
            advance_char(ps);
        if (ps->p < ps->end && *ps->p == '#') {
            while (ps->p < ps->end && *ps->p != '\n')
                advance_char(ps);
            continue;
        }
        break;
    }
    token *t = &ps->tok;
    t->start = ps->p;
    t->line = ps->line;
    t->col = ps->col;
    if (ps->p >= ps->end) {
        t->kind = T_EOF;
        t->len = 0;
        return KILN_OK;
    }
    unsigned char c = (unsigned char)*ps->p;
    if (isalpha(c) || c == '_') {
        t->kind = T_IDENT;
        while (ps->p < ps->end && (isalnum((unsigned char)*ps->p) || *ps->p == '_'))
            advance_char(ps);
    } else if (isdigit(c) ||
               (c == '.' && ps->p + 1 < ps->end && isdigit((unsigned char)ps->p[1]))) {
        t->kind = T_NUMBER;
        bool hex = c == '0' && ps->p + 1 < ps->end && (ps->p[1] == 'x' || ps->p[1] == 'X');
        char prev = 0;
        while (ps->p < ps->end) {
            char d = *ps->p;
            bool sign = (d == '+' || d == '-') && !hex && (prev == 'e' || prev == 'E');
            if (!isalnum((unsigned char)d) && d != '.' && !sign)
                break;
            prev = d;
            advance_char(ps);
        }
    } else if (c == '"' || c == '\'') {
        t->kind = T_STRING;
        advance_char(ps);
        while (ps->p < ps->end && (unsigned char)*ps->p != c) {
            if (*ps->p == '\n')
                return fail_at(ps, t->line, t->col, "unterminated string");
            if (*ps->p == '\\' && ps->p + 1 < ps->end)
                advance_char(ps);
            advance_char(ps);
        }
        if (ps->p >= ps->end)
            return fail_at(ps, t->line, t->col, "unterminated string");
        advance_char(ps);
    } else if (strchr("{}[]<>:,;-", (int)c)) {
        t->kind = T_PUNCT;
        advance_char(ps);
    } else {
        return fail_at(ps, t->line, t->col, "unexpected character '%c'", isprint(c) ? c : '?');
    }
    t->len = (size_t)(ps->p - t->start);
    return KILN_OK;
}

static bool is_punct(const parser *ps, char c)
{
    return ps->tok.kind == T_PUNCT && ps->tok.start[0] == c;
}

static bool is_ident(const parser *ps, const char *word)
{
    return ps->tok.kind == T_IDENT && ps->tok.len == strlen(word) &&
           strncasecmp(ps->tok.start, word, ps->tok.len) == 0;
}

/* Copies the current token's text into buf (truncating) for messages and conversions. */
static const char *tok_text(const parser *ps, char *buf, size_t cap)
{
    if (ps->tok.kind == T_EOF)
        return "end of input";
    size_t n = ps->tok.len < cap - 1 ? ps->tok.len : cap - 1;
    memcpy(buf, ps->tok.start, n);
    buf[n] = '\0';
    return buf;
}

/* ---------------------------------------------------------------- values */

static size_t elem_size(const ProtobufCFieldDescriptor *fd)
{
    switch (fd->type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default:
        return 4;
    }
}

/*
 * Returns where the next value of field fd goes: a new array slot for repeated fields (the
 * count is bumped by commit_slot once the value is complete), else the field itself.
 */
static kiln_status slot_for(parser *ps, ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd,
                            void **slot)
{
    char *base = (char *)m;
    if (fd->label != PROTOBUF_C_LABEL_REPEATED) {
        *slot = base + fd->offset;
        return KILN_OK;
    }
    size_t *n = (size_t *)(base + fd->quantifier_offset);
    void **arr = (void **)(base + fd->offset);
    size_t es = elem_size(fd);
    if (*n >= (1u << 24))
        return FAIL(ps, "field '%s' has too many values", fd->name);
    void *grown = kiln_realloc(*arr, (*n + 1) * es);
    if (!grown)
        return kiln_err_set(ps->err, KILN_RESOURCE_EXHAUSTED, "out of memory parsing '%s'",
                            fd->name);
    *arr = grown;
    *slot = (char *)grown + *n * es;
    memset(*slot, 0, es);
    return KILN_OK;
}

static void commit_slot(ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd)
{
    char *base = (char *)m;
    if (fd->label == PROTOBUF_C_LABEL_REPEATED)
        (*(size_t *)(base + fd->quantifier_offset))++;
    else if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)(base + fd->quantifier_offset) = fd->id;
    else if (fd->label == PROTOBUF_C_LABEL_OPTIONAL)
        *(protobuf_c_boolean *)(base + fd->quantifier_offset) = 1;
}

/* Decodes the string token(s) at the cursor (adjacent ones concatenate). */
static kiln_status read_string(parser *ps, const ProtobufCFieldDescriptor *fd, char **out,
                               size_t *out_len)
{
    char tb[48];
    if (ps->tok.kind != T_STRING)
        return FAIL(ps, "expected a string for field '%s', got '%s'", fd->name,
                    tok_text(ps, tb, sizeof(tb)));
    /* Adjacent strings concatenate: size the run on a copy of the lexer first. */
    size_t cap = 0, len = 0;
    {
        parser look = *ps;
        while (look.tok.kind == T_STRING) {
            cap += look.tok.len;
            if (next(&look) != KILN_OK)
                break;
        }
    }
    char *s = kiln_malloc(cap + 1);
    if (!s)
        return kiln_err_set(ps->err, KILN_RESOURCE_EXHAUSTED, "out of memory parsing '%s'",
                            fd->name);
    while (ps->tok.kind == T_STRING) {
        const char *p = ps->tok.start + 1, *e = ps->tok.start + ps->tok.len - 1;
        while (p < e) {
            if (*p != '\\') {
                s[len++] = *p++;
                continue;
            }
            p++;
            char c = *p++;
            switch (c) {
            case 'n':
                s[len++] = '\n';
                break;
            case 't':
                s[len++] = '\t';
                break;
            case 'r':
                s[len++] = '\r';
                break;
            case 'a':
                s[len++] = '\a';
                break;
            case 'b':
                s[len++] = '\b';
                break;
            case 'f':
                s[len++] = '\f';
                break;
            case 'v':
                s[len++] = '\v';
                break;
            case '\\':
            case '\'':
            case '"':
            case '?':
                s[len++] = c;
                break;
            case 'x': {
                unsigned v = 0;
                int k = 0;
                while (k < 2 && p < e && isxdigit((unsigned char)*p)) {
                    v = v * 16 + (unsigned)(isdigit((unsigned char)*p)
                                                ? *p - '0'
                                                : (tolower((unsigned char)*p) - 'a' + 10));
                    p++, k++;
                }
                if (k == 0) {
                    kiln_free(s);
                    return FAIL(ps, "bad \\x escape in string for field '%s'", fd->name);
                }
                s[len++] = (char)v;
                break;
            }
            default:
                if (c >= '0' && c <= '7') {
                    unsigned v = (unsigned)(c - '0');
                    for (int k = 0; k < 2 && p < e && *p >= '0' && *p <= '7'; k++)
                        v = v * 8 + (unsigned)(*p++ - '0');
                    s[len++] = (char)v;
                } else {
                    kiln_free(s);
                    return FAIL(ps, "unknown escape '\\%c' in string for field '%s'", c, fd->name);
                }
            }
        }
        kiln_status st = next(ps);
        if (st != KILN_OK) {
            kiln_free(s);
            return st;
        }
    }
    s[len] = '\0';
    *out = s;
    *out_len = len;
    return KILN_OK;
}

/* Reads an optionally negative number token. OUT: text (NUL-terminated), negative flag. */
static kiln_status read_number_text(parser *ps, const ProtobufCFieldDescriptor *fd, char *buf,
                                    size_t cap, bool *neg, int *line, int *col)
{
    char tb[48];
    *line = ps->tok.line;
    *col = ps->tok.col;
    *neg = false;
    if (is_punct(ps, '-')) {
        *neg = true;
        kiln_status st = next(ps);
        if (st != KILN_OK)
            return st;
    }
    if (ps->tok.kind != T_NUMBER && ps->tok.kind != T_IDENT)
        return FAIL(ps, "expected a number for field '%s', got '%s'", fd->name,
                    tok_text(ps, tb, sizeof(tb)));
    if (ps->tok.len >= cap)
        return FAIL(ps, "number too long for field '%s'", fd->name);
    memcpy(buf, ps->tok.start, ps->tok.len);
    buf[ps->tok.len] = '\0';
    return next(ps);
}

static kiln_status read_int(parser *ps, const ProtobufCFieldDescriptor *fd, void *slot)
{
    char buf[64];
    bool neg;
    int line, col;
    bool is_bool = fd->type == PROTOBUF_C_TYPE_BOOL;
    if (is_bool && ps->tok.kind == T_IDENT) {
        bool v;
        if (is_ident(ps, "true") || is_ident(ps, "t"))
            v = true;
        else if (is_ident(ps, "false") || is_ident(ps, "f"))
            v = false;
        else
            return FAIL(ps, "expected true or false for field '%s', got '%s'", fd->name,
                        tok_text(ps, buf, sizeof(buf)));
        *(protobuf_c_boolean *)slot = v;
        return next(ps);
    }
    kiln_status st = read_number_text(ps, fd, buf, sizeof(buf), &neg, &line, &col);
    if (st != KILN_OK)
        return st;
    if (!isdigit((unsigned char)buf[0]))
        return fail_at(ps, line, col, "expected an integer for field '%s', got '%s'", fd->name,
                       buf);
    bool hex = buf[0] == '0' && (buf[1] == 'x' || buf[1] == 'X');
    if (!hex && strpbrk(buf, ".eE"))
        return fail_at(ps, line, col, "expected an integer for field '%s', got '%s'", fd->name,
                       buf);
    errno = 0;
    char *endp;
    unsigned long long mag = strtoull(buf, &endp, 0);
    if (*endp)
        return fail_at(ps, line, col, "expected an integer for field '%s', got '%s'", fd->name,
                       buf);
    bool range_err = errno == ERANGE;
    long long lo, hi;
    unsigned long long uhi;
    bool is_unsigned = false;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        lo = INT32_MIN, hi = INT32_MAX;
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        lo = INT64_MIN, hi = INT64_MAX;
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        is_unsigned = true, uhi = UINT32_MAX, lo = 0, hi = 0;
        break;
    case PROTOBUF_C_TYPE_BOOL:
        is_unsigned = true, uhi = 1, lo = 0, hi = 0;
        break;
    default:
        is_unsigned = true, uhi = UINT64_MAX, lo = 0, hi = 0;
        break;
    }
    if (is_unsigned) {
        if (range_err || (neg && mag != 0) || mag > uhi)
            return fail_at(ps, line, col, "value %s%s is out of range for field '%s' (0..%llu)",
                           neg ? "-" : "", buf, fd->name, uhi);
        if (fd->type == PROTOBUF_C_TYPE_BOOL)
            *(protobuf_c_boolean *)slot = mag != 0;
        else if (elem_size(fd) == 8)
            *(uint64_t *)slot = mag;
        else
            *(uint32_t *)slot = (uint32_t)mag;
        return KILN_OK;
    }
    unsigned long long limit = neg ? (unsigned long long)hi + 1 : (unsigned long long)hi;
    if (range_err || mag > limit)
        return fail_at(ps, line, col, "value %s%s is out of range for field '%s' (%lld..%lld)",
                       neg ? "-" : "", buf, fd->name, lo, hi);
    long long v = neg ? (long long)(0 - mag) : (long long)mag;
    if (elem_size(fd) == 8)
        *(int64_t *)slot = v;
    else
        *(int32_t *)slot = (int32_t)v;
    return KILN_OK;
}

static kiln_status read_float(parser *ps, const ProtobufCFieldDescriptor *fd, void *slot)
{
    char buf[64];
    bool neg;
    int line, col;
    kiln_status st = read_number_text(ps, fd, buf, sizeof(buf), &neg, &line, &col);
    if (st != KILN_OK)
        return st;
    double v;
    if (strcasecmp(buf, "inf") == 0 || strcasecmp(buf, "infinity") == 0) {
        v = INFINITY;
    } else if (strcasecmp(buf, "nan") == 0) {
        v = NAN;
    } else {
        size_t n = strlen(buf);
        if (n > 1 && (buf[n - 1] == 'f' || buf[n - 1] == 'F') && !strchr(buf, 'x'))
            buf[n - 1] = '\0';
        char *endp;
        v = strtod(buf, &endp);
        if (*endp || !(isdigit((unsigned char)buf[0]) || buf[0] == '.'))
            return fail_at(ps, line, col, "expected a number for field '%s', got '%s'", fd->name,
                           buf);
    }
    if (neg)
        v = -v;
    if (fd->type == PROTOBUF_C_TYPE_FLOAT)
        *(float *)slot = (float)v;
    else
        *(double *)slot = v;
    return KILN_OK;
}

static kiln_status read_enum(parser *ps, const ProtobufCFieldDescriptor *fd, void *slot)
{
    const ProtobufCEnumDescriptor *ed = fd->descriptor;
    char buf[128];
    if (ps->tok.kind == T_IDENT) {
        tok_text(ps, buf, sizeof(buf));
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(ed, buf);
        if (!v)
            return FAIL(ps, "unknown value '%s' for enum field '%s' (%s)", buf, fd->name, ed->name);
        *(int *)slot = v->value;
        return next(ps);
    }
    int32_t num;
    int line = ps->tok.line, col = ps->tok.col;
    ProtobufCFieldDescriptor as_int = *fd;
    as_int.type = PROTOBUF_C_TYPE_INT32;
    kiln_status st = read_int(ps, &as_int, &num);
    if (st != KILN_OK)
        return st;
    if (!protobuf_c_enum_descriptor_get_value(ed, num))
        return fail_at(ps, line, col, "%d is not a value of enum field '%s' (%s)", num, fd->name,
                       ed->name);
    *(int *)slot = num;
    return KILN_OK;
}

static kiln_status parse_fields(parser *ps, const ProtobufCMessageDescriptor *d,
                                ProtobufCMessage *m, char close);

static kiln_status read_message(parser *ps, const ProtobufCFieldDescriptor *fd, void *slot,
                                ProtobufCMessage *parent)
{
    char tb[48];
    char close;
    if (is_punct(ps, '{'))
        close = '}';
    else if (is_punct(ps, '<'))
        close = '>';
    else
        return FAIL(ps, "expected '{' to open message field '%s', got '%s'", fd->name,
                    tok_text(ps, tb, sizeof(tb)));
    if (ps->depth >= MAX_DEPTH)
        return FAIL(ps, "messages nested deeper than %d", MAX_DEPTH);
    const ProtobufCMessageDescriptor *md = fd->descriptor;
    ProtobufCMessage *sub = kiln_malloc(md->sizeof_message);
    if (!sub)
        return kiln_err_set(ps->err, KILN_RESOURCE_EXHAUSTED, "out of memory parsing '%s'",
                            fd->name);
    md->message_init(sub);
    *(ProtobufCMessage **)slot = sub;
    commit_slot(parent, fd); /* owned by the parent from here on, so freed with it */
    kiln_status st = next(ps);
    if (st != KILN_OK)
        return st;
    ps->depth++;
    st = parse_fields(ps, md, sub, close);
    ps->depth--;
    return st;
}

/* Parses one value of fd (scalar or message) into a new slot and commits it. */
static kiln_status read_value(parser *ps, ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd)
{
    void *slot = NULL;
    kiln_status st = slot_for(ps, m, fd, &slot);
    if (st != KILN_OK)
        return st;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_MESSAGE:
        return read_message(ps, fd, slot, m);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES: {
        char *s = NULL;
        size_t len = 0;
        st = read_string(ps, fd, &s, &len);
        if (st != KILN_OK)
            return st;
        if (fd->type == PROTOBUF_C_TYPE_STRING) {
            char **dst = slot;
            if (*dst && *dst != (const char *)fd->default_value &&
                fd->label != PROTOBUF_C_LABEL_REPEATED)
                kiln_free(*dst);
            *dst = s;
        } else {
            ProtobufCBinaryData *b = slot;
            b->data = (uint8_t *)s;
            b->len = len;
        }
        break;
    }
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        st = read_float(ps, fd, slot);
        break;
    case PROTOBUF_C_TYPE_ENUM:
        st = read_enum(ps, fd, slot);
        break;
    default:
        st = read_int(ps, fd, slot);
        break;
    }
    if (st == KILN_OK)
        commit_slot(m, fd);
    return st;
}

static kiln_status parse_fields(parser *ps, const ProtobufCMessageDescriptor *d,
                                ProtobufCMessage *m, char close)
{
    char name[128], tb[48];
    kiln_status st = KILN_OK;
    bool *seen = kiln_calloc(d->n_fields ? d->n_fields : 1, sizeof(bool));
    if (!seen)
        return kiln_err_set(ps->err, KILN_RESOURCE_EXHAUSTED, "out of memory parsing %s", d->name);
    for (;;) {
        if (ps->tok.kind == T_EOF) {
            if (close)
                st = FAIL(ps, "unexpected end of input: message %s is missing its '%c'", d->name,
                          close);
            break;
        }
        if (close && is_punct(ps, close)) {
            st = next(ps);
            break;
        }
        if (is_punct(ps, '[')) {
            st = FAIL(ps, "extensions and Any fields are not supported");
            break;
        }
        if (ps->tok.kind != T_IDENT) {
            st = FAIL(ps, "expected a field name of %s, got '%s'", d->name,
                      tok_text(ps, tb, sizeof(tb)));
            break;
        }
        tok_text(ps, name, sizeof(name));
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field_by_name(d, name);
        if (!fd) {
            st = FAIL(ps, "unknown field '%s' in %s", name, d->name);
            break;
        }
        size_t idx = (size_t)(fd - d->fields);
        bool repeated = fd->label == PROTOBUF_C_LABEL_REPEATED;
        if (!repeated && seen[idx]) {
            st = FAIL(ps, "field '%s' is set twice", name);
            break;
        }
        if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t cur = *(uint32_t *)((char *)m + fd->quantifier_offset);
            if (cur != 0 && cur != fd->id) {
                const ProtobufCFieldDescriptor *other =
                    protobuf_c_message_descriptor_get_field(d, cur);
                st = FAIL(ps, "field '%s' and field '%s' are members of one oneof; set only one",
                          name, other ? other->name : "?");
                break;
            }
        }
        seen[idx] = true;
        if ((st = next(ps)) != KILN_OK)
            break;
        bool is_msg = fd->type == PROTOBUF_C_TYPE_MESSAGE;
        if (is_punct(ps, ':')) {
            if ((st = next(ps)) != KILN_OK)
                break;
        } else if (!is_msg) {
            st = FAIL(ps, "expected ':' after field '%s', got '%s'", name,
                      tok_text(ps, tb, sizeof(tb)));
            break;
        }
        if (is_punct(ps, '[')) {
            if (!repeated) {
                st = FAIL(ps, "field '%s' is not repeated; a list is not allowed", name);
                break;
            }
            if ((st = next(ps)) != KILN_OK)
                break;
            bool first = true;
            while (st == KILN_OK && !is_punct(ps, ']')) {
                if (!first) {
                    if (!is_punct(ps, ',')) {
                        st = FAIL(ps, "expected ',' or ']' in the list for field '%s', got '%s'",
                                  name, tok_text(ps, tb, sizeof(tb)));
                        break;
                    }
                    if ((st = next(ps)) != KILN_OK)
                        break;
                }
                if (ps->tok.kind == T_EOF) {
                    st = FAIL(ps, "unexpected end of input in the list for field '%s'", name);
                    break;
                }
                st = read_value(ps, m, fd);
                first = false;
            }
            if (st == KILN_OK)
                st = next(ps); /* the ']' */
        } else {
            st = read_value(ps, m, fd);
        }
        if (st != KILN_OK)
            break;
        if (is_punct(ps, ',') || is_punct(ps, ';'))
            if ((st = next(ps)) != KILN_OK)
                break;
    }
    kiln_free(seen);
    return st;
}

kiln_status kiln_textformat_parse(const ProtobufCMessageDescriptor *desc, const char *text,
                                  size_t len, const char *source, ProtobufCMessage **out,
                                  kiln_err *err)
{
    *out = NULL;
    parser ps = {.p = text, .end = text + len, .line = 1, .col = 1, .source = source, .err = err};
    ProtobufCMessage *m = kiln_malloc(desc->sizeof_message);
    if (!m)
        return kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory parsing %s", desc->name);
    desc->message_init(m);
    kiln_status st = next(&ps);
    if (st == KILN_OK)
        st = parse_fields(&ps, desc, m, 0);
    if (st != KILN_OK) {
        kiln_textformat_free(m);
        return st;
    }
    *out = m;
    return KILN_OK;
}
