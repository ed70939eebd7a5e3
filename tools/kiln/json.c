/* tools/kiln/json.c: JSON to a tree and back (RFC 8259, no extensions). */
#include "tools/kiln/json.h"

#include <string.h>

#include "common/alloc.h"

typedef struct parser {
    const char *s;
    size_t len, pos;
    kiln_err *err;
} parser;

static void ws(parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static kiln_status expected(parser *p, const char *what)
{
    if (p->pos >= p->len)
        return kiln_err_set(p->err, KILN_INVALID_ARGUMENT, "JSON ends at offset %zu, expected %s",
                            p->pos, what);
    char c = p->s[p->pos];
    if (c >= 0x20 && c < 0x7f)
        return kiln_err_set(p->err, KILN_INVALID_ARGUMENT,
                            "JSON at offset %zu: expected %s, found '%c'", p->pos, what, c);
    return kiln_err_set(p->err, KILN_INVALID_ARGUMENT,
                        "JSON at offset %zu: expected %s, found byte 0x%02x", p->pos, what,
                        (unsigned char)c);
}

static kiln_status oom(parser *p)
{
    return kiln_err_set(p->err, KILN_RESOURCE_EXHAUSTED, "out of memory parsing JSON");
}

static kiln_status parse_value(parser *p, kiln_cli_json *v, int depth);

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static bool hex4(parser *p, size_t at, unsigned *out)
{
    if (at + 4 > p->len)
        return false;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->s[at + (size_t)i]);
        if (h < 0)
            return false;
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return true;
}

