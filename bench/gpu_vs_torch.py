#!/usr/bin/env python3
"""bench/gpu_vs_torch.py: Kiln's ONNX backend on a GPU against PyTorch eager, in one command.

Run on a machine with an NVIDIA GPU, PyTorch and torchvision (the device machine; docs/gpu.md):

    python3 bench/gpu_vs_torch.py --bin build/bundle/bin [--batches 1,8,32,64] [--e2e]
        [--model resnet50|encoder] [--baseline-bin OTHER/bin]

1. Exports torchvision's ResNet-50 (random weights, seed 0) to ONNX, with a dynamic batch; or,
   with --model encoder, a stack of 4 BERT-base-sized transformer encoder layers (d_model 768,
   12 heads, feed-forward 3072, GELU, post-norm; the fixtures' EncoderLayer of
   tests/fixtures/torch/export.py) on 128 tokens.
2. Execute time per batch size: PyTorch eager (cudnn.benchmark on; FP32 with TF32 off, TF32
   on for convolutions and matmuls, and FP16: the model in half, the FP32 input converted to
   FP16 and the output back to FP32 inside the timed call, as Kiln does) against Kiln's backend
   through bench_onnx --gpu 0 (the same precision; --precisions picks them), both with the
   input already on the GPU and the output left there
   (Kiln: --device-io), and both from host memory and back. Medians of --runs runs after a
   warm-up; ratios are PyTorch time / Kiln time (above 1: Kiln is faster). Kiln with CUDA
   graphs on (the default) and off.
3. Outputs agree: Kiln's output for batch 1 against PyTorch's FP32 one, relative L2 (Kiln in
   FP32, and in FP16 next to PyTorch's own FP16 output).
4. With --e2e: kiln-server serving the model (dynamic batcher, KIND_GPU), driven by
   `kiln perf` at concurrency 1, 16 and 64: images/s and p50/p99 latency, graphs on and off.
5. With --scaling (a machine with 2 GPUs or more): throughput of bench_onnx (batch 32, TF32,
   device io) with one instance on GPU 0, two instances on GPU 0, and one instance on each of
   GPUs 0 and 1; then kiln-server with the model on KIND_GPU without a list (an instance on
   every GPU) against gpus: [0], through `kiln perf --shm` at concurrency 64.
With --baseline-bin, every Kiln timing is also taken with another build's bench_onnx (an
earlier commit's bundle, say) in the same run, in A B B A order (this build, the baseline with
graphs; the baseline, this build without), so that a drift of the machine's speed weighs on
both alike, and the table adds its time and the ratio baseline ms / Kiln ms (above 1: this
build is faster), with both builds' device memory for the model after the run.
Prints JSON lines, then a markdown summary.
"""
import argparse
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision


IN_DIMS, OUT_DIMS = [3, 224, 224], [1000]  # the model's, without the batch (main sets them)


def export(dirpath, name, max_batch, extra=""):
    os.makedirs(os.path.join(dirpath, name, "1"), exist_ok=True)
    cfg = f"""name: "{name}"
backend: "onnx"
max_batch_size: {max_batch}
input [ {{ name: "input" data_type: TYPE_FP32 dims: [ {", ".join(map(str, IN_DIMS))} ] }} ]
output [ {{ name: "output" data_type: TYPE_FP32 dims: [ {", ".join(map(str, OUT_DIMS))} ] }} ]
{extra}
"""
    with open(os.path.join(dirpath, name, "config.pbtxt"), "w") as f:
        f.write(cfg)
    return os.path.join(dirpath, name)


def torch_time(model, x, runs, host_io):
    xs = x.cpu() if host_io else x  # host io: from pageable memory, as a request's bytes are
    with torch.inference_mode():
        for _ in range(10):
            y = model(xs.cuda() if host_io else xs)
            if host_io:
                y = y.cpu()
        torch.cuda.synchronize()
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            y = model(xs.cuda() if host_io else xs)
            y = y.cpu() if host_io else y
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def kiln_time(bin_dir, mdir, batches, runs, device_io, params, inp=None, out=None):
    cmd = [os.path.join(bin_dir, "bench_onnx"), mdir, "--batch", ",".join(map(str, batches)),
           "--runs", str(runs), "--instances", "1", "--seconds", "0.5", "--gpu", "0"]
    if device_io:
        cmd.append("--device-io")
    for p in params:
        cmd += ["--param", p]
    if inp:
        cmd += ["--input", inp, "--output", out]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return {j["batch"]: j for j in map(json.loads, res.stdout.split("\n")[:-1])}


