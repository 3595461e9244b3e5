"""Kubernetes manifests for serving one exported model repository with several Triton replicas.

``render_manifest`` writes either a plain Deployment + Service (Triton reads s3://, gs:// or as:// itself, or a
PersistentVolumeClaim mounted read-only) or a KServe ``InferenceService`` on KServe's Triton runtime. The text
comes from ``templates/k8s.yaml.j2`` / ``templates/kserve.yaml.j2`` and is parsed back with PyYAML before it is
returned. ``check_repository_fit`` reads the repository's config.pbtxt files and says what would waste or overload
a pod of the requested size. Nothing here talks to a cluster.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, RepositoryError
from .export.pt2 import PT2_MIN_TRITON, PT2_PLATFORM
from .export.repository import models
from .export.triton_config import TORCH_PLATFORMS, _template, read_config
from .triton.openmp import SPIN_SETTINGS

# The default image. The torch_aoti platform (model.pt2) needs 26.03 or newer, so nothing older is the default.
TRITON_IMAGE_TAG = PT2_MIN_TRITON
TRITON_IMAGE_REPOSITORY = "nvcr.io/nvidia/tritonserver"
DEFAULT_IMAGE = f"{TRITON_IMAGE_REPOSITORY}:{TRITON_IMAGE_TAG}-py3"

KINDS = ("deployment", "kserve")
# Triton's own prefixes for a remote repository; pvc:// is ours (and KServe's): a claim mounted read-only.
STORAGE_SCHEMES = ("s3", "gs", "as", "pvc")
STORAGE_FIX = "use s3://bucket/path, gs://bucket/path, as://account/container/path or pvc://claim/path"
# Secret keys that become environment variables of the same name (Triton's S3 and Azure clients read them).
SECRET_ENV = {
    "s3": (("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False), ("AWS_DEFAULT_REGION", True)),
    "as": (("AZURE_STORAGE_ACCOUNT", False), ("AZURE_STORAGE_KEY", False)),
}
GCS_KEY_FILE = "key.json"  # gs:// wants a file: GOOGLE_APPLICATION_CREDENTIALS points at this key of the secret
PVC_MOUNT = "/models"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # also a valid Service name (RFC 1035)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_TAG_VERSION = re.compile(r"^(\d{2})\.(\d{2})(?:\D|$)")


def _fail(field_name: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(problem, fix=fix, where=f"deployment option {field_name}")


@dataclass(frozen=True)
class StorageUri:
    scheme: str  # one of STORAGE_SCHEMES
    rest: str  # what follows '://'

    @property
    def head(self) -> str:
        """The first part: the bucket (or S3 host:port), the Azure account, or the claim."""
        return self.rest.split("/", 1)[0]

    @property
    def triton_path(self) -> str:
        """What tritonserver's --model-repository gets: the URI itself, or the claim's mount point."""
        if self.scheme != "pvc":
            return f"{self.scheme}://{self.rest}"
        sub = self.rest.split("/", 1)[1].strip("/") if "/" in self.rest else ""
        return f"{PVC_MOUNT}/{sub}" if sub else PVC_MOUNT

    @property
    def kserve_uri(self) -> str:
        """KServe's storage initializer knows s3, gs and pvc, and Azure only as an https blob URL."""
        if self.scheme != "as":
            return f"{self.scheme}://{self.rest}"
        account, container_and_path = self.rest.split("/", 1)
        return f"https://{account}.blob.core.windows.net/{container_and_path}"


def parse_storage_uri(uri: str) -> StorageUri:
    scheme, sep, rest = uri.partition("://")
    if scheme == "az":
        raise _fail("storage_uri", f"'{uri}': Triton's prefix for Azure Storage is as://, not az://",
                    "write it as as://account/container/path")
    if not sep or scheme not in STORAGE_SCHEMES:
        raise _fail("storage_uri", f"'{uri}' is not a repository location Triton can read from every pod",
                    STORAGE_FIX)
    rest = rest.strip("/")
    parts = rest.split("/")
    if not rest or any(c.isspace() for c in rest) or ".." in parts or "" in parts:
        raise _fail("storage_uri", f"'{uri}' has no usable bucket/path", STORAGE_FIX)
    if scheme == "as" and len(parts) < 2:
        raise _fail("storage_uri", f"'{uri}' names no container", "use as://account/container/path")
    if scheme == "pvc" and not _DNS_SUBDOMAIN.match(parts[0]):
        raise _fail("storage_uri", f"'{parts[0]}' is not a valid PersistentVolumeClaim name",
                    "use pvc://<claim>/<path> with the claim's Kubernetes name (lowercase, digits, '-', '.')")
    return StorageUri(scheme, rest)


