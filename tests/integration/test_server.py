"""Integration tests: a real kiln-server on 127.0.0.1 (ephemeral port) and real gRPC clients.

Run through tests/integration/run.sh, which generates the Python stubs from our .proto files
and sets KILN_BUILD (the build directory with kiln-server, models/ and test-models/) and
KILN_PY (the generated stubs).
"""
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.environ["KILN_PY"])

import grpc  # noqa: E402
import numpy as np  # noqa: E402

import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402
from proto import grpc_service_pb2 as pb  # noqa: E402
from proto import grpc_service_pb2_grpc as pbg  # noqa: E402

BUILD = os.environ["KILN_BUILD"]
MiB = 1 << 20


def make_repo(extra=None):
    """A repository with the example models, misbehave, and any extra {name: config text}."""
    repo = tempfile.mkdtemp(prefix="kiln-it-repo-")
    for sub, name in [("models", "simple"), ("models", "simple_string"),
                      ("models", "simple_identity"), ("models", "identity_fp32"),
                      ("test-models", "misbehave")]:
        os.makedirs(f"{repo}/{name}/1")
        shutil.copy(f"{BUILD}/{sub}/{name}/config.pbtxt", f"{repo}/{name}/config.pbtxt")
        os.symlink(f"{BUILD}/{sub}/{name}/1/model.so", f"{repo}/{name}/1/model.so")
    for name, text in (extra or {}).items():
        os.makedirs(f"{repo}/{name}/1")
        with open(f"{repo}/{name}/config.pbtxt", "w") as f:
            f.write(text)
        os.symlink(f"{BUILD}/plugins/identity.so", f"{repo}/{name}/1/model.so")
    return repo


class Server:
    """Starts kiln-server on 127.0.0.1:0 and waits (bounded) for it to serve."""

    def __init__(self, *flags, repo=None):
        self.repo = repo or make_repo()
        self.tmp = tempfile.mkdtemp(prefix="kiln-it-")
        self.port_file = f"{self.tmp}/port"
        self.metrics_port_file = f"{self.tmp}/metrics-port"
        self.log = open(f"{self.tmp}/server.log", "w+")
        args = [f"{BUILD}/kiln-server", "--address=127.0.0.1:0", f"--model-repository={self.repo}",
                f"--port-file={self.port_file}", "--grace-ms=5000",
                "--metrics-address=127.0.0.1:0", f"--metrics-port-file={self.metrics_port_file}",
                *flags]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("kiln-server did not start:\n" + self.logs())
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.port = int(f.read())
        self.metrics_port = None  # written just after the gRPC port, when metrics are on
        if os.path.exists(self.metrics_port_file) or "--metrics=false" not in flags:
            while not os.path.exists(self.metrics_port_file) and time.time() < deadline:
                time.sleep(0.01)
            with open(self.metrics_port_file) as f:
                self.metrics_port = int(f.read())
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{self.port}",
            options=[("grpc.max_receive_message_length", 1 << 30),
                     ("grpc.max_send_message_length", 1 << 30)])
        self.stub = pbg.GRPCInferenceServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def logs(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig=signal.SIGTERM):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.repo, ignore_errors=True)
        return code


def add_input(req, name, arr, datatype=None, raw=True):
    t = req.inputs.add()
    t.name = name
    t.datatype = datatype or {np.int32: "INT32", np.float32: "FP32"}[arr.dtype.type]
    t.shape.extend(arr.shape)
    if raw:
        req.raw_input_contents.append(arr.tobytes())
    return t


def bytes_tensor(strings):
    out = b""
    for s in strings:
        b = s.encode() if isinstance(s, str) else s
        out += len(b).to_bytes(4, "little") + b
    return out


def parse_bytes(buf):
    out, off = [], 0
    while off < len(buf):
        n = int.from_bytes(buf[off:off + 4], "little")
        out.append(buf[off + 4:off + 4 + n])
        off += 4 + n
    return out


