"""CLI and Ray: --ray-address needs --collectors, a silent address fails fast in one line, and
collectors are bounded by the cluster's CPUs."""

from __future__ import annotations

import socket
import time

import pytest

from zerokv.cli import main
from zerokv.rl.raycluster import check_capacity, probe


def test_ray_address_without_collectors_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--ray-address", "127.0.0.1:6379", "--out", str(tmp_path / "r")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "with collectors=0" in err


def test_a_silent_ray_address_fails_in_bounded_time():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port} does not answer"):
        probe(f"127.0.0.1:{port}", timeout=2.0)
    assert time.monotonic() - start < 10
    with pytest.raises(ValueError, match="HOST:PORT"):
        probe("no-port-here")


def test_collectors_are_bounded_by_the_clusters_cpus():
    with pytest.raises(ValueError, match=r"collectors=100000 .* the Ray cluster has 2: allowed at most 2"):
        check_capacity(100_000, 1.0, 2.0)
    with pytest.raises(ValueError, match="allowed at most 4 collectors"):
        check_capacity(5, 0.5, 2.0)
    check_capacity(4, 0.5, 2.0)
