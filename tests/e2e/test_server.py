"""The real thing: `issuer init` and `issuer serve` as processes, the HTTP API, and `ob3-verify` on the URLs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.served import BIN, running_issuer


def _run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    with running_issuer(tmp_path_factory.mktemp("installation"), "E2E Academy") as served:
        yield served


def test_issue_over_http_then_verify_with_ob3_verify(server: tuple[str, dict[str, str]]) -> None:
    base, env = server
    token = _run(env, "issuer", "api-keys", "create", "--scopes", "admin").stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    achievement = httpx.post(
        f"{base}/api/v1/achievements",
        headers=headers,
        json={
            "name": "Welding Safety",
            "description": "Safe practice.",
            "criteria": {"narrative": "Pass the practical."},
        },
    ).json()
    issued = httpx.post(
        f"{base}/api/v1/credentials",
        headers=headers,
        json={
            "achievement_id": achievement["id"],
            "format": "both",
            "recipient": {"email": "grace@example.org", "name": "Grace Hopper"},
        },
    )
    assert issued.status_code == 201, issued.text
    url = issued.json()["url"]
    for accept in ("application/ld+json", "application/jwt"):
        body = httpx.get(url, headers={"Accept": accept}).content
        done = subprocess.run(
            [str(BIN / "ob3-verify"), "--allow-http-loopback", "--strict-keys", "-"],
            input=body,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
        assert done.stdout.startswith(b"VALID")
    by_url = _run(env, "ob3-verify", "--allow-http-loopback", "--json", url)
    report = json.loads(by_url.stdout)
    assert report["verified"] and {c["id"]: c["status"] for c in report["checks"]}["status"] == "passed"


def test_cli_issue_rotate_and_audit(server: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    base, env = server
    token = _run(env, "issuer", "api-keys", "create", "--scopes", "admin").stdout.strip()
    achievement = httpx.post(
        f"{base}/api/v1/achievements",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "name": "First Aid",
            "description": "Basic life support.",
            "criteria": {"narrative": "Pass."},
        },
    ).json()
    printed = _run(
        env,
        "issuer",
        "issue",
        "--achievement",
        achievement["id"],
        "--name",
        "Alan Turing",
        "--email",
        "alan@example.org",
    ).stdout
    old = tmp_path / "old.json"
    old.write_text(printed)
    _run(env, "issuer", "keys", "rotate")
    assert "retired" in _run(env, "issuer", "keys", "list").stdout
    new = tmp_path / "new.json"
    new.write_text(
        _run(
            env, "issuer", "issue", "--achievement", achievement["id"], "--name", "Ada", "--email", "ada@example.org"
        ).stdout
    )
    for path in (old, new):
        done = _run(env, "ob3-verify", "--allow-http-loopback", "--strict-keys", str(path), check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    assert (
        json.loads(old.read_text())["proof"][0]["verificationMethod"]
        != json.loads(new.read_text())["proof"][0]["verificationMethod"]
    )
    assert "intact" in _run(env, "issuer", "audit", "verify").stdout
    bad = _run(env, "issuer", "issue", "--achievement", "nope", "--name", "X", "--email", "x@example.org", check=False)
    assert bad.returncode == 1 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
