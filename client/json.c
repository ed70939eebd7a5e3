/*
 * client/json.c: any protobuf-c message as JSON, driven by its descriptors, in protobuf's JSON
 * mapping (https://protobuf.dev/programming-guides/proto3/#json). Used for ModelConfig and
 * ModelStatistics, whose shapes this file does not need to know.
 */
#include "client/client_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/text.h"

/* Messages nest this deep at most (ModelConfig nests about 5); deeper input is refused. */
#define MAX_DEPTH 64

typedef struct jbuf {
    kiln_text t;
    int indent;
} jbuf;

static void put(jbuf *b, const char *s, size_t n)
{
    kiln_text_add(&b->t, s, n);
}

static void puts_(jbuf *b, const char *s)
{
    kiln_text_add(&b->t, s, strlen(s));
}

static void newline(jbuf *b, int depth)
{
    if (b->indent <= 0)
        return;
    put(b, "\n", 1);
    for (int i = 0; i < depth * b->indent; i++)
        put(b, " ", 1);
}

static void put_string(jbuf *b, const char *s, size_t n)
{
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '"':
            puts_(b, "\\\"");
            break;
        case '\\':
            puts_(b, "\\\\");
            break;
        case '\n':
            puts_(b, "\\n");
            break;
        case '\r':
            puts_(b, "\\r");
            break;
        case '\t':
            puts_(b, "\\t");
            break;
        case '\b':
            puts_(b, "\\b");
            break;
        case '\f':
            puts_(b, "\\f");
            break;
        default:
            if (ch < 0x20 || ch == 0x7f)
                kiln_text_printf(&b->t, "\\u%04x", ch);
            else
                put(b, (const char *)&s[i], 1);
        }
    }
    put(b, "\"", 1);
}

static void put_base64(jbuf *b, const uint8_t *d, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n)
            v |= d[i + 2];
        char q[4] = {tab[(v >> 18) & 63], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        put(b, q, 4);
    }
    put(b, "\"", 1);
}

/* The shortest %g form that reads back as the same value (JSON has no NaN or infinities:
 * protobuf writes them as strings). */
static void put_double(jbuf *b, double v, bool is_float)
{
    if (isnan(v)) {
        puts_(b, "\"NaN\"");
        return;
    }
    if (isinf(v)) {
        puts_(b, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    char tmp[40];
    if (v == floor(v) && fabs(v) < 0x1p53) { /* integers as integers: 100, not 1e+02 */
        snprintf(tmp, sizeof(tmp), "%.0f", v);
        puts_(b, tmp);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        double back = strtod(tmp, NULL);
        if (is_float ? (float)back == (float)v : back == v)
            break;
    }
    puts_(b, tmp);
}

void kiln__json_name(const char *field, char *out, size_t cap)
{
    size_t o = 0;
    bool upper = false;
    for (const char *p = field; *p && o + 1 < cap; p++) {
        if (*p == '_') {
            upper = true;
            continue;
        }
        char ch = *p;
        if (upper && ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        upper = false;
        out[o++] = ch;
    }
    if (cap)
        out[o] = '\0';
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

static kiln_status message(jbuf *b, const ProtobufCMessage *m, int depth, kiln_err *err);

/* One value of field f stored at v. */
static kiln_status value(jbuf *b, const ProtobufCFieldDescriptor *f, const void *v, int depth,
                         kiln_err *err)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        kiln_text_printf(&b->t, "%" PRId32, *(const int32_t *)v);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        kiln_text_printf(&b->t, "%" PRIu32, *(const uint32_t *)v);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        kiln_text_printf(&b->t, "\"%" PRId64 "\"", *(const int64_t *)v);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        kiln_text_printf(&b->t, "\"%" PRIu64 "\"", *(const uint64_t *)v);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        put_double(b, *(const float *)v, true);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        put_double(b, *(const double *)v, false);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        puts_(b, *(const protobuf_c_boolean *)v ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int e = *(const int *)v;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, e);
        if (ev)
            put_string(b, ev->name, strlen(ev->name));
        else /* a value this build does not know: protobuf writes its number */
            kiln_text_printf(&b->t, "%d", e);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        put_string(b, s ? s : "", s ? strlen(s) : 0);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *d = v;
        put_base64(b, d->data, d->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)v;
        if (!sub) {
            puts_(b, "{}");
            break;
        }
        return message(b, sub, depth, err);
    }
    }
    return KILN_OK;
}

/* Whether field f of m is written: set (has_, oneof case, non-NULL) or, for proto3 fields
 * without presence, different from its default. */
static bool present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    const void *v = base + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return *(const size_t *)(base + f->quantifier_offset) > 0;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE)
        return *(ProtobufCMessage *const *)v != NULL;
    if (f->label == PROTOBUF_C_LABEL_REQUIRED)
        return true;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
        if (f->type == PROTOBUF_C_TYPE_STRING)
            return *(char *const *)v != NULL;
        return *(const protobuf_c_boolean *)(base + f->quantifier_offset) != 0;
    }
    switch (f->type) { /* PROTOBUF_C_LABEL_NONE: proto3, written when not the default */
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        return s && *s;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)v)->len > 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)v != 0.0f;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)v != 0.0;
    default: {
        /* integers, bool and enum: any non-zero byte */
        const unsigned char *p = v;
        for (size_t i = 0; i < elem_size(f->type); i++)
            if (p[i])
                return true;
        return false;
    }
    }
}