def simple_request(a=None, b=None, model="simple"):
    a = np.arange(16, dtype=np.int32).reshape(1, 16) if a is None else a
    b = np.full((1, 16), 3, dtype=np.int32) if b is None else b
    req = pb.ModelInferRequest(model_name=model, id="req-1")
    add_input(req, "INPUT0", a)
    add_input(req, "INPUT1", b)
    return req, a, b


class ShmRegion:
    """A POSIX shared-memory object made by the client (as tritonclient does)."""

    def __init__(self, size):
        self.key = f"/kiln-it-{os.getpid()}-{id(self)}"
        self.path = "/dev/shm" + self.key
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
        os.ftruncate(self.fd, size)
        self.mem = mmap.mmap(self.fd, size)

    def close(self):
        self.mem.close()
        os.close(self.fd)
        os.unlink(self.path)


def shm_params(t, region, size, offset=0):
    t.parameters["shared_memory_region"].string_param = region
    t.parameters["shared_memory_byte_size"].int64_param = size
    if offset:
        t.parameters["shared_memory_offset"].int64_param = offset


class Base(unittest.TestCase):
    flags = ()

    @classmethod
    def setUpClass(cls):
        cls.server = Server(*cls.flags)
        cls.s = cls.server.stub

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        assert code == 0, f"kiln-server exited with {code}"

    def assertCode(self, code, fn, *args, contains=None):
        with self.assertRaises(grpc.RpcError) as ctx:
            fn(*args)
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        if contains:
            self.assertIn(contains, ctx.exception.details())
        return ctx.exception.details()


