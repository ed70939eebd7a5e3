/*
 * tools/kiln/tensor_json.h: tensors written as JSON (`--input NAME=json:[[1,2],[3,4]]`) and
 * tensors printed for people or as JSON.
 *
 * Input: nested arrays give the shape (they must be rectangular: every array at one depth has
 * the same length); the leaves are the elements. BOOL takes true/false (or 0/1); integer types
 * take integers in their range; FP types take numbers or the strings "NaN", "Infinity",
 * "-Infinity"; BYTES takes strings.
 * Output: the same nesting. For people floats are shown with %g; as JSON they are exact
 * (%.9g for FP32/FP16/BF16, %.17g for FP64) and NaN/Infinity are written as the strings
 * above, since JSON has no such numbers.
 *
 * Errors: INVALID_ARGUMENT naming the element by its index path ("element [1][0]").
 * Thread-safety: pure functions of their arguments.
 */
#ifndef KILN_TOOLS_KILN_TENSOR_JSON_H
#define KILN_TOOLS_KILN_TENSOR_JSON_H

#include <stdbool.h>
#include <stdio.h>

#include "common/status.h"
#include "tools/kiln/json.h"
#include "tools/kiln/tensor.h"

/* Builds a tensor of `dtype` from v. OUT: t->dtype, rank, shape, data and byte_size, with the
 * bytes in t->owner (t->name is left as it is). On failure *t is unchanged. */
kiln_status kiln_cli_tensor_from_json(const kiln_cli_json *v, kiln_cli_dtype dtype,
                                      kiln_cli_tensor *t, kiln_err *err);

/* kiln_cli_json_parse then kiln_cli_tensor_from_json. */
kiln_status kiln_cli_tensor_parse_json(const char *text, kiln_cli_dtype dtype, kiln_cli_tensor *t,
                                       kiln_err *err);

/* Prints t's elements as nested arrays (t must pass kiln_cli_tensor_check). */
void kiln_cli_tensor_print(FILE *f, const kiln_cli_tensor *t, bool json);

#endif /* KILN_TOOLS_KILN_TENSOR_JSON_H */
