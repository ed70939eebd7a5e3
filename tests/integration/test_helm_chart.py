"""The Helm chart (helm/kiln) renders, and what it renders is right.

helm is not in Debian, so tests/helm/render.go renders the templates with Go's text/template,
sprig and the Helm functions the chart uses (Debian's golang-go, sprig and yaml.v3). The output
is parsed with PyYAML and checked for the default values and the GPU, autoscaling,
ServiceMonitor and model-repository variants."""
import os
import subprocess
import tempfile
import unittest

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = f"{ROOT}/helm/kiln"
BUILD = os.environ.get("KILN_BUILD", f"{ROOT}/build/default")
RENDER = f"{BUILD}/helm-render"


def setUpModule():
    env = dict(os.environ, GOPATH="/usr/share/gocode", GO111MODULE="off",
               GOCACHE=f"{BUILD}/go-cache", GOFLAGS="")
    subprocess.run(["go", "build", "-o", RENDER, f"{ROOT}/tests/helm/render.go"], check=True,
                   env=env, timeout=300)


def render(values=None, notes=False):
    """Renders with `values` (a dict merged over values.yaml); returns (docs by kind, stderr)
    or raises CalledProcessError."""
    args = [RENDER]
    tmp = None
    if values:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        yaml.safe_dump(values, tmp)
        tmp.close()
        args += ["-f", tmp.name]
    if notes:
        args.append("-notes")
    args.append(CHART)
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    finally:
        if tmp:
            os.unlink(tmp.name)
    if notes:
        return r.stdout
    docs = {}
    for d in yaml.safe_load_all(r.stdout):
        if d:
            docs.setdefault(d["kind"], []).append(d)
    return docs


