"""A real installation for end-to-end tests: `issuer init`, then `issuer serve` on a free loopback port."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_issuer(home: Path, name: str, **settings: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(base URL, environment) of a served installation on SQLite in `home`; extra ISSUER_* values as keywords."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = (
        os.environ
        | {
            "ISSUER_BASE_URL": base,
            "ISSUER_DATABASE_URL": f"sqlite:///{home / 'issuer.db'}",
            "ISSUER_KEYS_DIR": str(home / "keys"),
            "ISSUER_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "ISSUER_NAME": name,
        }
        | {f"ISSUER_{key.upper()}": value for key, value in settings.items()}
    )
    subprocess.run([str(BIN / "issuer"), "init"], env=env, capture_output=True, timeout=120, check=True)
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "issuer"), "serve", "--port", str(port)], env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/.well-known/did.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError("server did not start:\n" + (home / "server.log").read_text())
            time.sleep(0.1)
        yield base, env
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
