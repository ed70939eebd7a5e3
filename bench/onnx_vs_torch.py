#!/usr/bin/python3
"""Kiln's ONNX CPU backend against PyTorch on the CPU, same machine, same run, same weights.

Models: the LeNet-style CNN and the transformer encoder layer of tests/fixtures/torch/export.py,
and torchvision's ResNet-18 (random weights, 3x224x224), each exported now to a temporary
repository. For batch 1 and 8:

  latency     one request at a time. PyTorch: torch.set_num_threads(CORES). Kiln: one model
              instance, --blas-threads CORES (bench_onnx).
  throughput  items per second over a few seconds of back-to-back runs. PyTorch: one loop
              (its CORES threads run each batch). Kiln: CORES instances on their own threads,
              one BLAS thread each (as kiln-server runs with --exec-threads CORES).
  plan        Kiln's memory-plan arena for that batch (and what the values would need without
              reuse), and the constants.

Ratios are PyTorch time / Kiln time (above 1: Kiln is faster). Needs python3-torch and
python3-torchvision (`make deps-bench`) and build/default/bench/bench_onnx (`make bench`).

    /usr/bin/python3 bench/onnx_vs_torch.py [--quick] [--cores N]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, f"{ROOT}/tests/fixtures/torch")
import export as fixtures  # noqa: E402  (the fixture model classes)

CONFIG = """name: "{name}"
backend: "onnx"
max_batch_size: 8
input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ {dims} ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ {odims} ] }} ]
"""


def models():
    import torchvision
    return [("cnn (lenet fixture)", "cnn", fixtures.LeNet, (1, 16, 16)),
            ("transformer fixture", "transformer", fixtures.EncoderLayer, (8, 32)),
            ("resnet18 (torchvision)", "resnet18",
             lambda: torchvision.models.resnet18(weights=None), (3, 224, 224))]


def export(repo, name, model, shape):
    d = f"{repo}/{name}"
    os.makedirs(f"{d}/1")
    x = torch.randn((1,) + shape)
    with torch.no_grad():
        y = model(x)
    torch.onnx.export(model, x, f"{d}/1/model.onnx", opset_version=17, input_names=["INPUT"],
                      output_names=["OUTPUT"],
                      dynamic_axes={"INPUT": {0: "batch"}, "OUTPUT": {0: "batch"}})
    with open(f"{d}/config.pbtxt", "w") as f:
        f.write(CONFIG.format(name=name, dims=", ".join(map(str, shape)),
                              odims=", ".join(map(str, y.shape[1:]))))
    return d


def torch_latency(model, x, runs):
    with torch.no_grad():
        for _ in range(5):
            model(x)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def torch_throughput(model, x, seconds):
    """Items per second over `seconds` of back-to-back runs (its threads run each one)."""
    with torch.no_grad():
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += 1
        return n * x.shape[0] / (time.perf_counter() - t0)


def kiln(bench, mdir, batch, runs, seconds, instances, blas, inp=None, out=None):
    cmd = [bench, mdir, "--batch", str(batch), "--runs", str(runs), "--seconds", str(seconds),
           "--instances", str(instances), "--blas-threads", str(blas)]
    if inp:
        cmd += ["--input", inp, "--output", out]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        sys.exit(f"bench_onnx failed: {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (a smoke run)")
    ap.add_argument("--cores", type=int, default=2, help="cores both sides use (default 2)")
    ap.add_argument("--build", default=f"{ROOT}/build/default")
    a = ap.parse_args()
    bench = f"{a.build}/bench/bench_onnx"
    if not os.path.exists(bench):
        sys.exit(f"{bench} is missing: run `make bench` (or make {bench})")
    torch.set_num_threads(a.cores)
    torch.manual_seed(0)
    repo = tempfile.mkdtemp(prefix="kiln-bench-onnx-")
    rows = []
    try:
        for label, name, ctor, shape in models():
            model = ctor().eval()
            mdir = export(repo, name, model, shape)
            heavy = name == "resnet18"
            runs = 3 if a.quick else (10 if heavy else 200)
            secs = 1 if a.quick else 3
            for batch in (1, 8):
                x = torch.randn((batch,) + shape)
                raw, out = f"{repo}/{name}.in", f"{repo}/{name}.out"
                x.numpy().astype(np.float32).tofile(raw)
                t_p50 = torch_latency(model, x, runs)
                t_ips = torch_throughput(model, x, secs)
                lat = kiln(bench, mdir, batch, runs, 0.2, 1, a.cores, raw, out)
                thr = kiln(bench, mdir, batch, 1, secs, a.cores, 1)
                with torch.no_grad():
                    want = model(x).numpy()
                got = np.fromfile(out, np.float32).reshape(want.shape)
                err = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))
                rows.append(dict(model=label, batch=batch, torch_p50=t_p50, kiln_p50=lat["p50_ms"],
                                 torch_ips=t_ips, kiln_ips=thr["items_per_s"],
                                 arena=lat["plan_arena_bytes"],
                                 noreuse=lat["plan_no_reuse_bytes"], consts=lat["const_bytes"],
                                 nodes=lat["nodes"], steps=lat["steps"], err=err))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    print(f"\nKiln vs PyTorch {torch.__version__} on the CPU, {a.cores} cores each "
          f"(ratios: PyTorch time / Kiln time; above 1 Kiln is faster)\n")
    print(f"{'model':24} {'batch':>5} {'torch p50':>10} {'kiln p50':>10} {'ratio':>6} "
          f"{'torch it/s':>11} {'kiln it/s':>10} {'ratio':>6} {'plan MiB':>9} "
          f"{'no reuse':>9} {'rel L2':>8}")
    for r in rows:
        print(f"{r['model']:24} {r['batch']:>5} {r['torch_p50']:>8.3f}ms {r['kiln_p50']:>8.3f}ms "
              f"{r['torch_p50'] / r['kiln_p50']:>6.2f} {r['torch_ips']:>11.1f} "
              f"{r['kiln_ips']:>10.1f} {r['kiln_ips'] / r['torch_ips']:>6.2f} "
              f"{r['arena'] / 2**20:>9.3f} {r['noreuse'] / 2**20:>9.3f} {r['err']:>8.1e}")


if __name__ == "__main__":
    main()
