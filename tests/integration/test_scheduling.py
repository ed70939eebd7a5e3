"""Integration tests: scheduling under load (batching, queues, deadlines, cancellation,
instances, streams), TLS and mutual TLS, the Unix socket, the plaintext health port, drain."""
import os
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import grpc
import numpy as np

import health_pb2
import health_pb2_grpc
from proto import grpc_service_pb2 as pb
from proto import grpc_service_pb2_grpc as pbg
from test_server import BUILD, Base, Server, add_input, make_repo, simple_request


def slow_config(name, delay_ms, queue="", extra=""):
    return (f'name: "{name}" backend: "plugin" max_batch_size: 4 '
            f'input {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} '
            f'output {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} '
            f'parameters {{ key: "execute_delay_ms" value {{ string_value: "{delay_ms}" }} }} '
            f'dynamic_batching {{ {queue} }} {extra}')


def fp32_request(model, value=1.0, n=4):
    req = pb.ModelInferRequest(model_name=model)
    add_input(req, "INPUT0", np.full((1, n), value, np.float32))
    return req


def stats(stub, model):
    return stub.ModelStatistics(pb.ModelStatisticsRequest(name=model)).model_stats[0]


class TestScheduling(Base):
    @classmethod
    def setUpClass(cls):
        repo = make_repo({
            "slow": slow_config("slow", 300, "default_queue_policy { max_queue_size: 2 }"),
            "slow_timeout": slow_config("slow_timeout", 300,
                                        "default_queue_policy { default_timeout_microseconds: 100000 }"),
            "slow_override": slow_config("slow_override", 300,
                                         "default_queue_policy { default_timeout_microseconds: 100000 "
                                         "allow_timeout_override: true }"),
            "slow_delay": slow_config("slow_delay", 300,
                                      "default_queue_policy { default_timeout_microseconds: 100000 "
                                      "timeout_action: DELAY }"),
            "slow_deadline": slow_config("slow_deadline", 300),
            "slow_cancel": slow_config("slow_cancel", 300),
            "pair": slow_config("pair", 200, extra="instance_group [ { count: 2 kind: KIND_CPU } ]"),
        })
        cls.server = Server("--exec-threads=4", repo=repo)
        cls.s = cls.server.stub

    def test_32_clients_batch_and_answer_right(self):
        errors, lock = [], threading.Lock()

        def client(k):
            stub = pbg.GRPCInferenceServiceStub(self.server.channel)
            for i in range(20):
                a = np.full((1, 16), k * 100 + i, np.int32)
                b = np.arange(16, dtype=np.int32).reshape(1, 16)
                req, _, _ = simple_request(a, b)
                r = stub.ModelInfer(req, timeout=30)
                got = np.frombuffer(r.raw_output_contents[0], np.int32)
                if not (got == (a + b).ravel()).all():
                    with lock:
                        errors.append((k, i))
        before = stats(self.s, "simple") if self.s.ModelStatistics(
            pb.ModelStatisticsRequest()).model_stats else None
        threads = [threading.Thread(target=client, args=(k,)) for k in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        st = stats(self.s, "simple")
        inferences = st.inference_count - (before.inference_count if before else 0)
        executions = st.execution_count - (before.execution_count if before else 0)
        self.assertEqual(inferences, 640)
        self.assertLess(executions, inferences, "no batching happened")
        sizes = {b.batch_size: b.compute_infer.count for b in st.batch_stats}
        self.assertTrue(any(size > 1 for size in sizes), sizes)
        self.assertEqual(sum(size * n for size, n in sizes.items()), st.inference_count)
        print(f"\n  32 clients x 20 requests: {executions} executions, average batch "
              f"{inferences / executions:.2f}, batch sizes {dict(sorted(sizes.items()))}")

    def outcomes(self, futures):
        out = []
        for f in futures:
            try:
                f.result()
                out.append("OK")
            except grpc.RpcError as e:
                out.append(e.code())
        return out

    def test_queue_full(self):
        futures = []
        for i in range(6):
            futures.append(self.s.ModelInfer.future(fp32_request("slow", i), timeout=30))
            time.sleep(0.02)
        codes = self.outcomes(futures)
        for f in futures:
            if f.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.assertIn("model 'slow' queue is full (2 requests waiting, max_queue_size 2)",
                              f.details())
        self.assertIn(grpc.StatusCode.RESOURCE_EXHAUSTED, codes)
        self.assertIn("OK", codes)
        self.assertEqual(set(codes) - {"OK", grpc.StatusCode.RESOURCE_EXHAUSTED}, set())

    def test_queue_policy_timeout(self):
        # the first runs alone (300 ms); the next two wait behind it longer than 100 ms
        futures = [self.s.ModelInfer.future(fp32_request("slow_timeout", 0), timeout=30)]
        time.sleep(0.05)
        futures += [self.s.ModelInfer.future(fp32_request("slow_timeout", i), timeout=30) for i in (1, 2)]
        outcomes = self.outcomes(futures)
        self.assertIn("OK", outcomes)
        self.assertIn(grpc.StatusCode.DEADLINE_EXCEEDED, outcomes)
        for f in futures:
            if f.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                self.assertIn("queue timeout (queue policy) passed while it was queued", f.details())

    def test_queue_timeout_override(self):
        # allow_timeout_override: the request's "timeout" parameter (us) replaces the default
        first = self.s.ModelInfer.future(fp32_request("slow_override", 0), timeout=30)
        time.sleep(0.05)
        long = fp32_request("slow_override", 1)
        long.parameters["timeout"].int64_param = 10_000_000
        default = fp32_request("slow_override", 2)
        got = self.outcomes([first, self.s.ModelInfer.future(long, timeout=30),
                             self.s.ModelInfer.future(default, timeout=30)])
        self.assertEqual(got, ["OK", "OK", grpc.StatusCode.DEADLINE_EXCEEDED])
        # without allow_timeout_override the parameter is ignored: the default still applies
        first = self.s.ModelInfer.future(fp32_request("slow_timeout", 0), timeout=30)
        time.sleep(0.05)
        long = fp32_request("slow_timeout", 1)
        long.parameters["timeout"].int64_param = 10_000_000
        got = self.outcomes([first, self.s.ModelInfer.future(long, timeout=30)])
        self.assertEqual(got, ["OK", grpc.StatusCode.DEADLINE_EXCEEDED])

    def test_queue_timeout_bad_parameter(self):
        for bad in ("string_param", "bool_param"):
            req = fp32_request("slow_override", 1)
            if bad == "string_param":
                req.parameters["timeout"].string_param = "10s"
            else:
                req.parameters["timeout"].bool_param = True
            with self.assertRaises(grpc.RpcError) as ctx:
                self.s.ModelInfer(req, timeout=30)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("parameters 'timeout' must be a non-negative integer (microseconds)",
                          ctx.exception.details())
        req = fp32_request("slow_override", 1)
        req.parameters["timeout"].int64_param = -5
        with self.assertRaises(grpc.RpcError) as ctx:
            self.s.ModelInfer(req, timeout=30)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_queue_timeout_action_delay(self):
        # DELAY: requests past the queue timeout stay queued and run
        first = self.s.ModelInfer.future(fp32_request("slow_delay", 0), timeout=30)
        time.sleep(0.05)
        rest = [self.s.ModelInfer.future(fp32_request("slow_delay", i), timeout=30) for i in (1, 2)]
        self.assertEqual(self.outcomes([first] + rest), ["OK", "OK", "OK"])

    def test_deadline_while_queued_never_runs(self):
        first = self.s.ModelInfer.future(fp32_request("slow_deadline", 1), timeout=30)
        time.sleep(0.05)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.s.ModelInfer(fp32_request("slow_deadline", 2), timeout=0.1)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        first.result()
        time.sleep(0.4)  # the second would have run by now if it had not been dropped
        st = stats(self.s, "slow_deadline")
        self.assertEqual(st.execution_count, 1)
        self.assertEqual(st.inference_count, 1)

    def test_cancelled_while_queued_never_runs(self):
        first = self.s.ModelInfer.future(fp32_request("slow_cancel", 1), timeout=30)
        time.sleep(0.05)
        second = self.s.ModelInfer.future(fp32_request("slow_cancel", 2), timeout=30)
        time.sleep(0.05)
        self.assertTrue(second.cancel())
        first.result()
        time.sleep(0.4)
        st = stats(self.s, "slow_cancel")
        self.assertEqual(st.execution_count, 1)

    def test_instances_run_in_parallel_and_answer(self):
        futures = [self.s.ModelInfer.future(fp32_request("pair", v, n=8), timeout=30) for v in (3.0, 5.0)]
        for v, f in zip((3.0, 5.0), futures):
            r = f.result()
            self.assertTrue((np.frombuffer(r.raw_output_contents[0], np.float32) == v).all())

    def test_stream_1000_in_flight(self):
        def requests():
            for i in range(1000):
                req, _, _ = simple_request(np.full((1, 16), i, np.int32), np.zeros((1, 16), np.int32))
                req.id = str(i)
                yield req
        seen = {}
        for r in self.s.ModelStreamInfer(requests(), timeout=60):
            self.assertEqual(r.error_message, "")
            seen[r.infer_response.id] = np.frombuffer(r.infer_response.raw_output_contents[0], np.int32)[0]
        self.assertEqual(len(seen), 1000)
        self.assertTrue(all(seen[str(i)] == i for i in range(1000)))


def make_certs(d):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=kiln-test-ca")
    for who, san in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"), ("client", None)):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr",
            "-subj", f"/CN={'localhost' if who == 'server' else 'kiln-client'}")
        ext = ["-extfile", f"{who}.ext"] if san else []
        if san:
            with open(f"{d}/{who}.ext", "w") as f:
                f.write(san + "\n")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.pem", "-days", "1", *ext)
    return {k: open(f"{d}/{k}", "rb").read() for k in
            ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


class TestTransport(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln-tls-")
        cls.pem = make_certs(cls.dir)

    def tls_stub(self, port, client_cert=False):
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.pem["ca.pem"],
            private_key=self.pem["client.key"] if client_cert else None,
            certificate_chain=self.pem["client.pem"] if client_cert else None)
        ch = grpc.secure_channel(f"localhost:{port}", creds)
        return ch, pbg.GRPCInferenceServiceStub(ch)

    def test_tls_and_plaintext_health_port(self):
        hp = f"{self.dir}/health-port"
        server = Server(f"--tls-cert={self.dir}/server.pem", f"--tls-key={self.dir}/server.key",
                        "--health-address=127.0.0.1:0", f"--health-port-file={hp}")
        try:
            ch, stub = self.tls_stub(server.port)
            self.assertEqual(len(stub.ModelInfer(simple_request()[0], timeout=10).outputs), 2)
            ch.close()
            with self.assertRaises(grpc.RpcError) as ctx:  # plaintext is refused on the TLS port
                server.stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)
            for _ in range(200):
                if os.path.exists(hp):
                    break
                time.sleep(0.02)
            hch = grpc.insecure_channel(f"127.0.0.1:{int(open(hp).read())}")
            h = health_pb2_grpc.HealthStub(hch)
            self.assertEqual(h.Check(health_pb2.HealthCheckRequest(service="simple"), timeout=5).status,
                             health_pb2.HealthCheckResponse.SERVING)
            with self.assertRaises(grpc.RpcError) as ctx:  # only health lives there
                pbg.GRPCInferenceServiceStub(hch).ServerLive(pb.ServerLiveRequest(), timeout=5)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
            hch.close()
        finally:
            self.assertEqual(server.stop(), 0)

    def test_mutual_tls(self):
        server = Server(f"--tls-cert={self.dir}/server.pem", f"--tls-key={self.dir}/server.key",
                        f"--tls-client-ca={self.dir}/ca.pem")
        try:
            ch, stub = self.tls_stub(server.port, client_cert=False)
            with self.assertRaises(grpc.RpcError) as ctx:
                stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAVAILABLE)
            ch.close()
            ch, stub = self.tls_stub(server.port, client_cert=True)
            self.assertTrue(stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live)
            ch.close()
        finally:
            self.assertEqual(server.stop(), 0)

    def test_tls_flag_errors(self):
        r = subprocess.run([f"{BUILD}/kiln-server", "--address=127.0.0.1:0",
                            f"--tls-cert={self.dir}/server.pem"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("TLS needs both --tls-cert and --tls-key", r.stderr)
        r = subprocess.run([f"{BUILD}/kiln-server", "--address=127.0.0.1:0",
                            f"--tls-cert={self.dir}/ca.key.missing", f"--tls-key={self.dir}/server.key"],
                           capture_output=True, text=True, timeout=20)
        self.assertIn("cannot be read", r.stderr)

    def test_unix_socket(self):
        sock = f"{self.dir}/kiln.sock"
        server = Server(f"--unix-socket={sock}")
        try:
            ch = grpc.insecure_channel(f"unix:{sock}")
            stub = pbg.GRPCInferenceServiceStub(ch)
            self.assertEqual(len(stub.ModelInfer(simple_request()[0], timeout=10).outputs), 2)
            ch.close()
        finally:
            self.assertEqual(server.stop(), 0)


class TestDrain(unittest.TestCase):
    def test_no_accepted_request_is_lost(self):
        repo = make_repo({"steady": slow_config("steady", 20)})
        server = Server(repo=repo)
        outcomes, lock, stop, details = [], threading.Lock(), threading.Event(), []
        watch = server.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)

        def client(k):
            ch = grpc.insecure_channel(f"127.0.0.1:{server.port}")
            stub = pbg.GRPCInferenceServiceStub(ch)
            i = 0
            while not stop.is_set():
                v = float(k * 1000 + i)
                i += 1
                try:
                    r = stub.ModelInfer(fp32_request("steady", v), timeout=30)
                    ok = (np.frombuffer(r.raw_output_contents[0], np.float32) == v).all()
                    with lock:
                        outcomes.append("OK" if ok else "WRONG")
                except grpc.RpcError as e:
                    with lock:
                        outcomes.append(e.code())
                        if e.code() != grpc.StatusCode.UNAVAILABLE:
                            details.append(f"{e.code()} {e.details()}")
                    if e.code() == grpc.StatusCode.UNAVAILABLE:
                        break
            ch.close()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.7)
        server.proc.send_signal(signal.SIGTERM)
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.NOT_SERVING)
        code = server.proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        self.assertEqual(code, 0)
        ok = outcomes.count("OK")
        others = [o for o in outcomes if o not in ("OK", grpc.StatusCode.UNAVAILABLE)]
        self.assertEqual(others, [], f"every accepted request must be answered correctly: {details}")
        self.assertGreater(ok, 20)
        print(f"\n  drain: {ok} answered, {outcomes.count(grpc.StatusCode.UNAVAILABLE)} refused "
              "after the signal, none lost")
        server.stop()


if __name__ == "__main__":
    unittest.main()
