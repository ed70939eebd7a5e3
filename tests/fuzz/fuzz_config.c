/*
 * Fuzz target: config.pbtxt text through the generic text-format parser and the model config
 * validation. Whatever the input, the parser must either succeed with a config whose packed
 * form unpacks again, or fail with INVALID_ARGUMENT and a message; never crash or leak.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/model_config.h"
#include "proto/model_config.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kiln_err e;
    kiln_model_config *c = NULL;
    kiln_status st = kiln_model_config_parse((const char *)data, size, "fuzz", &c, &e);
    if (st == KILN_OK) {
        Inference__ModelConfig *m = inference__model_config__unpack(NULL, c->packed_len, c->packed);
        if (!m)
            abort(); /* a validated config always packs into a valid message */
        inference__model_config__free_unpacked(m, NULL);
        kiln_model_config_free(c);
    } else if (st != KILN_INVALID_ARGUMENT || !e.msg[0] || c) {
        abort();
    }
    return 0;
}
