"""Petitions and their signatures."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm.models.base import Base, Timestamps, utcnow
from crm.models.supporters import Supporter

PETITION_STATUSES = ("draft", "open", "closed", "archived")
CONSENT_MODES = ("implied", "checkbox")


class Petition(Timestamps, Base):
    __tablename__ = "petition"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="")  # Markdown, sanitised when rendered
    addressed_to: Mapped[str] = mapped_column(String(300), default="")
    goal: Mapped[int] = mapped_column(default=1000)
    consent_mode: Mapped[str] = mapped_column(String(20), default="implied")
    consent_wording: Mapped[str] = mapped_column(Text, default="")
    consent_wording_version: Mapped[int] = mapped_column(default=1)
    thank_you_message: Mapped[str] = mapped_column(Text, default="")
    redirect_url: Mapped[str] = mapped_column(String(500), default="")
    # Signers who are not yet subscribed must confirm by email before they are (crm.petitions.confirmation).
    double_opt_in: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    status: Mapped[str] = mapped_column(String(20), default="draft", index=True)
    published_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]


class ConsentWording(Base):
    """Each version of a petition's consent text; consent events point at the one shown."""

    __tablename__ = "consent_wording"
    __table_args__ = (UniqueConstraint("petition_id", "version", name="uq_consent_wording_petition_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    petition_id: Mapped[int] = mapped_column(ForeignKey("petition.id", ondelete="CASCADE"))
    version: Mapped[int]
    mode: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Signature(Base):
    __tablename__ = "signature"
    __table_args__ = (
        # One signature per supporter per petition; erased supporters leave NULL rows behind.
        UniqueConstraint("petition_id", "supporter_id", name="uq_signature_petition_supporter"),
        Index("ix_signature_supporter_petition", "supporter_id", "petition_id"),
        Index("ix_signature_petition_created", "petition_id", "created_at"),
        Index("ix_signature_created_at_id", "created_at", "id"),  # the dashboard's newest (revision 0009)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    petition_id: Mapped[int] = mapped_column(ForeignKey("petition.id", ondelete="CASCADE"))
    supporter_id: Mapped[int | None] = mapped_column(
        ForeignKey("supporter.id", ondelete="SET NULL")
    )
    comment: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(120), default="")
    # Where the signer came from, recorded at signing (crm/petitions/signing.py: _origin).
    utm_source: Mapped[str] = mapped_column(String(120), default="", server_default="")
    utm_medium: Mapped[str] = mapped_column(String(120), default="", server_default="")
    utm_campaign: Mapped[str] = mapped_column(String(120), default="", server_default="")
    referrer_host: Mapped[str] = mapped_column(String(255), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    petition: Mapped[Petition] = relationship()
    supporter: Mapped[Supporter | None] = relationship()


class SignatureConfirmation(Base):
    """A double opt-in signer's pending subscription: what they agreed to, until they click the emailed link."""

    __tablename__ = "signature_confirmation"
    __table_args__ = (
        UniqueConstraint("signature_id", name="uq_signature_confirmation_signature_id"),
        Index("ix_signature_confirmation_pending", "petition_id", "created_at",
              postgresql_where=text("confirmed_at IS NULL AND expired_at IS NULL"),
              sqlite_where=text("confirmed_at IS NULL AND expired_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id", ondelete="CASCADE"))
    petition_id: Mapped[int] = mapped_column(ForeignKey("petition.id", ondelete="CASCADE"))
    supporter_id: Mapped[int] = mapped_column(ForeignKey("supporter.id", ondelete="CASCADE"))
    # The consent event the signature would have recorded at once (opt_in or resubscribe), and why.
    consent_action: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    # The wording the signer saw: the confirmation's consent event points at it.
    wording_id: Mapped[int | None] = mapped_column(ForeignKey("consent_wording.id"))
    wording_version: Mapped[int | None]
    wording: Mapped[str] = mapped_column(Text, default="")
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]  # the latest confirmation mail (first, reminder or re-sign)
    send_count: Mapped[int] = mapped_column(default=0)
    reminded_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    # Sent to someone who had complained and signed an implied-consent petition: the one
    # question whether they want updates again (crm.petitions.confirmation); no reminder follows.
    after_complaint: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