def split_image(image: str) -> tuple[str, str]:
    """('nvcr.io/nvidia/tritonserver', '26.03-py3'); the tag is 'latest' when the reference has none."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:  # a colon before the last '/' is a registry port, not a tag
        return name[:colon], name[colon + 1:]
    return name, "latest"


def tag_version(tag: str) -> tuple[int, int] | None:
    """(26, 3) for '26.03-py3'; None when the tag is not an NGC 'YY.MM' release."""
    found = _TAG_VERSION.match(tag)
    return (int(found.group(1)), int(found.group(2))) if found else None


@dataclass(frozen=True)
class DeploymentOptions:
    storage_uri: str
    name: str = "triton-embeddings"
    image: str = DEFAULT_IMAGE
    replicas: int = 2
    gpus_per_pod: int = 0  # 0: CPU only, no nvidia.com/gpu requested
    cpus_per_pod: int = 4
    memory_per_pod: str = "8Gi"
    kind: str = "deployment"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    # Deployment only: the Secret whose keys become the storage credentials; "" for none (IRSA, workload identity,
    # public bucket). KServe reads credentials through a service account instead.
    credentials_secret: str = "triton-storage-credentials"
    # The pods' service account ("" for the namespace default): with IRSA or workload identity it carries the
    # bucket credentials; KServe's storage initializer reads them from it.
    service_account: str = ""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if not _DNS_LABEL.match(self.name):
            raise _fail("name", f"'{self.name}' is not a valid Kubernetes resource name",
                        "use 1-63 lowercase letters, digits or '-', starting with a letter and not ending in '-'")
        if self.kind not in KINDS:
            raise _fail("kind", f"unknown kind '{self.kind}'", f"use one of {', '.join(KINDS)}")
        storage = parse_storage_uri(self.storage_uri)
        if not self.image or any(c.isspace() for c in self.image):
            raise _fail("image", f"image '{self.image}' is empty or contains spaces", f"use e.g. {DEFAULT_IMAGE}")
        for field_name, minimum in (("replicas", 1), ("gpus_per_pod", 0), ("cpus_per_pod", 1)):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise _fail(field_name, f"{field_name} {value!r} is out of range", f"use an integer >= {minimum}")
        if not _QUANTITY.match(self.memory_per_pod):
            raise _fail("memory_per_pod", f"'{self.memory_per_pod}' is not a Kubernetes memory quantity",
                        "use e.g. 8Gi or 16384Mi")
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if any(not 0 < p < 65536 for p in ports) or len(set(ports)) != 3:
            raise _fail("http_port/grpc_port/metrics_port", f"ports {list(ports)} are invalid",
                        "use three different ports in 1..65535")
        for field_name in ("credentials_secret", "service_account"):
            value = getattr(self, field_name)
            if value and not _DNS_SUBDOMAIN.match(value):
                raise _fail(field_name, f"'{value}' is not a valid Kubernetes name",
                            "use lowercase letters, digits, '-' or '.', or leave it empty")
        if self.kind == "kserve":
            if split_image(self.image)[0] != TRITON_IMAGE_REPOSITORY:
                raise _fail("image", "KServe's Triton runtime chooses the image; only its tag can change",
                            f"use {TRITON_IMAGE_REPOSITORY}:<tag>, or kind 'deployment' for a custom image")
            if storage.scheme == "s3" and ":" in storage.head:
                raise _fail("storage_uri", "KServe does not take an S3 endpoint inside the URI",
                            "use s3://bucket/path and set the endpoint on the service account's secret")

    @property
    def storage(self) -> StorageUri:
        return parse_storage_uri(self.storage_uri)

    @property
    def image_tag(self) -> str:
        return split_image(self.image)[1]


# ------------------------------------------------------------------------------------------------ repository fit


def _int_parameter(config, key: str) -> int | None:
    if key not in config.parameters:
        return None
    try:
        return int(config.parameters[key].string_value)
    except ValueError:
        return None


def _instance_count(config, gpus_per_pod: int) -> int:
    """Instances Triton creates in one pod: a KIND_GPU group's count is per GPU (listed, or all visible)."""
    from tritonclient.grpc import model_config_pb2 as pb

    total = 0
    for group in config.instance_group:
        per = max(group.count, 1)
        if group.kind == pb.ModelInstanceGroup.KIND_GPU:
            per *= len(group.gpus) or max(gpus_per_pod, 1)
        total += per
    return total or max(gpus_per_pod, 1)  # no instance_group: one per visible GPU, else one on CPU