class TestRpcs(Base):
    def test_live_ready_metadata(self):
        self.assertTrue(self.s.ServerLive(pb.ServerLiveRequest()).live)
        self.assertTrue(self.s.ServerReady(pb.ServerReadyRequest()).ready)
        md = self.s.ServerMetadata(pb.ServerMetadataRequest())
        self.assertEqual(md.name, "kiln")
        self.assertIn("system_shared_memory", md.extensions)
        self.assertTrue(self.s.ModelReady(pb.ModelReadyRequest(name="simple")).ready)
        self.assertTrue(self.s.ModelReady(pb.ModelReadyRequest(name="simple", version="1")).ready)
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.ModelReady,
                        pb.ModelReadyRequest(name="nope"), contains="'nope' is not in the repository")
        mm = self.s.ModelMetadata(pb.ModelMetadataRequest(name="simple"))
        self.assertEqual(mm.versions, ["1"])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in mm.inputs],
                         [("INPUT0", "INT32", [-1, 16]), ("INPUT1", "INT32", [-1, 16])])
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.ModelMetadata,
                        pb.ModelMetadataRequest(name="nope"))
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.ModelMetadata,
                        pb.ModelMetadataRequest(name="simple", version="9"),
                        contains="no version 9")

    def test_model_config_is_the_config(self):
        cfg = self.s.ModelConfig(pb.ModelConfigRequest(name="simple")).config
        self.assertEqual(cfg.name, "simple")
        self.assertEqual(cfg.max_batch_size, 8)
        self.assertEqual([i.name for i in cfg.input], ["INPUT0", "INPUT1"])
        self.assertEqual(list(cfg.input[0].dims), [16])

    def test_simple_infer(self):
        req, a, b = simple_request()
        r = self.s.ModelInfer(req)
        self.assertEqual((r.model_name, r.model_version, r.id), ("simple", "1", "req-1"))
        self.assertEqual([o.name for o in r.outputs], ["OUTPUT0", "OUTPUT1"])
        self.assertEqual(list(r.outputs[0].shape), [1, 16])
        np.testing.assert_array_equal(np.frombuffer(r.raw_output_contents[0], np.int32), (a + b).ravel())
        np.testing.assert_array_equal(np.frombuffer(r.raw_output_contents[1], np.int32), (a - b).ravel())
        self.assertEqual(r.parameters["kiln_copied_input_bytes"].int64_param, 128)
        # only OUTPUT1, and a batch of 3
        a3 = np.arange(48, dtype=np.int32).reshape(3, 16)
        req, _, _ = simple_request(a3, a3 * 2)
        req.outputs.add().name = "OUTPUT1"
        r = self.s.ModelInfer(req)
        self.assertEqual([o.name for o in r.outputs], ["OUTPUT1"])
        np.testing.assert_array_equal(np.frombuffer(r.raw_output_contents[0], np.int32), (-a3).ravel())

    def test_typed_contents(self):
        req = pb.ModelInferRequest(model_name="simple")
        for name, vals in (("INPUT0", range(16)), ("INPUT1", [10] * 16)):
            t = req.inputs.add(name=name, datatype="INT32", shape=[1, 16])
            t.contents.int_contents.extend(vals)
        r = self.s.ModelInfer(req)
        self.assertEqual(list(np.frombuffer(r.raw_output_contents[0], np.int32)), [i + 10 for i in range(16)])
        self.assertEqual(r.parameters["kiln_copied_input_bytes"].int64_param, 128)

    def test_simple_string(self):
        req = pb.ModelInferRequest(model_name="simple_string")
        for name, vals in (("INPUT0", [str(i) for i in range(16)]), ("INPUT1", ["7"] * 16)):
            t = req.inputs.add(name=name, datatype="BYTES", shape=[1, 16])
            req.raw_input_contents.append(bytes_tensor(vals))
        r = self.s.ModelInfer(req)
        self.assertEqual(parse_bytes(r.raw_output_contents[0]), [str(i + 7).encode() for i in range(16)])
        self.assertEqual(parse_bytes(r.raw_output_contents[1]), [str(i - 7).encode() for i in range(16)])
        # typed bytes_contents work too
        req = pb.ModelInferRequest(model_name="simple_string")
        for name in ("INPUT0", "INPUT1"):
            t = req.inputs.add(name=name, datatype="BYTES", shape=[1, 16])
            t.contents.bytes_contents.extend([b"5"] * 16)
        r = self.s.ModelInfer(req)
        self.assertEqual(parse_bytes(r.raw_output_contents[0]), [b"10"] * 16)

    def test_simple_identity_bytes(self):
        vals = [b"", b"kiln", bytes(range(256)), "é".encode()]
        req = pb.ModelInferRequest(model_name="simple_identity")
        req.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 4])
        req.raw_input_contents.append(bytes_tensor(vals))
        r = self.s.ModelInfer(req)
        self.assertEqual(parse_bytes(r.raw_output_contents[0]), vals)

    def test_statistics_and_index(self):
        self.s.ModelInfer(simple_request()[0])
        st = self.s.ModelStatistics(pb.ModelStatisticsRequest(name="simple"))
        self.assertEqual(len(st.model_stats), 1)
        m = st.model_stats[0]
        self.assertGreaterEqual(m.inference_count, 1)
        self.assertGreaterEqual(m.execution_count, 1)
        self.assertGreater(m.inference_stats.compute_infer.ns, 0)
        self.assertGreater(m.last_inference, 1.6e12)
        idx = self.s.RepositoryIndex(pb.RepositoryIndexRequest())
        names = {(m.name, m.state) for m in idx.models}
        self.assertIn(("simple", "READY"), names)
        self.assertIn(("misbehave", "READY"), names)
        ready = self.s.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))
        self.assertTrue(all(m.state == "READY" for m in ready.models))

    def test_unimplemented_and_unknown(self):
        self.assertCode(grpc.StatusCode.UNIMPLEMENTED, self.s.TraceSetting, pb.TraceSettingRequest())
        self.assertCode(grpc.StatusCode.UNIMPLEMENTED, self.s.LogSettings, pb.LogSettingsRequest())
        call = self.server.channel.unary_unary("/inference.GRPCInferenceService/NoSuchMethod")
        details = self.assertCode(grpc.StatusCode.UNIMPLEMENTED, call, b"", )
        self.assertIn("unknown method", details)

    def test_cuda_shm_without_gpu(self):
        self.assertCode(grpc.StatusCode.UNAVAILABLE, self.s.CudaSharedMemoryRegister,
                        pb.CudaSharedMemoryRegisterRequest(name="c", raw_handle=b"x" * 64, byte_size=64),
                        contains="CUDA shared memory is unavailable")
        self.assertEqual(len(self.s.CudaSharedMemoryStatus(pb.CudaSharedMemoryStatusRequest()).regions), 0)

    def test_health(self):
        h = self.server.health
        self.assertEqual(h.Check(health_pb2.HealthCheckRequest(service="")).status,
                         health_pb2.HealthCheckResponse.SERVING)
        self.assertEqual(h.Check(health_pb2.HealthCheckRequest(service="simple")).status,
                         health_pb2.HealthCheckResponse.SERVING)
        with self.assertRaises(grpc.RpcError) as ctx:
            h.Check(health_pb2.HealthCheckRequest(service="nope"))
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
        watch = h.Watch(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        watch.cancel()

    def test_stream_infer(self):
        def requests():
            for i in range(50):
                req, _, _ = simple_request(np.full((1, 16), i, np.int32), np.ones((1, 16), np.int32))
                req.id = f"s{i}"
                yield req
            bad = pb.ModelInferRequest(model_name="simple", id="bad")
            yield bad
            yield simple_request()[0]
        responses = list(self.s.ModelStreamInfer(requests(), timeout=30))
        self.assertEqual(len(responses), 52)
        errors = [r for r in responses if r.error_message]
        self.assertEqual(len(errors), 1)
        self.assertIn("needs input 'INPUT0'", errors[0].error_message)
        ok = {r.infer_response.id: r.infer_response for r in responses if not r.error_message}
        for i in range(50):
            out = np.frombuffer(ok[f"s{i}"].raw_output_contents[0], np.int32)
            self.assertTrue((out == i + 1).all())


class TestValidation(Base):
    def err(self, req, code=grpc.StatusCode.INVALID_ARGUMENT, contains=None):
        return self.assertCode(code, self.s.ModelInfer, req, contains=contains)

    def test_every_validation_error(self):
        req, a, b = simple_request()
        req.inputs[1].datatype = "FP32"
        self.err(req, contains="inputs[1] 'INPUT1': datatype FP32 does not match the model's INT32")
        req, a, b = simple_request()
        req.inputs[0].shape[1] = 15
        self.err(req, contains="inputs[0] 'INPUT0': shape [1,15] does not match [1,16] at dim 1")
        req, a, b = simple_request(np.zeros((9, 16), np.int32), np.zeros((9, 16), np.int32))
        self.err(req, contains="batch size 9 is outside 1..8 (max_batch_size)")
        req = pb.ModelInferRequest(model_name="simple")
        add_input(req, "INPUT0", np.zeros((1, 16), np.int32))
        self.err(req, contains="model 'simple' needs input 'INPUT1', which the request does not give")
        req, a, b = simple_request()
        add_input(req, "INPUT0", a)
        self.err(req, contains="inputs[2] 'INPUT0' is given twice")
        req, a, b = simple_request()
        req.inputs[1].name = "INPUT9"
        self.err(req, contains="inputs[1] 'INPUT9': model 'simple' has no input of that name")
        req, a, b = simple_request()
        req.raw_input_contents[0] = req.raw_input_contents[0][:-4]
        self.err(req, contains="inputs[0] 'INPUT0': byte size 60 does not match shape [1,16] of INT32 (64 bytes)")
        req, a, b = simple_request()
        del req.raw_input_contents[1]
        self.err(req, contains="raw_input_contents has 1 entries for 2 inputs")
        req, a, b = simple_request()
        req.inputs[0].contents.int_contents.extend(range(16))
        self.err(req, contains="contents must not be set when raw_input_contents is used")
        req, a, b = simple_request()
        req.outputs.add().name = "OUTPUT7"
        self.err(req, contains="outputs[0] 'OUTPUT7': model 'simple' has no output of that name")
        req, a, b = simple_request()
        req.outputs.add().name = "OUTPUT0"
        req.outputs.add().name = "OUTPUT0"
        self.err(req, contains="outputs[1] 'OUTPUT0' is requested twice")
        req = pb.ModelInferRequest(model_name="simple")
        for n in ("INPUT0", "INPUT1"):
            req.inputs.add(name=n, datatype="INT32", shape=[1, 16]).contents.int_contents.extend(range(15))
        self.err(req, contains="contents.int_contents holds 15 elements, shape needs 16")
        req = pb.ModelInferRequest(model_name="identity_fp32")
        req.inputs.add(name="INPUT0", datatype="FP16", shape=[1, 2]).contents.fp32_contents.extend([1, 2])
        self.err(req, contains="inputs[0] 'INPUT0': FP16 data must be sent in raw_input_contents")
        req = pb.ModelInferRequest(model_name="simple_identity")
        req.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 2])
        req.raw_input_contents.append(bytes_tensor(["ab"]) + b"\x09\x00\x00\x00x")
        self.err(req, contains="BYTES element 1 declares 9 bytes but only 1 remain")
        req, a, b = simple_request()
        req.inputs[0].datatype = "FLOAT"
        self.err(req, contains="datatype 'FLOAT' is not a KServe v2 datatype")
        req, a, b = simple_request()
        req.model_version = "abc"
        self.err(req, contains="model_version 'abc' is not a version number")
        req, a, b = simple_request()
        req.model_version = "7"
        self.err(req, grpc.StatusCode.NOT_FOUND, contains="model 'simple' has no version 7")
        req, a, b = simple_request(model="nope")
        self.err(req, grpc.StatusCode.NOT_FOUND, contains="model 'nope' is not in the repository")
        req = pb.ModelInferRequest(model_name="simple")
        t = req.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 16])
        shm_params(t, "no-such-region", 64)
        req.inputs.add(name="INPUT1", datatype="INT32", shape=[1, 16]).contents.int_contents.extend(range(16))
        self.err(req, grpc.StatusCode.NOT_FOUND, contains="unable to find shared memory region 'no-such-region'")
        req, a, b = simple_request()
        req.inputs[0].parameters["shared_memory_byte_size"].int64_param = 64
        self.err(req, contains="inputs[0]: shared_memory_byte_size/offset given without shared_memory_region")
        req, a, b = simple_request()
        req.inputs[0].parameters["shared_memory_region"].int64_param = 3
        self.err(req, contains="parameter shared_memory_region must be a string")
        req = pb.ModelInferRequest(model_name="simple_identity")
        req.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 1 << 62])
        req.raw_input_contents.append(bytes_tensor(["x"]))
        self.err(req, contains="inputs[0] 'INPUT0'")
        req = pb.ModelInferRequest(model_name="identity_fp32")
        req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 1 << 62])
        req.raw_input_contents.append(b"\0" * 16)
        self.err(req, contains="byte size overflows")
        # the server is still fine
        self.assertEqual(len(self.s.ModelInfer(simple_request()[0]).outputs), 2)


