"""/api/v1/openapi.json: the OpenAPI 3.1 document, assembled from the pydantic schemas that validate.

Request bodies are the JSON Schemas of the very models api/views.py validates with; answers are
the documented shapes in api/schemas.py. The routes are listed once below, with what they take.
"""

from __future__ import annotations

from functools import lru_cache

from flask import current_app, jsonify
from pydantic.json_schema import models_json_schema

from api import bp, schemas
from api.auth import HEADER
from crm.auth.permissions import public

REF = "#/components/schemas/{model}"
PAGING = ("page", "per_page", "filter")

# (method, path, operation id, summary, request model, answer model, paged, scope)
ROUTES = (
    ("get", "/", "entry_point", "The API entry point: links to every collection", None, schemas.EntryPoint, False,
     "read"),
    ("get", "/people", "people", "People, in modified_date order (filters: modified_date, email_address)", None,
     schemas.Collection, True, "read"),
    ("post", "/people", "person_signup_helper", "person_signup_helper: add or update a person (deduplicated by "
     "email address; blanks filled, nothing overwritten)", schemas.PersonSignupIn, schemas.Person, False, "write"),
    ("get", "/people/{person_id}", "person", "One person", None, schemas.Person, False, "read"),
    ("get", "/people/{person_id}/signatures", "person_signatures", "A person's signatures", None,
     schemas.Collection, True, "read"),
    ("get", "/people/{person_id}/taggings", "person_taggings", "A person's taggings", None, schemas.Collection, True,
     "read"),
    ("get", "/petitions", "petitions", "Petitions", None, schemas.Collection, True, "read"),
    ("get", "/petitions/{petition_id}", "petition", "One petition", None, schemas.Petition, False, "read"),
    ("get", "/petitions/{petition_id}/signatures", "petition_signatures", "A petition's signatures", None,
     schemas.Collection, True, "read"),
    ("post", "/petitions/{petition_id}/signatures", "record_signature_helper", "record_signature_helper: sign for "
     "a person given inline, exactly as the public form would", schemas.SignatureHelperIn, schemas.SignatureAnswer,
     False, "write"),
    ("get", "/petitions/{petition_id}/signatures/{signature_id}", "signature", "One signature", None,
     schemas.Signature, False, "read"),
    ("get", "/tags", "tags", "Tags", None, schemas.Collection, True, "read"),
    ("post", "/tags", "create_tag", "Create a tag (or find the one with this name)", schemas.TagIn, schemas.Tag,
     False, "write"),
    ("get", "/tags/{tag_id}", "tag", "One tag", None, schemas.Tag, False, "read"),
    ("get", "/tags/{tag_id}/taggings", "tag_taggings", "The people with a tag", None, schemas.Collection, True,
     "read"),
    ("post", "/tags/{tag_id}/taggings", "create_tagging", "Tag a person", schemas.TaggingIn, schemas.Tagging, False,
     "write"),
    ("get", "/tags/{tag_id}/taggings/{person_id}", "tagging", "One tagging", None, schemas.Tagging, False, "read"),
    ("delete", "/tags/{tag_id}/taggings/{person_id}", "delete_tagging", "Remove a tag from a person", None,
     schemas.Open, False, "write"),
    ("get", "/messages", "messages", "Messages (campaigns) with their statistics", None, schemas.Collection, True,
     "read"),
    ("get", "/messages/{message_id}", "message", "One message with its statistics", None, schemas.Message, False,
     "read"),
    ("get", "/segments", "segments", "Segments (read only; an extension)", None, schemas.Collection, True, "read"),
    ("get", "/segments/{segment_id}", "segment", "One segment", None, schemas.Segment, False, "read"),
)


def _parameters(path: str, paged: bool, per_page_max: int) -> list[dict]:
    found = []
    for part in path.split("/"):
        if part.startswith("{"):
            found.append({"name": part.strip("{}"), "in": "path", "required": True,
                          "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}})
    if paged:
        found += [
            {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1_000_000,
                                                       "default": 1}},
            {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": per_page_max,
                                                           "default": per_page_max}},
            {"name": "filter", "in": "query", "schema": {"type": "string", "maxLength": 500},
             "description": "OData subset: `modified_date gt '2026-01-01T00:00:00Z' and "
                            "email_address eq 'ana@example.org'` (eq, gt, lt, and)"},
        ]
    return found


@lru_cache(maxsize=4)
def document(per_page_max: int = 25) -> dict:
    """The OpenAPI document (built once per process and page size)."""
    models = {schemas.Error, schemas.Open}
    for _, _, _, _, request_model, answer, _, _ in ROUTES:
        models.add(answer)
        if request_model is not None:
            models.add(request_model)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, defs = models_json_schema([(m, "validation") for m in ordered], ref_template=REF)
    components = defs.get("$defs", {})

    def ref(model) -> dict:
        return {"$ref": REF.format(model=model.__name__)}

    def error(description: str) -> dict:
        return {"description": description, "content": {"application/json": {"schema": ref(schemas.Error)}}}

    paths: dict = {}
    for method, path, operation, summary, request_model, answer, paged, scope in ROUTES:
        ok = "201" if method == "post" and operation != "person_signup_helper" else "200"
        responses = {
            ok: {"description": "OK", "content": {"application/hal+json": {"schema": ref(answer)}}},
            "400": error("Bad input: the error names the field (malformed JSON, wrong types, unknown fields, "
                         "invalid emails, oversized bodies, unsupported filters)"),
            "401": error(f"No valid key in {HEADER}"),
            "404": error("Not found"),
            "429": error("Rate limit reached; see Retry-After"),
        }
        if scope == "write":
            responses["403"] = error("The key is read only")
        if operation == "person_signup_helper":
            responses["201"] = {"description": "Created", "content": {"application/hal+json": {"schema": ref(answer)}}}
        if operation == "record_signature_helper":
            responses["200"] = {"description": "Signed before: the existing signature",
                                "content": {"application/hal+json": {"schema": ref(answer)}}}
            responses["409"] = error("The petition takes no signatures")
        if operation == "create_tag":
            responses["200"] = responses.pop("201")
            responses["201"] = responses["200"]
        spec: dict = {"operationId": operation, "summary": summary, "responses": responses,
                      "parameters": _parameters(path, paged, per_page_max),
                      "x-scope": scope}
        if request_model is not None:
            spec["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(request_model)}}}
        paths.setdefault("/api/v1" + (path if path != "/" else "/"), {})[method] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": "Supporter CRM OSDI API", "version": "1.0",
                 "description": "The Open Supporter Data Interface (OSDI v1) in HAL+JSON. Authenticate with an "
                                f"API key in the {HEADER} header; admins make keys under Settings."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"osdiToken": {"type": "apiKey", "in": "header", "name": HEADER}}},
        "security": [{"osdiToken": []}],
    }


@bp.route("/openapi.json")
@public
def openapi():
    response = jsonify(document(int(current_app.config["API_MAX_PER_PAGE"])))
    response.headers["Cache-Control"] = "no-store"
    return response