def _model_warnings(name: str, config, options: DeploymentOptions) -> list[str]:
    from tritonclient.grpc import model_config_pb2 as pb

    out = []
    kinds = {g.kind for g in config.instance_group}
    is_torch = config.platform in TORCH_PLATFORMS or config.backend == "pytorch"
    gpus = options.gpus_per_pod
    if pb.ModelInstanceGroup.KIND_GPU in kinds and gpus == 0:
        out.append(f"model '{name}': instance_group kind KIND_GPU but gpus_per_pod is 0: the model will not load "
                   f"on these pods; use KIND_CPU or request GPUs (--gpus-per-pod)")
    if is_torch and gpus > 0 and kinds == {pb.ModelInstanceGroup.KIND_CPU}:
        out.append(f"model '{name}': instance_group kind KIND_CPU while each pod requests {gpus} GPU(s): the GPU "
                   f"stays idle; use KIND_GPU or --gpus-per-pod 0")
    for group in config.instance_group:
        beyond = sorted(i for i in group.gpus if i >= gpus)
        if beyond:
            out.append(f"model '{name}': instance_group gpus {list(group.gpus)} lists {beyond}, but a pod has "
                       f"{gpus} GPU(s) (indices 0..{gpus - 1}): the model will not load; list only those indices")
    if is_torch:
        threads = _int_parameter(config, "INTRA_OP_THREAD_COUNT")
        instances = _instance_count(config, gpus)
        if threads is None:
            out.append(f"model '{name}': no INTRA_OP_THREAD_COUNT: LibTorch then uses every core of the node, not "
                       f"the pod's {options.cpus_per_pod} CPU(s); set it to cpus_per_pod / instances")
        elif threads * instances > options.cpus_per_pod:
            fit = max(options.cpus_per_pod // instances, 1)
            out.append(f"model '{name}': INTRA_OP_THREAD_COUNT {threads} x {instances} instance(s) = "
                       f"{threads * instances} threads > cpus_per_pod {options.cpus_per_pod}: oversubscribed; use "
                       f"INTRA_OP_THREAD_COUNT {fit}, fewer instances or more CPUs (the C++ backend sets thread "
                       f"counts once per process: the first model loaded wins)")
    if config.platform == PT2_PLATFORM:
        found = tag_version(options.image_tag)
        if found is not None and found < tag_version(PT2_MIN_TRITON):
            out.append(f"model '{name}': platform torch_aoti (model.pt2) needs Triton {PT2_MIN_TRITON} or "
                       f"newer, the image is {options.image_tag}; use {DEFAULT_IMAGE}")
    return out


def check_repository_fit(repository: Path, options: DeploymentOptions) -> list[str]:
    """Warnings about how the repository's config.pbtxt files fit pods of ``options``' size (empty: all fine).

    A repository folder that does not exist is a ConfigError; one without models gives a single warning.
    """
    repository = Path(repository)
    if not repository.is_dir():
        raise ConfigError("the model repository folder does not exist", where=str(repository),
                          fix="pass the local copy of the repository that the pods will serve, or leave it out")
    found = models(repository)
    if not found:
        return [f"no model with a config.pbtxt in {repository}: the pods would serve nothing"]
    warnings, threads = [], {}
    for model_dir in found:
        config = read_config(model_dir / "config.pbtxt")
        warnings += _model_warnings(model_dir.name, config, options)
        value = _int_parameter(config, "INTRA_OP_THREAD_COUNT")
        if value is not None:
            threads[model_dir.name] = value
    if len(set(threads.values())) > 1:
        listed = ", ".join(f"{n}={v}" for n, v in sorted(threads.items()))
        warnings.append(f"models set different INTRA_OP_THREAD_COUNT ({listed}): the C++ backend sets it once per "
                        f"process, so the first model loaded decides for all; give them the same value")
    return warnings


# ---------------------------------------------------------------------------------------------------- rendering


def _credentials(options: DeploymentOptions) -> dict:
    storage = options.storage
    secret = options.credentials_secret if options.kind == "deployment" and storage.scheme != "pvc" else ""
    return {
        "secret": secret,
        "env": SECRET_ENV.get(storage.scheme, ()) if secret else (),
        "gcs_key": f"/var/run/secrets/{secret}/{GCS_KEY_FILE}" if secret and storage.scheme == "gs" else "",
    }


def render_manifest(options: DeploymentOptions) -> str:
    """The manifest text (one or more YAML documents); ConfigError if it does not parse as YAML."""
    import yaml

    from . import __version__

    template = "k8s.yaml.j2" if options.kind == "deployment" else "kserve.yaml.j2"
    text = _template(template).render(o=options, storage=options.storage, credentials=_credentials(options),
                                      openmp=SPIN_SETTINGS,
                                      tool_version=__version__, pvc_mount=PVC_MOUNT)
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise ConfigError(f"the rendered manifest is not valid YAML: {err}", where=f"templates/{template}",
                          fix="report this: the template or an option value breaks the YAML") from None
    if not documents or not all(isinstance(d, dict) and d.get("kind") for d in documents):
        raise ConfigError("the rendered manifest has a document without 'kind'", where=f"templates/{template}",
                          fix="report this: the template is broken")
    return text + ("" if text.endswith("\n") else "\n")


def write_manifest(options: DeploymentOptions, path: Path, force: bool = False,
                   repository: Path | None = None) -> tuple[Path, list[str]]:
    """Render and write the manifest to ``path`` in one rename; returns the path and check_repository_fit's warnings.

    An existing file is replaced only with ``force``. Nothing is written if rendering or the check fails.
    """
    path = Path(path)
    if path.exists() and not force:
        raise RepositoryError("the manifest file already exists", where=str(path),
                              fix="pass --force to replace it, or choose another --out")
    if path.is_dir():
        raise RepositoryError("the manifest path is a folder", where=str(path), fix="give a file name for --out")
    warnings = check_repository_fit(repository, options) if repository is not None else []
    text = render_manifest(options)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise RepositoryError(f"cannot write the manifest: {err.strerror}", where=str(path.parent),
                              fix="choose another --out or fix its permissions") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600; a manifest is not a secret
        os.replace(tmp_name, path)  # readers see the old file or the new one, never half of one
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path, warnings
