"""ob3-verify: exit codes, the JSON report, the human report, and no tracebacks on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from verifier.__main__ import main

ROOT = Path(__file__).parent.parent.parent
FIXTURES = ROOT / "tests" / "vectors" / "data" / "ob3-validator-fixtures"
SAMPLE = ROOT / "examples" / "sample-credential.json"


def test_sample_credential_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--offline", "--now", "2026-01-01T00:00:00Z", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("VALID")
    assert "ok   signature" in out and "Python 101" in out


def test_json_output_for_an_expired_credential(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--offline", "--json", str(FIXTURES / "simple-err-expired.json")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] is False and report["verdict"] == "expired"
    assert [c["id"] for c in report["checks"]][:2] == ["parse", "context"]
    assert {c["id"]: c["status"] for c in report["checks"]}["expiration"] == "failed"


def test_now_changes_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--offline", "--now", "2031-01-01T00:00:00Z", str(SAMPLE)]) == 1
    assert capsys.readouterr().out.startswith("EXPIRED")


def test_baked_images_and_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["--offline", str(FIXTURES / "simple-json.svg")]) == 0
    assert "baked SVG" in capsys.readouterr().out
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((FIXTURES / "simple-jwt.png").read_bytes())))
    assert main(["--offline", "-"]) == 0
    assert "baked PNG credential (VC-JWT inside)" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--offline", "no-such-file.json"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--offline", "--now", "yesterday", str(SAMPLE)]) == 2
    assert "--now" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2


def test_untrusted_text_cannot_drive_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    credential = json.loads(SAMPLE.read_text())
    credential["issuer"]["name"] = "Evil\x1b[2J\x1b]0;pwned\x07 Corp"
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(credential))
    assert main(["--offline", str(path)]) == 1  # the signature no longer matches
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "Evil" in out


@pytest.mark.parametrize("content", [b"", b"{not json", b"\x89PNG\r\n\x1a\nbroken", b"<svg/>", b"a.b.c"])
def test_malformed_files_exit_1_without_a_traceback(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "verifier", "--offline", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.startswith("INVALID")


def test_url_source_over_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.http_server import LocalServer
    from tests.issuer_kit import TestIssuer

    with LocalServer() as site:
        issuer = TestIssuer(site)
        signed = issuer.sign(issuer.credential(validFrom="2026-01-01T00:00:00Z"))
        site.json("/credentials/1", json.dumps(signed).encode(), content_type="application/vc+ld+json")
        url = f"{site.base}/credentials/1"
        assert main(["--allow-http-loopback", "--now", "2026-06-01T00:00:00Z", url]) == 0
        assert capsys.readouterr().out.startswith("VALID")
        # Without the development flag, plain http and loopback addresses are refused before any request.
        before = len(site.requests)
        assert main(["--now", "2026-06-01T00:00:00Z", url]) == 1
        assert "could not fetch" in capsys.readouterr().err
        assert len(site.requests) == before
