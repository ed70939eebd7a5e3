/*
 * proto/textformat.h: protobuf text format into any protobuf-c message, driven only by the
 * message's descriptor (one parser, any message). This is what reads config.pbtxt.
 *
 * Accepted: `field: value`, `field { ... }` / `field: { ... }` / `field < ... >`, lists
 * `field: [a, b]` and `field [ {..}, {..} ]`, repeated fields given several times, `#`
 * comments, optional `,` or `;` between fields, enums by name or number, strings in '' or ""
 * with C escapes (adjacent strings concatenate), integers in decimal/hex/octal, floats with
 * exponents, inf and nan, booleans true/false/t/f/1/0, map fields as repeated
 * `{ key: .. value: .. }` entries.
 * Refused, with "line:column: ..." naming the field: unknown fields, a non-repeated field or a
 * second member of a oneof set twice, a value of the wrong type, an integer out of the field's
 * range, an unknown enum name, unterminated strings/blocks, extensions.
 *
 * The message is allocated with Kiln's allocator (common/alloc.h); free it with
 * kiln_textformat_free.
 *
 * Thread-safety: reentrant; no shared state.
 */
#ifndef KILN_PROTO_TEXTFORMAT_H
#define KILN_PROTO_TEXTFORMAT_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "common/status.h"

/*
 * Parses text[0..len) as a `desc` message. OUT: *out = the new message (NULL on failure).
 * `source` (e.g. "simple/config.pbtxt") prefixes every error message; may be NULL.
 * Returns KILN_INVALID_ARGUMENT with "source:line:column: what" on a parse error,
 * KILN_RESOURCE_EXHAUSTED if memory is short.
 */
kiln_status kiln_textformat_parse(const ProtobufCMessageDescriptor *desc, const char *text,
                                  size_t len, const char *source, ProtobufCMessage **out,
                                  kiln_err *err);

/* Frees a message from kiln_textformat_parse (or one unpacked with kiln_protobuf_allocator).
 * NULL is a no-op. */
void kiln_textformat_free(ProtobufCMessage *msg);

/* The protobuf-c allocator backed by kiln_malloc/kiln_free. */
ProtobufCAllocator *kiln_protobuf_allocator(void);

#endif /* KILN_PROTO_TEXTFORMAT_H */
