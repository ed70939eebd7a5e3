# Kiln build. `make help` lists the targets; README.md has the two commands that matter.
#
# Configurations build out of tree, one directory each:
#   make                         -> build/default
#   make SAN=address,undefined   -> build/address-undefined   (ASan + UBSan, no recovery)
#   make SAN=thread              -> build/thread              (TSan)
#   make BUILD=somewhere         -> any directory you like
# CUDA: .cu files build with nvcc for sm_90 (+ PTX) when nvcc is found; KILN_CUDA=0 builds
# their *_none.c twins instead. Either way the tests pass on a machine with no GPU.

SHELL := /bin/bash
.DEFAULT_GOAL := all
.SECONDARY:

comma := ,
SAN ?=
BUILD ?= build/$(if $(SAN),$(subst $(comma),-,$(SAN)),default)
V ?= 0
Q := $(if $(filter 1,$(V)),,@)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

CC ?= gcc
ifeq ($(origin CC),default)
CC := gcc
endif
FUZZ_CC ?= clang
NVCC ?= /usr/local/cuda/bin/nvcc
CUDA_HOME ?= /usr/local/cuda
KILN_CUDA ?= $(if $(wildcard $(NVCC)),1,0)

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
        -Wpointer-arith -Wcast-qual -Wundef -Wvla
CFLAGS ?= -O2 -g
KILN_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -fPIC -I. -MMD -MP
LDLIBS := -lpthread -lrt -lm

ifneq ($(SAN),)
KILN_CFLAGS += -fsanitize=$(SAN) -fno-omit-frame-pointer
ifneq ($(findstring undefined,$(SAN)),)
KILN_CFLAGS += -fno-sanitize-recover=all
endif
LDFLAGS += -fsanitize=$(SAN)
CFLAGS := -O1 -g
endif