def perf(bin_dir, url, model, levels, seconds):
    cmd = [os.path.join(bin_dir, "kiln"), "perf", model, "--url", url, "--concurrency",
           ",".join(map(str, levels)), "--duration", f"{seconds}s", "--warmup", "2s", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"kiln perf {model} failed ({res.returncode}): {res.stderr[-2000:]}")
    return json.loads(res.stdout)


def serve(a, repo, models, levels, shm):
    """kiln-server on repo; kiln perf on each model. Returns (results, log tail)."""
    port_file = os.path.join(repo, "..", "port")
    log = os.path.join(repo, "..", "log")
    if os.path.exists(port_file):
        os.remove(port_file)
    srv = subprocess.Popen([os.path.join(a.bin, "kiln-server"), "--address=127.0.0.1:0",
                            f"--model-repository={repo}", f"--port-file={port_file}",
                            "--metrics-address=127.0.0.1:0", "--exec-threads=4",
                            "--log-level=info"], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    out = []
    try:
        for _ in range(3000):
            if (os.path.exists(port_file) and open(port_file).read().strip()) or srv.poll() is not None:
                break
            time.sleep(0.1)
        if not os.path.exists(port_file):
            raise SystemExit("kiln-server did not start: " + open(log).read()[-3000:])
        url = "127.0.0.1:" + open(port_file).read().strip()
        for m in models:
            cmd = [os.path.join(a.bin, "kiln"), "perf", m, "--url", url, "--concurrency",
                   ",".join(map(str, levels)), "--duration", f"{a.seconds}s", "--warmup", "3s",
                   "--json"] + (["--shm"] if shm else [])
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"kiln perf {m} failed: {res.stderr[-2000:]}")
            for lvl in json.loads(res.stdout)["levels"]:
                out.append({"model": m, **lvl})
                print(json.dumps(out[-1]))
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=60)
    return out, open(log).read()


