"""The API's schemas: pydantic models that validate request bodies and document every answer.

The OpenAPI document (api/openapi.py) is built from these same classes' JSON Schemas, so what
is documented is what is enforced. Request models are strict (no type coercion) and forbid
unknown fields: an integrator's typo is a 400 naming the field, never a silently dropped value.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from crm.countries import is_country_code
from crm.emails import InvalidEmail, normalise_email

Name = Annotated[str, StringConstraints(max_length=100)]
TagName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"\S")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EmailAddressIn(Strict):
    address: Annotated[str, StringConstraints(max_length=320)]
    primary: bool | None = None
    status: Literal["subscribed", "unsubscribed"] | None = Field(
        None, description="`subscribed`: the person agreed to email updates (see consent in the docs).")

    @field_validator("address")
    @classmethod
    def valid_address(cls, value: str) -> str:
        try:
            return normalise_email(value)
        except InvalidEmail as exc:
            raise ValueError(str(exc)) from None


class PostalAddressIn(Strict):
    postal_code: Annotated[str, StringConstraints(max_length=20)] | None = None
    country: Annotated[str, StringConstraints(max_length=2)] | None = Field(
        None, description="ISO 3166-1 alpha-2 code, e.g. GB")
    primary: bool | None = None

    @field_validator("country")
    @classmethod
    def known_country(cls, value: str | None) -> str | None:
        if value and not is_country_code(value.strip().upper()):
            raise ValueError("not an ISO 3166-1 alpha-2 country code")
        return value.strip().upper() if value else value


class PersonIn(Strict):
    given_name: Name | None = None
    family_name: Name | None = None
    email_addresses: list[EmailAddressIn] = Field(min_length=1, max_length=5)
    postal_addresses: list[PostalAddressIn] | None = Field(None, max_length=5)

    def primary_email(self) -> EmailAddressIn:
        return next((e for e in self.email_addresses if e.primary), self.email_addresses[0])

    def primary_postal(self) -> PostalAddressIn | None:
        addresses = self.postal_addresses or []
        return next((p for p in addresses if p.primary), addresses[0] if addresses else None)


class PersonSignupIn(Strict):
    """person_signup_helper: a person, deduplicated by email address, with tags to add."""

    person: PersonIn
    add_tags: list[TagName] = Field(default_factory=list, max_length=20)
    consent_wording: Annotated[str, StringConstraints(min_length=1, max_length=5000)] | None = Field(
        None, description="Extension: the exact words the person agreed to. Required when the email address's "
                          "status is `subscribed`, as the consent record must show what they were told.")


class ReferrerIn(Strict):
    source: Annotated[str, StringConstraints(max_length=60)] | None = None


class SignatureHelperIn(Strict):
    """record_signature_helper: a person inline with their signature, signed as on the public form."""

    person: PersonIn
    comments: Annotated[str, StringConstraints(max_length=5000)] | None = None
    add_tags: list[TagName] = Field(default_factory=list, max_length=20)
    referrer_data: ReferrerIn | None = None
    wording_version: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = Field(
        None, description="Extension: the version of the petition's consent wording the form showed "
                          "(default: the current one).")


class TagIn(Strict):
    name: TagName


class Href(Strict):
    href: Annotated[str, StringConstraints(max_length=2000)]


class TaggingLinks(Strict):
    osdi_person: Href = Field(alias="osdi:person")


class TaggingIn(Strict):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)
    links: TaggingLinks = Field(alias="_links")


# ---- answers (documentation; the views build these shapes) -----------------------------------

class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Link(Open):
    href: str


class Resource(Open):
    identifiers: list[str]
    created_date: str
    modified_date: str
    links: dict[str, Link | list[Link]] = Field(alias="_links")


class EmailAddressOut(Open):
    primary: bool
    address: str
    status: Literal["subscribed", "unsubscribed", "bouncing", "spam complaint"]


class PostalAddressOut(Open):
    primary: bool
    postal_code: str
    country: str


class Person(Resource):
    given_name: str
    family_name: str
    email_addresses: list[EmailAddressOut]
    postal_addresses: list[PostalAddressOut]
    custom_fields: dict


class Target(Open):
    name: str


class Petition(Resource):
    title: str
    description: str
    petition_text: str
    target: list[Target]
    total_signatures: int
    browser_url: str
    status: str


class ReferrerOut(Open):
    source: str


class Signature(Resource):
    comments: str
    referrer_data: ReferrerOut


class Tag(Resource):
    name: str


class Tagging(Resource):
    pass


class Statistics(Open):
    sent: int
    opened: int
    clicked: int
    unsubscribed: int
    bounced: int
    spam_reports: int


class Message(Resource):
    name: str
    subject: str
    status: str
    total_targeted: int
    sent_start_date: str | None
    statistics: Statistics


class Segment(Resource):
    name: str
    description: str


class Collection(Open):
    total_pages: int
    per_page: int
    page: int
    total_records: int
    links: dict[str, Link | list[Link]] = Field(alias="_links")
    embedded: dict[str, list[dict]] = Field(alias="_embedded")


class SignatureAnswer(Signature):
    embedded: dict[str, Person] = Field(alias="_embedded")


class Error(Open):
    error: str
    field: str | None = None


class EntryPoint(Open):
    motd: str
    vendor_name: str
    product_name: str
    osdi_version: str
    links: dict[str, Link | list[Link]] = Field(alias="_links")