# ---------------------------------------------------------------- sources
LIB_MODULES := common tensor proto registry backends backends/plugin backends/onnx sandbox model_worker server
CU_SRC := $(foreach m,$(LIB_MODULES),$(wildcard $(m)/*.cu))
NONE_SRC := $(CU_SRC:.cu=_none.c)
MAIN_SRC := model_worker/main.c
LIB_C_SRC := $(filter-out $(NONE_SRC) $(MAIN_SRC),$(foreach m,$(LIB_MODULES),$(wildcard $(m)/*.c)))
GRPC_LIBS := -lgrpc -lgpr
SERVER_BIN := $(BUILD)/kiln-server

# Generated protocol code (protoc-c) lives under $(GEN); nothing generated is hand-edited.
GEN := $(BUILD)/gen
PROTOS := proto/model_config.proto proto/grpc_service.proto proto/onnx.proto
HEALTH_PROTO := /usr/share/grpc-proto/grpc/health/v1/health.proto
PROTO_C := $(PROTOS:%.proto=$(GEN)/%.pb-c.c) $(GEN)/grpc/health/v1/health.pb-c.c
PROTO_H := $(PROTOS:%.proto=$(GEN)/%.pb-c.h) $(GEN)/grpc/health/v1/health.pb-c.h
PROTO_OBJ := $(PROTO_C:$(GEN)/%.c=$(BUILD)/obj/gen/%.o)
KILN_CFLAGS += -I$(GEN)
LDLIBS += -lprotobuf-c -lseccomp -ldl -lopenblas -lmicrohttpd

# protoc-gen-kiln-c (tools/protoc-gen-kiln-c, C over protobuf-c) reads protoc's
# CodeGeneratorRequest through protoc-c's code for Debian's descriptor.proto (libprotobuf-dev)
# and plugin.proto (libprotoc-dev). For each .proto with services it writes
# <name>.kiln-methods.{h,c} (method tables: paths, streaming flags, descriptors; the server's)
# and <name>.kiln.{h,c} (typed client stubs over client/kiln_rpc.h). See docs/client.md.
GOOGLE_PROTO_DIR := /usr/include
PLUGIN_PROTOS := google/protobuf/descriptor.proto google/protobuf/compiler/plugin.proto
PLUGIN_PB_C := $(PLUGIN_PROTOS:%.proto=$(GEN)/%.pb-c.c)
PLUGIN_PB_H := $(PLUGIN_PROTOS:%.proto=$(GEN)/%.pb-c.h)
PROTOC_GEN_KILN := $(BUILD)/tools/protoc-gen-kiln-c
PLUGIN_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tools/protoc-gen-kiln-c/*.c)) \
              $(PLUGIN_PB_C:$(GEN)/%.c=$(BUILD)/obj/gen/%.o) \
              $(BUILD)/obj/common/status.o $(BUILD)/obj/common/alloc.o
RPC_PROTOS := proto/grpc_service grpc/health/v1/health
# The generator's test fixture: one service of every streaming shape in a nested package.
FIXTURE_PROTOS := tests/fixtures/proto/echo
METHODS_H := $(RPC_PROTOS:%=$(GEN)/%.kiln-methods.h)
METHODS_OBJ := $(RPC_PROTOS:%=$(BUILD)/obj/gen/%.kiln-methods.o)
STUBS_H := $(RPC_PROTOS:%=$(GEN)/%.kiln.h)
STUBS_OBJ := $(RPC_PROTOS:%=$(BUILD)/obj/gen/%.kiln.o)
FIXTURE_H := $(FIXTURE_PROTOS:%=$(GEN)/%.pb-c.h) $(FIXTURE_PROTOS:%=$(GEN)/%.kiln-methods.h) \
             $(FIXTURE_PROTOS:%=$(GEN)/%.kiln.h)
FIXTURE_OBJ := $(FIXTURE_PROTOS:%=$(BUILD)/obj/gen/%.pb-c.o) \
               $(FIXTURE_PROTOS:%=$(BUILD)/obj/gen/%.kiln-methods.o) \
               $(FIXTURE_PROTOS:%=$(BUILD)/obj/gen/%.kiln.o)
# libkilnrpc: the client runtime (client/kiln_rpc*.c) and the stubs of our services.
RPC_LIB := $(BUILD)/libkilnrpc.a
RPC_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard client/kiln_rpc*.c)) $(STUBS_OBJ)

ifeq ($(KILN_CUDA),1)
LIB_OBJ := $(LIB_C_SRC:%.c=$(BUILD)/obj/%.o) $(CU_SRC:%.cu=$(BUILD)/obj/%.cu.o)
LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudnn -lcublasLt -lcublas -lcudart -lstdc++
NVCCFLAGS := -std=c++17 -O2 -I. -Xcompiler -fPIC,-Wall,-Werror \
             -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
else
LIB_OBJ := $(LIB_C_SRC:%.c=$(BUILD)/obj/%.o) $(NONE_SRC:%.c=$(BUILD)/obj/%.o)
endif
LIB_OBJ += $(PROTO_OBJ) $(METHODS_OBJ)
LIB := $(BUILD)/libkiln.a

# Example plugins (examples/plugins) and the model repositories assembled from them:
#   $(BUILD)/models       the example repository (examples/models + built plugins)
#   $(BUILD)/test-models  models only the tests use (misbehave, broken plugins)
#   $(BUILD)/torch-models the ONNX models exported from PyTorch (tests/fixtures/torch)
PLUGIN_NAMES := simple simple_string misbehave
PLUGINS := $(PLUGIN_NAMES:%=$(BUILD)/plugins/%.so) $(BUILD)/plugins/identity.so
# The models exported from PyTorch (tests/fixtures/torch), for the unit tests: $(BUILD)/torch-models
TORCH_MODEL_FILES := $(patsubst tests/fixtures/torch/models/%,$(BUILD)/torch-models/%,\
                       $(wildcard tests/fixtures/torch/models/*/config.pbtxt \
                                  tests/fixtures/torch/models/*/1/model.onnx))
# ONNX examples carry their committed model.onnx; the others are plugins built here.
ONNX_EXAMPLES := $(patsubst examples/models/%/1/model.onnx,%,$(wildcard examples/models/*/1/model.onnx))
EXAMPLE_MODELS := $(filter-out $(ONNX_EXAMPLES),$(notdir $(wildcard examples/models/*)))
BROKEN_VARIANTS := 1 2 3 4 5 6 7
MODEL_FILES := $(foreach m,$(EXAMPLE_MODELS),$(BUILD)/models/$(m)/config.pbtxt \
                 $(BUILD)/models/$(m)/1/model.so) \
               $(foreach m,$(ONNX_EXAMPLES),$(BUILD)/models/$(m)/config.pbtxt \
                 $(BUILD)/models/$(m)/1/model.onnx) \
               $(BUILD)/test-models/misbehave/config.pbtxt $(BUILD)/test-models/misbehave/1/model.so \
               $(TORCH_MODEL_FILES) \
               $(BROKEN_VARIANTS:%=$(BUILD)/plugins/broken%.so)
PLUGIN_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC -shared -Ibackends/plugin \
                 $(if $(SAN),-fsanitize=$(SAN))

UNIT_SRC := $(wildcard tests/unit/*/test_*.c)
UNIT_BIN := $(UNIT_SRC:%.c=$(BUILD)/%)
TEST_SUPPORT := $(BUILD)/obj/tests/support.o

# The kiln command-line tool (tools/kiln). The parts that need no server (arguments, .npy,
# JSON, tensors, statistics) are unit-tested on their own.
CLI_SRC := $(wildcard tools/kiln/*.c)
CLI_CORE_SRC := $(addprefix tools/kiln/,args.c json.c npy.c stats.c tensor.c tensor_json.c)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
CLI_CORE_OBJ := $(CLI_CORE_SRC:%.c=$(BUILD)/obj/%.o)

BENCH_SRC := $(wildcard bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:%.c=$(BUILD)/%)

FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:%.c=build/fuzz/%)
FUZZ_LIB_SRC := $(filter-out server/%,$(LIB_C_SRC)) $(NONE_SRC) $(PROTO_C)
FUZZ_RUNS ?= 200000

# ---------------------------------------------------------------- libkilnclient
# The C client (client/, installed header client/kiln_client.h). It shares only common/
# (status, allocation) and the generated protocol code with the server, and is built as
#   $(BUILD)/libkilnclient.so.0.1.0 (soname libkilnclient.so.0; exports kiln_client_* only)
#   $(BUILD)/libkilnclient.a        (one object whose only global symbols are kiln_client_*)
# `make install` copies the header, both libraries, kilnclient.pc and CLIENT_PROGRAMS under
# $(DESTDIR)$(PREFIX).
CLIENT_VERSION := 0.1.0
CLIENT_SOMAJOR := 0
CLIENT_SRC := $(filter-out client/kiln_rpc%,$(wildcard client/*.c))
CLIENT_PROTO_OBJ := $(BUILD)/obj/gen/proto/grpc_service.pb-c.o $(BUILD)/obj/gen/proto/model_config.pb-c.o \
                    $(BUILD)/obj/gen/grpc/health/v1/health.pb-c.o $(METHODS_OBJ)
# libkilnclient = its own files + the runtime and stubs (RPC_OBJ) + what they all stand on.
CLIENT_OBJ := $(CLIENT_SRC:%.c=$(BUILD)/obj/%.o) $(RPC_OBJ) $(BUILD)/obj/common/status.o \
              $(BUILD)/obj/common/alloc.o $(BUILD)/obj/common/text.o $(CLIENT_PROTO_OBJ)
CLIENT_SO := $(BUILD)/libkilnclient.so.$(CLIENT_VERSION)
CLIENT_A := $(BUILD)/libkilnclient.a
CLIENT_LIBS := -lgrpc -lgpr -lprotobuf-c -lpthread -lm
# Programs `make install` puts in $(BINDIR): the kiln command-line tool adds itself here.
CLIENT_PROGRAMS ?=
# Built against the shared library, as a user would: the example and the live-server tests.
CLIENT_EXAMPLE := $(BUILD)/examples/client/infer_simple
CLIENT_IT := $(BUILD)/tests/integration/client_live
CLIENT_TEST_BIN := $(CLIENT_EXAMPLE) $(CLIENT_IT)
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

client: $(CLIENT_SO) $(CLIENT_A)

$(CLIENT_OBJ) $(CLIENT_TEST_BIN:$(BUILD)/%=$(BUILD)/obj/%.o): | $(PROTO_H)
$(CLIENT_SRC:%.c=$(BUILD)/obj/%.o): | $(METHODS_H) $(STUBS_H)
# protobuf-c's INIT macros cast away the const of protobuf_c_empty_string.
$(BUILD)/obj/client/%.o: KILN_CFLAGS += -Wno-cast-qual

$(CLIENT_SO): $(CLIENT_OBJ) client/libkilnclient.map
	@echo "SO    $@"
	$(Q)$(CC) $(LDFLAGS) -shared -Wl,-soname,libkilnclient.so.$(CLIENT_SOMAJOR) \
	    -Wl,--version-script=client/libkilnclient.map -Wl,--no-undefined \
	    $(CLIENT_OBJ) -o $@ $(CLIENT_LIBS)
	$(Q)ln -sf $(@F) $(BUILD)/libkilnclient.so.$(CLIENT_SOMAJOR)
	$(Q)ln -sf libkilnclient.so.$(CLIENT_SOMAJOR) $(BUILD)/libkilnclient.so

# One relocatable object with everything but kiln_client_* made local, so a program that links
# its own copy of the KServe protocol code (or of libkiln) meets no duplicate symbols.
$(CLIENT_A): $(CLIENT_OBJ)
	@echo "AR    $@"
	$(Q)ld -r -o $(BUILD)/obj/client/kilnclient.o $(CLIENT_OBJ)
	$(Q)objcopy --wildcard --keep-global-symbol='kiln_client_*' $(BUILD)/obj/client/kilnclient.o
	$(Q)rm -f $@ && ar rcs $@ $(BUILD)/obj/client/kilnclient.o

# Their fake transport (tests/unit/client/fake.h) stands in for the runtime under the stubs;
# test_json also links its own test message.
CLIENT_FAKE_TESTS := $(patsubst %,$(BUILD)/tests/unit/client/test_%,client infer models retry shm)
$(CLIENT_FAKE_TESTS): LDFLAGS += -Wl,--wrap=kiln_rpc_unary,--wrap=kiln_rpc_channel_create \
                                 -Wl,--wrap=kiln_rpc_channel_destroy
$(BUILD)/tests/unit/client/test_json: $(BUILD)/obj/gen/tests/unit/client/json_test.pb-c.o
$(BUILD)/obj/tests/unit/client/test_json.o: | $(GEN)/tests/unit/client/json_test.pb-c.h

$(BUILD)/obj/examples/client/%.o $(BUILD)/obj/tests/integration/%.o: KILN_CFLAGS += -Iclient
$(CLIENT_TEST_BIN): $(BUILD)/%: $(BUILD)/obj/%.o $(CLIENT_SO)
	@mkdir -p $(@D)
	@echo "LINK  $@"
	$(Q)$(CC) $(LDFLAGS) $< -o $@ -L$(BUILD) -Wl,-rpath,$(abspath $(BUILD)) -lkilnclient \
	    $(if $(filter $(CLIENT_IT),$@),-lcmocka -lpthread)

install: $(CLIENT_SO) $(CLIENT_A) $(CLIENT_PROGRAMS)
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 client/kiln_client.h $(DESTDIR)$(INCLUDEDIR)/kiln_client.h
	install -m 755 $(CLIENT_SO) $(DESTDIR)$(LIBDIR)/
	ln -sf libkilnclient.so.$(CLIENT_VERSION) $(DESTDIR)$(LIBDIR)/libkilnclient.so.$(CLIENT_SOMAJOR)
	ln -sf libkilnclient.so.$(CLIENT_SOMAJOR) $(DESTDIR)$(LIBDIR)/libkilnclient.so
	install -m 644 $(CLIENT_A) $(DESTDIR)$(LIBDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|' \
	    -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|' \
	    -e 's|@VERSION@|$(CLIENT_VERSION)|' client/kilnclient.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/kilnclient.pc
	$(if $(strip $(CLIENT_PROGRAMS)),install -d $(DESTDIR)$(BINDIR) && \
	    install -m 755 $(CLIENT_PROGRAMS) $(DESTDIR)$(BINDIR)/)

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/kiln_client.h $(DESTDIR)$(PKGCONFIGDIR)/kilnclient.pc \
	    $(DESTDIR)$(LIBDIR)/libkilnclient.so.$(CLIENT_VERSION) \
	    $(DESTDIR)$(LIBDIR)/libkilnclient.so.$(CLIENT_SOMAJOR) $(DESTDIR)$(LIBDIR)/libkilnclient.so \
	    $(DESTDIR)$(LIBDIR)/libkilnclient.a $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(CLIENT_PROGRAMS)))

# ---------------------------------------------------------------- the kiln tool
# $(BUILD)/kiln: tools/kiln linked with libkilnclient.a (whose only global symbols are
# kiln_client_*) and its own copies of common/status and common/alloc; `make install` puts it
# in $(BINDIR).
CLI_BIN := $(BUILD)/kiln
CLIENT_PROGRAMS += $(CLI_BIN)

$(CLI_BIN): $(CLI_OBJ) $(BUILD)/obj/common/status.o $(BUILD)/obj/common/alloc.o $(CLIENT_A)
	@echo "LINK  $@"
	$(Q)$(CC) $(LDFLAGS) $^ -o $@ $(CLIENT_LIBS)

# ---------------------------------------------------------------- rules
.PHONY: all lib client install uninstall tests models examples run pystubs bundle docs test unit-test integration-test bench bench-onnx deps-bench fuzz fuzz-smoke nocuda-test deps clean format \
        format-check check compile_commands help

all: lib client $(SERVER_BIN) $(CLI_BIN) $(RPC_LIB) tests $(if $(SAN),,examples)

lib: $(LIB)

$(SERVER_BIN): $(BUILD)/obj/model_worker/main.o $(LIB)
	@echo "LINK  $@"
	$(Q)$(CC) $(LDFLAGS) $^ -o $@ $(GRPC_LIBS) $(LDLIBS)

tests: $(UNIT_BIN) $(MODEL_FILES) $(SERVER_BIN) client $(CLIENT_TEST_BIN) $(CLI_BIN) \
       $(BUILD)/bench/bench_server

models: $(MODEL_FILES)

# The example repository served by default (--model-repository=examples/models): the built
# plugins go into its version directories (git-ignored), from the default configuration.
EXAMPLE_SO := $(EXAMPLE_MODELS:%=examples/models/%/1/model.so)
examples: $(EXAMPLE_SO)
examples/models/%/1/model.so: build/default/models/%/1/model.so
	@mkdir -p $(@D) && cp $< $@

# The README's run command: build, then serve the example repository on 0.0.0.0:8001.
run:
	$(MAKE) --no-print-directory BUILD=build/default SAN= -j$(JOBS) lib build/default/kiln-server models
	$(MAKE) --no-print-directory examples
	build/default/kiln-server $(RUN_FLAGS)

$(BUILD)/plugins/%.so: examples/plugins/%.c examples/plugins/common.h backends/plugin/kiln_plugin.h
	@mkdir -p $(@D)
	@echo "SO    $@"
	$(Q)$(CC) $(PLUGIN_CFLAGS) $(CFLAGS) $< -o $@

$(BUILD)/plugins/broken%.so: tests/fixtures/plugins/broken.c backends/plugin/kiln_plugin.h
	@mkdir -p $(@D)
	@echo "SO    $@"
	$(Q)$(CC) $(PLUGIN_CFLAGS) $(CFLAGS) -DBROKEN=$* $< -o $@

# Model name -> plugin: the identity plugin serves two models.
plugin_of = $(if $(filter simple_identity identity_fp32,$(1)),identity,$(1))

$(BUILD)/models/%/config.pbtxt: examples/models/%/config.pbtxt
	@mkdir -p $(@D) && cp $< $@

$(BUILD)/models/%/1/model.onnx: examples/models/%/1/model.onnx
	@mkdir -p $(@D) && cp $< $@

$(BUILD)/test-models/%/config.pbtxt: tests/fixtures/models/%/config.pbtxt
	@mkdir -p $(@D) && cp $< $@

$(BUILD)/torch-models/%: tests/fixtures/torch/models/%
	@mkdir -p $(@D) && cp $< $@

.SECONDEXPANSION:
$(BUILD)/models/%/1/model.so: $(BUILD)/plugins/$$(call plugin_of,$$*).so
	@mkdir -p $(@D) && cp $< $@

$(BUILD)/test-models/%/1/model.so: $(BUILD)/plugins/%.so
	@mkdir -p $(@D) && cp $< $@

$(BUILD)/obj/%.o: %.c | $(BUILD)/.dir
	@mkdir -p $(@D)
	@echo "CC    $<"
	$(Q)$(CC) $(KILN_CFLAGS) $(CFLAGS) -c $< -o $@

# protobuf-c's generated structs and INIT macros take string literals as char *.
$(BUILD)/obj/server/%.o: KILN_CFLAGS += -Wno-cast-qual

# Tests find the assembled repositories through this define.
$(BUILD)/obj/tests/%.o $(BUILD)/obj/bench/%.o: KILN_CFLAGS += -DKILN_TEST_BUILD_DIR=\"$(abspath $(BUILD))\"


$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h &: %.proto
	@mkdir -p $(GEN)
	@echo "PROTO $<"
	$(Q)protoc-c -I. --c_out=$(GEN) $<

$(GEN)/grpc/health/v1/health.pb-c.c $(GEN)/grpc/health/v1/health.pb-c.h &: $(HEALTH_PROTO)
	@mkdir -p $(GEN)
	@echo "PROTO $<"
	$(Q)protoc-c -I/usr/share/grpc-proto --c_out=$(GEN) $<

# grpc_service.proto imports model_config.proto
$(GEN)/proto/grpc_service.pb-c.c: $(GEN)/proto/model_config.pb-c.h

$(GEN)/google/protobuf/%.pb-c.c $(GEN)/google/protobuf/%.pb-c.h &: $(GOOGLE_PROTO_DIR)/google/protobuf/%.proto
	@mkdir -p $(GEN)
	@echo "PROTO $<"
	$(Q)protoc-c -I$(GOOGLE_PROTO_DIR) --c_out=$(GEN) $<

$(PROTOC_GEN_KILN): $(PLUGIN_OBJ)
	@mkdir -p $(@D)
	@echo "LINK  $@"
	$(Q)$(CC) $(LDFLAGS) $^ -o $@ -lprotobuf-c

$(filter-out $(BUILD)/obj/common/%,$(PLUGIN_OBJ)): | $(PLUGIN_PB_H)

$(GEN)/%.kiln-methods.c $(GEN)/%.kiln-methods.h $(GEN)/%.kiln.c $(GEN)/%.kiln.h &: %.proto $(PROTOC_GEN_KILN)
	@mkdir -p $(GEN)
	@echo "KILN  $<"
	$(Q)protoc -I. --plugin=protoc-gen-kiln-c=$(PROTOC_GEN_KILN) --kiln-c_out=$(GEN) $<

$(GEN)/grpc/health/v1/health.kiln-methods.c $(GEN)/grpc/health/v1/health.kiln-methods.h \
$(GEN)/grpc/health/v1/health.kiln.c $(GEN)/grpc/health/v1/health.kiln.h &: $(HEALTH_PROTO) $(PROTOC_GEN_KILN)
	@mkdir -p $(GEN)
	@echo "KILN  $<"
	$(Q)protoc -I/usr/share/grpc-proto --plugin=protoc-gen-kiln-c=$(PROTOC_GEN_KILN) --kiln-c_out=$(GEN) $<

$(RPC_LIB): $(RPC_OBJ)
	@mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/obj/gen/%.o: $(GEN)/%.c
	@mkdir -p $(@D)
	@echo "CC    $<"
	$(Q)$(CC) $(KILN_CFLAGS) $(CFLAGS) -Wno-cast-qual -Wno-missing-prototypes -c $< -o $@

# Every object may include generated headers: generate them first (order-only).
$(BUILD)/obj/model_worker/main.o $(filter-out $(PROTO_OBJ),$(LIB_OBJ)) $(TEST_SUPPORT) $(UNIT_SRC:%.c=$(BUILD)/obj/%.o) \
    $(BENCH_SRC:%.c=$(BUILD)/obj/%.o) $(RPC_OBJ) $(FIXTURE_OBJ) $(CLI_OBJ): | $(PROTO_H)
# ... and protoc-gen-kiln-c's (the plugin itself links common/ objects: not those).
$(filter $(BUILD)/obj/server/%,$(LIB_OBJ)) $(METHODS_OBJ) $(RPC_OBJ) $(FIXTURE_OBJ) \
    $(patsubst %.c,$(BUILD)/obj/%.o,$(filter tests/unit/client/%,$(UNIT_SRC))): \
    | $(METHODS_H) $(STUBS_H) $(FIXTURE_H)

$(BUILD)/obj/%.cu.o: %.cu | $(BUILD)/.dir
	@mkdir -p $(@D)
	@echo "NVCC  $<"
	$(Q)$(NVCC) $(NVCCFLAGS) -MD -MF $(@:.o=.d) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(TEST_SUPPORT) $(LIB)
	@mkdir -p $(@D)
	@echo "LINK  $@"
	$(Q)$(CC) $(LDFLAGS) $^ -o $@ -lcmocka $(GRPC_LIBS) $(LDLIBS)

# The tool's unit tests link its server-free objects (a shorter stem wins over the rule above).
$(BUILD)/tests/unit/kiln/%: $(BUILD)/obj/tests/unit/kiln/%.o $(CLI_CORE_OBJ) $(TEST_SUPPORT) $(LIB)
	@mkdir -p $(@D)
	@echo "LINK  $@"
	$(Q)$(CC) $(LDFLAGS) $^ -o $@ -lcmocka $(GRPC_LIBS) $(LDLIBS)

# Client tests: the runtime, our stubs and the fixture's; they run the plugin and kiln-server.
# libkilnclient's own tests reach its internals (client/client_int.h), so they link its objects.
$(BUILD)/tests/unit/client/%: $(BUILD)/obj/tests/unit/client/%.o $(TEST_SUPPORT) $(FIXTURE_OBJ) \
        $(CLIENT_OBJ) $(RPC_LIB) $(LIB) | $(PROTOC_GEN_KILN) $(SERVER_BIN)
	@mkdir -p $(@D)
	@echo "LINK  $@"
	$(Q)$(CC) $(LDFLAGS) $^ -o $@ -lcmocka $(GRPC_LIBS) $(LDLIBS)
$(BUILD)/obj/tests/unit/client/%.o: KILN_CFLAGS += -Wno-cast-qual -DKILN_TEST_SOURCE_DIR=\"$(abspath .)\"

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIB)
	@mkdir -p $(@D)
	@echo "LINK  $@"
	$(Q)$(CC) $(LDFLAGS) $^ -o $@ $(GRPC_LIBS) $(LDLIBS)

$(BUILD)/obj/bench/bench_server.o: KILN_CFLAGS += -Wno-cast-qual
# The ONNX CPU kernels' loops (activations, elementwise ops, bias) are written to vectorize;
# GCC's -O2 cost model leaves most of them scalar.
$(BUILD)/obj/backends/onnx/cpu_%.o: KILN_CFLAGS += -ftree-vectorize -fvect-cost-model=dynamic

$(BUILD)/.dir:
	@mkdir -p $(BUILD) && touch $@

# The whole suite: this configuration's unit tests, then (from the default configuration) the
# ASan+UBSan and TSan builds of the same tests and a short run of every fuzz target.
# Each configuration appends its counts to build/test-summary; the last line sums them.
SUMMARY := build/test-summary
test:
ifeq ($(SAN),)
	@mkdir -p build && rm -f $(SUMMARY)
endif
	$(MAKE) --no-print-directory -j$(JOBS) tests
	KILN_TEST_SUMMARY=$(abspath $(SUMMARY)) KILN_TEST_CONFIG=$(BUILD) tests/run_unit.sh $(UNIT_BIN)
ifneq ($(SAN),thread)
	KILN_TEST_SUMMARY=$(abspath $(SUMMARY)) tests/integration/run.sh $(BUILD)
endif
ifeq ($(SAN),)
	$(MAKE) --no-print-directory SAN=address,undefined test
	$(MAKE) --no-print-directory SAN=thread test
	$(MAKE) --no-print-directory fuzz-smoke
	$(MAKE) --no-print-directory nocuda-test
	@tests/summarize.sh $(SUMMARY)
endif

# The tree without CUDA (KILN_CUDA=0: backends/onnx/gpu_none.c, tensor/cuda_none.c), as a
# machine without the CUDA toolkit builds it: the server and the CLI link, and the unit tests of
# the modules with a CUDA side pass there (their GPU paths answer UNAVAILABLE; the models are
# $(BUILD)'s).
NOCUDA := build/nocuda
NOCUDA_UNITS := tests/unit/backends/test_onnx_gpu tests/unit/backends/test_onnx_runtime \
                tests/unit/registry/test_registry tests/unit/tensor/test_shm \
                tests/unit/model_worker/test_engine
nocuda-test: $(MODEL_FILES)
	$(MAKE) --no-print-directory -j$(JOBS) KILN_CUDA=0 BUILD=$(NOCUDA) $(NOCUDA)/kiln-server \
	    $(NOCUDA)/kiln $(NOCUDA_UNITS:%=$(NOCUDA)/%)
	KILN_TEST_SUMMARY=$(abspath $(SUMMARY)) KILN_TEST_CONFIG=$(NOCUDA) \
	    KILN_TEST_BUILD_DIR=$(abspath $(BUILD)) tests/run_unit.sh $(NOCUDA_UNITS:%=$(NOCUDA)/%)

unit-test: tests
	tests/run_unit.sh $(UNIT_BIN)

integration-test: tests
	tests/integration/run.sh $(BUILD)

# GPU checks (run on the device machine through make bundle)
$(BUILD)/tests/gpu/cuda_shm_client: tests/gpu/cuda_shm_client.c $(LIB) | $(PROTO_H)
	@mkdir -p $(@D)
	@echo "CC    $@"
	$(Q)$(CC) $(LDFLAGS) -std=c11 -D_GNU_SOURCE -O2 -g -I. -I$(GEN) -I$(CUDA_HOME)/include $< $(LIB) -o $@ \
	    -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart $(GRPC_LIBS) $(LDLIBS)

# cuDNN's speed on ResNet-50's convolutions per layout (NHWC or not), for the GPU machine.
$(BUILD)/bench/cudnn_layouts: bench/cudnn_layouts.cu
	@mkdir -p $(@D)
	@echo "NVCC  $@"
	$(Q)$(NVCC) $(NVCCFLAGS) $< -o $@ -L$(CUDA_HOME)/lib64 -lcudnn

# A plugin that faults on the GPU (an illegal address), for the lost-GPU check of tests/gpu/run.sh.
$(BUILD)/plugins/cuda_fault.so: tests/gpu/cuda_fault.cu backends/plugin/kiln_plugin.h
	@mkdir -p $(@D)
	@echo "NVCC  $@"
	$(Q)$(NVCC) $(NVCCFLAGS) -shared -cudart shared -Ibackends/plugin $< -o $@

bundle:
	scripts/bundle.sh

# Python stubs for examples/infer_simple.py (the integration tests make their own).
pystubs:
	@mkdir -p $(BUILD)/py
	protoc -I. --python_out=$(BUILD)/py --grpc_out=$(BUILD)/py \
	    --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin proto/model_config.proto proto/grpc_service.proto
	protoc -I/usr/share/grpc-proto/grpc/health/v1 --python_out=$(BUILD)/py --grpc_out=$(BUILD)/py \
	    --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin health.proto

bench: $(BENCH_BIN) $(MODEL_FILES) $(SERVER_BIN)
	@for b in $(filter-out %/bench_onnx,$(BENCH_BIN)); do echo "== $$b"; $$b || exit 1; done
	@if /usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null; then \
	    echo "== bench/onnx_vs_torch.py"; /usr/bin/python3 bench/onnx_vs_torch.py --build $(BUILD); \
	else echo "== bench/onnx_vs_torch.py skipped: no python3-torch/torchvision (make deps-bench)"; fi

# Kiln's ONNX CPU backend against PyTorch alone (make deps-bench installs PyTorch).
bench-onnx: $(BUILD)/bench/bench_onnx
	/usr/bin/python3 bench/onnx_vs_torch.py --build $(BUILD)

# Fuzz targets: clang + libFuzzer + ASan/UBSan, built from the library sources directly.
build/fuzz/tests/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_SRC)
	@mkdir -p $(@D)
	@echo "FUZZ  $@"
	$(Q)$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -I. -I$(GEN) -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all $^ -o $@ -lpthread -lrt -lm -lprotobuf-c -lseccomp -ldl -lopenblas

fuzz: $(FUZZ_BIN)

fuzz-smoke: $(FUZZ_BIN)
	@set -o pipefail; for f in $(FUZZ_BIN); do echo "fuzz: $$f ($(FUZZ_RUNS) runs)"; \
	    name=$$(basename $$f); corpus=build/fuzz/corpus/$$name; mkdir -p $$corpus; \
	    [ -d tests/fuzz/corpus/$$name ] && cp tests/fuzz/corpus/$$name/* $$corpus/; \
	    $$f -runs=$(FUZZ_RUNS) -seed=1 -artifact_prefix=build/fuzz/ $$corpus 2>&1 | tail -n 3 \
	    || exit 1; done

# docs/configuration.md is generated from kiln-server's flag table (tests check it is current)
docs: $(SERVER_BIN)
	$(SERVER_BIN) --help-markdown > docs/configuration.md

deps:
	scripts/deps.sh

deps-bench:
	scripts/deps.sh --bench

clean:
	rm -rf build compile_commands.json examples/models/*/1/model.so

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' '*.cu' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run -Werror $(FORMAT_FILES)

# House rules a machine can check (module boundaries).
check:
	scripts/check-boundaries.sh

compile_commands:
	bear --output compile_commands.json -- $(MAKE) -B -j$(JOBS) all $(BENCH_BIN)

help:
	@echo "make [all]            build the library and the tests ($(BUILD))"
	@echo "make test             unit tests here, then ASan+UBSan, TSan, fuzz smoke runs, nocuda-test"
	@echo "make nocuda-test      KILN_CUDA=0 build (build/nocuda) and its CUDA-side unit tests"
	@echo "make SAN=... test     one sanitizer configuration only (address,undefined | thread)"
	@echo "make bench            build and run the benchmarks (figures as ratios)"
	@echo "make docs             regenerate docs/configuration.md from kiln-server's flags"
	@echo "make bench-onnx       Kiln's ONNX CPU backend against PyTorch (needs make deps-bench)"
	@echo "make deps-bench       also install PyTorch and torchvision (Debian) for bench-onnx"
	@echo "make fuzz             build the libFuzzer targets under build/fuzz"
	@echo "make deps             install the Debian packages Kiln needs (as root or via sudo)"
	@echo "make run              build and serve examples/models on 0.0.0.0:8001 (RUN_FLAGS=...)"
	@echo "make client           libkilnclient (.so.0 and .a) in $(BUILD)"
	@echo "make $(CLI_BIN)    the kiln command-line tool (docs/cli.md)"
	@echo "make install          kiln_client.h, libkilnclient, kilnclient.pc (+ CLIENT_PROGRAMS)"
	@echo "                      under \$$(DESTDIR)\$$(PREFIX) (PREFIX=$(PREFIX)); make uninstall"
	@echo "make format / format-check / check / compile_commands / clean"
	@echo "variables: SAN, BUILD, KILN_CUDA=0|1, JOBS, CC, FUZZ_RUNS, PREFIX, DESTDIR, CLIENT_PROGRAMS"

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
