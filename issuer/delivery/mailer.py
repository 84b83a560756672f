"""The "you earned a credential" email: rendered per issuer, sent over SMTP by the `send_credential_email` job.

Templates: `templates/email/credential_issued.{subject.txt,txt,html}` (Jinja2; the HTML autoescapes, so a learner
called `<script>` stays text). An issuer gets its own wording by adding `<issuer_id>/credential_issued.*`; with
`ISSUER_EMAIL_TEMPLATES_DIR` set, that folder is searched first (same layout), so operators never edit the
package. Lookup order: custom/<issuer>/, built-in/<issuer>/, custom/, built-in/. The other learner emails
(`reminders.py`: renewal_reminder.*, `declines.py`: completion_declined.*) render and send through the same
functions here (`render`, `build_message`, `send_once`), so they share the lookup, the escaping and the protocol.

Exactly once, as far as SMTP allows. SMTP has no transactions: the server takes the message when it answers 250
to the end of DATA, and a crash between that answer and our commit cannot be told apart from a crash just
before it. So the job (1) returns at once when its `result` says `sent`; (2) connects, then commits `sending`
before handing the message over; (3) commits `sent` immediately after the 250, before QUIT. The window left is
one round trip plus one small commit. An attempt that finds `sending` without `sent` knows the previous attempt
was cut off inside or just before that window: it sends again (a missing certificate is worse than a repeat)
and records `in_doubt: true`. The Message-ID is a function of the job, so such a repeat is recognisable as the
same message. Asynchronous bounces (DSNs to the envelope sender) are not read here.

Errors: anything from the connection, TLS, login or a 4xx reply is retried with backoff (a wrong password or a
refused sender is the operator's to fix, and the jobs should still be there when it is). A 5xx refusal of the
recipient or of the message itself is permanent: the job is dead-lettered at once, visible with the reply.
"""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import BaseLoader, ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlmodel import Session

from ..db.tables import Credential, Issuer, Job
from ..settings import Settings
from .jobs import JobContext, PermanentJobError, enqueue, register, short_error
from .linkedin import add_to_profile_url

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("issuer.mailer")

KIND = "send_credential_email"
TEMPLATES = Path(__file__).parent / "templates" / "email"
TEMPLATE = "credential_issued"

PdfSource = Callable[["Services", Credential], bytes | None]
_pdf_source: list[PdfSource] = []


class MailError(Exception):
    """A transient delivery failure: the job is retried."""


class MailRefused(MailError):
    """The server answered 4xx: not accepted, try later."""


class MailRejected(PermanentJobError):
    """The server answered 5xx to the recipient or the message: not accepted, and never will be."""


def use_pdf_source(source: PdfSource | None) -> None:
    """Attach a PDF certificate to the emails: `source(services, credential)` returns its bytes (or None for none).
    Set once at start-up; without it, or when it fails (noted as `pdf_error` in the job's result), the email goes
    out without an attachment: the certificate is a bonus, the email is the point."""
    _pdf_source.clear()
    if source is not None:
        _pdf_source.append(source)


def enqueue_credential_email(session: Session, settings: Settings, credential: Credential) -> Job | None:
    """Inside the issuing transaction: one email job per credential (dedupe key `email:<id>`), none when email is
    disabled (no smtp_host) or the recipient has no email address."""
    if not settings.smtp_host or not credential.recipient_email:
        return None
    return enqueue(
        session,
        kind=KIND,
        subject=credential.id,
        dedupe_key=f"email:{credential.id}",
        payload={"credential_id": credential.id},
    )


