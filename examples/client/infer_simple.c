/*
 * examples/client/infer_simple.c: health and one inference on the example model `simple`
 * with libkilnclient: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.
 *
 * Usage: infer_simple [HOST:PORT]   (default 127.0.0.1:8001)
 * Build against an installed library:
 *   cc infer_simple.c $(pkg-config --cflags --libs kilnclient) -o infer_simple
 */
#include <stdio.h>
#include <string.h>

#include <kiln_client.h>

static int fail(const char *what, const kiln_client_error *err)
{
    fprintf(stderr, "infer_simple: %s: %s: %s\n", what, kiln_client_code_name(err->code),
            err->message);
    return 1;
}

int main(int argc, char **argv)
{
    kiln_client_options opts;
    kiln_client_options_default(&opts);
    if (argc > 1)
        opts.url = argv[1];
    opts.timeout_ms = 5000;

    kiln_client *c = NULL;
    kiln_client_error err;
    if (kiln_client_create(&opts, &c, &err) != 0)
        return fail("connecting", &err);

    int serving = 0;
    if (kiln_client_health_check(c, "simple", &serving, &err) != 0) {
        kiln_client_destroy(c);
        return fail("health", &err);
    }
    printf("health: %s\n", serving == 1 ? "SERVING" : "NOT_SERVING");

    int32_t a[16], b[16];
    for (int i = 0; i < 16; i++) {
        a[i] = i;
        b[i] = 100;
    }
    kiln_client_tensor inputs[2] = {
        {.name = "INPUT0",
         .datatype = "INT32",
         .rank = 2,
         .shape = {1, 16},
         .data = a,
         .byte_size = sizeof(a)},
        {.name = "INPUT1",
         .datatype = "INT32",
         .rank = 2,
         .shape = {1, 16},
         .data = b,
         .byte_size = sizeof(b)},
    };
    kiln_client_result *res = NULL;
    if (kiln_client_infer(c, "simple", inputs, 2, NULL, 0, NULL, &res, &err) != 0) {
        kiln_client_destroy(c);
        return fail("infer", &err);
    }
    int rc = 0;
    for (size_t i = 0; i < kiln_client_result_count(res); i++) {
        kiln_client_tensor out;
        if (kiln_client_result_output(res, i, &out, &err) != 0) {
            rc = fail("reading the result", &err);
            break;
        }
        /* a view into the response: valid until kiln_client_result_free */
        const int32_t *v = out.data;
        printf("%s [", out.name);
        for (size_t k = 0; k < out.byte_size / sizeof(int32_t); k++)
            printf("%s%d", k ? ", " : "", (int)v[k]);
        printf("]\n");
    }
    kiln_client_result_free(res);
    kiln_client_destroy(c);
    return rc;
}