class TestSharedMemory(Base):
    def test_register_status_unregister(self):
        region = ShmRegion(4096)
        try:
            self.s.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
                name="r1", key=region.key, offset=0, byte_size=4096))
            self.assertCode(grpc.StatusCode.ALREADY_EXISTS, self.s.SystemSharedMemoryRegister,
                            pb.SystemSharedMemoryRegisterRequest(name="r1", key=region.key, byte_size=16),
                            contains="region 'r1' is already registered")
            details = self.assertCode(
                grpc.StatusCode.INVALID_ARGUMENT, self.s.SystemSharedMemoryRegister,
                pb.SystemSharedMemoryRegisterRequest(name="r2", key=region.key, offset=4000, byte_size=100),
                contains="offset 4000 + byte_size 100 = 4100 passes the object's size of 4096 bytes")
            self.assertNotIn(region.key, details)
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.SystemSharedMemoryRegister,
                            pb.SystemSharedMemoryRegisterRequest(name="r3", key="/../etc/passwd", byte_size=1),
                            contains="key must not")
            st = self.s.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
            self.assertEqual(st.regions["r1"].byte_size, 4096)
            self.assertEqual(st.regions["r1"].key, region.key)
            self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.SystemSharedMemoryStatus,
                            pb.SystemSharedMemoryStatusRequest(name="zz"))
            self.s.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name="r1"))
            self.assertEqual(len(self.s.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest()).regions), 0)
            self.s.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name="unknown"))
        finally:
            region.close()

    def test_simple_through_shm_with_zero_copies(self):
        region = ShmRegion(4 * 64)
        try:
            a = np.arange(16, dtype=np.int32)
            b = np.full(16, 5, dtype=np.int32)
            region.mem[0:64] = a.tobytes()
            region.mem[64:128] = b.tobytes()
            self.s.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
                name="io", key=region.key, byte_size=256))
            req = pb.ModelInferRequest(model_name="simple")
            shm_params(req.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 16]), "io", 64)
            shm_params(req.inputs.add(name="INPUT1", datatype="INT32", shape=[1, 16]), "io", 64, 64)
            shm_params(req.outputs.add(name="OUTPUT0"), "io", 64, 128)
            shm_params(req.outputs.add(name="OUTPUT1"), "io", 64, 192)
            r = self.s.ModelInfer(req)
            self.assertEqual(r.parameters["kiln_copied_input_bytes"].int64_param, 0)
            self.assertEqual(r.parameters["kiln_copied_output_bytes"].int64_param, 0)
            self.assertEqual([len(x) for x in r.raw_output_contents], [0, 0])
            self.assertEqual(list(r.outputs[0].shape), [1, 16])
            np.testing.assert_array_equal(np.frombuffer(region.mem[128:192], np.int32), a + b)
            np.testing.assert_array_equal(np.frombuffer(region.mem[192:256], np.int32), a - b)
            # windows that do not fit
            bad = pb.ModelInferRequest()
            bad.CopyFrom(req)
            bad.inputs[1].parameters["shared_memory_offset"].int64_param = 224
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.ModelInfer, bad,
                            contains="region 'io': offset 224 + byte size 64 = 288 passes the region's 256 bytes")
            bad.CopyFrom(req)
            bad.outputs[0].parameters["shared_memory_byte_size"].int64_param = 32
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.ModelInfer, bad,
                            contains="output 'OUTPUT0' needs 64 bytes but its shared memory window holds 32")
            bad.CopyFrom(req)
            bad.inputs[0].parameters["shared_memory_byte_size"].int64_param = 60
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.ModelInfer, bad,
                            contains="byte size 60 does not match shape [1,16]")
            self.s.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name=""))
        finally:
            region.close()

    def test_mixed_shm_and_raw_inputs_both_conventions(self):
        """raw_input_contents may hold one entry per input (shm ones empty) or, as Triton's
        clients send it, one per input not in shared memory."""
        region = ShmRegion(64)
        try:
            a = np.arange(16, dtype=np.int32)
            b = np.full((1, 16), 7, dtype=np.int32)
            region.mem[0:64] = a.tobytes()
            self.s.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
                name="mixed", key=region.key, byte_size=64))
            for raw in ([b.tobytes()], [b"", b.tobytes()]):
                req = pb.ModelInferRequest(model_name="simple")
                shm_params(req.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 16]),
                           "mixed", 64)
                req.inputs.add(name="INPUT1", datatype="INT32", shape=[1, 16])
                req.raw_input_contents.extend(raw)
                r = self.s.ModelInfer(req)
                out = {o.name: np.frombuffer(r.raw_output_contents[i], np.int32)
                       for i, o in enumerate(r.outputs)}
                np.testing.assert_array_equal(out["OUTPUT0"], a + 7)
            req.raw_input_contents.append(b.tobytes())  # three entries for two inputs
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.s.ModelInfer, req,
                            contains="raw_input_contents has 3 entries for 2 inputs, 1 of them "
                                     "not in shared memory")
            self.s.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(
                name="mixed"))
        finally:
            region.close()

    def test_identity_64mib_inline_and_shm(self):
        n = 64 * MiB // 4
        x = np.random.default_rng(1).standard_normal((1, n), dtype=np.float32)
        req = pb.ModelInferRequest(model_name="identity_fp32")
        add_input(req, "INPUT0", x)
        r = self.s.ModelInfer(req, timeout=60)
        self.assertEqual(r.parameters["kiln_copied_input_bytes"].int64_param, 64 * MiB)
        self.assertEqual(r.parameters["kiln_copied_output_bytes"].int64_param, 0)
        np.testing.assert_array_equal(np.frombuffer(r.raw_output_contents[0], np.float32), x.ravel())
        region = ShmRegion(128 * MiB)
        try:
            region.mem[0:64 * MiB] = x.tobytes()
            self.s.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
                name="big", key=region.key, byte_size=128 * MiB))
            req = pb.ModelInferRequest(model_name="identity_fp32")
            shm_params(req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, n]), "big", 64 * MiB)
            shm_params(req.outputs.add(name="OUTPUT0"), "big", 64 * MiB, 64 * MiB)
            r = self.s.ModelInfer(req, timeout=60)
            self.assertEqual(r.parameters["kiln_copied_input_bytes"].int64_param, 0)
            self.assertEqual(r.ByteSize() < 4096, True)  # no tensor data on the wire
            self.assertEqual(region.mem[64 * MiB:128 * MiB], x.tobytes())
            self.s.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name="big"))
        finally:
            region.close()