# --------------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@lru_cache(maxsize=8)
def _environment(custom: Path | None) -> Environment:
    builtin = FileSystemLoader(TEMPLATES)
    loader: BaseLoader = builtin if custom is None else ChoiceLoader([FileSystemLoader(custom), builtin])
    return Environment(
        loader=loader,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(
    context: Mapping[str, Any], *, issuer_id: str, templates_dir: Path | None = None, template: str = TEMPLATE
) -> RenderedEmail:
    """The subject, plain text and HTML of one email (`template`: credential_issued, renewal_reminder,
    completion_declined), from the issuer's templates where it has them."""
    environment = _environment(templates_dir)

    def one(suffix: str) -> str:
        name = f"{template}.{suffix}"
        return environment.select_template([f"{issuer_id}/{name}", name]).render(context)

    subject = " ".join(one("subject.txt").split())  # one line: a header cannot hold a newline
    return RenderedEmail(subject=subject, text=one("txt"), html=one("html"))


def email_context(settings: Settings, credential: Credential, issuer: Issuer, *, has_pdf: bool) -> dict[str, Any]:
    """What the templates see: the wording the credential was signed with, and its links."""
    document = credential.document
    achievement = document["credentialSubject"]["achievement"]
    issuer_name = str(document["issuer"].get("name") or issuer.name)
    page = f"{settings.base_url}/c/{credential.id}"
    linkedin = add_to_profile_url(
        name=str(achievement.get("name", "")), organization=issuer_name, issued=credential.valid_from,
        expires=credential.valid_until, cert_url=page, cert_id=credential.id,
    )  # fmt: skip
    return {
        "learner_name": credential.recipient_name,
        "achievement_name": achievement.get("name", ""),
        "achievement_description": achievement.get("description"),
        "criteria": (achievement.get("criteria") or {}).get("narrative"),
        "issuer_name": issuer_name,
        "issuer_url": issuer.url if is_web(issuer.url) else None,
        "issuer_email": issuer.email,  # also the Reply-To
        "issuer_logo": issuer.image if is_web(issuer.image) else None,
        "issued_on": _day(credential.valid_from),
        "expires_on": _day(credential.valid_until) if credential.valid_until else None,
        "verify_url": page,
        "json_url": f"{page}/credential.json",
        "linkedin_url": linkedin,
        "credential_id": credential.id,
        "has_pdf": has_pdf,
    }


def is_web(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("https://", "http://"))


def _day(moment: datetime) -> str:
    return f"{moment.day} {moment:%B %Y}"


# --------------------------------------------------------------------------------------------------- the message


def message_id(dedupe_key: str, sender: str) -> str:
    """The same Message-ID for every attempt of one job, so a repeat after a crash is recognisably the same."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    return f"<credential.{hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]}@{domain}>"


def build_message(
    *,
    sender: str,
    to_address: str,
    to_name: str | None,
    rendered: RenderedEmail,
    message_id: str,
    date: datetime,
    reply_to: str | None = None,
    pdf: bytes | None = None,
    pdf_filename: str = "certificate.pdf",
) -> EmailMessage:
    """multipart/alternative (text, then HTML), inside multipart/mixed with the PDF when there is one. Names are
    encoded by the email package (RFC 2047), never pasted into headers by hand."""
    message = EmailMessage(policy=SMTP)
    message["Subject"] = rendered.subject
    message["From"] = sender
    try:
        message["To"] = Address(display_name=to_name or "", addr_spec=to_address)
    except (ValueError, IndexError) as error:
        raise PermanentJobError("the recipient's email address cannot be used in an email header") from error
    if reply_to:
        message["Reply-To"] = reply_to
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies to us
    message["X-Auto-Response-Suppress"] = "All"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    if pdf:
        message.add_attachment(pdf, maintype="application", subtype="pdf", filename=pdf_filename)
    return message


# --------------------------------------------------------------------------------------------------- SMTP


@contextmanager
def smtp_connection(settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> Iterator[smtplib.SMTP]:
    """A connected, secured, logged-in session; QUIT (or close) on exit. STARTTLS is never skipped when asked for."""
    if not settings.smtp_host:
        raise MailError("email is not configured (ISSUER_SMTP_HOST is unset)")
    host, port, timeout = settings.smtp_host, settings.smtp_port, settings.smtp_timeout
    context = ssl_context or _default_ssl_context()
    try:
        if settings.smtp_security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
    except (smtplib.SMTPException, OSError) as error:
        raise _transient(error, f"cannot connect to {host}:{port}") from error
    try:
        smtp.ehlo()
        if settings.smtp_security == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.smtp_username and settings.smtp_password:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
    except (smtplib.SMTPException, OSError) as error:
        smtp.close()
        raise _transient(error, "SMTP session set-up failed") from error
    try:
        yield smtp
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


@cache
def _default_ssl_context() -> ssl.SSLContext:
    """One verifying client context per process: building one loads the CA bundle (~20 ms), and a context is
    safe to share between threads for client connections."""
    return ssl.create_default_context()


def deliver(smtp: smtplib.SMTP, message: EmailMessage) -> None:
    """Hand the message over. MailRefused/MailRejected: the server said no (it was not accepted); any other
    MailError: the connection broke, so whether the server took it is unknown."""
    try:
        smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as error:
        replies = list(error.recipients.values())
        text = "; ".join(f"{code} {_text(reply)}" for code, reply in replies)
        permanent = all(code >= 500 for code, _ in replies)
        raise (MailRejected if permanent else MailRefused)(f"recipient refused: {text}") from error
    except smtplib.SMTPResponseException as error:
        text = f"{error.smtp_code} {_text(error.smtp_error)}"
        if isinstance(error, smtplib.SMTPDataError) and error.smtp_code >= 500:
            raise MailRejected(f"message refused: {text}") from error
        raise MailRefused(f"refused: {text}") from error
    except (smtplib.SMTPException, OSError) as error:
        raise _transient(error, "connection lost while sending; the server may or may not have the message") from error


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())[:200]


def _transient(error: BaseException, what: str) -> MailError:
    if isinstance(error, smtplib.SMTPResponseException):
        return MailRefused(f"{what}: {error.smtp_code} {_text(error.smtp_error)}")
    return MailError(f"{what}: {type(error).__name__}: {' '.join(str(error).split())}")


# --------------------------------------------------------------------------------------------------- the job


@register(KIND)
def send_credential_email(ctx: JobContext) -> dict[str, Any] | None:
    """Send the email for `payload.credential_id`, at most once unless a crash left the outcome unknown."""
    if ctx.result.get("sent"):
        return None  # an earlier attempt sent it and recorded so; it was cut off before finishing the job
    services = ctx.services
    settings = services.settings
    sender = require_email(settings)
    with Session(services.engine) as session:
        credential = session.get(Credential, ctx.job.payload["credential_id"])
        issuer = session.get(Issuer, credential.issuer_id) if credential is not None else None
    if credential is None or issuer is None:
        raise PermanentJobError(f"credential {ctx.job.payload['credential_id']!r} does not exist")
    if not credential.recipient_email:
        return {"skipped": "the recipient's email address is not on record (erased)"}
    if credential.revoked_at is not None:
        return {"skipped": "the credential was revoked before the email went out"}

    pdf, pdf_error = None, None
    if _pdf_source:
        try:
            pdf = _pdf_source[0](services, credential)
        except Exception as error:  # the certificate is a bonus: the email goes out without it
            pdf_error = short_error(error)
            log.warning("credential %s: no PDF for the email: %s", credential.id, pdf_error)
    rendered = render(
        email_context(settings, credential, issuer, has_pdf=bool(pdf)),
        issuer_id=credential.issuer_id,
        templates_dir=settings.email_templates_dir,
    )
    mid = message_id(ctx.job.dedupe_key, sender)
    message = build_message(
        sender=sender, to_address=credential.recipient_email, to_name=credential.recipient_name,
        rendered=rendered, message_id=mid, date=ctx.clock(), reply_to=issuer.email, pdf=pdf,
        pdf_filename=_filename(str(credential.document.get("name") or "certificate"), credential.id),
    )  # fmt: skip
    send_once(ctx, settings, message, mid, pdf_attached=bool(pdf))
    if pdf_error:
        return {"pdf_error": pdf_error}
    return None


def require_email(settings: Settings) -> str:
    """The From address; MailError (retried: an operator may configure it) when email is not configured."""
    if not settings.smtp_host or not settings.smtp_from:
        raise MailError("email is not configured (ISSUER_SMTP_HOST is unset)")
    return settings.smtp_from


def send_once(ctx: JobContext, settings: Settings, message: EmailMessage, mid: str, **recorded: Any) -> None:
    """Hand `message` over within the job's exactly-once protocol (the module docstring): commit `sending`, send,
    commit `sent` (with `recorded`) before QUIT. Every email job sends through here, after checking `sent`."""
    in_doubt = bool(ctx.result.get("sending") or ctx.result.get("in_doubt"))
    with smtp_connection(settings) as smtp:
        ctx.checkpoint(message_id=mid, sending=True, in_doubt=in_doubt)
        try:
            deliver(smtp, message)
        except (MailRefused, MailRejected):
            ctx.result["sending"] = False  # the server said no: this attempt certainly did not deliver it
            raise
        ctx.checkpoint(sending=False, sent=True, sent_at=ctx.clock().isoformat(), **recorded)


def _filename(name: str, credential_id: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "certificate"
    return f"{stem}-{credential_id[:8]}.pdf"
