"""Integration tests: models exported from PyTorch (tests/fixtures/torch), served by kiln-server,
checked against PyTorch's outputs.

The fixtures are committed (tests/fixtures/torch/export.py writes them), so no torch is needed:
models/<name> is a repository entry and data/<name> holds inputs and PyTorch's outputs at
batch 1 and 3 (in_b3[0] equals in_b1[0]). One test per fixture."""
import os
import shutil
import tempfile
import unittest

import numpy as np

from proto import grpc_service_pb2 as pb
from test_server import Server, add_input

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = f"{ROOT}/tests/fixtures/torch"
NAMES = sorted(os.listdir(f"{FIXTURES}/models"))
TOL = 1e-5  # relative L2 error against PyTorch
ROW_TOL = 1e-6  # a row of a batch against the same input alone


def rel_l2(got, want):
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def load(name, what):
    return np.load(f"{FIXTURES}/data/{name}/{what}.npy")


class TestOnnxTorch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.repo = tempfile.mkdtemp(prefix="kiln-it-torch-")
        shutil.rmtree(cls.repo)
        shutil.copytree(f"{FIXTURES}/models", cls.repo)
        cls.server = Server(repo=cls.repo)  # stop() removes the copy
        cls.s = cls.server.stub
        cls.index = {m.name: m for m in cls.s.RepositoryIndex(pb.RepositoryIndexRequest()).models}

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        assert code == 0, f"kiln-server exited with {code}"

    def request(self, name, x):
        req = pb.ModelInferRequest(model_name=name)
        add_input(req, "INPUT", x)
        return req

    def answer(self, r):
        self.assertEqual([o.name for o in r.outputs], ["OUTPUT"])
        return np.frombuffer(r.raw_output_contents[0], np.float32).reshape(list(r.outputs[0].shape))

    def infer(self, name, x):
        return self.answer(self.s.ModelInfer(self.request(name, x), timeout=30))

    def check_fixture(self, name):
        m = self.index.get(name)
        self.assertIsNotNone(m, f"{name} is not in the repository index")
        self.assertEqual(m.state, "READY", f"{name} did not load: {m.reason}")
        got = {}
        for tag in ("b1", "b3"):
            x, want = load(name, f"in_{tag}"), load(name, f"out_{tag}")
            got[tag] = self.infer(name, x)
            # the second run of a shape runs on the memory plan the first one built
            np.testing.assert_array_equal(self.infer(name, x), got[tag], f"{name} {tag} again")
            self.assertEqual(got[tag].shape, want.shape, f"{name} {tag}")
            err = rel_l2(got[tag], want)
            self.assertLess(err, TOL, f"{name} {tag}: relative L2 error {err:.3g} against PyTorch")
        # The rows of a batch are the answers for each input alone.
        x3 = load(name, "in_b3")
        np.testing.assert_array_equal(x3[:1], load(name, "in_b1"))
        err = rel_l2(got["b3"][:1], got["b1"])
        self.assertLess(err, ROW_TOL, f"{name}: batch-3 row 0 against batch 1: {err:.3g}")
        for i in range(1, len(x3)):
            alone = self.infer(name, x3[i:i + 1])
            err = rel_l2(got["b3"][i:i + 1], alone)
            self.assertLess(err, ROW_TOL, f"{name}: batch-3 row {i} against it alone: {err:.3g}")

    def test_all_fixtures_load(self):
        self.assertGreaterEqual(len(NAMES), 5)
        bad = {n: self.index[n].reason for n in NAMES if self.index[n].state != "READY"}
        self.assertEqual(bad, {})

    def test_batchnorm_is_folded_at_load(self):
        """The BatchNormalization nodes kept in the exported graphs are folded into their
        Convs at load (and the answers still match PyTorch: the per-fixture tests)."""
        logs = self.server.logs()
        for name, n_bn in (("resnet", 6), ("mobilenet", 5)):
            lines = [line for line in logs.splitlines()
                     if f'"model":"{name}"' in line and "nodes run as" in line]
            self.assertEqual(len(lines), 1, logs)
            self.assertIn(f"{n_bn} BatchNormalization folded into Conv", lines[0])

    def test_concurrent_single_requests(self):
        """Batch-1 requests sent together (the configs ask for dynamic batching) each get their
        own row back."""
        for name in NAMES:
            if self.index[name].state != "READY":
                continue
            x3, want = load(name, "in_b3"), load(name, "out_b3")
            futures = [self.s.ModelInfer.future(self.request(name, x3[i:i + 1]), timeout=30)
                       for i in range(len(x3))]
            for i, f in enumerate(futures):
                err = rel_l2(self.answer(f.result()), want[i:i + 1])
                self.assertLess(err, TOL, f"{name} row {i} sent alone: {err:.3g}")


def _fixture_test(name):
    def test(self):
        self.check_fixture(name)
    test.__doc__ = f"{name} (tests/fixtures/torch/models/{name}) matches PyTorch at batch 1 and 3"
    return test


for _name in NAMES:
    setattr(TestOnnxTorch, f"test_{_name}_matches_pytorch", _fixture_test(_name))


if __name__ == "__main__":
    unittest.main()