size_t kiln_cli_utf8_encode(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp >= 0xd800 && cp < 0xe000)
        return 0;
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    if (cp >= 0x110000)
        return 0;
    out[0] = (uint8_t)(0xf0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string at p->pos (the opening quote). OUT: *out (kiln_malloc'd), *olen. */
static kiln_status parse_string(parser *p, char **out, size_t *olen)
{
    size_t start = ++p->pos, end = start;
    while (end < p->len && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->len)
        return kiln_err_set(p->err, KILN_INVALID_ARGUMENT,
                            "JSON at offset %zu: unterminated string", start - 1);
    char *o = kiln_malloc(end - start + 1); /* decoding never grows a string */
    if (!o)
        return oom(p);
    size_t n = 0;
    while (p->pos < end) {
        char c = p->s[p->pos];
        if ((unsigned char)c < 0x20) {
            kiln_free(o);
            return kiln_err_set(p->err, KILN_INVALID_ARGUMENT,
                                "JSON at offset %zu: control character in a string", p->pos);
        }
        if (c != '\\') {
            o[n++] = c;
            p->pos++;
            continue;
        }
        char e = p->s[p->pos + 1];
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        const char *k = e ? strchr(from, e) : NULL;
        if (k) {
            o[n++] = to[k - from];
            p->pos += 2;
            continue;
        }
        unsigned cp, lo;
        if (e != 'u' || !hex4(p, p->pos + 2, &cp)) {
            kiln_free(o);
            return kiln_err_set(p->err, KILN_INVALID_ARGUMENT,
                                "JSON at offset %zu: bad escape in a string", p->pos);
        }
        p->pos += 6;
        if (cp >= 0xd800 && cp < 0xdc00 && p->pos + 1 < end && p->s[p->pos] == '\\' &&
            p->s[p->pos + 1] == 'u' && hex4(p, p->pos + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            p->pos += 6;
        } else if (cp >= 0xd800 && cp < 0xe000) {
            cp = 0xfffd; /* a lone surrogate: the replacement character */
        }
        n += kiln_cli_utf8_encode(cp, (uint8_t *)o + n);
    }
    p->pos = end + 1;
    o[n] = '\0';
    *out = o;
    *olen = n;
    return KILN_OK;
}

static kiln_status parse_number(parser *p, kiln_cli_json *v)
{
    size_t i = p->pos;
    if (i < p->len && p->s[i] == '-')
        i++;
    size_t digits = i;
    while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
        i++;
    bool ok = i > digits && !(p->s[digits] == '0' && i - digits > 1);
    if (ok && i < p->len && p->s[i] == '.') {
        size_t f = ++i;
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
            i++;
        ok = i > f;
    }
    if (ok && i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-'))
            i++;
        size_t f = i;
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
            i++;
        ok = i > f;
    }
    if (!ok)
        return kiln_err_set(p->err, KILN_INVALID_ARGUMENT, "JSON at offset %zu: malformed number",
                            p->pos);
    v->type = KILN_CLI_JSON_NUMBER;
    v->text = kiln_malloc(i - p->pos + 1);
    if (!v->text)
        return oom(p);
    memcpy(v->text, p->s + p->pos, i - p->pos);
    v->text[i - p->pos] = '\0';
    v->len = i - p->pos;
    p->pos = i;
    return KILN_OK;
}

static bool word(parser *p, const char *w)
{
    size_t n = strlen(w);
    if (p->len - p->pos >= n && memcmp(p->s + p->pos, w, n) == 0) {
        p->pos += n;
        return true;
    }
    return false;
}

/* Appends *item to v's items (and key to its keys for an object); takes both. */
static kiln_status push(parser *p, kiln_cli_json *v, size_t *cap, kiln_cli_json *item, char *key)
{
    if (v->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        kiln_cli_json *items = kiln_realloc(v->items, nc * sizeof(*items));
        if (!items)
            return oom(p);
        v->items = items;
        if (v->type == KILN_CLI_JSON_OBJECT) {
            char **keys = kiln_realloc(v->keys, nc * sizeof(*keys));
            if (!keys)
                return oom(p);
            v->keys = keys;
        }
        *cap = nc;
    }
    v->items[v->n] = *item;
    if (v->type == KILN_CLI_JSON_OBJECT)
        v->keys[v->n] = key;
    v->n++;
    return KILN_OK;
}

static void fini(kiln_cli_json *v)
{
    for (size_t i = 0; i < v->n; i++) {
        fini(&v->items[i]);
        if (v->keys)
            kiln_free(v->keys[i]);
    }
    kiln_free(v->items);
    kiln_free(v->keys);
    kiln_free(v->text);
}

static kiln_status parse_container(parser *p, kiln_cli_json *v, int depth)
{
    bool obj = p->s[p->pos] == '{';
    char close = obj ? '}' : ']';
    v->type = obj ? KILN_CLI_JSON_OBJECT : KILN_CLI_JSON_ARRAY;
    p->pos++;
    size_t cap = 0;
    ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return KILN_OK;
    }
    for (;;) {
        char *key = NULL;
        size_t klen;
        kiln_status st;
        ws(p);
        if (obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return expected(p, "a key string");
            if ((st = parse_string(p, &key, &klen)) != KILN_OK)
                return st;
            ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                kiln_free(key);
                return expected(p, "':'");
            }
            p->pos++;
        }
        kiln_cli_json item;
        memset(&item, 0, sizeof(item));
        if ((st = parse_value(p, &item, depth + 1)) != KILN_OK ||
            (st = push(p, v, &cap, &item, key)) != KILN_OK) {
            fini(&item);
            kiln_free(key);
            return st;
        }
        ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return KILN_OK;
        }
        return expected(p, obj ? "',' or '}'" : "',' or ']'");
    }
}

