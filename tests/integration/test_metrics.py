"""Integration tests: the Prometheus endpoint of a real kiln-server after a known workload.

The scrape is parsed with prometheus_client's text parser (Debian's python3-prometheus-client),
so it must be valid text format 0.0.4; the counts must be exact."""
import ctypes
import os
import shutil
import subprocess
import tempfile
import unittest
import urllib.error
import urllib.request

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

import onnx_build as ob
from proto import grpc_service_pb2 as pb
from test_onnx import write_model
from test_server import BUILD, Server, ShmRegion, add_input, make_repo, simple_request

GATHER_CONFIG = """name: "gather_onnx" backend: "onnx" max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 3 ] } ]"""


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def samples(text):
    """{(name, frozenset(labels)): value} for every sample."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def get(m, name, **labels):
    return m[(name, frozenset(labels.items()))]


class TestMetrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.repo = make_repo()
        write_model(cls.repo, "gather_onnx", GATHER_CONFIG, ob.gather_model())
        write_model(cls.repo, "broken_onnx", GATHER_CONFIG.replace("gather_onnx", "broken_onnx"),
                    b"not a model")  # a load failure
        cls.server = Server(repo=cls.repo)
        cls.s = cls.server.stub

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.repo, ignore_errors=True)

    def test_known_workload_exact_counts(self):
        copied = {"in": 0, "out": 0}  # what the responses say was copied

        def infer(req):
            r = self.s.ModelInfer(req, timeout=30)
            copied["in"] += r.parameters["kiln_copied_input_bytes"].int64_param
            copied["out"] += r.parameters["kiln_copied_output_bytes"].int64_param

        for i in range(5):  # one after another: five executions of one row
            infer(simple_request(np.full((1, 16), i, np.int32))[0])
        two = np.zeros((2, 16), np.int32)  # two rows in one request
        infer(simple_request(two, two)[0])
        self.assertEqual(copied["in"], 7 * 2 * 64)  # the raw inputs, once each
        good = pb.ModelInferRequest(model_name="gather_onnx")
        add_input(good, "X", np.zeros((1, 3), np.float32))
        self.s.ModelInfer(good, timeout=30)
        bad = pb.ModelInferRequest(model_name="gather_onnx")
        add_input(bad, "X", np.full((1, 3), 9, np.float32))
        with self.assertRaises(grpc.RpcError):
            self.s.ModelInfer(bad, timeout=30)
        region = ShmRegion(4096)
        self.s.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
            name="m-region", key=region.key, offset=0, byte_size=4096))
        try:
            status, ctype, text = scrape(self.server.metrics_port)
        finally:
            self.s.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(
                name="m-region"))
            region.close()
        self.assertEqual(status, 200)
        self.assertIn("version=0.0.4", ctype)
        m = samples(text)
        simple = {"model": "simple", "version": "1"}
        gather = {"model": "gather_onnx", "version": "1"}
        self.assertEqual(get(m, "kiln_model_request_success_total", **simple), 6)
        self.assertEqual(get(m, "kiln_model_request_failure_total", **simple), 0)
        self.assertEqual(get(m, "kiln_model_inference_total", **simple), 7)
        self.assertEqual(get(m, "kiln_model_execution_total", **simple), 6)
        self.assertEqual(get(m, "kiln_model_request_success_total", **gather), 1)
        self.assertEqual(get(m, "kiln_model_request_failure_total", **gather), 1)
        self.assertEqual(get(m, "kiln_model_pending_requests", **simple), 0)
        # histograms: one observation per request (per execution for compute)
        self.assertEqual(get(m, "kiln_model_request_duration_seconds_count", **simple), 6)
        self.assertEqual(get(m, "kiln_model_request_duration_seconds_bucket", le="+Inf",
                             **simple), 6)
        self.assertGreater(get(m, "kiln_model_request_duration_seconds_sum", **simple), 0)
        self.assertEqual(get(m, "kiln_model_queue_duration_seconds_count", **simple), 6)
        self.assertEqual(get(m, "kiln_model_compute_duration_seconds_count", **simple), 6)
        for phase in ("input", "infer", "output"):
            name = f"kiln_model_compute_{phase}_duration_seconds"
            self.assertEqual(get(m, f"{name}_count", **simple), 6, phase)
            self.assertEqual(get(m, f"{name}_count", **gather), 2, phase)
        self.assertEqual(get(m, "kiln_model_batch_size_bucket", le="1", **simple), 5)
        self.assertEqual(get(m, "kiln_model_batch_size_bucket", le="2", **simple), 6)
        self.assertEqual(get(m, "kiln_model_batch_size_count", **simple), 6)
        self.assertEqual(get(m, "kiln_model_batch_size_sum", **simple), 7)
        # buckets are cumulative
        les = sorted((float(dict(k[1])["le"]), v) for k, v in m.items()
                     if k[0] == "kiln_model_request_duration_seconds_bucket"
                     and dict(k[1])["model"] == "simple")
        self.assertEqual([v for _, v in les], sorted(v for _, v in les))
        self.assertEqual(get(m, "kiln_model_state", state="READY", **simple), 1)
        self.assertGreater(get(m, "kiln_model_load_duration_seconds", **simple), 0)
        self.assertGreater(get(m, "kiln_model_host_memory_bytes", **gather), 0)
        self.assertEqual(get(m, "kiln_model_copied_bytes_total", direction="in", **simple),
                         copied["in"])
        self.assertEqual(get(m, "kiln_model_copied_bytes_total", direction="out", **simple),
                         copied["out"])
        self.assertEqual(get(m, "kiln_registry_load_failures_total"), 1)
        self.assertGreaterEqual(get(m, "kiln_registry_loads_total"), 6)
        self.assertEqual(get(m, "kiln_registry_evictions_total"), 0)
        self.assertGreater(get(m, "kiln_registry_host_bytes"), 0)
        self.assertEqual(get(m, "kiln_shm_regions"), 1)
        self.assertEqual(get(m, "kiln_shm_mapped_bytes"), 4096)
        after = samples(scrape(self.server.metrics_port)[2])
        self.assertEqual(get(after, "kiln_shm_regions"), 0)
        # GPU figures come from NVML when the host has it; without it they are absent, not 0
        gpus = [k for k in m if k[0].startswith("kiln_gpu_")]
        try:
            ctypes.CDLL("libnvidia-ml.so.1")
        except OSError:
            self.assertEqual(gpus, [])
        else:
            for k in gpus:
                self.assertIn("gpu", dict(k[1]))

    def test_wrong_path_and_method(self):
        with self.assertRaises(urllib.error.HTTPError) as ctx:
            scrape(self.server.metrics_port, "/nope")
        self.assertEqual(ctx.exception.code, 404)
        self.assertIn(b"/metrics", ctx.exception.read())
        req = urllib.request.Request(f"http://127.0.0.1:{self.server.metrics_port}/metrics",
                                     data=b"x", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as ctx:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(ctx.exception.code, 405)


class TestMetricsFlags(unittest.TestCase):
    def test_off_and_custom_path(self):
        off = Server("--metrics=false")
        try:
            self.assertIsNone(off.metrics_port)
            self.assertNotIn("metrics on", off.logs())
        finally:
            off.stop()
        custom = Server("--metrics-path=/prom")
        try:
            self.assertEqual(scrape(custom.metrics_port, "/prom")[0], 200)
        finally:
            custom.stop()

    def test_slow_requests_are_logged_with_their_id(self):
        slowq = ('name: "slowq" backend: "plugin" max_batch_size: 8 '
                 'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ] '
                 'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ] '
                 # a lone request waits 60 ms for company
                 'dynamic_batching { preferred_batch_size: [ 8 ] '
                 'max_queue_delay_microseconds: 60000 }')
        srv = Server("--slow-request-ms=30", repo=make_repo({"slowq": slowq}))
        try:
            fast, _, _ = simple_request()
            srv.stub.ModelInfer(fast, timeout=30, metadata=[("x-request-id", "fast-one")])
            req = pb.ModelInferRequest(model_name="slowq")
            add_input(req, "INPUT0", np.ones((1, 4), np.float32))
            _, call = srv.stub.ModelInfer.with_call(req, timeout=30,
                                                    metadata=[("x-request-id", "slow-one")])
            self.assertIn(("x-request-id", "slow-one"), call.trailing_metadata())
            logs = srv.logs().splitlines()
        finally:
            srv.stop()
        slow = [line for line in logs if "slow request" in line]
        self.assertEqual(len(slow), 1, "\n".join(logs))
        self.assertIn('"request_id":"slow-one"', slow[0])
        self.assertIn('"model":"slowq"', slow[0])
        self.assertIn('"level":"warn"', slow[0])

    def test_bad_address_fails_startup(self):
        tmp = tempfile.mkdtemp(prefix="kiln-it-metrics-")
        try:
            for addr, msg in [("nonsense", "is not host:port"),
                              ("203.0.113.7:0", "cannot serve metrics on 203.0.113.7:0")]:
                r = subprocess.run([f"{BUILD}/kiln-server", "--address=127.0.0.1:0",
                                    f"--model-repository={tmp}", "--load=none",
                                    f"--metrics-address={addr}"],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(msg, r.stderr + r.stdout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
