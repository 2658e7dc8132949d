"""A small async client for the few API calls the runtime makes (aiohttp; config via ``kubernetes``).

The official Python client is synchronous and cannot half-close an exec stream; the runtime's
hot path wants neither. So the ``kubernetes`` package only loads the configuration (kubeconfig
or in-cluster service account) and this module speaks HTTP and the exec websocket itself.
Errors become ``TroveError``s here: 5xx and connection failures are 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast
from urllib.parse import quote, urlencode

import aiohttp
from kubernetes import client, config

from trove_core.crd import GROUP, PLURAL, VERSION
from trove_core.errors import KubernetesApiError, PodGoneError, UnavailableError
from trove_core.settings import Settings

Manifest = dict[str, Any]
EXEC_PROTOCOL = "v4.channel.k8s.io"


def _unreachable(exc: BaseException) -> UnavailableError:
    # aiohttp's message names the API server's address: for the log only.
    return UnavailableError(
        "The Kubernetes API is unreachable",
        retry_after=5,
        internal=f"The Kubernetes API is unreachable: {exc!r}",
    )


def load_configuration(settings: Settings) -> client.Configuration:
    cfg = client.Configuration()
    in_cluster = settings.k8s_in_cluster
    if in_cluster is None:
        in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ and settings.k8s_kubeconfig is None
    if in_cluster:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        path = str(settings.k8s_kubeconfig) if settings.k8s_kubeconfig else None
        config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
    return cfg


def _ssl_context(cfg: client.Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if not cfg.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    return context


class KubeApi:
    def __init__(self, cfg: client.Configuration, namespace: str) -> None:
        self.cfg = cfg
        self.host = str(cfg.host).rstrip("/")
        self.namespace = namespace
        self.ssl = _ssl_context(cfg)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No connection cap: every warm channel holds one connection for its lifetime.
            # A connection closed mid-response (a watch given up, an exec websocket) leaves its
            # TLS shutdown in flight and untracked: at server exit, uvloop then failed to close
            # the loop (EBUSY). With cleanup the connector aborts those transports (after 2 s,
            # and when it closes). aiohttp ignores it, with a warning, from Python 3.12.8.
            connector = aiohttp.TCPConnector(
                ssl=self.ssl, limit=0, enable_cleanup_closed=sys.version_info < (3, 12, 8)
            )
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    def _headers(self) -> dict[str, str]:
        # auth_settings() runs the client's refresh hook (in-cluster tokens rotate).
        headers = {}
        settings = cast(dict[str, dict[str, Any]], self.cfg.auth_settings())
        for auth in settings.values():
            if auth.get("in") == "header" and auth.get("value"):
                headers[str(auth["key"]).title()] = str(auth["value"])
        return headers

    def _tns_url(self, name: str | None = None) -> str:
        base = f"{self.host}/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        return f"{base}/{quote(name)}" if name else base

    async def _call(
        self,
        method: str,
        url: str,
        *,
        body: Manifest | None = None,
        content_type: str = "application/json",
        allow: Sequence[int] = (),
    ) -> tuple[int, Manifest]:
        headers = self._headers()
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            async with self.session.request(
                method,
                url,
                data=None if body is None else json.dumps(body),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=15),
            ) as response:
                data = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable(exc) from exc
        parsed = cast(Manifest, json.loads(data)) if data.startswith(b"{") else {}
        if status < 300 or status in allow:
            return status, parsed
        message = parsed.get("message") or data[:200].decode(errors="replace")
        if status >= 500 or status == 429:
            raise UnavailableError(
                "The Kubernetes API is unavailable",
                retry_after=5,
                internal=f"The Kubernetes API answered {status} to {method} {url}: {message}",
            )
        raise KubernetesApiError(
            "The Kubernetes API refused a call",
            internal=f"The Kubernetes API answered {status} to {method} {url}: {message}",
        )

    # -- TroveNamespace objects ------------------------------------------------------------------

    async def get_tns(self, name: str) -> Manifest | None:
        status, body = await self._call("GET", self._tns_url(name), allow=(404,))
        return None if status == 404 else body

    async def create_tns(self, manifest: Manifest) -> Manifest:
        """Create-or-read: another replica may have created it first."""
        status, body = await self._call("POST", self._tns_url(), body=manifest, allow=(409,))
        if status == 409:
            existing = await self.get_tns(manifest["metadata"]["name"])
            if existing is None:
                raise UnavailableError("The namespace's object is being replaced; retry", retry_after=2)
            return existing
        return body

    async def patch_tns(self, name: str, patch: Manifest) -> Manifest | None:
        status, body = await self._call(
            "PATCH",
            self._tns_url(name),
            body=patch,
            content_type="application/merge-patch+json",
            allow=(404,),
        )
        return None if status == 404 else body

    async def patch_tns_unchanged(self, name: str, patch: Manifest) -> Manifest | None:
        """A merge patch carrying ``metadata.resourceVersion``: None if the object changed since
        that version (409) or is gone, so replicas racing on one object cannot both apply."""
        status, body = await self._call(
            "PATCH",
            self._tns_url(name),
            body=patch,
            content_type="application/merge-patch+json",
            allow=(404, 409),
        )
        return None if status in (404, 409) else body

    async def list_tns(self, label_selector: str) -> list[Manifest]:
        _, body = await self._call("GET", f"{self._tns_url()}?{urlencode({'labelSelector': label_selector})}")
        return list(body.get("items") or [])

    async def delete_tns(self, name: str) -> bool:
        """Delete the object (the operator's finalizer then removes its pod and PVC); False if absent."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        status, _ = await self._call("DELETE", self._tns_url(name), body=body, allow=(404,))
        return status != 404

    async def watch_tns(self, name: str, resource_version: str, timeout_s: float) -> AsyncIterator[Manifest]:
        """Watch events (``{type, object}``) for one object, from ``resource_version``."""
        selector = {"fieldSelector": f"metadata.name={name}"}
        async for event in self._watch(self._tns_url(), selector, resource_version, timeout_s):
            yield event

    def _pods_url(self) -> str:
        return f"{self.host}/api/v1/namespaces/{self.namespace}/pods"

    async def list_pods(self, label_selector: str) -> tuple[list[Manifest], str]:
        """The pods with these labels and the list's resourceVersion (to watch from)."""
        _, body = await self._call(
            "GET", f"{self._pods_url()}?{urlencode({'labelSelector': label_selector})}"
        )
        return list(body.get("items") or []), str((body.get("metadata") or {}).get("resourceVersion", "0"))

    async def watch_pods(
        self, label_selector: str, resource_version: str, timeout_s: float
    ) -> AsyncIterator[Manifest]:
        """Watch events for the pods with these labels (a pod that loses one is DELETED here)."""
        selector = {"labelSelector": label_selector}
        async for event in self._watch(self._pods_url(), selector, resource_version, timeout_s):
            yield event

    async def _watch(
        self, url: str, selector: dict[str, str], resource_version: str, timeout_s: float
    ) -> AsyncIterator[Manifest]:
        name = next(iter(selector.values()))
        query = urlencode(
            {
                "watch": "true",
                **selector,
                "resourceVersion": resource_version,
                "timeoutSeconds": str(max(1, int(timeout_s) + 1)),
                "allowWatchBookmarks": "false",
            }
        )
        try:
            async with self.session.get(
                f"{url}?{query}",
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=timeout_s + 5, sock_read=None),
            ) as response:
                if response.status != 200:
                    text = (await response.read())[:200].decode(errors="replace")
                    raise UnavailableError(
                        "The Kubernetes API is unavailable",
                        retry_after=2,
                        internal=f"Watch of {name} failed ({response.status}): {text}",
                    )
                async for line in response.content:
                    if line.strip():
                        yield cast(Manifest, json.loads(line))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable(exc) from exc

    # -- exec ----------------------------------------------------------------------------------------

    async def exec_ws(
        self, pod: str, command: Sequence[str], *, container: str = "sandbox"
    ) -> aiohttp.ClientWebSocketResponse:
        params = [("command", part) for part in command]
        params += [("container", container), ("stdin", "true"), ("stdout", "true"), ("stderr", "true")]
        url = f"{self.host}/api/v1/namespaces/{self.namespace}/pods/{quote(pod)}/exec?{urlencode(params)}"
        try:
            return await self.session.ws_connect(
                url,
                protocols=(EXEC_PROTOCOL,),
                headers=self._headers(),
                max_msg_size=0,
                autoping=True,
                heartbeat=None,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (404, 400):
                raise PodGoneError(f"pod {pod}: {exc.status} {exc.message}") from exc
            raise UnavailableError(
                "The sandbox pod cannot be reached; retry",
                retry_after=2,
                internal=f"exec into pod {pod} failed: {exc.status} {exc.message}",
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable(exc) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            # The aborted transports report connection_lost on the next loop iteration.
            await asyncio.sleep(0)
