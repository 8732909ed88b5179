"""Ray for a distributed run: imported here only, a local cluster bound to loopback only.

``connect(None)`` starts a local cluster that listens on 127.0.0.1 and nowhere else, and checks
it: Ray looks up the machine's outward address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
(read when ray is imported) tells it to use the loopback address, and ``_node_ip_address`` alone
does not stop that, so both are set; the dashboard is off and usage statistics are never sent.
The variables reach the workers (which inherit the raylet's environment) and are also passed in
the job's ``runtime_env``. A cluster whose GCS or node address is not loopback is shut down with
an error. ``connect("auto")`` or ``connect("HOST:PORT")`` joins a real cluster as it is.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass

from zerokv.checks import install_hint

__all__ = ["LOOPBACK_ENV", "Cluster", "connect", "disconnect", "import_ray", "is_loopback"]

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0"}
"""Environment of a local cluster: loopback node address without probing the network, no usage
stats, and workers at the driver's priority. Ray starts workers at nice 15 by default; on one
machine the collectors then share the cores with the learner in the driver (nice 0) and starve."""
LOOPBACK_IP = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Cluster:
    """The Ray cluster a run uses."""

    started: bool
    """This process started it (a local cluster) and shuts it down when the run ends."""
    gcs_address: str
    """HOST:PORT of its GCS."""
    node_ip: str
    """The address of this process's node."""

    @property
    def loopback(self) -> bool:
        return is_loopback(self.gcs_address.rsplit(":", 1)[0]) and is_loopback(self.node_ip)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP, bracketed IPv6, or "localhost") is a loopback address; an
    IPv4-mapped IPv6 address (``::ffff:127.0.0.1``, how Ray's gRPC sockets show) counts as its IPv4."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def import_ray():
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("zerokv train --collectors needs Ray, an optional extra: " +
                          install_hint("ray")) from e
    return ray


PROBE_SECONDS = 5.0
"""How long a HOST:PORT given as ``--ray-address`` has to accept a TCP connection before the run
is refused (Ray itself would retry for minutes)."""


def probe(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Raises ConnectionError (one line, naming the address) unless ``address`` ("HOST:PORT")
    accepts a TCP connection within ``timeout`` seconds; "auto" is left to Ray (it fails fast)."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"ray_address={address!r}; must be \"auto\" or HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"--ray-address {address} does not answer within {timeout:g} s ({e}); "
                              "is a Ray head running there (ray start --head)?") from None


def check_capacity(collectors: int, cpus_each: float, available: float) -> None:
    """Raises ValueError unless ``collectors`` actors of ``cpus_each`` CPUs fit the cluster's
    ``available`` CPUs (Ray would otherwise wait forever for the rest)."""
    if collectors * cpus_each > available:
        most = int(available // cpus_each) if cpus_each > 0 else collectors
        raise ValueError(f"collectors={collectors} x collector_cpus={cpus_each:g} needs {collectors * cpus_each:g} "
                         f"CPUs; the Ray cluster has {available:g}: allowed at most {most} collectors")


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Cluster:
    """Joins the cluster at ``address`` ("auto" or HOST:PORT; probed first, so a silent address
    fails in :data:`PROBE_SECONDS`), or with None starts a local one bound to loopback
    (``num_cpus``: its CPUs, default all); reuses a session already connected."""
    if address is not None:
        probe(address)
    if address is None:
        os.environ.update(LOOPBACK_ENV)  # before ray is imported: it reads them then
    ray = import_ray()
    _quiet_token_notice()
    started = not ray.is_initialized()
    if started and address is None:
        _no_outward_address(ray)
        ray.init(_node_ip_address=LOOPBACK_IP, include_dashboard=False, num_cpus=num_cpus,
                 log_to_driver=True, logging_level=logging.WARNING,
                 runtime_env={"env_vars": dict(LOOPBACK_ENV)})
    elif started:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    cluster = Cluster(started, ray.get_runtime_context().gcs_address, ray.util.get_node_ip_address())
    if started and address is None and not cluster.loopback:
        ray.shutdown()
        raise RuntimeError(f"the local Ray cluster listens on {cluster.gcs_address} (node {cluster.node_ip}), "
                           "not on loopback only; it was shut down")
    return cluster


class _TokenNoticeFilter(logging.Filter):
    """Drops Ray's "Token authentication is enabled" notice: a new local cluster turns token
    authentication on by itself and says so on every run, which a user cannot act on (it stays
    on; a user's RAY_AUTH_MODE is Ray's to read as always)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()


TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"


def _quiet_token_notice() -> None:
    logger = logging.getLogger(TOKEN_LOGGER)
    if not any(isinstance(f, _TokenNoticeFilter) for f in logger.filters):
        logger.addFilter(_TokenNoticeFilter())


def _no_outward_address(ray) -> None:
    """If ray was imported before ``LOOPBACK_ENV`` was set, make it take the loopback address
    all the same (the constant its address lookup reads; ``connect`` checks the result)."""
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if getattr(constants, "ENABLE_RAY_CLUSTER", False):
        constants.ENABLE_RAY_CLUSTER = False


def disconnect(cluster: Cluster | None) -> None:
    """Shuts down a cluster this process started; leaves a joined one (and a reused session) alone."""
    if cluster is not None and cluster.started:
        import_ray().shutdown()
