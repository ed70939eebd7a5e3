#!/usr/bin/python3
"""Health check and one inference on the example model `simple`, with Debian's grpcio.

Usage: examples/infer_simple.py [HOST:PORT]   (default 127.0.0.1:8001)
The stubs come from `make pystubs` (build/default/py).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "build", "default", "py"))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402
from proto import grpc_service_pb2 as pb  # noqa: E402
from proto import grpc_service_pb2_grpc as pbg  # noqa: E402

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8001"
channel = grpc.insecure_channel(target)
health = health_pb2_grpc.HealthStub(channel)
print("health:", health_pb2.HealthCheckResponse.ServingStatus.Name(
    health.Check(health_pb2.HealthCheckRequest(service="simple"), timeout=5).status))

a = np.arange(16, dtype=np.int32).reshape(1, 16)
b = np.full((1, 16), 100, dtype=np.int32)
req = pb.ModelInferRequest(model_name="simple")
for name, arr in (("INPUT0", a), ("INPUT1", b)):
    req.inputs.add(name=name, datatype="INT32", shape=arr.shape)
    req.raw_input_contents.append(arr.tobytes())
res = pbg.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=5)
for out, raw in zip(res.outputs, res.raw_output_contents):
    print(out.name, np.frombuffer(raw, dtype=np.int32).reshape(tuple(out.shape)).tolist())
