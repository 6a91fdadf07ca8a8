"""The HAProxy that Ray Serve starts in front of the replicas, with this service's own rules.

Ray Serve's HAProxy mode writes HAProxy's configuration from a template of its own and
starts the binary named by ``RAY_SERVE_HAPROXY_BINARY_PATH`` (on every start and every
graceful reload). :func:`write_launcher` puts a small script there instead, which runs
:func:`main` of this file (standard library only: it starts on every reload) to adjust the
configuration Ray wrote, then replaces itself with the real HAProxy (same process, so Ray's
reloads, ``-sf`` hand-overs and signals reach HAProxy itself):

- **Loopback by default.** Ray's template binds HAProxy's stats page (no authentication)
  and its Prometheus exporter to every interface; they are bound to ``127.0.0.1`` (or
  ``--admin-host``). The public frontend binds ``--frontend-host``: the service's host, while
  Ray's own HTTP options (and so every replica's direct-ingress port) stay on loopback.
- **Limits.** ``timeout http-request`` bounds how long a client may take to send its
  request head (against slow clients, which would otherwise hold a connection up to Ray's
  one-hour client timeout); a request whose ``Content-Length`` exceeds ``--max-body-bytes``
  is answered 413 by HAProxy itself. A chunked body carries no length: it is counted by the
  replica as it is read (:class:`serving.observability.BodyLimit`).
- **503 while no app is deployed.** The service's one app takes every path (route prefix
  ``/``), so HAProxy's "path not found" (404) answers only while the app is not there yet or
  any more (starting, or stopping after the drain): it answers 503 with ``Retry-After``
  instead, which a client or load balancer retries elsewhere.
- **No orphan.** HAProxy is asked to receive SIGTERM when the Ray process that started it
  dies (``PR_SET_PDEATHSIG``), so a killed service does not leave HAProxy holding its port.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shlex
import signal
import sys
from pathlib import Path

#: Seconds a client may take to send a request's head (line and headers).
HTTP_REQUEST_TIMEOUT_S = 10
_PR_SET_PDEATHSIG = 1


def write_launcher(folder: Path, *, binary: str, frontend_host: str, admin_host: str,
                   max_body_bytes: int, http_request_timeout_s: int = HTTP_REQUEST_TIMEOUT_S,
                   ) -> Path:
    """Write ``folder/haproxy``, the executable Ray Serve should start as HAProxy."""
    command = [sys.executable, str(Path(__file__).resolve()), "--binary", binary,
               "--frontend-host", frontend_host, "--admin-host", admin_host,
               "--max-body-bytes", str(max_body_bytes),
               "--http-request-timeout-s", str(http_request_timeout_s), "--"]
    launcher = folder / "haproxy"
    launcher.write_text("#!/bin/sh\n# Written by serving.haproxy.write_launcher.\nexec "
                        + " ".join(shlex.quote(part) for part in command) + ' "$@"\n')
    launcher.chmod(0o700)
    return launcher


def adjust_config(text: str, *, frontend_host: str, admin_host: str, max_body_bytes: int,
                  http_request_timeout_s: int) -> str:
    """Ray Serve's HAProxy configuration with the rules of this module's docstring."""
    lines = text.splitlines()
    out: list[str] = []
    section = ""
    for line in lines:
        stripped = line.strip()
        if line and not line[0].isspace():
            section = stripped
        if stripped.startswith("bind ") and section in ("listen stats", "frontend prometheus"):
            port = stripped.rsplit(":", 1)[1]
            line = f"    bind {_host(admin_host)}:{port}"
        elif stripped.startswith("bind ") and section == "frontend http_frontend":
            address = stripped.split()[1]
            port = address.rsplit(":", 1)[1]
            line = f"    bind {_host(frontend_host)}:{port}" + (
                " " + " ".join(stripped.split()[2:]) if len(stripped.split()) > 2 else "")
        elif stripped.startswith("timeout http-request"):
            continue  # ours replaces it (below)
        elif section == "backend default_backend" and stripped.startswith(
                "http-request return status 404"):
            detail = ('{"detail": "the service is starting or stopping: no model is deployed; '
                      'retry", "request_id": null}')
            line = (f"    http-request return status 503 content-type application/json "
                    f"hdr Retry-After 1 lf-string {_quote(detail)}")
        out.append(line)
        if section == "defaults" and stripped == "defaults":
            out.append(f"    timeout http-request {http_request_timeout_s}s")
        if section == "frontend http_frontend" and stripped.startswith("bind "):
            detail = (f'{{"detail": "request body of %[req.hdr(content-length)] bytes; at most '
                      f'{max_body_bytes} accepted", "request_id": null}}')
            out.append(f"    http-request return status 413 content-type application/json "
                       f"lf-string {_quote(detail)} if {{ req.hdr_val(content-length) gt "
                       f"{max_body_bytes} }}")
    return "\n".join(out) + "\n"


def _host(host: str) -> str:
    """An address as HAProxy's ``bind`` takes it: ``*`` for every interface, IPv6 bracketed."""
    if host in ("", "0.0.0.0", "::", "*"):
        return "*" if host != "::" else "[::]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _quote(text: str) -> str:
    """A double-quoted HAProxy string."""
    return '"' + re.sub(r'(["\\])', r"\\\1", text) + '"'


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux); elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent is already gone
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    """``LAUNCHER-OPTIONS -- HAPROXY-ARGUMENTS``: adjust the ``-f`` file, then become HAProxy."""
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--frontend-host", required=True)
    parser.add_argument("--admin-host", default="127.0.0.1")
    parser.add_argument("--max-body-bytes", type=int, required=True)
    parser.add_argument("--http-request-timeout-s", type=int, default=HTTP_REQUEST_TIMEOUT_S)
    args = parser.parse_args(argv[:cut])
    haproxy_args = list(argv[cut + 1:])
    if "-f" in haproxy_args[:-1]:
        at = haproxy_args.index("-f") + 1
        source = Path(haproxy_args[at])
        adjusted = source.with_name(source.name + ".aiops")
        adjusted.write_text(adjust_config(
            source.read_text(), frontend_host=args.frontend_host, admin_host=args.admin_host,
            max_body_bytes=args.max_body_bytes,
            http_request_timeout_s=args.http_request_timeout_s))
        haproxy_args[at] = str(adjusted)
    _die_with_parent()
    os.execv(args.binary, [args.binary, *haproxy_args])


if __name__ == "__main__":
    main()
