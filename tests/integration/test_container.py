"""The container recipe (Dockerfile), checked where it can be without a Docker engine.

CI's own `make deps && make test` on Debian is the build stage's recipe; here the test checks
that the Dockerfile's make targets and copied paths exist, and that scripts/runtime-packages.sh
finds a package for every library the binaries load (what the runtime stage installs)."""
import os
import re
import subprocess
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dockerfile():
    with open(f"{ROOT}/Dockerfile") as f:
        return f.read()


class TestContainer(unittest.TestCase):
    def test_build_stage_targets_exist(self):
        text = dockerfile()
        m = re.search(r"make -j\"\$\(nproc\)\" ([^\\\n&]+)", text)
        self.assertIsNotNone(m, "the build stage runs make")
        targets = m.group(1).split()
        r = subprocess.run(["make", "-n", "-C", ROOT, *targets], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("scripts/deps.sh --build", text)
        r = subprocess.run(["bash", f"{ROOT}/scripts/deps.sh", "--nonsense"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)

    def test_copied_binaries_are_built(self):
        for src in re.findall(r"COPY --from=build (/src/\S+)", dockerfile()):
            for path in src.split():
                if path.startswith("/src/"):
                    rel = path[len("/src/"):]
                    self.assertTrue(os.path.exists(f"{ROOT}/{rel}"), f"{rel} is not built")

    def test_runtime_packages(self):
        bins = [f"{ROOT}/build/default/kiln-server", f"{ROOT}/build/default/kiln"]
        r = subprocess.run([f"{ROOT}/scripts/runtime-packages.sh", *bins], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        pkgs = r.stdout.split()
        for want in ("libgrpc29", "libprotobuf-c1", "libseccomp2", "libmicrohttpd12"):
            self.assertIn(want, pkgs)
        self.assertTrue(any(p.startswith("libopenblas0") for p in pkgs), pkgs)
        self.assertNotIn("libc6", pkgs)
        for p in pkgs:  # each is a real, installed package
            s = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                               text=True)
            self.assertIn("install ok installed", s.stdout, p)
        r = subprocess.run([f"{ROOT}/scripts/runtime-packages.sh"], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 2)

    def test_image_runs_as_non_root_with_a_health_check(self):
        text = dockerfile()
        self.assertRegex(text, r"\nUSER 10001:10001\n")
        self.assertIn("HEALTHCHECK", text)
        self.assertIn("EXPOSE 8001 8002 8003", text)


if __name__ == "__main__":
    unittest.main()
