"""Rendered Kubernetes workloads run as local processes: what a kubelet would start.

For each Deployment or StatefulSet (one replica), its container's command and args run
with the environment the pod would get: `env` and `envFrom` resolved from the rendered
ConfigMaps and Secrets, the downward API answered for a local pod, and mounted Secrets
and ConfigMaps written out as files. Every container port is remapped to a free local
port, and every address of a Service (`name`, `name.namespace.svc…`, with its port) to
the local port behind it, so a wrong port or name in the manifests fails here as it
would in a cluster. Workloads the test stands in for (Kafka, the S3 server) are not
started; their Services point at the servers given instead. A CronJob's pod is resolved
the same way and runs once, to completion, when the test asks for it.
"""

from __future__ import annotations

import base64
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.local.stack import free_ports

from .manifests import pod_template

Doc = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
JOB_KINDS = ("CronJob",)
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")  # Kubernetes' $(VAR) expansion


def kinds(docs: Iterable[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def secret_data(secret: Doc) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {**data, **(secret.get("stringData") or {})}


def expand(text: str, env: Mapping[str, str]) -> str:
    """$(VAR) as Kubernetes expands it: a name it does not know stays as written."""
    return VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


@dataclass
class Pod:
    """One replica of a workload, as a local process."""

    workload: Doc
    name: str
    ports: dict[int, int]  # container port -> local port
    root: Path  # where its mounted files are written
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def container(self) -> Doc:
        (container,) = pod_template(self.workload)["spec"]["containers"]
        return dict(container)

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    def start(self, executables: Mapping[str, list[str]], base_env: Mapping[str, str]) -> None:
        """`executables` maps a command's first word to what runs it here."""
        first, *rest = self.argv
        if first not in executables:
            raise AssertionError(f"{self.name}: no way to run command {first!r} here")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*executables[first], *rest],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={**base_env, "HOSTNAME": self.name, **self.env},  # as the kubelet sets it
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float) -> None:
        """Until the readiness probe passes, as the kubelet would ask it."""
        probe = self.container.get("readinessProbe")
        if probe is None:
            raise AssertionError(f"{self.name} has no readiness probe")
        deadline = time.monotonic() + timeout_s
        while not self._probe_passes(probe):
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} never became ready: {self.tail()}")
            time.sleep(0.3)

    def _probe_passes(self, probe: Doc) -> bool:
        if "grpc" in probe:
            port = self.local_port(probe["grpc"]["port"])
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' typing is partial
                try:
                    answer = stub.Check(
                        health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")),
                        timeout=2,
                    )
                except grpc.RpcError:
                    return False
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://127.0.0.1:{self.local_port(get['port'])}{get.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return bool(200 <= answer.status < 400)
            except OSError:
                return False
        raise AssertionError(f"{self.name}: a probe of a kind this runner can't ask: {probe}")

    def local_port(self, port: int | str) -> int:
        """A probe's port: a number the container declares, or one of its port names."""
        declared = {p.get("name"): p["containerPort"] for p in self.container.get("ports", [])}
        number = declared.get(port, port) if isinstance(port, str) else port
        if number not in self.ports:
            raise AssertionError(f"{self.name}: probe port {port} is not a container port")
        return self.ports[int(number)]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class LocalCluster:
    """The workloads of rendered manifests, one pod each, wired to each other locally."""

    def __init__(
        self,
        docs: list[Doc],
        root: Path,
        stand_ins: Mapping[str, str],
        stand_in_env: Mapping[str, str] | None = None,
    ) -> None:
        """`stand_ins`: workload name -> the local "host:port" serving in its place;
        `stand_in_env`: what talking to the stand-ins takes instead (their credentials),
        replacing a variable only where a pod already has it."""
        self.docs = docs
        self.stand_in_env = dict(stand_in_env or {})
        self.config_maps = kinds(docs, "ConfigMap")
        self.secrets = kinds(docs, "Secret")
        self.services = kinds(docs, "Service")
        self.stand_ins = dict(stand_ins)
        workloads = [d for d in docs if d.get("kind") in WORKLOAD_KINDS]
        self.pods = {
            w["metadata"]["name"]: self._pod(w, root)
            for w in workloads
            if w["metadata"]["name"] not in stand_ins
        }
        jobs = [d for d in docs if d.get("kind") in JOB_KINDS]
        self.jobs = {j["metadata"]["name"]: self._pod(j, root) for j in jobs}
        for pod in [*self.pods.values(), *self.jobs.values()]:
            self._resolve(pod)

    def _pod(self, workload: Doc, root: Path) -> Pod:
        name = workload["metadata"]["name"]
        pod_name = f"{name}-0" if workload["kind"] == "StatefulSet" else f"{name}-local"
        (container,) = pod_template(workload)["spec"]["containers"]
        declared = [p["containerPort"] for p in container.get("ports", [])]
        (root / pod_name).mkdir(parents=True, exist_ok=True)
        return Pod(
            workload,
            pod_name,
            dict(zip(declared, free_ports(len(declared)), strict=True)),
            root / pod_name,
        )

    # ---- what a pod sees ------------------------------------------------------------

    def _resolve(self, pod: Pod) -> None:
        mounts = self._mount_files(pod)
        env: dict[str, str] = {}
        for source in pod.container.get("envFrom", []):
            env.update(self._env_from(source))
        for var in pod.container.get("env", []):
            if "value" in var:
                env[var["name"]] = expand(var["value"], env)
            else:
                env[var["name"]] = self._value_from(pod, var["valueFrom"])
        command = [*pod.container.get("command", []), *pod.container.get("args", [])]
        if not command:
            raise AssertionError(f"{pod.name}: no command (the image's entrypoint is unknown here)")
        env.update({k: v for k, v in self.stand_in_env.items() if k in env})
        pod.env = {k: self._localize(pod, v, mounts) for k, v in env.items()}
        pod.argv = [self._localize(pod, expand(a, env), mounts) for a in command]

    def _env_from(self, source: Doc) -> dict[str, str]:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = self._config_map(source["configMapRef"]["name"])
        else:
            data = self._secret(source["secretRef"]["name"])
        return {prefix + k: v for k, v in data.items()}

    def _value_from(self, pod: Pod, source: Doc) -> str:
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self._key(self._config_map(ref["name"]), ref, "ConfigMap")
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return self._key(self._secret(ref["name"]), ref, "Secret")
        if "fieldRef" in source:
            field_path = source["fieldRef"]["fieldPath"]
            known = {
                "metadata.name": pod.name,
                "metadata.namespace": pod.workload["metadata"].get("namespace", "default"),
                "status.podIP": "127.0.0.1",
                "status.hostIP": "127.0.0.1",
                "spec.nodeName": "local",
            }
            return str(known[field_path])
        raise AssertionError(f"{pod.name}: an env source this runner can't resolve: {source}")

    @staticmethod
    def _key(data: dict[str, str], ref: Doc, kind: str) -> str:
        if ref["key"] not in data:
            raise AssertionError(f"{kind} {ref['name']} has no key {ref['key']!r}")
        return data[ref["key"]]

    def _config_map(self, name: str) -> dict[str, str]:
        if name not in self.config_maps:
            raise AssertionError(f"no ConfigMap {name!r} in the rendered manifests")
        return dict(self.config_maps[name].get("data") or {})

    def _secret(self, name: str) -> dict[str, str]:
        if name not in self.secrets:
            raise AssertionError(f"no Secret {name!r} in the rendered manifests")
        return secret_data(self.secrets[name])

    def _mount_files(self, pod: Pod) -> dict[str, Path]:
        """Write each mounted Secret or ConfigMap out; mount path -> local folder."""
        volumes = {v["name"]: v for v in pod_template(pod.workload)["spec"].get("volumes", [])}
        mounts = {}
        for mount in pod.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            folder = pod.root / "mounts" / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                files = self._secret(volume["secret"]["secretName"])
            elif "configMap" in volume:
                files = self._config_map(volume["configMap"]["name"])
            else:
                files = {}  # emptyDir and the like: an empty folder
            items = (volume.get("secret") or volume.get("configMap") or {}).get("items")
            if items:
                files = {i["path"]: files[i["key"]] for i in items}
            if "subPath" in mount:
                target = pod.root / "mounts" / f"{mount['name']}-{mount['subPath']}"
                target.write_text(files[mount["subPath"]])
                mounts[mount["mountPath"]] = target
                continue
            for path, content in files.items():
                (folder / path).parent.mkdir(parents=True, exist_ok=True)
                (folder / path).write_text(content)
            mounts[mount["mountPath"]] = folder
        return mounts

    # ---- addresses ------------------------------------------------------------------

    def _localize(self, pod: Pod, text: str, mounts: Mapping[str, Path]) -> str:
        for mount_path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if text == mount_path or text.startswith(mount_path.rstrip("/") + "/"):
                return str(local) + text[len(mount_path) :]
        text = self._service_addresses(text)
        if text.isdigit() and int(text) in pod.ports:  # its own port, as a flag's value
            return str(pod.ports[int(text)])
        return "127.0.0.1" if text == "0.0.0.0" else text

    def _service_addresses(self, text: str) -> str:
        """Each `service[.ns[.svc[.cluster.local]]]:port` in `text` -> 127.0.0.1:local."""

        def local(match: re.Match[str]) -> str:
            name, port = match.group(1), int(match.group(2))
            return self.service_address(name, port)

        names = "|".join(re.escape(n) for n in sorted(self.services, key=len, reverse=True))
        if not names:
            return text
        pattern = rf"\b(?:[\w-]+\.)?({names})(?:\.[\w-]+)?(?:\.svc(?:\.cluster\.local)?)?:(\d+)\b"
        return re.sub(pattern, local, text)

    def service_address(self, service_name: str, port: int) -> str:
        """Where a Service's port is served locally."""
        service = self.services[service_name]
        spec_port = next((p for p in service["spec"]["ports"] if p["port"] == port), None)
        if spec_port is None:
            raise AssertionError(f"Service {service_name} has no port {port}")
        selector = service["spec"].get("selector", {})
        backing = [w for w in self._workloads() if _selects(selector, w)]
        if len(backing) != 1:
            raise AssertionError(f"Service {service_name} selects {len(backing)} workloads")
        name = backing[0]["metadata"]["name"]
        if name in self.stand_ins:
            return self.stand_ins[name]
        pod = self.pods[name]
        target = spec_port.get("targetPort", port)
        return f"127.0.0.1:{pod.local_port(target)}"

    def _workloads(self) -> list[Doc]:
        return [d for d in self.docs if d.get("kind") in WORKLOAD_KINDS]

    # ---- running --------------------------------------------------------------------

    def start(
        self, executables: Mapping[str, list[str]], base_env: Mapping[str, str], timeout_s: float
    ) -> None:
        for pod in self.pods.values():
            pod.start(executables, base_env)
        for pod in self.pods.values():
            pod.wait_ready(timeout_s)

    def run_job(
        self,
        name: str,
        executables: Mapping[str, list[str]],
        base_env: Mapping[str, str],
        timeout_s: float,
        extra_args: tuple[str, ...] = (),
    ) -> tuple[int, str]:
        """Run a CronJob's pod once, as its Job would, with `extra_args` after its own:
        (exit status, the end of its log)."""
        job = self.jobs[name]
        job.argv = [*job.argv, *extra_args]
        job.start(executables, base_env)
        if job.proc is None:
            raise AssertionError(f"{name} did not start")
        try:
            status = job.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            job.stop()
            raise AssertionError(f"{name} still running after {timeout_s} s: {job.tail()}") from exc
        return status, job.tail()

    def stop(self) -> None:
        """Every pod at once, as a namespace is deleted (one by one, each waited out its
        own shutdown)."""
        pods = [*self.pods.values(), *self.jobs.values()]
        with ThreadPoolExecutor(max(len(pods), 1)) as pool:
            list(pool.map(lambda pod: pod.stop(), pods))
        for pod in pods:  # captured, so pytest shows it only when the test failed
            print(f"---- {pod.name} ----\n{pod.tail()}")


def _selects(selector: Mapping[str, str], workload: Doc) -> bool:
    labels = pod_template(workload)["metadata"].get("labels", {})
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
