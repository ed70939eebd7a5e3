/*
 * tools/kiln/json.h: a small JSON reader (a tree) and writer for the kiln tool: tensors given
 * as `json:[[1,2],[3,4]]`, the server's config and statistics JSON, and --json output.
 *
 * Numbers keep the text they were written with, so an INT64 or UINT64 converts exactly and the
 * caller decides what a number means. Strings are decoded to UTF-8 (\uXXXX and surrogate pairs
 * included) and may hold NUL bytes (len says how long they are).
 *
 * Errors: INVALID_ARGUMENT with the byte offset and what was expected; RESOURCE_EXHAUSTED when
 * memory runs out or nesting passes KILN_CLI_JSON_MAX_DEPTH.
 * Thread-safety: a tree is read-only after parsing and may be read from any thread.
 */
#ifndef KILN_TOOLS_KILN_JSON_H
#define KILN_TOOLS_KILN_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"

#define KILN_CLI_JSON_MAX_DEPTH 64

typedef enum kiln_cli_json_type {
    KILN_CLI_JSON_NULL,
    KILN_CLI_JSON_BOOL,
    KILN_CLI_JSON_NUMBER,
    KILN_CLI_JSON_STRING,
    KILN_CLI_JSON_ARRAY,
    KILN_CLI_JSON_OBJECT,
} kiln_cli_json_type;

typedef struct kiln_cli_json kiln_cli_json;
struct kiln_cli_json {
    kiln_cli_json_type type;
    bool boolean;         /* BOOL */
    char *text;           /* NUMBER: the token as written; STRING: decoded, NUL-terminated */
    size_t len;           /* STRING: bytes in text */
    size_t n;             /* ARRAY, OBJECT: number of items */
    kiln_cli_json *items; /* ARRAY, OBJECT: the values */
    char **keys;          /* OBJECT: keys[i] names items[i] */
    size_t offset;        /* where the value starts in the parsed text */
};

/* Parses text[len] (one value, surrounding whitespace allowed). OUT: *out, freed with
 * kiln_cli_json_free; NULL on failure. */
kiln_status kiln_cli_json_parse(const char *text, size_t len, kiln_cli_json **out, kiln_err *err);

/* Frees a tree from kiln_cli_json_parse. NULL is a no-op. */
void kiln_cli_json_free(kiln_cli_json *j);

/* The value of `key` in object obj; NULL when obj is not an object or has no such key. The
 * result is borrowed from obj. */
const kiln_cli_json *kiln_cli_json_get(const kiln_cli_json *obj, const char *key);

/* Encodes code point cp as UTF-8 into out[0..4). Returns the bytes written, 0 for a value that
 * is not a Unicode scalar value (a surrogate, or above U+10FFFF). */
size_t kiln_cli_utf8_encode(uint32_t cp, uint8_t *out);

/* Writes s[len] as a JSON string (quoted; control characters, '"', '\\' and bytes that are not
 * valid UTF-8 escaped as \u00XX). */
void kiln_cli_json_put_string(FILE *f, const char *s, size_t len);

/* Writes the tree as JSON: compact on one line, or indented by two spaces per level with
 * arrays of scalars kept on one line. */
void kiln_cli_json_print(FILE *f, const kiln_cli_json *j, bool pretty);

#endif /* KILN_TOOLS_KILN_JSON_H */
