"""Integration tests: ONNX models served by kiln-server, checked against NumPy.

The models are made at test time with tests/fixtures/onnx/onnx_build.py (protobuf's Python
module and proto/onnx.proto), except the example mlp_onnx, which is the committed file."""
import math
import os
import shutil
import tempfile
import unittest

import grpc
import numpy as np

import onnx_build as ob
from proto import grpc_service_pb2 as pb
from test_server import Server, add_input

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ops_model():
    """Elementwise and shape kernels the MLP and CNN do not use, chained, on X [batch, 2, 3]."""
    c1 = np.array([0.5, -1.0, 2.0], np.float32)
    nodes = [
        ob.node("Sigmoid", ["X"], ["a"]), ob.node("Tanh", ["X"], ["b"]),
        ob.node("Mul", ["a", "C1"], ["c"]), ob.node("Sub", ["c", "b"], ["d"]),
        ob.node("Div", ["d", "C2"], ["e"]), ob.node("Abs", ["e"], ["e1"]),
        ob.node("Pow", ["e1", "C3"], ["f"]), ob.node("Neg", ["f"], ["f1"]),
        ob.node("LeakyRelu", ["f1"], ["g"], alpha=0.2), ob.node("Erf", ["g"], ["h"]),
        ob.node("Exp", ["h"], ["i"]), ob.node("Sqrt", ["i"], ["j"]),
        ob.node("Identity", ["j"], ["j1"]), ob.node("Dropout", ["j1"], ["j2"]),
        ob.node("Flatten", ["j2"], ["k"], axis=1), ob.node("Reshape", ["k", "S"], ["l"]),
        ob.node("Transpose", ["l"], ["m"], perm=[0, 2, 1]),
        ob.node("LogSoftmax", ["m"], ["Y"], axis=1),
    ]
    inits = [ob.tensor("C1", c1), ob.tensor("C2", np.array(3.0, np.float32)),
             ob.tensor("C3", np.array(2.0, np.float32)),
             ob.tensor("S", np.array([-1, 3, 2], np.int64))]
    return ob.model(nodes, [ob.value("X", ob.FLOAT, [None, 2, 3])],
                    [ob.value("Y", ob.FLOAT, [None, 2, 3])], inits), c1


def ops_reference(x, c1):
    sig = 1 / (1 + np.exp(-x))
    e = (sig * c1 - np.tanh(x)) / 3.0
    g = -(np.abs(e) ** 2)
    g = np.where(g >= 0, g, 0.2 * g)
    h = np.vectorize(math.erf)(g)
    j = np.sqrt(np.exp(h))
    m = j.reshape(-1, 3, 2).transpose(0, 2, 1)
    mx = m.max(axis=1, keepdims=True)
    return (m - mx - np.log(np.exp(m - mx).sum(axis=1, keepdims=True))).astype(np.float32)


OPS_CONFIG = """name: "ops_onnx" backend: "onnx" max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 2, 3 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2, 3 ] } ]"""


CNN_CONFIG = """name: "cnn_onnx" backend: "onnx" max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 3, 8, 8 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 5 ] } ]"""


TF_CONFIG = """name: "tf_onnx" backend: "onnx" max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4, 8 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4, 8 ] },
         { name: "POOLED" data_type: TYPE_FP32 dims: [ 8 ] } ]"""


DYN_CONFIG = """name: "dynshape_onnx" backend: "onnx" max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1, 8 ] },
        { name: "N" data_type: TYPE_INT64 dims: [ 1 ] } ]
output [ { name: "S" data_type: TYPE_INT64 dims: [ 2 ] },
         { name: "Z" data_type: TYPE_FP32 dims: [ 1, -1 ] } ]"""


BIAS_CONFIG = """name: "bias_onnx" backend: "onnx" max_batch_size: 4
input [ { name: "X" data_type: TYPE_FP32 dims: [ 2, 3 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2, 4 ] } ]"""