def container(docs):
    return docs["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]


def pod(docs):
    return docs["Deployment"][0]["spec"]["template"]["spec"]


class TestChart(unittest.TestCase):
    def test_default(self):
        docs = render()
        self.assertEqual(sorted(docs), ["Deployment", "Service"])
        c, p = container(docs), pod(docs)
        self.assertEqual(docs["Deployment"][0]["spec"]["replicas"], 1)
        ports = {x["name"]: x["containerPort"] for x in c["ports"]}
        self.assertEqual(ports, {"grpc": 8001, "health": 8003, "metrics": 8002})
        self.assertIn("--address=0.0.0.0:8001", c["args"])
        self.assertIn("--health-address=0.0.0.0:8003", c["args"])
        self.assertIn("--metrics-address=0.0.0.0:8002", c["args"])
        self.assertIn("--model-repository=/opt/kiln/models", c["args"])
        # probes: gRPC health on the plaintext health port; a startup probe for slow loads
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            self.assertEqual(c[probe]["grpc"]["port"], 8003, probe)
        self.assertGreaterEqual(c["startupProbe"]["periodSeconds"] *
                                c["startupProbe"]["failureThreshold"], 300)
        # graceful termination: preStop sleep + the server's drain fit in the grace period
        self.assertIn("--grace-ms=30000", c["args"])
        self.assertEqual(c["lifecycle"]["preStop"]["exec"]["command"], ["/bin/sleep", "5"])
        self.assertGreater(p["terminationGracePeriodSeconds"], 30 + 5)
        # security
        self.assertTrue(p["securityContext"]["runAsNonRoot"])
        self.assertNotEqual(p["securityContext"]["runAsUser"], 0)
        self.assertEqual(p["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
        sc = c["securityContext"]
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        # /dev/shm in memory, sized; /tmp writable
        vols = {v["name"]: v for v in p["volumes"]}
        self.assertEqual(vols["dshm"]["emptyDir"], {"medium": "Memory", "sizeLimit": "1Gi"})
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        self.assertEqual(mounts, {"dshm": "/dev/shm", "tmp": "/tmp"})
        self.assertEqual(c["resources"]["limits"], {"cpu": "2", "memory": "4Gi"})
        self.assertNotIn("tolerations", p)
        svc = docs["Service"][0]["spec"]
        self.assertEqual({x["name"]: x["port"] for x in svc["ports"]},
                         {"grpc": 8001, "metrics": 8002})
        self.assertEqual(svc["selector"],
                         docs["Deployment"][0]["spec"]["selector"]["matchLabels"])

    def test_gpu(self):
        docs = render({"gpu": {"enabled": True, "count": 2}})
        c = container(docs)
        self.assertEqual(c["resources"]["limits"]["nvidia.com/gpu"], 2)
        self.assertEqual(c["resources"]["limits"]["cpu"], "2")
        self.assertIn({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                      pod(docs)["tolerations"])
        self.assertNotIn("nvidia.com/gpu", container(render())["resources"]["limits"])

    def test_autoscaling_and_disruption_budget(self):
        docs = render({"autoscaling": {"enabled": True, "maxReplicas": 6},
                       "podDisruptionBudget": {"enabled": True}})
        self.assertNotIn("replicas", docs["Deployment"][0]["spec"])
        hpa = docs["HorizontalPodAutoscaler"][0]["spec"]
        self.assertEqual(hpa["maxReplicas"], 6)
        self.assertEqual(hpa["scaleTargetRef"]["name"], docs["Deployment"][0]["metadata"]["name"])
        self.assertEqual(docs["PodDisruptionBudget"][0]["spec"]["minAvailable"], 1)

    def test_service_monitor_and_metrics_off(self):
        docs = render({"metrics": {"serviceMonitor": {"enabled": True,
                                                      "labels": {"release": "prom"}}}})
        sm = docs["ServiceMonitor"][0]
        self.assertEqual(sm["spec"]["endpoints"][0]["port"], "metrics")
        self.assertEqual(sm["spec"]["endpoints"][0]["path"], "/metrics")
        self.assertEqual(sm["metadata"]["labels"]["release"], "prom")
        off = render({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})
        self.assertNotIn("ServiceMonitor", off)
        self.assertIn("--metrics=false", container(off)["args"])
        self.assertNotIn("metrics", [x["name"] for x in container(off)["ports"]])

    def test_model_repository_sources(self):
        pvc = render({"modelRepository": {"type": "pvc", "pvc": {"claimName": "models"}}})
        vols = {v["name"]: v for v in pod(pvc)["volumes"]}
        self.assertEqual(vols["models"]["persistentVolumeClaim"],
                         {"claimName": "models", "readOnly": True})
        mount = [m for m in container(pvc)["volumeMounts"] if m["name"] == "models"][0]
        self.assertEqual(mount["mountPath"], "/models")
        self.assertTrue(mount["readOnly"])
        self.assertIn("--model-repository=/models", container(pvc)["args"])
        cm = render({"modelRepository": {"type": "configMap", "configMap": {
            "name": "mlp", "items": [{"key": "cfg", "path": "mlp/config.pbtxt"}]}}})
        vols = {v["name"]: v for v in pod(cm)["volumes"]}
        self.assertEqual(vols["models"]["configMap"]["items"][0]["path"], "mlp/config.pbtxt")
        init = render({"modelRepository": {"type": "initContainer", "initContainer": {
            "image": "busybox", "command": ["sh", "-c", "cp -r /src/* /models"]}}})
        ic = pod(init)["initContainers"][0]
        self.assertEqual(ic["image"], "busybox")
        self.assertEqual(ic["volumeMounts"][0]["mountPath"], "/models")
        self.assertEqual({v["name"]: v for v in pod(init)["volumes"]}["models"]["emptyDir"], {})

    def test_errors_name_the_value(self):
        for values, msg in [
            ({"modelRepository": {"type": "pvc"}}, "modelRepository.pvc.claimName is required"),
            ({"modelRepository": {"type": "s3"}}, "modelRepository.type must be image, pvc"),
            ({"modelRepository": {"type": "initContainer"}},
             "modelRepository.initContainer.image is required"),
        ]:
            with self.assertRaises(subprocess.CalledProcessError) as ctx:
                render(values)
            self.assertIn(msg, ctx.exception.stderr)

    def test_notes(self):
        notes = render(notes=True)
        self.assertIn("test-kiln:8001", notes)
        self.assertIn("http://test-kiln:8002/metrics", notes)


if __name__ == "__main__":
    unittest.main()
