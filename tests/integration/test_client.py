"""libkilnclient (the C client) against live servers.

The C programs are built with the library: build/tests/integration/client_live (cmocka groups,
see its header) and build/examples/client/infer_simple. This file starts the servers (a real
kiln-server, with TLS where asked, or a fake that counts attempts), runs the programs and
checks what the servers saw. It also installs the library into a DESTDIR and builds a program
from the installed files with nothing but pkg-config.
"""
import collections
import os
import shutil
import subprocess
import tempfile
import threading
import unittest
from concurrent import futures

import grpc

import health_pb2
from proto import grpc_service_pb2 as pb
from test_scheduling import make_certs
from test_server import BUILD, Server

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LIVE = f"{BUILD}/tests/integration/client_live"
EXAMPLE = f"{BUILD}/examples/client/infer_simple"


# Under LeakSanitizer: c-ares's own leak when it resolves "localhost" (see the file).
LSAN = {"LSAN_OPTIONS": "suppressions=" + os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                       "lsan.supp")}


def run_live(group, url, timeout=120, **env):
    e = dict(os.environ, KILN_URL=url, **LSAN, **env)
    return subprocess.run([LIVE, group], env=e, capture_output=True, text=True, timeout=timeout)


class LiveCase(unittest.TestCase):
    def assertRan(self, r, what="client_live"):
        self.assertEqual(r.returncode, 0, f"{what} failed:\n{r.stdout}\n{r.stderr}")