def bias_model(seed=9):
    """Y = (X@W1 + b1) + (b5 + X@W5) + (X@W2 + c2) + (X@W3 + b3) + 2 * X@W3 + (X@W6 + b6),
    X [batch, 2, 3]: the first two Adds fold into their MatMul as a bias (a row [4], either
    side); c2 is a full [2, 4] matrix, X@W3 has two readers and b6 is a [1, 4] row, so those
    stay as they are."""
    rng = np.random.default_rng(seed)
    w = {k: rng.standard_normal(s).astype(np.float32) for k, s in
         [("W1", (3, 4)), ("W2", (3, 4)), ("W3", (3, 4)), ("W5", (3, 4)), ("W6", (3, 4)),
          ("b1", (4,)), ("c2", (2, 4)), ("b3", (4,)), ("b5", (4,)), ("b6", (1, 4))]}
    w["two"] = np.array(2.0, np.float32)
    n = ob.node
    nodes = [n("MatMul", ["X", "W1"], ["m1"], name="mm1"), n("Add", ["m1", "b1"], ["y1"], name="a1"),
             n("MatMul", ["X", "W5"], ["m5"], name="mm5"), n("Add", ["b5", "m5"], ["y5"], name="a5"),
             n("MatMul", ["X", "W2"], ["m2"], name="mm2"), n("Add", ["m2", "c2"], ["y2"], name="a2"),
             n("MatMul", ["X", "W3"], ["m3"], name="mm3"), n("Add", ["m3", "b3"], ["y3"], name="a3"),
             n("Mul", ["m3", "two"], ["y3b"], name="mul3"),
             n("Add", ["y1", "y5"], ["s1"], name="s1"), n("Add", ["s1", "y2"], ["s2"], name="s2"),
             n("MatMul", ["X", "W6"], ["m6"], name="mm6"), n("Add", ["m6", "b6"], ["y6"], name="a6"),
             n("Add", ["s2", "y3"], ["s3"], name="s3"), n("Add", ["s3", "y3b"], ["s4"], name="s4"),
             n("Add", ["s4", "y6"], ["Y"], name="s5")]
    blob = ob.model(nodes, [ob.value("X", ob.FLOAT, [None, 2, 3])],
                    [ob.value("Y", ob.FLOAT, [None, 2, 4])],
                    [ob.tensor(k, v) for k, v in w.items()])
    return blob, w


def bias_reference(w, x):
    m3 = x @ w["W3"]
    return ((x @ w["W1"] + w["b1"]) + (w["b5"] + x @ w["W5"]) + (x @ w["W2"] + w["c2"]) +
            (m3 + w["b3"]) + 2 * m3 + (x @ w["W6"] + w["b6"]))


def write_model(repo, name, config, blob):
    os.makedirs(f"{repo}/{name}/1")
    with open(f"{repo}/{name}/config.pbtxt", "w") as f:
        f.write(config)
    with open(f"{repo}/{name}/1/model.onnx", "wb") as f:
        f.write(blob)


def rel_l2(got, want):
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


