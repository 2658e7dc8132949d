"""The operator's only Kubernetes client user: create-or-read, get, delete, status patch.

Every ``ApiException`` becomes ``KubernetesError`` (a ``kopf.TemporaryError``), so the retry
decision sits here at the I/O edge and the handlers hold only logic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from trove_core.crd import GROUP, PLURAL, VERSION

P = ParamSpec("P")
T = TypeVar("T")
Manifest = dict[str, Any]


class KubernetesError(kopf.TemporaryError):
    """The API server refused or failed a call; kopf retries the handler after ``delay``."""


class PatchRefusedError(Exception):
    """A JSON patch's ``test`` failed or its object is gone: someone else got there first."""


def _translate(func: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except ApiException as exc:
            raise KubernetesError(f"{func.__name__}: {exc.status} {exc.reason}", delay=3) from exc

    return wrapper


def _plain(api: client.ApiClient, model: Any) -> Manifest:
    """A client model as the plain dict the builders and kopf speak."""
    return cast(Manifest, api.sanitize_for_serialization(model))  # type: ignore[no-untyped-call]


def load_config() -> None:
    """In-cluster when running in a pod, else ``$KUBECONFIG`` / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class Kube:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        if api is None:
            configuration = client.Configuration.get_default_copy()
            # One pooled connection per handler thread (the default pool is smaller).
            configuration.connection_pool_maxsize = 32
            api = client.ApiClient(configuration)
        self.api = api
        self.core = client.CoreV1Api(self.api)
        self.net = client.NetworkingV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    # -- create-or-read ---------------------------------------------------------------------

    @_translate
    def ensure(self, namespace: str, manifest: Manifest) -> tuple[Manifest, bool]:
        """Create ``manifest`` unless it exists; return ``(live object, created)``."""
        kind = manifest["kind"]
        create, read = self._verbs(kind)
        try:
            created = create(namespace, manifest)
            return _plain(self.api, created), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        live = read(manifest["metadata"]["name"], namespace)
        return _plain(self.api, live), False

    def _verbs(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        if kind == "Pod":
            return self.core.create_namespaced_pod, self.core.read_namespaced_pod
        if kind == "PersistentVolumeClaim":
            return (
                self.core.create_namespaced_persistent_volume_claim,
                self.core.read_namespaced_persistent_volume_claim,
            )
        if kind == "NetworkPolicy":
            return self.net.create_namespaced_network_policy, self.net.read_namespaced_network_policy
        raise ValueError(f"unsupported kind {kind}")

    @_translate
    def select(self, kind: str, namespace: str, selector: str) -> list[Manifest]:
        found: Any
        if kind == "Pod":
            found = self.core.list_namespaced_pod(namespace, label_selector=selector)
        elif kind == "PersistentVolumeClaim":
            found = self.core.list_namespaced_persistent_volume_claim(namespace, label_selector=selector)
        else:
            raise ValueError(f"unsupported kind {kind}")
        return [_plain(self.api, item) for item in found.items]

    @_translate
    def json_patch(self, kind: str, namespace: str, name: str, ops: list[Manifest]) -> Manifest:
        """Apply ``ops`` atomically; ``PatchRefusedError`` when a ``test`` fails or it is gone."""
        patch = {
            "Pod": self.core.patch_namespaced_pod,
            "PersistentVolumeClaim": self.core.patch_namespaced_persistent_volume_claim,
        }[kind]
        try:
            return _plain(self.api, patch(name, namespace, ops))
        except ApiException as exc:
            if exc.status in (404, 409, 422):
                raise PatchRefusedError(f"{kind} {namespace}/{name}: {exc.status} {exc.reason}") from exc
            raise

    @_translate
    def replace_network_policy(self, namespace: str, manifest: Manifest) -> None:
        self.net.patch_namespaced_network_policy(manifest["metadata"]["name"], namespace, manifest)

    # -- reads ----------------------------------------------------------------------------------

    @_translate
    def get(self, kind: str, namespace: str, name: str) -> Manifest | None:
        _create, read = self._verbs(kind)
        try:
            return _plain(self.api, read(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    @_translate
    def get_tns(self, namespace: str, name: str) -> Manifest | None:
        try:
            found = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return cast(Manifest, found)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    @_translate
    def list_tns(self, namespace: str) -> list[Manifest]:
        found = cast(Manifest, self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL))
        return cast(list[Manifest], found.get("items") or [])

    # -- writes ---------------------------------------------------------------------------------

    @_translate
    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=1)
        except ApiException as exc:
            if exc.status != 404:
                raise

    @_translate
    def delete_pvc(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_persistent_volume_claim(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    @_translate
    def patch_status(self, namespace: str, name: str, status: Manifest, plural: str = PLURAL) -> None:
        """The status of a TroveNamespace (or, with ``plural``, of another of our resources)."""
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing left to report on
                raise

    @_translate
    def annotate_tns(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        body = {"metadata": {"annotations": annotations}}
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)

    @_translate
    def patch_spec(self, namespace: str, name: str, spec: Manifest) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec})

    @_translate
    def set_owners(self, namespace: str, kind: str, name: str, owners: list[Manifest]) -> None:
        if kind != "PersistentVolumeClaim":
            raise ValueError(f"unsupported kind {kind}")
        self.core.patch_namespaced_persistent_volume_claim(
            name, namespace, {"metadata": {"ownerReferences": owners or None}}
        )

    @_translate
    def server_version(self) -> str:
        return str(client.VersionApi(self.api).get_code().git_version)