class TestClientLive(LiveCase):
    def test_every_function(self):
        server = Server()
        try:
            self.assertRan(run_live("all", f"127.0.0.1:{server.port}"))
        finally:
            self.assertEqual(server.stop(), 0)

    def test_load_unload(self):
        server = Server("--load=none")
        try:
            self.assertRan(run_live("control", f"127.0.0.1:{server.port}", KILN_BACKOFF_MS="5"))
        finally:
            self.assertEqual(server.stop(), 0)

    def test_example_program(self):
        server = Server()
        try:
            r = subprocess.run([EXAMPLE, f"127.0.0.1:{server.port}"], capture_output=True,
                               text=True, timeout=60)
            self.assertRan(r, "infer_simple")
            lines = r.stdout.splitlines()
            self.assertEqual(lines[0], "health: SERVING")
            self.assertEqual(lines[1], "OUTPUT0 [" + ", ".join(str(i + 100) for i in range(16)) + "]")
            self.assertEqual(lines[2], "OUTPUT1 [" + ", ".join(str(i - 100) for i in range(16)) + "]")
        finally:
            self.assertEqual(server.stop(), 0)
        # with no server: the error names the status and the cause, and the exit code is 1
        r = subprocess.run([EXAMPLE, f"127.0.0.1:{server.port}"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn("infer_simple: health: UNAVAILABLE: ", r.stderr)

    def test_reconnects_after_a_restart(self):
        server = Server()
        port = server.port
        p = subprocess.Popen([LIVE, "reconnect"],
                             env=dict(os.environ, KILN_URL=f"127.0.0.1:{port}", **LSAN),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
        out = []
        new = None
        try:
            def until(marker):
                for line in p.stdout:
                    out.append(line)
                    if line.strip() == marker:
                        return
                raise AssertionError("client_live ended before " + marker + ":\n" + "".join(out))
            until("READY-STOP")
            self.assertEqual(server.stop(), 0)
            p.stdin.write("\n")
            p.stdin.flush()
            until("READY-START")
            new = Server(f"--address=127.0.0.1:{port}")
            self.assertEqual(new.port, port)
            p.stdin.write("\n")
            p.stdin.flush()
            rest, _ = p.communicate(timeout=90)
            out.extend(rest.splitlines(keepends=True))
            self.assertEqual(p.returncode, 0, "".join(out))
            print("\n" + "".join(line for line in out if line.startswith("  ")), end="")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            if new:
                self.assertEqual(new.stop(), 0)


class TestClientTls(LiveCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln-client-tls-")
        make_certs(cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_tls(self):
        d = self.dir
        server = Server(f"--tls-cert={d}/server.pem", f"--tls-key={d}/server.key")
        try:
            self.assertRan(run_live("tls", f"localhost:{server.port}", KILN_CA=f"{d}/ca.pem"))
            self.assertRan(run_live("tls", f"127.0.0.1:{server.port}", KILN_CA=f"{d}/ca.pem",
                                    KILN_SERVER_NAME="localhost"))
            # plaintext to a TLS port, and a CA that did not sign the server: refused
            self.assertRan(run_live("refused", f"127.0.0.1:{server.port}"))
            self.assertRan(run_live("refused", f"localhost:{server.port}", KILN_CA=f"{d}/client.pem"))
        finally:
            self.assertEqual(server.stop(), 0)

    def test_mutual_tls(self):
        d = self.dir
        server = Server(f"--tls-cert={d}/server.pem", f"--tls-key={d}/server.key",
                        f"--tls-client-ca={d}/ca.pem")
        try:
            url = f"localhost:{server.port}"
            self.assertRan(run_live("refused", url, KILN_CA=f"{d}/ca.pem"))
            self.assertRan(run_live("tls", url, KILN_CA=f"{d}/ca.pem", KILN_CERT=f"{d}/client.pem",
                                    KILN_KEY=f"{d}/client.key"))
        finally:
            self.assertEqual(server.stop(), 0)


class FakeServer:
    """Answers the KServe and health services the way the retry group expects, counting every
    attempt per method."""

    def __init__(self):
        self.counts = collections.Counter()
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def handler(name, req_type, fn):
            def call(request, context):
                with self.lock:
                    self.counts[name] += 1
                    n = self.counts[name]
                return fn(n, request, context)
            return grpc.unary_unary_rpc_method_handler(
                call, request_deserializer=req_type.FromString,
                response_serializer=lambda m: m.SerializeToString())

        def fail_first(k, name, answer):
            def fn(n, request, context):
                if n <= k:
                    context.abort(grpc.StatusCode.UNAVAILABLE, f"fake: {name} unavailable")
                return answer
            return fn

        never = 1 << 30
        kserve = {
            "ServerLive": handler("ServerLive", pb.ServerLiveRequest,
                                  fail_first(2, "ServerLive", pb.ServerLiveResponse(live=True))),
            "ServerReady": handler("ServerReady", pb.ServerReadyRequest,
                                   fail_first(never, "ServerReady", None)),
            "RepositoryModelLoad": handler("RepositoryModelLoad", pb.RepositoryModelLoadRequest,
                                           fail_first(never, "RepositoryModelLoad", None)),
            "RepositoryModelUnload": handler("RepositoryModelUnload", pb.RepositoryModelUnloadRequest,
                                             fail_first(never, "RepositoryModelUnload", None)),
            "SystemSharedMemoryRegister": handler(
                "SystemSharedMemoryRegister", pb.SystemSharedMemoryRegisterRequest,
                fail_first(never, "SystemSharedMemoryRegister", None)),
            "ModelInfer": handler("ModelInfer", pb.ModelInferRequest,
                                  fail_first(1, "ModelInfer", pb.ModelInferResponse(model_name="simple"))),
        }

        def check(n, request, context):
            context.abort(grpc.StatusCode.NOT_FOUND, f"fake: no service '{request.service}'")

        health = {"Check": handler("Check", health_pb2.HealthCheckRequest, check)}
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("inference.GRPCInferenceService", kserve),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", health)))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(grace=None)


class TestClientRetry(LiveCase):
    def test_retries_only_idempotent_calls(self):
        fake = FakeServer()
        try:
            self.assertRan(run_live("retry", f"127.0.0.1:{fake.port}", KILN_BACKOFF_MS="5"))
            self.assertEqual(dict(fake.counts), {
                "ServerLive": 3,                  # failed twice, answered the third time
                "ServerReady": 4,                 # 1 + options.retries (3)
                "RepositoryModelLoad": 1,         # never retried
                "RepositoryModelUnload": 1,
                "SystemSharedMemoryRegister": 1,
                "ModelInfer": 2,
                "Check": 1,                       # NOT_FOUND is not retried
            })
        finally:
            fake.stop()


def needed_libs(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    return [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


class TestInstall(unittest.TestCase):
    def test_install_and_pkg_config(self):
        lib = os.path.realpath(f"{BUILD}/libkilnclient.so")
        if any("asan" in n or "tsan" in n for n in needed_libs(lib)):
            self.skipTest("a sanitizer build: a plain program cannot load this library")
        dest = tempfile.mkdtemp(prefix="kiln-destdir-")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
            r = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT, f"BUILD={BUILD}",
                                f"DESTDIR={dest}", "PREFIX=/opt/kiln", "install"],
                               env=env, capture_output=True, text=True, timeout=600)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            root = f"{dest}/opt/kiln"
            libdir = f"{root}/lib"
            self.assertTrue(os.path.isfile(f"{root}/include/kiln_client.h"))
            self.assertEqual(os.readlink(f"{libdir}/libkilnclient.so"), "libkilnclient.so.0")
            self.assertEqual(os.readlink(f"{libdir}/libkilnclient.so.0"), "libkilnclient.so.0.1.0")
            self.assertTrue(os.path.isfile(f"{libdir}/libkilnclient.a"))
            dyn = subprocess.run(["readelf", "-d", f"{libdir}/libkilnclient.so.0.1.0"],
                                 capture_output=True, text=True, check=True).stdout
            self.assertIn("Library soname: [libkilnclient.so.0]", dyn)
            # only the public API is exported, from both libraries
            syms = subprocess.run(["nm", "-D", "--defined-only", f"{libdir}/libkilnclient.so.0.1.0"],
                                  capture_output=True, text=True, check=True).stdout.split("\n")
            names = [s.split()[-1].split("@")[0] for s in syms if s.strip()]
            self.assertTrue(all(n.startswith("kiln_client_") or n == "KILNCLIENT_0" for n in names), names)
            self.assertIn("kiln_client_infer", names)
            syms = subprocess.run(["nm", "-g", "--defined-only", f"{libdir}/libkilnclient.a"],
                                  capture_output=True, text=True, check=True).stdout.split("\n")
            names = [s.split()[-1] for s in syms if s.strip() and not s.endswith(":")]
            self.assertTrue(all(n.startswith("kiln_client_") for n in names), names)
            # a program built from the installed files with pkg-config alone
            pc = {"PKG_CONFIG_PATH": f"{libdir}/pkgconfig", "PKG_CONFIG_SYSROOT_DIR": dest}
            flags = subprocess.run(["pkg-config", "--cflags", "--libs", "kilnclient"],
                                   env=dict(os.environ, **pc), capture_output=True, text=True,
                                   check=True).stdout.split()
            self.assertIn(f"-I{root}/include", flags)
            self.assertIn(f"-L{libdir}", flags)
            prog = f"{dest}/infer_simple"
            r = subprocess.run(["cc", f"{ROOT}/examples/client/infer_simple.c", *flags, "-o", prog],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            server = Server()
            try:
                r = subprocess.run([prog, f"127.0.0.1:{server.port}"],
                                   env=dict(os.environ, LD_LIBRARY_PATH=libdir),
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn("OUTPUT1 [-100, -99,", r.stdout)
            finally:
                self.assertEqual(server.stop(), 0)
            # and statically, with pkg-config --static
            flags = subprocess.run(["pkg-config", "--static", "--cflags", "--libs", "kilnclient"],
                                   env=dict(os.environ, **pc), capture_output=True, text=True,
                                   check=True).stdout.split()
            flags = [f"{libdir}/libkilnclient.a" if f == "-lkilnclient" else f for f in flags]
            r = subprocess.run(["cc", f"{ROOT}/examples/client/infer_simple.c", *flags,
                                "-o", prog + "-static"], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn("libkilnclient.so.0", needed_libs(prog + "-static"))
            r = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT, f"BUILD={BUILD}",
                                f"DESTDIR={dest}", "PREFIX=/opt/kiln", "uninstall"],
                               env=env, capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            left = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs
                    if not f.startswith("infer_simple")]
            self.assertEqual(left, [])
        finally:
            shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