/* protobuf-c keeps map<K, V> as repeated K_V entries: a message named <FieldInCamelCase>Entry
 * with fields key = 1 and value = 2. */
static bool is_map(const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *d = f->descriptor;
    if (d->n_fields != 2 || d->fields[0].id != 1 || d->fields[1].id != 2 ||
        strcmp(d->fields[0].name, "key") != 0 || strcmp(d->fields[1].name, "value") != 0)
        return false;
    char want[256];
    kiln__json_name(f->name, want, sizeof(want) - 8);
    if (want[0] >= 'a' && want[0] <= 'z')
        want[0] = (char)(want[0] - 'a' + 'A');
    strcat(want, "Entry");
    return strcmp(d->short_name, want) == 0;
}

static kiln_status map_key(jbuf *b, const ProtobufCMessage *entry)
{
    const ProtobufCFieldDescriptor *kf = &entry->descriptor->fields[0];
    const void *k = (const char *)entry + kf->offset;
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(char *const *)k;
        put_string(b, s ? s : "", s ? strlen(s) : 0);
    } else if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        puts_(b, *(const protobuf_c_boolean *)k ? "\"true\"" : "\"false\"");
    } else {
        /* integer keys are quoted; 64-bit ones already are */
        bool wide = elem_size(kf->type) == 8;
        if (!wide)
            put(b, "\"", 1);
        value(b, kf, k, 0, NULL);
        if (!wide)
            put(b, "\"", 1);
    }
    return KILN_OK;
}

static kiln_status field(jbuf *b, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                         int depth, kiln_err *err)
{
    const char *base = (const char *)m;
    const void *v = base + f->offset;
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return value(b, f, v, depth, err);
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const char *arr = *(char *const *)v;
    bool map = is_map(f);
    put(b, map ? "{" : "[", 1);
    kiln_status st = KILN_OK;
    for (size_t i = 0; i < n && st == KILN_OK; i++) {
        if (i)
            put(b, ",", 1);
        newline(b, depth + 1);
        const void *elem = arr + i * elem_size(f->type);
        if (map) {
            const ProtobufCMessage *entry = *(ProtobufCMessage *const *)elem;
            const ProtobufCFieldDescriptor *vf = &entry->descriptor->fields[1];
            map_key(b, entry);
            puts_(b, b->indent > 0 ? ": " : ":");
            st = value(b, vf, (const char *)entry + vf->offset, depth + 1, err);
        } else {
            st = value(b, f, elem, depth + 1, err);
        }
    }
    newline(b, depth);
    put(b, map ? "}" : "]", 1);
    return st;
}

static kiln_status message(jbuf *b, const ProtobufCMessage *m, int depth, kiln_err *err)
{
    if (depth >= MAX_DEPTH)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "message %s nests deeper than %d levels",
                            m->descriptor->name, MAX_DEPTH);
    const ProtobufCMessageDescriptor *d = m->descriptor;
    put(b, "{", 1);
    bool any = false;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (!present(m, f))
            continue;
        if (any)
            put(b, ",", 1);
        any = true;
        newline(b, depth + 1);
        char name[256];
        kiln__json_name(f->name, name, sizeof(name));
        put_string(b, name, strlen(name));
        puts_(b, b->indent > 0 ? ": " : ":");
        kiln_status st = field(b, m, f, depth + 1, err);
        if (st != KILN_OK)
            return st;
    }
    if (any)
        newline(b, depth);
    put(b, "}", 1);
    return KILN_OK;
}

kiln_status kiln__json_encode(const ProtobufCMessage *msg, int indent, char **json, kiln_err *err)
{
    *json = NULL;
    if (!msg)
        return kiln_err_set(err, KILN_INVALID_ARGUMENT, "no message to encode");
    jbuf b = {.indent = indent};
    kiln_status st = message(&b, msg, 0, err);
    if (st == KILN_OK && (b.t.oom || !b.t.p))
        st = kiln_err_set(err, KILN_RESOURCE_EXHAUSTED, "out of memory encoding %s as JSON",
                          msg->descriptor->name);
    if (st != KILN_OK) {
        kiln_text_fini(&b.t);
        return st;
    }
    *json = b.t.p;
    return KILN_OK;
}
