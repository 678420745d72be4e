"""Demo data for a laptop: two petitions, a few hundred supporters with consent records, a segment,
a sender identity, the default email template and a draft campaign ready to preview and send."""

from __future__ import annotations

import random
import secrets
from datetime import timedelta
from pathlib import Path

from flask import current_app

from crm.extensions import db
from crm.models import Campaign, Petition, Segment, Signature, StaffUser, Supporter, utcnow
from crm.petitions.service import current_wording
from crm.settings.org import current as current_settings
from crm.supporters.consent import record_consent

DEMO_ADMIN = "admin@example.org"

FIRST = ["Amira", "Ben", "Chloé", "Dawit", "Elena", "Farid", "Grace", "Hiroshi", "Ines", "Jonas",
         "Kemi", "Leila", "Marek", "Nadia", "Olu", "Priya", "Quentin", "Rosa", "Samir", "Tess",
         "Uma", "Viktor", "Wen", "Yusuf", "Zoë", "Łucja", "Søren", "Añaru", "Mỹ", "Дарья"]
LAST = ["Abebe", "Brennan", "Castillo", "Dubois", "Eriksen", "Fontaine", "García", "Haddad",
        "Ivanova", "Jensen", "Kowalski", "Lindqvist", "Mensah", "Nguyen", "O'Connor", "Patel",
        "Quinn", "Rahman", "Schmidt", "Tanaka", "Usman", "Varga", "Walsh", "Yilmaz", "Zhang"]
POSTCODES = ["SW1A 1AA", "M1 1AE", "B1 1BB", "LS1 4AP", "EH1 1YZ", "CF10 1EP", "BS1 4DJ",
             "G1 1XQ", "NE1 7RU", "L1 8JQ"]


def consent_text(org: str) -> str:
    return (f"By signing this petition you will receive periodic email updates from {org}. "
            "You may unsubscribe at any time.")


def demo_password(instance_path: str) -> str:
    """One random demo password per checkout, kept in instance/ so it can be printed again."""
    path = Path(instance_path) / "demo_login"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


def ensure_demo_admin() -> tuple[str, str]:
    """Create the demo admin once; return the login to print."""
    password = demo_password(current_app.instance_path)
    if db.session.scalar(db.select(StaffUser).filter_by(email=DEMO_ADMIN)) is None:
        user = StaffUser(email=DEMO_ADMIN, name="Demo Admin", role="admin", active=True)
        user.set_password(password)
        db.session.add(user)
        db.session.commit()
    return DEMO_ADMIN, password


def load_demo_data(supporters: int = 300, seed: int = 7) -> str:
    """Fill an empty database with demo petitions and supporters; leave a used one alone."""
    if db.session.scalar(db.select(db.func.count()).select_from(Petition)):
        return "Demo data skipped: the database already has petitions."
    rng = random.Random(seed)
    org = current_settings().name
    wording = consent_text(org)
    now = utcnow()
    asylum = Petition(
        slug="fair-asylum",
        title="A fair and humane asylum system, now",
        addressed_to="The Prime Minister",
        body=(
            "We call on the Prime Minister to build an asylum system that is **fair, fast and humane**:\n\n"
            "- decide claims within six months, with the right to work while people wait;\n"
            "- end indefinite immigration detention;\n"
            "- open safe and legal routes, so that no one has to risk their life to reach safety.\n"
        ),
        goal=1000, consent_mode="implied", consent_wording=wording, status="open",
        thank_you_message="Thank you for signing. Please share the petition with your friends.",
        created_at=now - timedelta(days=30),
    )
    detention = Petition(
        slug="end-detention-2025",
        title="End the detention of children in immigration centres",
        addressed_to="The Home Secretary",
        body="No child should be locked up because of their immigration status.",
        goal=500, consent_mode="checkbox",
        consent_wording=f"Yes, send me periodic email updates from {org}. I may unsubscribe at any time.",
        status="closed", created_at=now - timedelta(days=400),
    )
    db.session.add_all([asylum, detention])
    db.session.flush()
    asylum_wording = current_wording(asylum)
    current_wording(detention)
    for i in range(supporters):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        supporter = Supporter(
            email=f"{_ascii(first)}.{_ascii(last)}.{i}@example.net".lower(),
            first_name=first, last_name=last, postal_code=rng.choice(POSTCODES), country="GB",
            source="petition:fair-asylum", created_at=now - timedelta(days=rng.uniform(0, 30)),
        )
        db.session.add(supporter)
        signed_at = supporter.created_at
        db.session.add(Signature(petition=asylum, supporter=supporter, created_at=signed_at,
                                 source="demo"))
        record_consent(supporter, "opt_in", "petition:fair-asylum", wording=wording,
                       wording_version=asylum_wording.version, wording_id=asylum_wording.id,
                       ip="192.0.2.1", user_agent="demo", at=signed_at)
        if rng.random() < 0.3:
            db.session.add(Signature(petition=detention, supporter=supporter, source="demo",
                                     created_at=signed_at - timedelta(days=300)))
        if rng.random() < 0.05:
            record_consent(supporter, "opt_out", "unsubscribe_link",
                           at=signed_at + timedelta(days=rng.uniform(0, 3)))
    db.session.commit()
    load_demo_campaign(asylum)
    return f"Loaded demo data: 2 petitions, {supporters} supporters, a draft campaign."


def load_demo_campaign(petition: Petition) -> Campaign:
    """A sender identity (the default sender, named after the organisation), the default template,
    a segment of the petition's subscribed signers (unless there are segments already), and a
    draft campaign to it."""
    from campaigns import service
    from crm.segments.rules import validate

    settings = current_settings()
    sender = service.ensure_sender(settings.name, settings.mail_from)
    template = service.ensure_default_template()
    segment = db.session.scalar(db.select(Segment).order_by(Segment.id))
    if segment is None:
        rules = {"type": "group", "match": "all", "rules": [
            {"type": "condition", "field": "email_status", "op": "in", "value": ["subscribed"]},
            {"type": "condition", "field": "petitions", "op": "any_of", "value": {"petition_ids": [petition.id]}}]}
        validate(rules)
        segment = Segment(name="Asylum petition signers", rules=rules,
                          description="Subscribed supporters who signed the asylum petition (demo).")
        db.session.add(segment)
        db.session.commit()
    campaign = Campaign(
        name="Asylum petition: first update (demo)", status="draft",
        subject='{{ supporter.first_name | default("Friend") }}, an update on the asylum petition',
        preheader="What your signature has done so far, and what comes next.",
        sender_id=sender.id, segment_id=segment.id,
        mjml=template.mjml.replace("Your headline here", "Your signature is making a difference"),
    )
    db.session.add(campaign)
    db.session.commit()
    return campaign


def _ascii(name: str) -> str:
    import unicodedata

    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain if ch.isalnum()) or "supporter"
