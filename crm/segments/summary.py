"""One English sentence for a rule tree, e.g.
"Subscribed supporters who signed any of “A fair and humane asylum system” and have postal code
starting with SW1 or N1"."""

from __future__ import annotations

from typing import Any

from crm.segments.rules import ValidatedRules, validate

SOURCE_WORDS = {"petition": "a petition", "import": "an import", "api": "the API"}


def summarise(rules: Any) -> str:
    """Describe the tree in one sentence (validating it first if needed)."""
    ctx = rules if isinstance(rules, ValidatedRules) else validate(rules)
    tree = ctx.tree
    children = list(tree["rules"])
    if not children:
        return "No supporters" if tree["match"] == "any" else "All supporters"
    subject = "Supporters"
    if tree["match"] == "all":
        # A top-level email status reads best as an adjective: "Subscribed supporters who ...".
        statuses = [c for c in children if c["type"] == "condition" and c["field"] == "email_status"]
        if len(statuses) == 1:
            subject = _or(s.replace("_", " ") for s in statuses[0]["value"]).capitalize() + " supporters"
            children.remove(statuses[0])
            if not children:
                return subject
    phrases = [_phrase(child, ctx) for child in children]
    if tree["match"] == "none":
        return f"{subject} except those who {_join(phrases, 'or')}"
    return f"{subject} who {_join(phrases, 'and' if tree['match'] == 'all' else 'or')}"


def _join(phrases: list[str], word: str) -> str:
    return f" {word} ".join(phrases)


def _or(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _quoted(names) -> str:
    return ", ".join(f"“{name}”" for name in names)


def _phrase(node: dict[str, Any], ctx: ValidatedRules) -> str:
    if node["type"] == "group":
        inner = [_phrase(child, ctx) for child in node["rules"]]
        if not inner:
            return "match anyone" if node["match"] != "any" else "match no one"
        if node["match"] == "none":
            return f"match none of ({_join(inner, 'or')})"
        return "(" + _join(inner, "and" if node["match"] == "all" else "or") + ")"
    field, op, value = node["field"], node["op"], node["value"]
    if field == "petitions":
        titles = _quoted(ctx.petitions.get(i, f"petition {i}") for i in value["petition_ids"])
        many = len(value["petition_ids"]) > 1
        verb = {"any_of": "signed any of " if many else "signed ",
                "all_of": "signed all of " if many else "signed ",
                "none_of": "did not sign any of " if many else "did not sign "}[op]
        return verb + titles + _window(value, "signing")
    if field == "email_status":
        return "have email status " + _or(s.replace("_", " ") for s in value)
    if field == "tags":
        names = _quoted(ctx.tags.get(i, f"tag {i}") for i in value)
        many = len(value) > 1
        return {"any_of": "are tagged any of " if many else "are tagged ",
                "all_of": "are tagged all of " if many else "are tagged ",
                "none_of": "are not tagged any of " if many else "are not tagged "}[op] + names
    if field == "country":
        return "are in country " + _or(value)
    if field == "postal_code":
        return "have postal code starting with " + _or(value)
    if field == "created":
        return "were added" + _window(value, "")
    if field == "source":
        return "came from " + SOURCE_WORDS[value]
    if field == "segment":
        name = ctx.segments[value][0] if value in ctx.segments else f"segment {value}"
        return ("are in segment " if op == "member" else "are not in segment ") + f"“{name}”"
    if field == "custom_field":
        verb = "equal to" if op == "equals" else "containing"
        return f"have custom field “{value['key']}” {verb} “{value['value']}”"
    return _engagement(op, value, ctx)


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n:,} times")


def _engagement(op: str, value: dict[str, Any], ctx: ValidatedRules) -> str:
    phrase = _engagement_phrase(op, value, ctx)
    return phrase + " (people, not machines)" if value.get("people_only") else phrase


def _engagement_phrase(op: str, value: dict[str, Any], ctx: ValidatedRules) -> str:
    days = value.get("within_days")
    recent = f" in the last {days} days" if days else ""
    if op == "never_opened":
        return "have never opened a campaign email"
    if op in ("received_at_least", "received_at_most"):
        n = value["count"]
        if op == "received_at_most" and n == 0:
            return f"have not been emailed{recent}" if days else "have never been emailed"
        bound = "at least" if op == "received_at_least" else "at most"
        return f"were emailed {bound} {_times(n)}" + recent
    ident = value.get("campaign_id")
    if ident is not None:
        name = f"“{ctx.campaigns.get(ident, f'campaign {ident}')}”"
        verb = {"received": "received ", "not_received": "did not receive ",
                "opened": "opened ", "not_opened": "did not open ",
                "clicked": "clicked a link in ", "not_clicked": "did not click a link in "}[op]
        return verb + name + recent
    if days:
        return {"received": "were emailed", "not_received": "have not been emailed",
                "opened": "opened a campaign email", "not_opened": "have not opened a campaign email",
                "clicked": "clicked a link in a campaign email",
                "not_clicked": "have not clicked a link in a campaign email"}[op] + recent
    return {"received": "have been emailed", "not_received": "have never been emailed",
            "opened": "have opened a campaign email", "not_opened": "have never opened a campaign email",
            "clicked": "have clicked a link in a campaign email",
            "not_clicked": "have never clicked a link in a campaign email"}[op]


def _window(value: dict[str, Any], _: str) -> str:
    if "since_days" in value:
        return f" in the last {value['since_days']} days"
    start, end = value.get("date_from"), value.get("date_to")
    if start and end:
        return f" between {start} and {end}"
    if start:
        return f" on or after {start}"
    if end:
        return f" on or before {end}"
    return ""
