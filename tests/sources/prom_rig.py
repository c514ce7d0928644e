"""A real Prometheus for the source tests, scraping HAProxy's built-in exporter and an lbtui
balancer's ``/metrics`` every 500 ms, its storage in a temporary folder; and that lbtui
balancer (``lbtui serve`` in front of the HAProxy rig's origins). Everything by PID."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.sources.rig import HaproxyRig, _listening, _stop, free_port, wait_for

PROMETHEUS = shutil.which("prometheus")
SKIP_REASON = "prometheus is not installed (apt-get install prometheus; .ci/run does)"
SCRAPE = "500ms"


@dataclass
class LbtuiRig:
    """``lbtui serve`` in front of the HAProxy rig's origins, its admin API on a free port."""

    haproxy: HaproxyRig
    port: int = 0
    admin_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        self.port, self.admin_port = free_port(), free_port()
        argv = [sys.executable, "-m", "lbtui", "serve", "--listen", f"127.0.0.1:{self.port}"]
        argv += ["--admin", f"127.0.0.1:{self.admin_port}", "--algorithm", "round_robin"]
        for name, port in self.haproxy.servers.items():
            argv += ["--backend", f"{name}=http://127.0.0.1:{port}"]
        env = {k: v for k, v in os.environ.items() if k != "LBTUI_ADMIN_TOKEN"}
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        wait_for(
            lambda: _listening(self.admin_port) and _listening(self.port),
            what="lbtui serve listening",
        )

    def get(self) -> str:
        try:
            with urllib.request.urlopen(self.url + "/", timeout=5) as r:
                r.read()
                return str(r.headers.get("X-Backend"))
        except urllib.error.HTTPError as exc:
            return str(exc.code)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


@dataclass
class PrometheusRig:
    folder: Path
    haproxy: HaproxyRig
    lbtui: LbtuiRig
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"prometheus+http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        config = self.folder / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE}\n"
            "scrape_configs:\n"
            "  - job_name: haproxy\n"
            f"    static_configs: [{{targets: ['{self.haproxy.exporter}']}}]\n"
            "  - job_name: lbtui\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{self.lbtui.admin_port}']}}]\n"
        )
        assert PROMETHEUS is not None
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: self.ready(), timeout=30, what="Prometheus scraping both targets")

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=5) as r:
            return list(json.load(r)["data"]["result"])

    def ready(self) -> bool:
        try:
            return len(self.query("up == 1")) == 2
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None
