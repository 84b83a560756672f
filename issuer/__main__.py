"""`issuer`: init | serve | demo | issue | keys | api-keys | audit verify.

Settings come from ISSUER_* environment variables and `.env` (docs/operations.md lists them).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import make_url
from sqlmodel import Session, col, select

from . import audit
from .app import build_services
from .auth import SCOPES, create_api_key
from .db.engine import make_engine, migrate, session_scope
from .db.tables import Achievement, Issuer, SigningKey
from .errors import IssuerError
from .issuance.schemas import IssueRequest
from .keyring import (
    COMPROMISE_WARNING,
    KeyringError,
    MasterKeyError,
    ensure_keys,
    generate_master_key_file,
    load_master_key,
    mark_compromised,
    rotate,
)
from .profiles import ensure_default_issuer
from .settings import Settings

DEMO_ACHIEVEMENT = {
    "name": "Open Badges 3.0 Explorer",
    "description": "Issued by this demo installation to show a complete, verifiable Open Badges 3.0 credential.",
    "criteria": {"narrative": "Run the demo and open the verification links it prints."},
    "achievementType": "Badge",
    "tag": ["demo"],
}


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise SystemExit(f"issuer: invalid settings: {error.errors()[0]['msg']} ({error.errors()[0]['loc']})") from None


def cmd_init(args: argparse.Namespace) -> int:
    settings = _settings()
    engine = make_engine(settings.database_url)
    migrate(engine)
    try:
        master = load_master_key(settings)
    except MasterKeyError:
        if settings.env == "production":
            print("issuer: production mode needs ISSUER_MASTER_KEY (or keys/master.key)", file=sys.stderr)
            return 2
        with Session(engine) as session:
            if session.exec(select(SigningKey)).first() is not None:
                print(
                    "issuer: the database holds keys sealed with a master key that is missing here; restore it\n"
                    "        (ISSUER_MASTER_KEY or keys/master.key) instead of generating a new one",
                    file=sys.stderr,
                )
                return 2
        path = generate_master_key_file(settings.keys_dir)
        print(
            f"WARNING: generated a development master key at {path}.\n"
            "         Every private key is encrypted with it: back it up, keep it out of version control,\n"
            "         and give ISSUER_MASTER_KEY explicitly in production.",
            file=sys.stderr,
        )
        master = load_master_key(settings)
    with session_scope(engine) as session:
        issuer = ensure_default_issuer(session, settings)
        created = ensure_keys(session, issuer, master)
        if created:
            audit.append(
                session, actor="cli", action="keys.created", subject=issuer.id, data={"keys": [k.id for k in created]}
            )
    print(
        f"database ready at {make_url(settings.database_url).render_as_string(hide_password=True)}\n"
        f"default issuer {issuer.did} ({issuer.name})"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from granian import Granian
    from granian.constants import Interfaces

    _settings()  # fail fast on bad settings, before starting workers
    print(f"serving on http://{args.host}:{args.port} with {args.workers} worker(s)", file=sys.stderr)
    Granian(
        "issuer.asgi:app_factory",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        factory=True,
        log_access=False,
    ).serve()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if cmd_init(args) != 0:
        return 1
    settings = _settings()
    services = build_services(settings)
    with session_scope(services.engine) as session:
        achievement = session.exec(select(Achievement).where(Achievement.name == DEMO_ACHIEVEMENT["name"])).first()
        if achievement is None:
            issuer = ensure_default_issuer(session, settings)
            achievement = Achievement(
                id="demo", issuer_id=issuer.id, name=str(DEMO_ACHIEVEMENT["name"]), data=DEMO_ACHIEVEMENT
            )
            session.add(achievement)
    with session_scope(services.engine) as session:
        _, token = create_api_key(session, name="demo", scopes=["admin"])
    issued = services.issuance.issue(
        IssueRequest.model_validate(
            {
                "achievement_id": achievement.id,
                "format": "both",
                "recipient": {"email": "ada@example.org", "name": "Ada Lovelace"},
            }
        ),
        actor="cli:demo",
    )
    base = settings.base_url
    print(
        f"""
Demo data is ready. Open:
  verification page      {base}/c/{issued.credential.id}
  credential (JSON-LD)   {base}/credentials/{issued.credential.id}
  issuer DID document    {base}/.well-known/did.json
  JWKS                   {base}/.well-known/jwks.json
  API docs (OpenAPI)     {base}/schema
Admin API key (shown once): {token}
  curl -H 'Authorization: Bearer {token}' {base}/api/v1/achievements