class TestNoShm(Base):
    flags = ("--allow-shm=false",)

    def test_shm_refused_inline_fine(self):
        self.assertCode(grpc.StatusCode.UNAVAILABLE, self.s.SystemSharedMemoryRegister,
                        pb.SystemSharedMemoryRegisterRequest(name="r", key="/x", byte_size=8),
                        contains="refuses client shared memory")
        req = pb.ModelInferRequest(model_name="simple")
        shm_params(req.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 16]), "r", 64)
        req.inputs.add(name="INPUT1", datatype="INT32", shape=[1, 16]).contents.int_contents.extend(range(16))
        self.assertCode(grpc.StatusCode.UNAVAILABLE, self.s.ModelInfer, req,
                        contains="send the tensor inline")
        self.assertEqual(len(self.s.ModelInfer(simple_request()[0]).outputs), 2)


class TestSmallMessages(Base):
    flags = ("--max-message-bytes=1M",)

    def test_too_large(self):
        x = np.zeros((1, 512 * 1024), np.float32)
        req = pb.ModelInferRequest(model_name="identity_fp32")
        add_input(req, "INPUT0", x)
        details = self.assertCode(grpc.StatusCode.RESOURCE_EXHAUSTED, self.s.ModelInfer, req)
        self.assertIn("vs. 1048576", details)  # both sizes are in gRPC's message


