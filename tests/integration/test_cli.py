"""Integration tests of the `kiln` command-line tool: the real binary against a real kiln-server
on 127.0.0.1 (ephemeral port), outputs checked with numpy and json.

Run through tests/integration/run.sh (KILN_BUILD is the build directory with kiln and
kiln-server).
"""
import csv
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import numpy as np

import test_scheduling as tsch  # noqa: E402  (modules, so their test classes do not run twice)
import test_server as ts  # noqa: E402

BUILD = ts.BUILD
KILN = f"{BUILD}/kiln"

# identity models for each NumPy dtype: the .npy round trip through the server
DTYPES = {"int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
          "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
          "float16": "FP16", "float32": "FP32", "float64": "FP64", "bool": "BOOL"}


def identity_config(name, dt):
    return (f'name: "{name}" backend: "plugin" max_batch_size: 0 '
            f'input [ {{ name: "INPUT0" data_type: TYPE_{dt} dims: [ -1, -1 ] }} ] '
            f'output [ {{ name: "OUTPUT0" data_type: TYPE_{dt} dims: [ -1, -1 ] }} ]')


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        extra = {f"id_{k}": identity_config(f"id_{k}", v) for k, v in DTYPES.items()}
        cls.server = ts.Server(repo=ts.make_repo(extra))
        cls.url = f"127.0.0.1:{cls.server.port}"
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cli-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert cls.server.stop() == 0

    def kiln(self, *args, url=True, code=0, timeout=120):
        cmd = [KILN, *args] + (["--url", self.url] if url else [])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if code is not None:
            self.assertEqual(r.returncode, code, f"{cmd}\nstdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def kjson(self, *args):
        r = self.kiln(*args, "--json")
        return json.loads(r.stdout)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def save(self, name, arr):
        p = self.path(name)
        np.save(p, arr)
        return p

    # ------------------------------------------------------------ help and usage

    def test_help_on_every_command(self):
        r = self.kiln("--help", url=False)
        for word in ("health", "perf MODEL", "exit codes", "2  usage error", "KILN_URL"):
            self.assertIn(word, r.stdout)
        for cmd in ("health", "models", "metadata", "config", "stats", "load", "unload", "infer",
                    "perf"):
            r = self.kiln(cmd, "--help", url=False)
            self.assertIn(f"usage: kiln {cmd}", r.stdout)
            self.assertIn("--tls-ca", r.stdout)
            self.assertEqual(r.stderr, "")
        self.assertIn("--out-dir", self.kiln("help", "infer", url=False).stdout)
        self.assertIn("kiln 0.1.0", self.kiln("--version", url=False).stdout)

    def test_usage_errors_exit_2(self):
        for args, msg in ((["frob"], "unknown command 'frob'"),
                          (["metadata"], "metadata: MODEL is required"),
                          (["models", "--bogus"], "unknown option '--bogus'"),
                          (["models", "--timeout", "soon"], "'soon' is not a duration"),
                          (["perf", "simple", "--rate", "5", "--concurrency", "2"], "exclude"),
                          (["infer", "simple", "--input", "INPUT0"], "is not NAME=VALUE"),
                          ([], "no command given")):
            r = self.kiln(*args, url=False, code=2)
            self.assertIn(msg, r.stderr)
            self.assertEqual(r.stdout, "")

    # ------------------------------------------------------------ server state

    def test_health(self):
        r = self.kiln("health")
        self.assertIn("live, ready", r.stdout)
        j = self.kjson("health", "simple")
        self.assertEqual(j, {"url": self.url, "live": True, "ready": True, "model": "simple",
                             "model_ready": True})
        r = self.kiln("health", "nope", code=1)
        self.assertIn("kiln: health: model 'nope' ready: NOT_FOUND: ", r.stderr)
        self.assertIn("'nope' is not in the repository", r.stderr)

    def test_health_not_ready_exit_3(self):
        self.kiln("unload", "simple_string")
        try:
            r = self.kiln("health", "simple_string", code=3)
            self.assertIn("model simple_string: NOT ready", r.stdout)
            self.assertFalse(self.kjson("models")["models"] == [])
        finally:
            self.kiln("load", "simple_string")
        self.kiln("health", "simple_string")

    def test_models(self):
        j = self.kjson("models")
        by = {m["name"]: m for m in j["models"]}
        self.assertEqual(by["simple"]["state"], "READY")
        self.assertIn("id_int8", by)
        r = self.kiln("models")
        self.assertRegex(r.stdout, r"NAME\s+VERSION\s+STATE")
        self.assertRegex(r.stdout, r"\nsimple\s+1\s+READY")
        self.assertTrue(all(m["state"] == "READY" for m in self.kjson("models", "--ready")["models"]))

    def test_metadata(self):
        j = self.kjson("metadata", "simple")
        self.assertEqual(j["name"], "simple")
        self.assertEqual(j["versions"], ["1"])
        self.assertEqual(j["inputs"], [{"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
                                       {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]}])
        self.assertEqual([o["name"] for o in j["outputs"]], ["OUTPUT0", "OUTPUT1"])
        r = self.kiln("metadata", "simple")
        self.assertRegex(r.stdout, r"inputs:\n  INPUT0\s+INT32\s+\[-1,16\]")
        r = self.kiln("metadata", "nope", code=1)
        self.assertIn("kiln: metadata: nope: NOT_FOUND:", r.stderr)
        r = self.kiln("metadata", "simple", "--model-version", "9", code=1)
        self.assertIn("no version 9", r.stderr)

    def test_config(self):
        j = self.kjson("config", "simple")
        cfg = j.get("config", j)
        self.assertEqual(cfg["name"], "simple")
        self.assertEqual(cfg["maxBatchSize"], 8)
        r = self.kiln("config", "simple")
        self.assertIn('\n  "', r.stdout)  # indented for people
        self.assertEqual(json.loads(r.stdout), j)

    def test_stats(self):
        self.kiln("infer", "simple", "--input", "INPUT0=json:" + json.dumps(list(range(16))),
                  "--input", "INPUT1=json:" + json.dumps([1] * 16))
        j = self.kjson("stats", "simple")
        ms = j["modelStats"]
        self.assertEqual(ms[0]["name"], "simple")
        self.assertGreaterEqual(int(ms[0]["inferenceStats"]["success"]["count"]), 1)
        r = self.kiln("stats")
        self.assertRegex(r.stdout, r"MODEL\s+VERSION\s+SUCCESS")
        self.assertRegex(r.stdout, r"\nsimple\s+1\s+[1-9]")

    def test_load_unload(self):
        r = self.kiln("unload", "id_int16")
        self.assertEqual(r.stdout, "id_int16: unloaded\n")
        by = {m["name"]: m for m in self.kjson("models")["models"]}
        self.assertNotEqual(by["id_int16"]["state"], "READY")
        self.assertEqual(self.kjson("load", "id_int16"), {"model": "id_int16", "loaded": True})
        r = self.kiln("load", "nope", code=1)
        self.assertIn("kiln: load: nope: NOT_FOUND:", r.stderr)

    # ------------------------------------------------------------ infer

    def test_infer_npy_in_and_out(self):
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        b = np.full((1, 16), 3, dtype=np.int32)
        out = self.path("out-npy")
        r = self.kiln("infer", "simple", "--input", f"INPUT0={self.save('a.npy', a)}",
                      "--input", f"INPUT1={self.save('b.npy', b)}", "--out-dir", out)
        self.assertIn("OUTPUT0 INT32 [1,16] -> ", r.stdout)
        self.assertIn("[[3, 4, 5,", r.stdout)
        o0, o1 = np.load(f"{out}/OUTPUT0.npy"), np.load(f"{out}/OUTPUT1.npy")
        self.assertEqual(o0.dtype, np.int32)
        self.assertEqual(o0.shape, (1, 16))
        np.testing.assert_array_equal(o0, a + b)
        np.testing.assert_array_equal(o1, a - b)
        # one dimension short: a batch of one is added; --output picks one output
        j = self.kjson("infer", "simple", "--input", f"INPUT0={self.save('a1.npy', a[0])}",
                       "--input", f"INPUT1={self.save('b1.npy', b[0])}", "--output", "OUTPUT1",
                       "--request-id", "r-7")
        self.assertEqual(j["model"], "simple")
        self.assertEqual(j["id"], "r-7")
        self.assertEqual([o["name"] for o in j["outputs"]], ["OUTPUT1"])
        self.assertEqual(j["outputs"][0]["shape"], [1, 16])
        self.assertEqual(j["outputs"][0]["data"], (a - b).tolist())

    def test_infer_batch_and_npy_versions(self):
        a = np.arange(48, dtype=np.int32).reshape(3, 16)
        p = self.path("v2.npy")
        with open(p, "wb") as f:  # format 2.0, as NumPy writes for very large headers
            np.lib.format.write_array(f, a, version=(2, 0))
        j = self.kjson("infer", "simple", "--input", f"INPUT0={p}", "--input", f"INPUT1={p}")
        self.assertEqual(j["outputs"][0]["data"], (2 * a).tolist())

    def test_infer_json_inputs(self):
        j = self.kjson("infer", "simple", "--input", "INPUT0=json:" + json.dumps([list(range(16))]),
                       "--input", "INPUT1=json:" + json.dumps([[2] * 16]))
        self.assertEqual(j["outputs"][0]["data"], [[i + 2 for i in range(16)]])
        self.assertEqual(j["outputs"][1]["data"], [[i - 2 for i in range(16)]])
        # datatype from --datatype for a model whose metadata would say the same
        j = self.kjson("infer", "identity_fp32", "--input", "INPUT0=json:[[1.5, -2, 1e3]]",
                       "--datatype", "FP32")
        self.assertEqual(j["outputs"][0]["data"], [[1.5, -2, 1000]])
        r = self.kiln("infer", "identity_fp32", "--input", "INPUT0=json:[[1, 2]]", "--datatype",
                      "INPUT0=FP64", code=4)
        self.assertIn("input 'INPUT0': the JSON holds FP64, the model takes FP32", r.stderr)
        r = self.kiln("infer", "simple", "--input", "INPUT0=json:[[1, 2.5]]", "--input",
                      "INPUT1=json:[[1, 2]]", code=4)
        self.assertIn("element [0][1]: 2.5 is not an integer (INT32)", r.stderr)
        # text output, and a large output summarized rather than printed
        r = self.kiln("infer", "identity_fp32", "--input",
                      "INPUT0=json:" + json.dumps([[0.5] * 300]))
        self.assertIn("OUTPUT0 FP32 [1,300] (1200 bytes, over --print-limit 256 elements", r.stdout)
        r = self.kiln("infer", "identity_fp32", "--input", "INPUT0=json:[[0.5, 0.25]]")
        self.assertIn("OUTPUT0 FP32 [1,2]\n  [[0.5, 0.25]]", r.stdout)

    def test_infer_every_npy_dtype(self):
        rng = np.random.default_rng(1)
        for np_dt, kdt in DTYPES.items():
            with self.subTest(dtype=np_dt):
                if np_dt == "bool":
                    a = rng.integers(0, 2, (2, 5)).astype(bool)
                elif np_dt.startswith("float"):
                    a = rng.standard_normal((2, 5)).astype(np_dt)
                else:
                    info = np.iinfo(np_dt)
                    a = rng.integers(info.min, info.max, (2, 5), dtype=np_dt, endpoint=True)
                out = self.path(f"dt-{np_dt}")
                self.kiln("infer", f"id_{np_dt}", "--input", f"INPUT0={self.save(f'{np_dt}.npy', a)}",
                          "--out-dir", out)
                b = np.load(f"{out}/OUTPUT0.npy")
                self.assertEqual(b.dtype, a.dtype)
                np.testing.assert_array_equal(b, a)
                # and as JSON, exact for every type
                j = self.kjson("infer", f"id_{np_dt}", "--input", "INPUT0=json:" + json.dumps(a.tolist()))
                self.assertEqual(np.array(j["outputs"][0]["data"], dtype=np_dt).tolist(), a.tolist())

    def test_infer_bytes(self):
        a = np.array([[str(i) for i in range(16)]])  # <U2: UTF-32 in the file
        b = np.array([[b"5"] * 16])                  # |S1
        out = self.path("out-str")
        self.kiln("infer", "simple_string", "--input", f"INPUT0={self.save('sa.npy', a)}",
                  "--input", f"INPUT1={self.save('sb.npy', b)}", "--out-dir", out)
        o0 = np.load(f"{out}/OUTPUT0.npy")
        self.assertEqual(o0.dtype.kind, "S")
        self.assertEqual([int(x) for x in o0[0]], [i + 5 for i in range(16)])
        j = self.kjson("infer", "simple_string", "--input", f"INPUT0={self.path('sa.npy')}",
                       "--input", "INPUT1=json:" + json.dumps([["1"] * 16]))
        self.assertEqual(j["outputs"][1]["data"], [[str(i - 1) for i in range(16)]])

    def test_infer_shm(self):
        before = set(glob.glob("/dev/shm/kiln-cli-*"))
        a = np.arange(32, dtype=np.int32).reshape(2, 16)
        b = np.ones((2, 16), dtype=np.int32)
        out = self.path("out-shm")
        j = self.kjson("infer", "simple", "--shm", "--input", f"INPUT0={self.save('sha.npy', a)}",
                       "--input", f"INPUT1={self.save('shb.npy', b)}", "--out-dir", out)
        self.assertEqual(j["outputs"][0]["data"], (a + b).tolist())
        np.testing.assert_array_equal(np.load(f"{out}/OUTPUT1.npy"), a - b)
        # BYTES through a region too (its size comes from --shm-output-bytes)
        j = self.kjson("infer", "simple_string", "--shm", "--shm-output-bytes", "4K",
                       "--input", "INPUT0=json:" + json.dumps([["7"] * 16]),
                       "--input", "INPUT1=json:" + json.dumps([["2"] * 16]))
        self.assertEqual(j["outputs"][0]["data"], [["9"] * 16])
        self.assertEqual(set(glob.glob("/dev/shm/kiln-cli-*")), before)  # nothing left behind
        r = self.kiln("infer", "simple_string", "--shm", "--shm-output-bytes", "8",
                      "--input", "INPUT0=json:" + json.dumps([["7"] * 16]),
                      "--input", "INPUT1=json:" + json.dumps([["2"] * 16]), code=1)
        self.assertIn("kiln: infer: simple_string: ", r.stderr)
        self.assertEqual(set(glob.glob("/dev/shm/kiln-cli-*")), before)

    def test_infer_errors(self):
        good = self.save("good.npy", np.zeros((1, 16), np.int32))
        cases = [
            (["nope", "--input", f"INPUT0={good}"], 1, "kiln: infer: nope: NOT_FOUND:"),
            (["simple", "--input", "INPUT0=/nonexistent.npy", "--input", f"INPUT1={good}"], 4,
             "input 'INPUT0': /nonexistent.npy: No such file or directory"),
            (["simple", "--input", f"INPUT0={good}"], 4,
             "model 'simple' takes input 'INPUT1' (INT32 [-1,16]): give it with --input INPUT1="),
            (["simple", "--input", f"INPUT0={good}", "--input", f"INPUT1={good}", "--input",
              f"INPUT9={good}"], 4, "model 'simple' has no input 'INPUT9' (its inputs: INPUT0, INPUT1)"),
            (["simple", "--input", f"INPUT0={good}", "--input", f"INPUT1={good}", "--output",
              "OUT9"], 4, "model 'simple' has no output 'OUT9'"),
        ]
        garbage = self.path("garbage.npy")
        with open(garbage, "wb") as f:
            f.write(b"PK\x03\x04 this is a zip")
        cases.append((["simple", "--input", f"INPUT0={garbage}", "--input", f"INPUT1={good}"], 4,
                      f"input 'INPUT0': {garbage}: not a .npy file"))
        fortran = self.save("fortran.npy", np.asfortranarray(np.zeros((2, 16), np.int32)))
        cases.append((["simple", "--input", f"INPUT0={fortran}", "--input", f"INPUT1={good}"], 4,
                      "Fortran (column-major) order"))
        floats = self.save("floats.npy", np.zeros((1, 16), np.float32))
        cases.append((["simple", "--input", f"INPUT0={floats}", "--input", f"INPUT1={good}"], 4,
                      f"input 'INPUT0': {floats} holds FP32, the model takes INT32"))
        wrong = self.save("wrong.npy", np.zeros((1, 8), np.int32))
        cases.append((["simple", "--input", f"INPUT0={wrong}", "--input", f"INPUT1={good}"], 4,
                      "input 'INPUT0': shape [1,8] does not fit the model's [-1,16]"))
        big_endian = self.save("be.npy", np.zeros((1, 16), ">i4"))
        cases.append((["simple", "--input", f"INPUT0={big_endian}", "--input", f"INPUT1={good}"], 4,
                      "dtype '>i4' is big-endian"))
        complex_ = self.save("c.npy", np.zeros((1, 16), np.complex64))
        cases.append((["simple", "--input", f"INPUT0={complex_}", "--input", f"INPUT1={good}"], 4,
                      "dtype '<c8' is not supported"))
        trunc = self.path("trunc.npy")
        with open(good, "rb") as f, open(trunc, "wb") as g:
            g.write(f.read()[:-10])
        cases.append((["simple", "--input", f"INPUT0={trunc}", "--input", f"INPUT1={good}"], 4,
                      "truncated data: shape [1,16] of 4-byte elements needs 64 bytes"))
        cases.append((["simple", "--input", f"INPUT0={good}", "--input", f"INPUT1={good}",
                       "--shape", "INPUT0=4,4"], 4, "shape [4,4] does not fit the model's [-1,16]"))
        for args, code, msg in cases:
            with self.subTest(args=args):
                r = self.kiln("infer", *args, code=code)
                self.assertIn(msg, r.stderr)
                self.assertEqual(r.stdout, "")

    def test_server_down(self):
        url = f"127.0.0.1:{free_port()}"
        for args in (["health"], ["models"], ["infer", "simple", "--input", "INPUT0=json:[1]"],
                     ["perf", "simple", "--count", "5"]):
            with self.subTest(args=args):
                t = time.time()
                r = self.kiln(*args, "--url", url, "--retries", "0", "--timeout", "5s", url=False,
                              code=1)
                self.assertIn("UNAVAILABLE", r.stderr)
                self.assertLess(time.time() - t, 10)
        r = self.kiln("models", "--url", url, "--tls-ca", "/nonexistent/ca.pem", url=False, code=2)
        self.assertIn("cannot set up the connection", r.stderr)

    # ------------------------------------------------------------ perf

    def test_perf_sweep_json_and_csv(self):
        csv_path = self.path("perf.csv")
        r = self.kiln("perf", "simple", "--concurrency", "1,4", "--count", "60", "--warmup", "0.1",
                      "--json", "--csv", csv_path)
        self.assertEqual(r.stderr, "")  # no progress line without a terminal
        j = json.loads(r.stdout)
        self.assertEqual(j["model"], "simple")
        self.assertEqual(j["count"], 60)
        self.assertIn("INPUT0 INT32 [1,16] random", j["inputs"])
        self.assertEqual([lv["concurrency"] for lv in j["levels"]], [1, 4])
        for lv in j["levels"]:
            self.assertEqual(lv["requests"], 60)
            self.assertEqual(lv["errors"], 0)
            self.assertGreater(lv["throughput"], 0)
            p = lv["latency_us"]
            self.assertTrue(0 < p["min"] <= p["p50"] <= p["p90"] <= p["p99"] <= p["max"], p)
        with open(csv_path) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([row["concurrency"] for row in rows], ["1", "4"])
        self.assertEqual(rows[1]["requests"], "60")
        self.assertGreater(float(rows[0]["p99_us"]), 0)

    def test_perf_table_rate_shm_and_files(self):
        r = self.kiln("perf", "simple", "--duration", "0.5", "--warmup", "0", "--concurrency", "2")
        self.assertRegex(r.stdout, r"concurrency\s+requests\s+errors\s+infer/s\s+p50 us\s+p90 us\s+p99 us")
        self.assertRegex(r.stdout, r"\n2\s+[1-9]\d*\s+0\s+")
        j = self.kjson("perf", "simple", "--rate", "200", "--count", "40", "--threads", "4",
                       "--warmup", "0.05")
        lv = j["levels"][0]
        self.assertEqual((lv["concurrency"], lv["rate"], lv["requests"], lv["errors"]), (0, 200, 40, 0))
        self.assertLess(abs(lv["throughput"] - 200) / 200, 0.5)
        before = set(glob.glob("/dev/shm/kiln-perf-*"))
        j = self.kjson("perf", "identity_fp32", "--shm", "--shape", "INPUT0=1,4096", "--count",
                       "50", "--concurrency", "1,3", "--warmup", "0")
        self.assertTrue(j["shm"])
        self.assertEqual([lv["requests"] for lv in j["levels"]], [50, 50])
        self.assertEqual(set(glob.glob("/dev/shm/kiln-perf-*")), before)
        npy = self.save("perf-in.npy", np.ones((2, 16), np.int32))
        j = self.kjson("perf", "simple", "--input", f"INPUT0={npy}", "--batch-size", "2",
                       "--count", "20", "--warmup", "0")
        self.assertIn(f"INPUT0 INT32 [2,16] {npy}, INPUT1 INT32 [2,16] random", j["inputs"])
        self.assertEqual(j["levels"][0]["errors"], 0)

    def test_perf_errors(self):
        r = self.kiln("perf", "identity_fp32", "--count", "5", code=4)
        self.assertIn("input 'INPUT0' has shape [-1,-1]: give its size with --shape INPUT0=", r.stderr)
        r = self.kiln("perf", "nope", "--count", "5", code=1)
        self.assertIn("kiln: perf: nope: NOT_FOUND", r.stderr)
        r = self.kiln("perf", "simple", "--count", "5", "--csv", "/nonexistent/x.csv", code=4)
        self.assertIn("--csv /nonexistent/x.csv: No such file", r.stderr)

    def test_perf_interrupted_reports_what_it_measured(self):
        p = subprocess.Popen([KILN, "perf", "simple", "--duration", "30", "--warmup", "0", "--json",
                              "--url", self.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 130, err)
        self.assertIn("interrupted", err)
        lv = json.loads(out)["levels"][0]
        self.assertGreater(lv["requests"], 0)
        self.assertLess(lv["seconds"], 10)

    def test_perf_against_the_echo_baseline(self):
        bench = f"{BUILD}/bench/bench_server"
        if not os.path.exists(bench):
            self.skipTest("bench/bench_server not built (make bench)")
        port_file = self.path("echo.port")
        echo = subprocess.Popen([bench, "--echo", port_file])
        try:
            port = ""
            for _ in range(500):
                if os.path.exists(port_file):
                    with open(port_file) as f:
                        port = f.read().strip()
                    if port:
                        break
                time.sleep(0.01)
            url = f"127.0.0.1:{int(port)}"
            ones = json.dumps([[1] * 16])
            j = json.loads(self.kiln("perf", "simple", "--url", url, "--input", f"INPUT0=json:{ones}",
                                     "--input", f"INPUT1=json:{ones}", "--datatype", "INT32",
                                     "--count", "50", "--warmup", "0", "--json", url=False).stdout)
            self.assertEqual(j["levels"][0]["requests"], 50)
            r = self.kiln("perf", "simple", "--url", url, "--count", "5", url=False, code=4)
            self.assertIn("has no metadata for 'simple' (UNIMPLEMENTED): give every input", r.stderr)
        finally:
            echo.terminate()
            echo.wait(timeout=20)


class CliTls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln-cli-tls-")
        tsch.make_certs(cls.dir)
        cls.server = ts.Server(f"--tls-cert={cls.dir}/server.pem", f"--tls-key={cls.dir}/server.key",
                               f"--tls-client-ca={cls.dir}/ca.pem")

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_mutual_tls(self):
        d, port = self.dir, self.server.port
        r = subprocess.run([KILN, "health", "--url", f"127.0.0.1:{port}", "--tls-ca", f"{d}/ca.pem",
                            "--tls-cert", f"{d}/client.pem", "--tls-key", f"{d}/client.key",
                            "--tls-server-name", "localhost", "--json"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(json.loads(r.stdout)["ready"])
        r = subprocess.run([KILN, "health", "--url", f"localhost:{port}", "--tls-ca", f"{d}/ca.pem",
                            "--retries", "0", "--timeout", "5s"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1)  # no client certificate: refused
        self.assertIn("UNAVAILABLE", r.stderr)


if __name__ == "__main__":
    unittest.main()
