/*
 * tools/kiln/npy.h: NumPy .npy files in and out (format versions 1.0, 2.0 and 3.0).
 *
 * Read: C-order arrays of little-endian <f2 <f4 <f8 <i2 <i4 <i8 <u2 <u4 <u8, one-byte |i1 |u1
 * |b1 (BOOL), and strings |S<n> (bytes) and <U<n> (UTF-32, re-encoded as UTF-8), the last two
 * as KServe BYTES with trailing NULs dropped as NumPy does. Everything else (big-endian,
 * Fortran order, structured, object, complex, datetime dtypes) is refused with a message that
 * says what is wrong and, where there is one, how to convert the array.
 * Write: version 1.0, C order; BYTES as |S<longest element>, BF16 widened to <f4 (exact).
 *
 * Errors: INVALID_ARGUMENT naming what is malformed; NOT_FOUND / PERMISSION_DENIED /
 * INTERNAL for files that cannot be opened, read or written (with strerror).
 * Thread-safety: pure functions of their arguments.
 */
#ifndef KILN_TOOLS_KILN_NPY_H
#define KILN_TOOLS_KILN_NPY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"
#include "tools/kiln/tensor.h"

/*
 * Parses the .npy image buf[len]. OUT: t->dtype, rank, shape, data, byte_size (t->name is left
 * as it is). t->data is a view into buf (t->owner NULL), except for string dtypes, whose
 * re-encoded elements live in t->owner. On failure *t is unchanged.
 */
kiln_status kiln_cli_npy_parse(const uint8_t *buf, size_t len, kiln_cli_tensor *t, kiln_err *err);

/* Reads and parses the file at path; t then owns its bytes. Messages start with the path. */
kiln_status kiln_cli_npy_load(const char *path, kiln_cli_tensor *t, kiln_err *err);

/* Writes t as a .npy file image to f. INVALID_ARGUMENT when t's bytes do not fit its shape. */
kiln_status kiln_cli_npy_write(FILE *f, const kiln_cli_tensor *t, kiln_err *err);

/* Writes t to path (through path.tmp and a rename, so no half file is left behind). */
kiln_status kiln_cli_npy_save(const char *path, const kiln_cli_tensor *t, kiln_err *err);

#endif /* KILN_TOOLS_KILN_NPY_H */