class TestSandbox(Base):
    def test_violation_reported_server_goes_on(self):
        req = pb.ModelInferRequest(model_name="misbehave")
        req.inputs.add(name="MODE", datatype="INT32", shape=[1]).contents.int_contents.append(1 | 2 | 4 | 8)
        details = self.assertCode(grpc.StatusCode.PERMISSION_DENIED, self.s.ModelInfer, req)
        for call in ("socket", "execve", "openat", "clone"):
            self.assertIn(call, details)
        self.assertIn("blocked by the sandbox", details)
        self.assertTrue(self.s.ServerLive(pb.ServerLiveRequest()).live)
        self.assertEqual(len(self.s.ModelInfer(simple_request()[0]).outputs), 2)
        logs = self.server.logs()
        self.assertIn('"msg":"sandbox blocked system call socket', logs)
        self.assertIn('"model":"misbehave"', logs)


class TestExplicitControl(Base):
    flags = ("--load=none",)

    def test_load_unload(self):
        self.assertCode(grpc.StatusCode.UNAVAILABLE, self.s.ModelInfer, simple_request()[0],
                        contains="model 'simple' is not ready")
        self.assertFalse(self.s.ModelReady(pb.ModelReadyRequest(name="simple")).ready)
        self.assertEqual(self.server.health.Check(health_pb2.HealthCheckRequest(service="simple")).status,
                         health_pb2.HealthCheckResponse.NOT_SERVING)
        watch = self.server.health.Watch(health_pb2.HealthCheckRequest(service="simple"), timeout=20)
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="simple"))
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
        self.assertEqual(len(self.s.ModelInfer(simple_request()[0]).outputs), 2)
        self.s.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="simple"))
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.NOT_SERVING)
        watch.cancel()
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.RepositoryModelUnload,
                        pb.RepositoryModelUnloadRequest(model_name="simple"), contains="is not loaded")
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.s.RepositoryModelLoad,
                        pb.RepositoryModelLoadRequest(model_name="nope"))
        idx = {m.name: m for m in self.s.RepositoryIndex(pb.RepositoryIndexRequest()).models}
        self.assertEqual(idx["simple"].state, "UNAVAILABLE")
        self.assertEqual(idx["simple"].reason, "unloaded")

    def test_load_unload_while_requests_run(self):
        self.s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="simple"))
        stop = threading.Event()
        outcomes = {"ok": 0, "unavailable": 0, "other": []}

        def client():
            stub = pbg.GRPCInferenceServiceStub(self.server.channel)
            req, a, b = simple_request()
            while not stop.is_set():
                try:
                    r = stub.ModelInfer(req, timeout=10)
                    out = np.frombuffer(r.raw_output_contents[0], np.int32)
                    if not (out == (a + b).ravel()).all():
                        outcomes["other"].append("wrong answer")
                    outcomes["ok"] += 1
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.UNAVAILABLE:
                        outcomes["unavailable"] += 1
                    else:
                        outcomes["other"].append(f"{e.code()} {e.details()}")
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in range(10):
            self.s.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="simple"))
            self.s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="simple"))
        stop.set()
        for t in threads:
            t.join(timeout=30)
        self.assertEqual(outcomes["other"], [])
        self.assertGreater(outcomes["ok"], 0)
        self.assertTrue(self.s.ServerLive(pb.ServerLiveRequest()).live)


