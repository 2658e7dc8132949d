"""``trove-operator``: run the kopf operator with our flags (namespaces, peering, liveness, metrics)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import kopf

import trove_operator  # noqa: F401 - registers the handlers
from trove_operator import metrics
from trove_operator.settings import OperatorSettings, load_settings


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def build_parser(settings: OperatorSettings | None = None) -> argparse.ArgumentParser:
    """The flags, their defaults from ``settings`` (read from the environment when not given)."""
    settings = settings or OperatorSettings()
    parser = argparse.ArgumentParser(prog="trove-operator", description=__doc__)
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="Kubernetes namespace to watch (repeatable); default: $TROVE_K8S_NAMESPACE or all",
    )
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--peering",
        default=settings.operator_peering,
        help="KopfPeering object shared by replicas (needs crds/kopf-peering.yaml)",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="no peering: only for a single replica or tests"
    )
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL")
    parser.add_argument(
        "--metrics-port",
        type=_port,
        # A string default goes through ``type`` too, so a bad env value is a usage error.
        default=settings.operator_metrics_port,
        help="serve Prometheus metrics at /metrics on this port; 0 disables "
        "(default: $TROVE_OPERATOR_METRICS_PORT or 9090)",
    )
    parser.add_argument(
        "--metrics-host",
        default=settings.operator_metrics_host,
        help="address of the metrics endpoint (default: $TROVE_OPERATOR_METRICS_HOST or 0.0.0.0)",
    )
    parser.add_argument("--verbose", action="store_true")
    return parser


def configure_logging(*, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every handler and timer run per object at INFO ("Timer 'stop_idle' succeeded."):
    # with 1000 namespaces and a 30 s idle check, 33 lines a second. Our own INFO lines say
    # what changed; kopf's failures (WARNING and up) still show; --verbose shows everything.
    logging.getLogger("kopf.objects").setLevel(logging.NOTSET if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    settings = load_settings()
    args = build_parser(settings).parse_args(argv)
    configure_logging(verbose=args.verbose)
    namespaces = args.namespace or [n for n in [settings.k8s_namespace] if n]
    clusterwide = args.all_namespaces or not namespaces
    if args.metrics_port:
        # A daemon thread of its own, up before kopf's loop: scrapes never wait on handlers.
        try:
            metrics.serve(args.metrics_port, args.metrics_host)
        except OSError as exc:
            raise SystemExit(
                f"trove-operator: cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc}"
            ) from exc
    kopf.run(
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        clusterwide=clusterwide,
        namespaces=[] if clusterwide else namespaces,
        liveness_endpoint=args.liveness or None,
    )