static kiln_status parse_value(parser *p, kiln_cli_json *v, int depth)
{
    if (depth > KILN_CLI_JSON_MAX_DEPTH)
        return kiln_err_set(p->err, KILN_RESOURCE_EXHAUSTED,
                            "JSON at offset %zu: nested deeper than %d", p->pos,
                            KILN_CLI_JSON_MAX_DEPTH);
    ws(p);
    v->offset = p->pos;
    if (p->pos >= p->len)
        return expected(p, "a value");
    char c = p->s[p->pos];
    if (c == '{' || c == '[')
        return parse_container(p, v, depth);
    if (c == '"') {
        v->type = KILN_CLI_JSON_STRING;
        return parse_string(p, &v->text, &v->len);
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return parse_number(p, v);
    if (word(p, "true") || word(p, "false")) {
        v->type = KILN_CLI_JSON_BOOL;
        v->boolean = c == 't';
        return KILN_OK;
    }
    if (word(p, "null")) {
        v->type = KILN_CLI_JSON_NULL;
        return KILN_OK;
    }
    return expected(p, "a value");
}

kiln_status kiln_cli_json_parse(const char *text, size_t len, kiln_cli_json **out, kiln_err *err)
{
    *out = NULL;
    parser p = {text, len, 0, err};
    kiln_cli_json *v = kiln_calloc(1, sizeof(*v));
    if (!v)
        return oom(&p);
    kiln_status st = parse_value(&p, v, 0);
    if (st == KILN_OK) {
        ws(&p);
        if (p.pos != p.len)
            st = expected(&p, "the end of the text");
    }
    if (st != KILN_OK) {
        fini(v);
        kiln_free(v);
        return st;
    }
    *out = v;
    return KILN_OK;
}

void kiln_cli_json_free(kiln_cli_json *j)
{
    if (!j)
        return;
    fini(j);
    kiln_free(j);
}

const kiln_cli_json *kiln_cli_json_get(const kiln_cli_json *obj, const char *key)
{
    if (!obj || obj->type != KILN_CLI_JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return &obj->items[i];
    return NULL;
}

/* Length of the valid UTF-8 sequence at s[0..left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t left)
{
    size_t n = s[0] >= 0xf0 && s[0] <= 0xf4   ? 4
               : s[0] >= 0xe0                 ? 3
               : s[0] >= 0xc2 && s[0] <= 0xdf ? 2
                                              : 0;
    if (!n || n > left)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

void kiln_cli_json_put_string(FILE *f, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
            i++;
        } else if (c == '\n') {
            fputs("\\n", f);
            i++;
        } else if (c == '\t') {
            fputs("\\t", f);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            fputc(c, f);
            i++;
        } else {
            size_t n = utf8_len(u + i, len - i);
            if (n) {
                fwrite(u + i, 1, n, f);
                i += n;
            } else {
                fprintf(f, "\\u%04x", c); /* a lone byte, shown as its Latin-1 character */
                i++;
            }
        }
    }
    fputc('"', f);
}

static bool all_scalars(const kiln_cli_json *j)
{
    for (size_t i = 0; i < j->n; i++)
        if (j->items[i].type == KILN_CLI_JSON_ARRAY || j->items[i].type == KILN_CLI_JSON_OBJECT)
            return false;
    return true;
}

static void print_at(FILE *f, const kiln_cli_json *j, bool pretty, int level)
{
    switch (j->type) {
    case KILN_CLI_JSON_NULL:
        fputs("null", f);
        return;
    case KILN_CLI_JSON_BOOL:
        fputs(j->boolean ? "true" : "false", f);
        return;
    case KILN_CLI_JSON_NUMBER:
        fputs(j->text, f);
        return;
    case KILN_CLI_JSON_STRING:
        kiln_cli_json_put_string(f, j->text, j->len);
        return;
    case KILN_CLI_JSON_ARRAY:
    case KILN_CLI_JSON_OBJECT:
        break;
    }
    bool obj = j->type == KILN_CLI_JSON_OBJECT;
    bool multi = pretty && j->n && (obj || !all_scalars(j));
    fputc(obj ? '{' : '[', f);
    for (size_t i = 0; i < j->n; i++) {
        if (i)
            fputs(pretty && !multi ? ", " : ",", f);
        if (multi)
            fprintf(f, "\n%*s", 2 * (level + 1), "");
        if (obj) {
            kiln_cli_json_put_string(f, j->keys[i], strlen(j->keys[i]));
            fputs(pretty ? ": " : ":", f);
        }
        print_at(f, &j->items[i], pretty, level + 1);
    }
    if (multi)
        fprintf(f, "\n%*s", 2 * level, "");
    fputc(obj ? '}' : ']', f);
}

void kiln_cli_json_print(FILE *f, const kiln_cli_json *j, bool pretty)
{
    print_at(f, j, pretty, 0);
}