Verify it:  .venv/bin/ob3-verify --allow-http-loopback {base}/credentials/{issued.credential.id}
""",
        flush=True,
    )
    return cmd_serve(args)


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from .delivery.jobs import run_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_forever(build_services(_settings()), worker_id=args.id)
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    services = build_services(_settings())
    recipient: dict[str, Any] = {"name": args.name}
    if args.email:
        recipient["email"] = args.email
    if args.did:
        recipient["did"] = args.did
    try:
        request = IssueRequest.model_validate(
            {"achievement_id": args.achievement, "recipient": recipient, "format": args.format}
        )
        issued = services.issuance.issue(request, actor="cli")
    except ValidationError as error:
        print(
            "issuer: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()),
            file=sys.stderr,
        )
        return 2
    except IssuerError as error:
        print(f"issuer: {error.detail}", file=sys.stderr)
        return 1
    row = issued.credential
    print(row.jwt if args.format == "jwt" else json.dumps(row.document, indent=2, ensure_ascii=False))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    settings = _settings()
    engine = make_engine(settings.database_url)
    migrate(engine)
    if args.action == "list":
        with Session(engine) as session:
            for key in session.exec(
                select(SigningKey).order_by(col(SigningKey.issuer_id), col(SigningKey.created_at))
            ).all():
                print(
                    f"{key.issuer_id:12} {key.algorithm:8} {key.status:12} {key.id}  created {key.created_at:%Y-%m-%d}"
                )
        return 0
    master = load_master_key(settings)
    with session_scope(engine) as session:
        if args.action == "rotate":
            issuers = [session.get(Issuer, args.issuer)] if args.issuer else session.exec(select(Issuer)).all()
            for issuer in issuers:
                if issuer is None:
                    print(f"issuer: no issuer {args.issuer!r}", file=sys.stderr)
                    return 1
                for algorithm in args.algorithm or ["Ed25519", "RS256"]:
                    new = rotate(session, issuer.id, algorithm, master)
                    audit.append(
                        session,
                        actor="cli",
                        action="key.rotated",
                        subject=new.id,
                        data={"issuer": issuer.id, "algorithm": algorithm},
                    )
                    print(f"{issuer.id}: new active {algorithm} key {new.id}; the previous one stays published")
        elif args.action == "compromise":
            print(COMPROMISE_WARNING, file=sys.stderr)
            if not args.yes:
                print("issuer: add --yes to confirm", file=sys.stderr)
                return 2
            key = mark_compromised(session, args.key_id, master)
            audit.append(session, actor="cli", action="key.compromised", subject=key.id, data={"issuer": key.issuer_id})
            print(f"key {key.id} marked compromised and withdrawn from the DID document and JWKS")
    return 0


def cmd_api_keys(args: argparse.Namespace) -> int:
    settings = _settings()
    engine = make_engine(settings.database_url)
    migrate(engine)
    with session_scope(engine) as session:
        row, token = create_api_key(session, name=args.name, scopes=args.scopes.split(","))
        audit.append(
            session,
            actor="cli",
            action="api_key.created",
            subject=row.id,
            data={"name": row.name, "scopes": row.scopes},
        )
    print(token)
    print(f"(key {row.id}, scopes {','.join(row.scopes)}: shown once, only its hash is stored)", file=sys.stderr)
    return 0


def cmd_lms(args: argparse.Namespace) -> int:
    """Poll the LMS sources that have no webhook (TalentLMS) once, now; the job worker decides what was found."""
    from .db.tables import LmsSource
    from .webhooks.adapters import LmsApiError
    from .webhooks.talentlms import poll

    services = build_services(_settings())
    with Session(services.engine) as session:
        statement = select(LmsSource.id).where(LmsSource.platform == "talentlms", col(LmsSource.enabled))
        sources = [args.source] if args.source else list(session.exec(statement).all())
    for source_id in sources:
        try:
            result = poll(services, source_id)
        except LmsApiError as error:
            print(f"issuer: {source_id}: {error}", file=sys.stderr)
            return 1
        more = "" if result.complete else "; more to read: the next poll resumes"
        print(f"{source_id}: {result.accepted} new, {result.duplicates} already known, {result.pages} page(s){more}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    engine = make_engine(_settings().database_url)
    migrate(engine)
    with Session(engine) as session:
        report = audit.verify_chain(session)
    if report.ok:
        print(f"audit log intact: {report.records} records")
        return 0
    print(f"audit log BROKEN at record {report.first_broken_id}: {report.reason}")
    return 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="issuer", description="Open Badges 3.0 issuer service")
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(run=run)
        return p

    command("init", cmd_init, "create the database, the master key (development only), keys and the default issuer")
    for name, run, text in (
        ("serve", cmd_serve, "run the HTTP service"),
        ("demo", cmd_demo, "init, add a demo achievement and credential, print URLs, serve"),
    ):
        p = command(name, run, text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--workers", type=int, default=1)
    p = command("worker", cmd_worker, "run background jobs (email, PDF, mirrors) until SIGTERM/SIGINT")
    p.add_argument("--id", help="worker id shown as lockedBy in /api/v1/jobs (default: host:pid:random)")
    p = command("issue", cmd_issue, "issue one credential and print it")
    p.add_argument("--achievement", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--email")
    p.add_argument("--did")
    p.add_argument("--format", choices=["ldp", "jwt", "both"], default="ldp")
    p = command("keys", cmd_keys, "list, rotate or withdraw signing keys")
    p.add_argument("action", choices=["list", "rotate", "compromise"])
    p.add_argument("key_id", nargs="?", help="for compromise: the key id")
    p.add_argument("--issuer", help="rotate only this issuer's keys")
    p.add_argument("--algorithm", action="append", choices=["Ed25519", "RS256", "ES256"])
    p.add_argument("--yes", action="store_true", help="confirm compromise")
    p = command("api-keys", cmd_api_keys, "create an admin API key (printed once)")
    p.add_argument("action", choices=["create"])
    p.add_argument("--name", default="admin")
    p.add_argument("--scopes", default="admin", help=f"comma-separated: {', '.join(SCOPES)}")
    p = command("lms", cmd_lms, "poll LMS sources without webhooks (TalentLMS) once, now")
    p.add_argument("action", choices=["poll"])
    p.add_argument("--source", help="only this source")
    p = command("audit", cmd_audit, "check the audit log's hash chain")
    p.add_argument("action", choices=["verify"])
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "keys" and args.action == "compromise" and not args.key_id:
        parser().error("keys compromise needs a key id")
    try:
        result: int = args.run(args)
    except (KeyringError, IssuerError) as error:
        print(f"issuer: {getattr(error, 'detail', error)}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
