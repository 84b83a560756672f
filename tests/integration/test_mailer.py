"""The credential email against a real SMTP server (aiosmtpd on 127.0.0.1), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
import html
import ipaddress
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from litestar.testing import TestClient
from pydantic import ValidationError
from sqlmodel import Session, select

from issuer.db.engine import session_scope
from issuer.db.tables import Credential, Job
from issuer.delivery import mailer
from issuer.delivery.jobs import run_pending
from issuer.delivery.linkedin import add_to_profile_url
from issuer.issuance.schemas import IssueRequest
from issuer.services import Services
from issuer.settings import Settings

from .conftest import BASE
from .smtp_sink import SENDER, Sink, free_port, serve, smtp_settings

PDF = b"%PDF-1.7\n% a certificate\n%%EOF\n"
NAME = "Zoë <script>alert('name')</script> O'Brien"


@pytest.fixture
def settings(settings: Settings, sink: Sink) -> Settings:
    return smtp_settings(settings, sink)


@pytest.fixture
def with_pdf(services: Services) -> Iterator[None]:
    """After `services` (which installs the real renderer): a stand-in PDF, to check the attachment."""
    mailer.use_pdf_source(lambda services, credential: PDF)
    yield
    mailer.use_pdf_source(None)


@pytest.fixture
def achievement(client: TestClient[Any], admin: dict[str, str]) -> str:
    response = client.post(
        "/api/v1/achievements",
        headers=admin,
        json={
            "name": "Data & Analysis",
            "description": 'Careful work. <script>alert("description")</script> <b>bold?</b>',
            "criteria": {"narrative": "Pass the final project."},
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def issue(services: Services, achievement_id: str, *, email: str, name: str | None = NAME) -> Credential:
    """Issue, then enqueue the email job (a no-op once issuance enqueues it in its own transaction)."""
    recipient = {"email": email} | ({"name": name} if name else {})
    request = IssueRequest.model_validate({"achievement_id": achievement_id, "recipient": recipient})
    credential = services.issuance.issue(request, actor="test").credential
    with session_scope(services.engine) as session:
        mailer.enqueue_credential_email(session, services.settings, credential)
    return credential


def email_job(services: Services, credential_id: str) -> Job:
    with Session(services.engine) as session:
        job = session.exec(select(Job).where(Job.dedupe_key == f"email:{credential_id}")).one()
    return job


# --------------------------------------------------------------------------------------------------- the email


@pytest.mark.usefixtures("with_pdf")
def test_the_email_has_headers_both_parts_and_the_pdf(services: Services, sink: Sink, achievement: str) -> None:
    credential = issue(services, achievement, email="zoe@example.org")
    assert run_pending(services.engine, services, "w1") == 1

    [received] = sink.received
    assert received.mail_from == "badges@example.edu" and received.rcpt_tos == ["zoe@example.org"]
    raw_headers = received.raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in raw_headers and b"Zo\xc3\xab" not in raw_headers  # the name is RFC 2047-encoded
    message = received.message
    assert message["From"] == SENDER
    assert message["To"].addresses[0].display_name == NAME
    assert message["To"].addresses[0].addr_spec == "zoe@example.org"
    assert message["Subject"] == "Example Institute awarded you: Data & Analysis"
    assert message["Message-ID"] == mailer.message_id(f"email:{credential.id}", SENDER)
    assert message["Message-ID"].endswith("@example.edu>")
    assert message["Auto-Submitted"] == "auto-generated"
    sent_at = parsedate_to_datetime(message["Date"])
    assert abs((sent_at - datetime.datetime.now(datetime.UTC)).total_seconds()) < 60

    assert message.get_content_type() == "multipart/mixed"
    body, attachment = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    text_part, html_part = body.iter_parts()
    assert (text_part.get_content_type(), html_part.get_content_type()) == ("text/plain", "text/html")
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == f"data-analysis-{credential.id[:8]}.pdf"
    assert attachment.get_content() == PDF

    page = f"{BASE}/c/{credential.id}"
    linkedin = add_to_profile_url(
        name="Data & Analysis", organization="Example Institute", issued=credential.valid_from,
        cert_url=page, cert_id=credential.id,
    )  # fmt: skip
    text = text_part.get_content()
    assert f"Congratulations, {NAME}!" in text
    assert '<script>alert("description")</script>' in text  # plain text is not HTML: shown as written
    for link in (page, f"{page}/credential.json", linkedin):
        assert link in text
    assert "attached as a PDF" in text

    markup = html_part.get_content()
    assert "<script>" not in markup
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in markup
    assert "&lt;script&gt;alert(&#34;description&#34;)&lt;/script&gt; &lt;b&gt;bold?&lt;/b&gt;" in markup
    assert "Data &amp; Analysis" in markup
    hrefs = {html.unescape(href) for href in _hrefs(markup)}
    assert {page, f"{page}/credential.json", linkedin} <= hrefs

    job = email_job(services, credential.id)
    assert job.state == "succeeded" and job.attempts == 1
    assert job.result is not None and job.result["sent"] is True and job.result["in_doubt"] is False
    assert job.result["message_id"] == message["Message-ID"] and job.result["pdf_attached"] is True


def test_a_failing_pdf_does_not_hold_the_email_back(services: Services, sink: Sink, achievement: str) -> None:
    def broken(services: Services, credential: Credential) -> bytes:
        raise ValueError("the certificate template is broken")

    mailer.use_pdf_source(broken)
    try:
        credential = issue(services, achievement, email="nopdf@example.org", name="No PDF")
        run_pending(services.engine, services, "w1")
    finally:
        mailer.use_pdf_source(None)
    [received] = sink.received
    assert received.message.get_content_type() == "multipart/alternative"  # no attachment
    assert "attached" not in received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    job = email_job(services, credential.id)
    assert job.state == "succeeded" and job.result is not None and job.result["pdf_attached"] is False
    assert job.result["pdf_error"] == "ValueError: the certificate template is broken"


def _hrefs(markup: str) -> list[str]:
    return [part.split('"', 1)[0] for part in markup.split('href="')[1:]]


def test_a_sent_email_is_never_sent_again(services: Services, sink: Sink, achievement: str) -> None:
    """A worker that dies after recording "sent" but before finishing the job: the next attempt sends nothing."""
    credential = issue(services, achievement, email="ada@example.org", name="Ada")
    run_pending(services.engine, services, "w1")
    job = email_job(services, credential.id)
    with session_scope(services.engine) as session:  # as if the job had been left running by a dead worker
        stored = session.get(Job, job.id)
        assert stored is not None
        stored.state, stored.locked_by, stored.locked_until = "running", "dead", stored.updated_at
    run_pending(services.engine, services, "w2")
    assert len(sink.received) == 1
    again = email_job(services, credential.id)
    assert again.state == "succeeded" and again.attempts == 2 and again.result == job.result
    assert "pdf_attached" in (again.result or {}) and again.result is not None and not again.result["in_doubt"]


def test_a_451_is_retried_and_the_email_goes_out_once(services: Services, sink: Sink, achievement: str) -> None:
    sink.data_replies.append("451 4.3.0 Mailbox temporarily unavailable")
    credential = issue(services, achievement, email="grace@example.org", name="Grace")
    run_pending(services.engine, services, "w1")
    job = email_job(services, credential.id)
    assert sink.received == []
    assert (job.state, job.attempts) == ("pending", 1)
    assert job.last_error == "MailRefused: refused: 451 4.3.0 Mailbox temporarily unavailable"
    assert job.result is not None and job.result["sending"] is False  # the server said no: not in doubt
    assert run_pending(services.engine, services, "w1") == 0  # backing off
    run_pending(services.engine, services, "w1", clock=lambda: job.run_after)
    done = email_job(services, credential.id)
    assert (done.state, done.attempts, done.last_error) == ("succeeded", 2, None)
    assert done.result is not None and done.result["sent"] is True and done.result["in_doubt"] is False
    assert [r.rcpt_tos for r in sink.received] == [["grace@example.org"]]


def test_a_refused_recipient_is_dead_lettered_at_once(services: Services, sink: Sink, achievement: str) -> None:
    sink.rcpt_replies.append("550 5.1.1 No such user here")
    credential = issue(services, achievement, email="nobody@example.org", name="Nobody")
    run_pending(services.engine, services, "w1")
    job = email_job(services, credential.id)
    assert (job.state, job.attempts) == ("failed", 1)
    assert job.last_error == "recipient refused: 550 5.1.1 No such user here"
    assert sink.received == []


def test_an_unreachable_server_is_retried(settings: Settings, services: Services, achievement: str) -> None:
    closed = free_port()
    services = Services(
        settings.model_copy(update={"smtp_port": closed}), services.engine, services.master_key, services.issuance
    )
    credential = issue(services, achievement, email="alan@example.org", name="Alan")
    run_pending(services.engine, services, "w1")
    job = email_job(services, credential.id)
    assert job.state == "pending" and job.attempts == 1
    assert job.last_error is not None and job.last_error.startswith(f"MailError: cannot connect to 127.0.0.1:{closed}")
    assert job.result is None  # nothing was handed over: a later attempt is not "in doubt"


def test_erased_and_revoked_recipients_get_no_email(services: Services, sink: Sink, achievement: str) -> None:
    erased = issue(services, achievement, email="erased@example.org", name="E")
    revoked = issue(services, achievement, email="revoked@example.org", name="R")
    with session_scope(services.engine) as session:
        for row_id, change in ((erased.id, "recipient_email"), (revoked.id, "revoked_at")):
            row = session.get(Credential, row_id)
            assert row is not None
            setattr(row, change, None if change == "recipient_email" else row.valid_from)
    run_pending(services.engine, services, "w1")
    assert sink.received == []
    assert email_job(services, erased.id).result == {
        "skipped": "the recipient's email address is not on record (erased)"
    }
    assert email_job(services, revoked.id).state == "succeeded"


def test_without_smtp_host_no_email_job_is_enqueued(services: Services, achievement: str) -> None:
    off = services.settings.model_copy(update={"smtp_host": None})
    request = IssueRequest.model_validate(
        {"achievement_id": achievement, "recipient": {"email": "x@example.org", "name": "X"}}
    )
    credential = services.issuance.issue(request, actor="test").credential
    with session_scope(services.engine) as session:
        assert mailer.enqueue_credential_email(session, off, credential) is None
        if services.settings.smtp_host:  # the real settings do enable email: one job, made once
            first = mailer.enqueue_credential_email(session, services.settings, credential)
            again = mailer.enqueue_credential_email(session, services.settings, credential)
            assert first is not None and again is not None and first.id == again.id


# --------------------------------------------------------------------------------------------------- templates


def _context(**overrides: Any) -> dict[str, Any]:
    return {
        "learner_name": "Ada", "achievement_name": "Welding", "achievement_description": None, "criteria": None,
        "issuer_name": "Acme", "issuer_url": None, "issuer_email": None, "issuer_logo": None,
        "issued_on": "2 January 2030", "expires_on": None, "verify_url": "https://x.test/c/1", "json_url": "https://x.test/c/1/credential.json",
        "linkedin_url": "https://www.linkedin.com/profile/add?x=1&y=2", "credential_id": "1", "has_pdf": False,
    } | overrides  # fmt: skip


def test_an_issuer_can_override_templates_one_file_at_a_time(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "credential_issued.subject.txt").write_text("Acme: {{ achievement_name }}\nsecond line\n")
    (tmp_path / "credential_issued.txt").write_text("Everyone's custom text for {{ learner_name }}\n")
    acme = mailer.render(_context(), issuer_id="acme", templates_dir=tmp_path)
    assert acme.subject == "Acme: Welding second line"  # one header line, always
    assert acme.text == "Everyone's custom text for Ada\n"
    assert "View and verify your credential" in acme.html  # not overridden: the built-in one
    other = mailer.render(_context(), issuer_id="other", templates_dir=tmp_path)
    assert other.subject == "Acme awarded you: Welding" and other.text == acme.text
    builtin = mailer.render(_context(), issuer_id="acme")
    assert builtin.subject == "Acme awarded you: Welding" and "Congratulations, Ada!" in builtin.text


# --------------------------------------------------------------------------------------------------- TLS


def _certificates(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting the server's test CA) for 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject: str, key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    ca, leaf = certificate("test CA", ca_key, True), certificate("127.0.0.1", leaf_key, False)
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "key.pem")
    return server, ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())


def _message(to: str) -> EmailMessage:
    rendered = mailer.RenderedEmail("Subject", "text\n", "<p>html</p>\n")
    return mailer.build_message(
        sender=SENDER, to_address=to, to_name="Ada", rendered=rendered, message_id="<m@example.edu>",
        date=datetime.datetime.now(datetime.UTC),
    )  # fmt: skip


def _smtp_settings(port: int, security: str, **extra: Any) -> Settings:
    return Settings(
        smtp_host="127.0.0.1", smtp_port=port, smtp_security=security, smtp_from=SENDER, smtp_timeout=5,
        _env_file=None, **extra,
    )  # fmt: skip


def test_starttls_then_login(tmp_path: Path) -> None:
    server_ctx, client_ctx = _certificates(tmp_path)
    sink = Sink()
    controller = serve(
        sink, tls_context=server_ctx, require_starttls=True, authenticator=sink.authenticate, auth_require_tls=True
    )
    try:
        settings = _smtp_settings(sink.port, "starttls", smtp_username="mailer", smtp_password="s3cret")
        with mailer.smtp_connection(settings, ssl_context=client_ctx) as smtp:
            mailer.deliver(smtp, _message("tls@example.org"))
        assert sink.logins == [b"mailer"] and [r.rcpt_tos for r in sink.received] == [["tls@example.org"]]
        wrong = _smtp_settings(sink.port, "starttls", smtp_username="mailer", smtp_password="guess")
        with pytest.raises(mailer.MailRefused, match="535"), mailer.smtp_connection(wrong, ssl_context=client_ctx):
            pass
        with pytest.raises(mailer.MailError, match="CERTIFICATE_VERIFY_FAILED"), mailer.smtp_connection(settings):
            pass  # the system trust store does not know the test CA: refused, never sent in the clear
    finally:
        controller.stop()


def test_starttls_is_never_skipped(sink: Sink) -> None:
    """A server that does not offer STARTTLS gets nothing, rather than the message in the clear."""
    settings = _smtp_settings(sink.port, "starttls")
    with pytest.raises(mailer.MailError, match="STARTTLS"), mailer.smtp_connection(settings):
        pass
    assert sink.received == []


def test_implicit_tls(tmp_path: Path) -> None:
    server_ctx, client_ctx = _certificates(tmp_path)
    sink = Sink()
    controller = serve(sink, ssl_context=server_ctx)
    try:
        with mailer.smtp_connection(_smtp_settings(sink.port, "tls"), ssl_context=client_ctx) as smtp:
            mailer.deliver(smtp, _message("implicit@example.org"))
        assert [r.rcpt_tos for r in sink.received] == [["implicit@example.org"]]
    finally:
        controller.stop()


def test_smtp_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="smtp_from"):
        Settings(smtp_host="smtp.example.edu", _env_file=None)
    with pytest.raises(ValidationError, match="go together"):
        Settings(smtp_host="smtp.example.edu", smtp_from=SENDER, smtp_username="u", _env_file=None)
    with pytest.raises(ValidationError, match="unencrypted"):
        Settings(
            env="production", base_url="https://badges.example.edu", master_key="x" * 43, smtp_host="smtp.example.edu",
            smtp_from=SENDER, smtp_security="none", smtp_username="u", smtp_password="p", _env_file=None,
        )  # fmt: skip
    assert Settings(_env_file=None).smtp_host is None  # email is off unless configured