class TestOnnx(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.repo = tempfile.mkdtemp(prefix="kiln-it-onnx-")
        shutil.copytree(f"{ROOT}/examples/models/mlp_onnx", f"{cls.repo}/mlp_onnx")
        blob, cls.c1 = ops_model()
        write_model(cls.repo, "ops_onnx", OPS_CONFIG, blob)
        nms = ob.model([ob.node("NonMaxSuppression", ["X", "X"], ["Y"], name="nms")],
                       [ob.value("X", ob.FLOAT, [None, 2, 3])],
                       [ob.value("Y", ob.FLOAT, [None, 2, 3])], [])
        write_model(cls.repo, "unsupported_onnx", OPS_CONFIG.replace("ops_onnx", "unsupported_onnx"),
                    nms)
        write_model(cls.repo, "mismatch_onnx",
                    OPS_CONFIG.replace("ops_onnx", "mismatch_onnx").replace('"X"', '"Q"'), blob)
        write_model(cls.repo, "truncated_onnx", OPS_CONFIG.replace("ops_onnx", "truncated_onnx"),
                    blob[: len(blob) // 2])
        two = ob.model([ob.node("Relu", ["X"], ["Y", "Z"], name="r")],
                       [ob.value("X", ob.FLOAT, [None, 2, 3])],
                       [ob.value("Y", ob.FLOAT, [None, 2, 3])], [])
        write_model(cls.repo, "twoout_onnx", OPS_CONFIG.replace("ops_onnx", "twoout_onnx"), two)
        ints = ob.model([ob.node("Identity", ["K"], ["Y"], name="id"),
                         ob.node("Identity", ["X"], ["X2"], name="use_x")],
                        [ob.value("X", ob.FLOAT, [None, 2, 3])],
                        [ob.value("Y", ob.FLOAT, [None, 2, 3])],
                        [ob.tensor("K", np.zeros((1, 2, 3), np.int64))])
        write_model(cls.repo, "intout_onnx", OPS_CONFIG.replace("ops_onnx", "intout_onnx"), ints)
        gather = ob.gather_model(dims=(2, 3))
        write_model(cls.repo, "gather_onnx", OPS_CONFIG.replace("ops_onnx", "gather_onnx"), gather)
        # Slice ends from an input: Y's shape depends on a value, so Shape(Y) must not be
        # kept in a memory plan (the load check ran it with N = 0)
        dyn = ob.model([ob.node("Slice", ["X", "ZERO", "N", "ONE"], ["Y"], name="slice"),
                        ob.node("Shape", ["Y"], ["S"], name="shape"),
                        ob.node("Reshape", ["Y", "S"], ["Z"], name="reshape")],
                       [ob.value("X", ob.FLOAT, [1, 8]), ob.value("N", ob.INT64, [1])],
                       [ob.value("S", ob.INT64, [2]), ob.value("Z", ob.FLOAT, [1, None])],
                       [ob.tensor("ZERO", np.array([0], np.int64)),
                        ob.tensor("ONE", np.array([1], np.int64))])
        write_model(cls.repo, "dynshape_onnx", DYN_CONFIG, dyn)
        cls.tf = ob.tf_weights()
        write_model(cls.repo, "tf_onnx", TF_CONFIG, ob.tf_model(cls.tf))
        cls.cnn = ob.cnn_weights()
        write_model(cls.repo, "cnn_onnx", CNN_CONFIG, ob.cnn_model(cls.cnn))
        blob, cls.bias = bias_model()
        write_model(cls.repo, "bias_onnx", BIAS_CONFIG, blob)
        cls.server = Server(repo=cls.repo)
        cls.s = cls.server.stub

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.repo, ignore_errors=True)

    def infer(self, model, name, x, out):
        req = pb.ModelInferRequest(model_name=model)
        add_input(req, name, x)
        r = self.s.ModelInfer(req, timeout=30)
        return np.frombuffer(r.raw_output_contents[0], np.float32).reshape(
            list(r.outputs[0].shape)), r.outputs[0].name

    def test_mlp_matches_numpy(self):
        w = ob.mlp_weights()
        rng = np.random.default_rng(1)
        for batch in (1, 3, 8):
            x = rng.standard_normal((batch, 16)).astype(np.float32)
            got, name = self.infer("mlp_onnx", "INPUT", x, "PROBS")
            self.assertEqual(name, "PROBS")
            self.assertEqual(got.shape, (batch, 10))
            self.assertLess(rel_l2(got, ob.mlp_reference(w, x)), 1e-5)

    def test_every_kernel_matches_numpy(self):
        rng = np.random.default_rng(2)
        for batch in (1, 4):
            x = rng.standard_normal((batch, 2, 3)).astype(np.float32)
            got, _ = self.infer("ops_onnx", "X", x, "Y")
            self.assertLess(rel_l2(got, ops_reference(x, self.c1)), 1e-5)

    def test_cnn_matches_numpy(self):
        rng = np.random.default_rng(3)
        for batch in (1, 4, 1, 4):  # the second time of a batch size runs on its memory plan
            x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
            got, _ = self.infer("cnn_onnx", "X", x, "Y")
            self.assertEqual(got.shape, (batch, 5))
            self.assertLess(rel_l2(got, ob.cnn_reference(self.cnn, x)), 1e-5)

    def test_transformer_layer_matches_numpy(self):
        rng = np.random.default_rng(4)
        for batch in (1, 3, 3, 1):
            x = rng.standard_normal((batch, 4, 8)).astype(np.float32)
            req = pb.ModelInferRequest(model_name="tf_onnx")
            add_input(req, "X", x)
            r = self.s.ModelInfer(req, timeout=30)
            got = {o.name: np.frombuffer(r.raw_output_contents[i], np.float32).reshape(list(o.shape))
                   for i, o in enumerate(r.outputs)}
            want_y, want_pooled = ob.tf_reference(self.tf, x)
            self.assertLess(rel_l2(got["Y"], want_y), 1e-5)
            self.assertLess(rel_l2(got["POOLED"], want_pooled), 1e-5)

    def test_matmul_biases_fold_and_match_numpy(self):
        rng = np.random.default_rng(4)
        for batch in (1, 3):
            x = rng.standard_normal((batch, 2, 3)).astype(np.float32)
            got, _ = self.infer("bias_onnx", "X", x, "Y")
            self.assertLess(rel_l2(got, bias_reference(self.bias, x)), 1e-5)
        logs = [line for line in self.server.logs().splitlines() if '"bias_onnx"' in line]
        self.assertTrue(any("16 nodes run as 14 steps (0 folded at load, 0 BatchNormalization "
                            "folded into Conv, 2 biases folded into MatMul, 0 activations fused)"
                            in line for line in logs), "\n".join(logs))

    def test_rewrites_and_plans_are_logged(self):
        x = np.ones((2, 3, 8, 8), np.float32)
        for _ in range(2):
            self.infer("cnn_onnx", "X", x, "Y")
            self.infer("tf_onnx", "X", np.ones((2, 4, 8), np.float32), "Y")
        logs = [line for line in self.server.logs().splitlines()
                if '"cnn_onnx"' in line or '"tf_onnx"' in line]
        # Conv+BN+Relu: BN folded, Relu fused; depthwise Conv+Clip: Clip fused
        self.assertTrue(any("12 nodes run as 9 steps (0 folded at load, 1 BatchNormalization "
                            "folded into Conv, 0 biases folded into MatMul, 2 activations fused)"
                            in line for line in logs),
                        "\n".join(logs))
        plan = [line for line in logs if "memory plan for input shape [2,3,8,8]" in line]
        self.assertEqual(len(plan), 1, "\n".join(logs))  # built once, then reused
        # the transformer's Shape -> Gather -> Unsqueeze -> Concat chain folds per input shape
        tf_plans = [line for line in logs if "memory plan" in line and "tf_onnx" in line]
        self.assertTrue(tf_plans)
        for line in tf_plans:
            self.assertNotIn(" 0 of ", line)

    def test_load_errors_are_named(self):
        idx = {m.name: m for m in self.s.RepositoryIndex(pb.RepositoryIndexRequest()).models}
        self.assertEqual(idx["mlp_onnx"].state, "READY")
        self.assertIn("node 'nms' uses op 'NonMaxSuppression' (opset 17), which Kiln's CPU "
                      "backend does not support", idx["unsupported_onnx"].reason)
        self.assertIn("config input 'Q' is not an input of model.onnx",
                      idx["mismatch_onnx"].reason)
        self.assertIn("not a valid ONNX model", idx["truncated_onnx"].reason)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="unsupported_onnx"),
                                       timeout=30)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("NonMaxSuppression", ctx.exception.details())

    def test_bad_graphs_fail_at_load(self):
        """The load check runs each model on zeros, so a graph that cannot answer fails at
        load, with the node named, instead of on its first request."""
        idx = {m.name: m for m in self.s.RepositoryIndex(pb.RepositoryIndexRequest()).models}
        for model, msg in [("twoout_onnx", "node 'r' (Relu): output 1 ('Z') is not one Relu makes"),
                           ("intout_onnx", "output 'Y': the graph made INT64, the config says FP32")]:
            self.assertEqual(idx[model].state, "UNAVAILABLE", model)
            self.assertIn("the load check (a batch of 1, all zeros) failed: " + msg,
                          idx[model].reason)
            with self.assertRaises(grpc.RpcError) as ctx:
                self.infer(model, "X", np.ones((1, 2, 3), np.float32), "Y")
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_bad_values_fail_requests_cleanly(self):
        """A kernel error that depends on the request's values (a Gather index out of range)
        fails that request with INVALID_ARGUMENT naming the node; the server goes on."""
        x = np.zeros((2, 2, 3), np.float32)
        self.assertEqual(self.infer("gather_onnx", "X", x, "Y")[0].shape, (2, 2, 3))
        x[1, 1, 2] = 7
        with self.assertRaises(grpc.RpcError) as ctx:
            self.infer("gather_onnx", "X", x, "Y")
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("node 'g' (Gather): index 7 is outside -5..4", ctx.exception.details())
        got, _ = self.infer("ops_onnx", "X", np.ones((1, 2, 3), np.float32), "Y")
        self.assertEqual(got.shape, (1, 2, 3))

    def test_value_dependent_shapes_are_not_planned(self):
        x = np.arange(8, dtype=np.float32).reshape(1, 8)
        for n in (3, 5, 3, 8, 0, 5):  # same input shapes every time: one memory plan
            req = pb.ModelInferRequest(model_name="dynshape_onnx")
            add_input(req, "X", x)
            add_input(req, "N", np.array([n], np.int64), datatype="INT64")
            r = self.s.ModelInfer(req, timeout=30)
            out = {o.name: (o, r.raw_output_contents[i]) for i, o in enumerate(r.outputs)}
            self.assertEqual(list(np.frombuffer(out["S"][1], np.int64)), [1, n])
            self.assertEqual(list(out["Z"][0].shape), [1, n])
            np.testing.assert_array_equal(np.frombuffer(out["Z"][1], np.float32), x[0, :n])

    def test_metadata_and_batch_limit(self):
        md = self.s.ModelMetadata(pb.ModelMetadataRequest(name="mlp_onnx"))
        self.assertEqual(md.platform, "onnxruntime_onnx")
        self.assertEqual(list(md.inputs[0].shape), [-1, 16])
        x = np.zeros((9, 16), np.float32)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.infer("mlp_onnx", "INPUT", x, "PROBS")
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)


if __name__ == "__main__":
    unittest.main()