def scaling(a, work, mdir):
    n = torch.cuda.device_count()
    print(json.dumps({"gpus": n, "names": [torch.cuda.get_device_name(i) for i in range(n)]}))
    res = {}
    for label, gpus, inst in (("1 instance, GPU 0", "0", 1), ("2 instances, GPU 0", "0", 2),
                              ("2 instances, GPUs 0 and 1", "0,1", 2)):
        cmd = [os.path.join(a.bin, "bench_onnx"), mdir, "--batch", "32", "--runs", "5",
               "--instances", str(inst), "--seconds", str(a.seconds), "--gpu", gpus,
               "--device-io", "--param", "precision=tf32"]
        r = subprocess.run(cmd, check=True, capture_output=True, text=True)
        res[label] = json.loads(r.stdout.splitlines()[0])["items_per_s"]
        print(json.dumps({"bench_onnx": label, "images_per_s": res[label]}))
    base = res["1 instance, GPU 0"]
    for k, v in res.items():
        print(f"| {k} | {v:.0f} images/s | {v / base:.2f}x |")
    # the server: an instance on every GPU against one GPU
    onnx_file = work + "-resnet50.onnx"
    os.rename(os.path.join(mdir, "1", "model.onnx"), onnx_file)
    shutil.rmtree(mdir)
    dyn = ("dynamic_batching { preferred_batch_size: [ 16, 32 ] "
           "max_queue_delay_microseconds: 2000 }\n"
           'parameters { key: "precision" value { string_value: "tf32" } }\n')
    export(work, "r50_gpu0", 32, dyn + "instance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]\n")
    export(work, "r50_all", 32, dyn + "instance_group [ { kind: KIND_GPU } ]\n")
    for m in ("r50_gpu0", "r50_all"):
        os.symlink(onnx_file, os.path.join(work, m, "1", "model.onnx"))
    out, log = serve(a, work, ["r50_gpu0", "r50_all"], [64], True)
    for line in log.splitlines():
        if '"msg":"on GPU' in line:
            print(line)
    t = {r["model"]: r["throughput"] for r in out}
    print(f"server, kiln perf --shm, concurrency 64: one GPU {t['r50_gpu0']:.0f}/s, "
          f"every GPU {t['r50_all']:.0f}/s, {t['r50_all'] / t['r50_gpu0']:.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bundle/bin")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--e2e", action="store_true")
    ap.add_argument("--e2e-only", action="store_true", help="skip the execute-time comparison")
    ap.add_argument("--scaling", action="store_true", help="only the several-GPU figures")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--precisions", default="fp32,tf32,fp16")
    ap.add_argument("--model", default="resnet50", choices=("resnet50", "encoder"))
    ap.add_argument("--baseline-bin", help="another build's bin/ to time beside this one")
    ap.add_argument("--io", default="device,host", help="device (inputs and output on the GPU) "
                    "and/or host (from host memory and back)")
    a = ap.parse_args()
    if a.model != "resnet50" and (a.e2e or a.e2e_only or a.scaling):
        ap.error("--e2e and --scaling measure ResNet-50 (images/s): leave --model out")
    batches = [int(b) for b in a.batches.split(",")]
    work = tempfile.mkdtemp(prefix="kiln-gpu-bench-")
    torch.manual_seed(0)
    global IN_DIMS, OUT_DIMS
    if a.model == "encoder":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "tests", "fixtures", "torch"))
        from export import EncoderLayer  # the fixtures' layer, written out op by op
        model = torch.nn.Sequential(*[EncoderLayer(768, 12, 3072) for _ in range(4)]).eval()
        IN_DIMS, OUT_DIMS = [128, 768], [128, 768]
    else:
        model = torchvision.models.resnet50(weights=None).eval()
    mdir = export(work, a.model, max(batches))
    torch.onnx.export(model, torch.randn([1] + IN_DIMS), os.path.join(mdir, "1", "model.onnx"),
                      input_names=["input"], output_names=["output"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False)
    gm = model.cuda()
    torch.backends.cudnn.benchmark = True
    rows = []
    # agreement at batch 1 (FP32)
    x1 = torch.randn([1] + IN_DIMS, generator=torch.Generator().manual_seed(1))
    x1.numpy().tofile(os.path.join(work, "in.raw"))
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.inference_mode():
        ref = gm(x1.cuda()).cpu().numpy().ravel()
    kiln_time(a.bin, mdir, [1], 3, False, [], os.path.join(work, "in.raw"),
              os.path.join(work, "out.raw"))
    got = np.fromfile(os.path.join(work, "out.raw"), dtype=np.float32)
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    print(json.dumps({"check": "batch 1 output vs PyTorch (FP32)", "relative_l2": rel}))
    gm16 = None
    if "fp16" in a.precisions.split(","):
        kiln_time(a.bin, mdir, [1], 3, False, ["precision=fp16"], os.path.join(work, "in.raw"),
                  os.path.join(work, "out16.raw"))
        got16 = np.fromfile(os.path.join(work, "out16.raw"), dtype=np.float32)
        gm16 = copy.deepcopy(gm).half()
        with torch.inference_mode():
            ref16 = gm16(x1.cuda().half()).float().cpu().numpy().ravel()
        print(json.dumps({"check": "batch 1 FP16 outputs vs PyTorch FP32",
                          "kiln_relative_l2": float(np.linalg.norm(got16 - ref) / np.linalg.norm(ref)),
                          "torch_fp16_relative_l2":
                              float(np.linalg.norm(ref16 - ref) / np.linalg.norm(ref))}))
    if a.scaling:
        return scaling(a, work, mdir)
    for prec in () if a.e2e_only else a.precisions.split(","):
        torch.backends.cudnn.allow_tf32 = prec == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = prec == "tf32"
        for io in a.io.split(","):
            kg = kiln_time(a.bin, mdir, batches, a.runs, io == "device", [f"precision={prec}"])
            kb = (kiln_time(a.baseline_bin, mdir, batches, a.runs, io == "device",
                            [f"precision={prec}"]) if a.baseline_bin else None)
            kbn = (kiln_time(a.baseline_bin, mdir, batches, a.runs, io == "device",
                             [f"precision={prec}", "cuda_graphs=false"]) if a.baseline_bin else None)
            kn = kiln_time(a.bin, mdir, batches, a.runs, io == "device",
                           [f"precision={prec}", "cuda_graphs=false"])
            for b in batches:
                x = torch.randn([b] + IN_DIMS, device="cuda")
                if prec == "fp16":
                    t = torch_time(lambda v: gm16(v.half()).float(), x, a.runs, io == "host")
                else:
                    t = torch_time(gm, x, a.runs, io == "host")
                r = {"precision": prec, "io": io, "batch": b, "torch_ms": round(t, 3),
                     "kiln_ms": kg[b]["p50_ms"], "kiln_nograph_ms": kn[b]["p50_ms"],
                     "ratio": round(t / kg[b]["p50_ms"], 3),
                     "ratio_nograph": round(t / kn[b]["p50_ms"], 3)}
                if kb:
                    r.update(base_ms=kb[b]["p50_ms"], base_nograph_ms=kbn[b]["p50_ms"],
                             vs_base=round(kb[b]["p50_ms"] / kg[b]["p50_ms"], 3),
                             vs_base_nograph=round(kbn[b]["p50_ms"] / kn[b]["p50_ms"], 3),
                             device_bytes=kg[b].get("device_bytes"),
                             base_device_bytes=kb[b].get("device_bytes"))
                print(json.dumps(r))
                sys.stdout.flush()
                rows.append(r)
    e2e = []
    if a.e2e or a.e2e_only:
        extra = ("instance_group [ { kind: KIND_GPU count: 2 } ]\n"
                 "dynamic_batching { preferred_batch_size: [ 8, 16, 32, 64 ] "
                 "max_queue_delay_microseconds: 2000 }\n")
        export(work, "resnet50_graphs", max(batches), extra)
        export(work, "resnet50_nographs", max(batches),
               extra + 'parameters { key: "cuda_graphs" value { string_value: "false" } }\n')
        onnx_file = work + "-resnet50.onnx"  # outside the repository: only the two are served
        os.rename(os.path.join(mdir, "1", "model.onnx"), onnx_file)
        shutil.rmtree(mdir)
        for m in ("resnet50_graphs", "resnet50_nographs"):
            os.symlink(onnx_file, os.path.join(work, m, "1", "model.onnx"))
        port_file = os.path.join(work, "port")
        srv = subprocess.Popen([os.path.join(a.bin, "kiln-server"), "--address=127.0.0.1:0",
                                f"--model-repository={work}", f"--port-file={port_file}",
                                "--metrics-address=127.0.0.1:0", "--exec-threads=4",
                                "--log-level=info"],
                               stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "log"), "w"))
        try:
            for _ in range(3000):
                if os.path.exists(port_file) and open(port_file).read().strip():
                    break
                if srv.poll() is not None:
                    break
                time.sleep(0.1)
            if not os.path.exists(port_file):
                sys.stdout.write(open(os.path.join(work, "log")).read()[-5000:])
                raise SystemExit("kiln-server did not start")
            url = "127.0.0.1:" + open(port_file).read().strip()
            for m in ("resnet50_graphs", "resnet50_nographs"):
                for lvl in perf(a.bin, url, m, [1, 16, 64], a.seconds)["levels"]:
                    r = {"model": m, **lvl}
                    print(json.dumps(r))
                    e2e.append(r)
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.wait(timeout=60)
        sys.stdout.write(open(os.path.join(work, "log")).read()[-3000:])
    print(f"\n{a.model}, {torch.cuda.get_device_name(0)}, torch {torch.__version__}; "
          f"batch 1 relative L2 vs PyTorch: {rel:.2e}")
    print("| precision | io | batch | PyTorch ms | Kiln ms (graphs) | ratio | Kiln ms (no graphs) | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['precision']} | {r['io']} | {r['batch']} | {r['torch_ms']:.3f} | "
              f"{r['kiln_ms']:.3f} | {r['ratio']:.2f} | {r['kiln_nograph_ms']:.3f} | "
              f"{r['ratio_nograph']:.2f} |")
    if a.baseline_bin and rows:
        print("\n| precision | io | batch | Kiln ms | baseline ms | baseline/Kiln | no graphs: Kiln ms |"
              " baseline ms | baseline/Kiln | device bytes | baseline device bytes |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['precision']} | {r['io']} | {r['batch']} | {r['kiln_ms']:.3f} | "
                  f"{r['base_ms']:.3f} | {r['vs_base']:.2f} | {r['kiln_nograph_ms']:.3f} | "
                  f"{r['base_nograph_ms']:.3f} | {r['vs_base_nograph']:.2f} | "
                  f"{r['device_bytes']} | {r['base_device_bytes']} |")


if __name__ == "__main__":
    main()
