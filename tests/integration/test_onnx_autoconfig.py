"""Integration tests: ONNX models served without a config.pbtxt, their config derived from the
graph (docs/onnx.md, "Config auto-complete"), through a real kiln-server.

The models are made at test time with tests/fixtures/onnx/onnx_build.py."""
import os
import tempfile
import threading
import unittest

import grpc
import numpy as np

import onnx_build as ob
from proto import grpc_service_pb2 as pb
from proto import model_config_pb2 as mc
from test_server import Server, add_input

STRING = 8  # ONNX TensorProto.STRING: no Kiln dtype


def write_model(repo, name, blob, config=None, version=1):
    os.makedirs(f"{repo}/{name}/{version}", exist_ok=True)
    if config is not None:
        with open(f"{repo}/{name}/config.pbtxt", "w") as f:
            f.write(config)
    if blob is not None:
        with open(f"{repo}/{name}/{version}/model.onnx", "wb") as f:
            f.write(blob)


def relu_model(in_dims, out_dims, elem=ob.FLOAT):
    return ob.model([ob.node("Relu", ["X"], ["Y"], name="relu")],
                    [ob.value("X", elem, in_dims)], [ob.value("Y", ob.FLOAT, out_dims)], [])


def rel_l2(got, want):
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


class TestOnnxAutoConfig(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.repo = tempfile.mkdtemp(prefix="kiln-it-autocfg-")
        cls.w = ob.mlp_weights()
        mlp = ob.mlp_model(cls.w)  # INPUT [batch, 16] -> PROBS [batch, 10]
        write_model(cls.repo, "auto_mlp", mlp)
        write_model(cls.repo, "auto_mlp", mlp, version=2)  # the highest version is served
        write_model(cls.repo, "auto_fixed", relu_model([2, 3], [2, 3]))
        write_model(cls.repo, "auto_seq", relu_model([None, None, 4], [None, None, 4]))
        write_model(cls.repo, "auto_string", relu_model([None, 3], [None, 3], elem=STRING))
        write_model(cls.repo, "empty_dir", None)
        write_model(cls.repo, "mismatch_dims", mlp, config="""backend: "onnx" max_batch_size: 8
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 15 ] } ]
output [ { name: "PROBS" data_type: TYPE_FP32 dims: [ -1 ] } ]""")
        cls.server = Server(repo=cls.repo)
        cls.s = cls.server.stub

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()  # removes the repository too

    def infer(self, model, x):
        req = pb.ModelInferRequest(model_name=model)
        add_input(req, "X" if model != "auto_mlp" else "INPUT", x)
        r = self.s.ModelInfer(req, timeout=30)
        return np.frombuffer(r.raw_output_contents[0], np.float32).reshape(
            list(r.outputs[0].shape))

    def test_metadata_and_config_are_derived(self):
        md = self.s.ModelMetadata(pb.ModelMetadataRequest(name="auto_mlp"))
        self.assertEqual(md.platform, "onnxruntime_onnx")
        self.assertEqual(list(md.versions), ["2"])
        self.assertEqual((md.inputs[0].name, md.inputs[0].datatype, list(md.inputs[0].shape)),
                         ("INPUT", "FP32", [-1, 16]))
        self.assertEqual((md.outputs[0].name, md.outputs[0].datatype, list(md.outputs[0].shape)),
                         ("PROBS", "FP32", [-1, 10]))
        cfg = self.s.ModelConfig(pb.ModelConfigRequest(name="auto_mlp")).config
        self.assertEqual(cfg.name, "auto_mlp")
        self.assertEqual(cfg.platform, "onnxruntime_onnx")
        self.assertEqual(cfg.backend, "onnx")
        self.assertEqual(cfg.max_batch_size, 4)
        self.assertTrue(cfg.HasField("dynamic_batching"))
        self.assertEqual([(i.name, i.data_type, list(i.dims)) for i in cfg.input],
                         [("INPUT", mc.TYPE_FP32, [16])])
        self.assertEqual([(o.name, o.data_type, list(o.dims)) for o in cfg.output],
                         [("PROBS", mc.TYPE_FP32, [10])])

        cfg = self.s.ModelConfig(pb.ModelConfigRequest(name="auto_fixed")).config
        self.assertEqual(cfg.max_batch_size, 0)
        self.assertFalse(cfg.HasField("dynamic_batching"))
        self.assertEqual(list(cfg.input[0].dims), [2, 3])
        md = self.s.ModelMetadata(pb.ModelMetadataRequest(name="auto_fixed"))
        self.assertEqual(list(md.inputs[0].shape), [2, 3])

        cfg = self.s.ModelConfig(pb.ModelConfigRequest(name="auto_seq")).config
        self.assertEqual(cfg.max_batch_size, 4)
        self.assertEqual(list(cfg.input[0].dims), [-1, 4])
        self.assertEqual(list(cfg.output[0].dims), [-1, 4])

    def test_inference_at_batch_1_and_more(self):
        rng = np.random.default_rng(5)
        for batch in (1, 3, 4):
            x = rng.standard_normal((batch, 16)).astype(np.float32)
            got = self.infer("auto_mlp", x)
            self.assertEqual(got.shape, (batch, 10))
            self.assertLess(rel_l2(got, ob.mlp_reference(self.w, x)), 1e-5)
        with self.assertRaises(grpc.RpcError) as ctx:  # over the default max_batch_size (4)
            self.infer("auto_mlp", np.zeros((5, 16), np.float32))
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

        x = rng.standard_normal((2, 3)).astype(np.float32)
        np.testing.assert_array_equal(self.infer("auto_fixed", x), np.maximum(x, 0))
        for batch, seq in ((1, 5), (3, 2)):
            x = rng.standard_normal((batch, seq, 4)).astype(np.float32)
            np.testing.assert_array_equal(self.infer("auto_seq", x), np.maximum(x, 0))

    def test_concurrent_requests_are_batched_correctly(self):
        rng = np.random.default_rng(6)
        xs = [rng.standard_normal((1, 16)).astype(np.float32) for _ in range(16)]
        got = [None] * len(xs)

        def run(i):
            got[i] = self.infer("auto_mlp", xs[i])
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for x, g in zip(xs, got):
            self.assertLess(rel_l2(g, ob.mlp_reference(self.w, x)), 1e-5)

    def test_errors_say_what_was_looked_for(self):
        idx = {m.name: m for m in self.s.RepositoryIndex(pb.RepositoryIndexRequest()).models}
        self.assertEqual(idx["auto_mlp"].state, "READY")
        self.assertEqual(idx["auto_mlp"].version, "2")
        self.assertEqual(idx["auto_seq"].state, "READY")
        self.assertNotIn("empty_dir", idx)
        self.assertEqual(idx["auto_string"].state, "UNAVAILABLE")
        self.assertIn("model 'auto_string' (config auto-complete): ", idx["auto_string"].reason)
        self.assertIn("input 'X': element type 8 is not supported", idx["auto_string"].reason)
        self.assertIn("model 'mismatch_dims': config input 'INPUT' has dims[0] = 15, the ONNX "
                      "graph's axis 1 is 16 (axis 0 is the batch dim)",
                      idx["mismatch_dims"].reason)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="empty_dir"),
                                       timeout=30)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("model 'empty_dir' has no config.pbtxt, and its latest version directory 1 "
                      "holds no model file to read a config from (looked for: config.pbtxt, "
                      "1/model.onnx)", ctx.exception.details())
        with self.assertRaises(grpc.RpcError) as ctx:
            self.s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="auto_string"),
                                       timeout=30)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("element type 8 is not supported", ctx.exception.details())


if __name__ == "__main__":
    unittest.main()
