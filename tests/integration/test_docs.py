"""Docs that cannot rot: the configuration page is what kiln-server's flag table prints, every
kiln-server flag the docs mention exists, every `make` target they name exists, and the
shell blocks marked `<!-- test -->` run (against a real kiln-server when they need one)."""
import glob
import shutil
import tempfile
import os
import re
import signal
import subprocess
import time
import unittest

import numpy as np

from test_server import BUILD, Server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = [f"{ROOT}/README.md"] + sorted(glob.glob(f"{ROOT}/docs/*.md"))


def read(path):
    with open(path) as f:
        return f.read()


def server_flags():
    out = subprocess.run([f"{BUILD}/kiln-server", "--help"], capture_output=True, text=True,
                         check=True).stdout
    return set(re.findall(r"^  --([a-z][a-z0-9-]*)", out, re.M))


def make_targets():
    out = subprocess.run(["make", "-C", ROOT, "-qp"], capture_output=True, text=True).stdout
    return set(re.findall(r"^([a-z][a-z0-9_-]*):", out, re.M))


def tested_blocks(text):
    """(block, in_tmpdir) for the ```sh blocks right after a `<!-- test -->` line (run in the
    repository's root) or a `<!-- test tmpdir -->` line (run in a fresh directory holding
    a.npy and b.npy, two INT32 [16] arrays, with the build's binaries on PATH)."""
    return [(b, kind == " tmpdir")
            for kind, b in re.findall(r"<!-- test( tmpdir)? -->\s*\n```sh\n(.*?)```", text, re.S)]


class TestDocs(unittest.TestCase):
    def test_configuration_page_is_generated(self):
        want = subprocess.run([f"{BUILD}/kiln-server", "--help-markdown"], capture_output=True,
                              text=True, check=True).stdout
        self.assertEqual(read(f"{ROOT}/docs/configuration.md"), want,
                         "docs/configuration.md is stale: run `make docs`")

    def test_every_server_flag_in_the_docs_exists(self):
        flags = server_flags()
        bad = []
        for path in DOCS:
            for line in read(path).splitlines():
                if "kiln-server" not in line:
                    continue
                for flag in re.findall(r"kiln-server[^`\n]*?--([a-z][a-z0-9-]*)", line):
                    if flag not in flags:
                        bad.append(f"{os.path.relpath(path, ROOT)}: --{flag}")
        self.assertEqual(bad, [])

    def test_every_make_target_in_the_docs_exists(self):
        targets = make_targets()
        bad = []
        for path in DOCS:
            for t in re.findall(r"`make ([a-z][a-z0-9_./-]*)", read(path)):
                if "/" not in t and t not in targets:  # files (build/...) come from rules
                    bad.append(f"{os.path.relpath(path, ROOT)}: make {t}")
        self.assertEqual(bad, [])

    def test_make_run_serves_the_examples(self):
        """`make run`, the README's first command after `make deps`: it builds the default
        configuration and serves the example models (here on 127.0.0.1 and ports of its own,
        through RUN_FLAGS, instead of 0.0.0.0:8001)."""
        tmp = tempfile.mkdtemp(prefix="kiln-it-run-")
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "BUILD", "SAN")}
        flags = (f"--address=127.0.0.1:0 --port-file={tmp}/port "
                 "--metrics-address=127.0.0.1:0 --health-address=")
        p = subprocess.Popen(["make", "-C", ROOT, "--no-print-directory", "run",
                              f"RUN_FLAGS={flags}"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            port = ""
            for _ in range(3000):  # the build may take a while on a fresh tree
                if os.path.exists(f"{tmp}/port"):
                    port = read(f"{tmp}/port").strip()
                if port or p.poll() is not None:
                    break
                time.sleep(0.1)
            self.assertTrue(port, "make run did not serve: " +
                            (p.stderr.read() if p.poll() is not None else "(still starting)"))
            kiln = f"{ROOT}/build/default/kiln"
            url = f"127.0.0.1:{port}"
            r = subprocess.run([kiln, "health", "simple", "--url", url], capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            r = subprocess.run([kiln, "models", "--url", url], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            for m in ("simple", "mlp_onnx", "identity_fp32"):
                self.assertIn(m, r.stdout)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=90)
            p.stderr.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def test_marked_shell_blocks_run(self):
        blocks = [(p, b) for p in DOCS for b in tested_blocks(read(p))]
        if not blocks:
            self.skipTest("no block is marked <!-- test -->")
        srv = Server()
        try:
            # the docs' commands as a person types them: a make they run uses the default
            # build (not this test run's sanitizer build) and no outer make's job server
            env = {k: v for k, v in os.environ.items()
                   if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "BUILD", "SAN")}
            env.update(PATH=f"{BUILD}:/usr/bin:/bin", KILN_URL=f"127.0.0.1:{srv.port}")
            for path, (block, in_tmpdir) in blocks:
                # the docs' addresses are the defaults; the test's server picked its own ports
                block = block.replace("127.0.0.1:8001", f"127.0.0.1:{srv.port}")
                block = block.replace("127.0.0.1:8002", f"127.0.0.1:{srv.metrics_port}")
                cwd = ROOT
                if in_tmpdir:
                    cwd = tempfile.mkdtemp(prefix="kiln-it-docs-")
                    np.save(f"{cwd}/a.npy", np.arange(16, dtype=np.int32))
                    np.save(f"{cwd}/b.npy", np.ones(16, np.int32))
                try:
                    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd,
                                       env=env, capture_output=True, text=True, timeout=180)
                finally:
                    if in_tmpdir:
                        shutil.rmtree(cwd, ignore_errors=True)
                self.assertEqual(r.returncode, 0,
                                 f"{os.path.relpath(path, ROOT)}:\n{block}\n{r.stdout}{r.stderr}")
        finally:
            srv.stop()


if __name__ == "__main__":
    unittest.main()