class TestStartup(unittest.TestCase):
    def test_empty_repository_starts_fast_and_stops_cleanly(self):
        repo = tempfile.mkdtemp(prefix="kiln-it-empty-")
        t0 = time.time()
        server = Server(repo=repo)
        startup = time.time() - t0
        ready = [line for line in server.logs().splitlines() if "ready in" in line]
        self.assertEqual(len(ready), 1)
        print(f"\n  start-up on an empty repository: {ready[0].split('ready in ')[1].split(chr(34))[0]}"
              f" (server's own figure); {startup * 1000:.0f} ms to the port file from this client")
        self.assertTrue(server.stub.ServerReady(pb.ServerReadyRequest()).ready)
        self.assertEqual(server.stop(), 0)

    def test_bad_flags(self):
        r = subprocess.run([f"{BUILD}/kiln-server", "--no-such-flag"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown flag '--no-such-flag'", r.stderr)
        r = subprocess.run([f"{BUILD}/kiln-server", "--exec-threads=lots"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--exec-threads 'lots' is not a non-negative integer", r.stderr)
        r = subprocess.run([f"{BUILD}/kiln-server", "--help"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertIn("KILN_MODEL_REPOSITORY", r.stdout)
        r = subprocess.run([f"{BUILD}/kiln-server", "--model-repository=/nonexistent", "--address=127.0.0.1:0"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("model repository '/nonexistent' is not a readable directory", r.stderr)


if __name__ == "__main__":
    unittest.main()
