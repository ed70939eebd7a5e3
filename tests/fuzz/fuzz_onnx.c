/*
 * Fuzz target: bytes as an ONNX model file through the loader (proto/onnx_model.c). Whatever
 * the input, the loader must either return a model whose value indexes are all in range, or
 * fail with INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for a file that would unpack too large) and
 * a message; never crash or leak. External data is refused
 * (no directory), so the target touches no files.
 */
#include <stdint.h>
#include <stdlib.h>

#include "proto/onnx_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_index(const kiln_onnx_model *m, int32_t v, int optional)
{
    if (v < (optional ? -1 : 0) || (v >= 0 && (size_t)v >= m->n_values))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kiln_err e;
    kiln_onnx_model *m = NULL;
    kiln_status st = kiln_onnx_model_parse(data, size, NULL, "fuzz.onnx", &m, &e);
    if (st != KILN_OK) {
        if ((st != KILN_INVALID_ARGUMENT && st != KILN_RESOURCE_EXHAUSTED) || !e.msg[0] || m)
            abort();
        return 0;
    }
    for (size_t i = 0; i < m->n_inputs; i++)
        check_index(m, m->inputs[i], 0);
    for (size_t i = 0; i < m->n_outputs; i++)
        check_index(m, m->outputs[i], 0);
    for (size_t i = 0; i < m->n_nodes; i++) {
        const kiln_onnx_node *n = &m->nodes[i];
        for (size_t k = 0; k < n->n_inputs; k++) {
            check_index(m, n->inputs[k], 1);
            /* topological: an input is never produced by this node or a later one */
            if (n->inputs[k] >= 0 && m->values[n->inputs[k]].producer >= (int32_t)i)
                abort();
        }
        for (size_t k = 0; k < n->n_outputs; k++)
            check_index(m, n->outputs[k], 1);
    }
    kiln_onnx_model_free(m);
    return 0;
}
