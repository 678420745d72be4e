"""An integrator's script, as one would write it from the OSDI documentation with only `requests`:
page through people, record a signature with the helper, read a message's statistics."""

from __future__ import annotations

import requests


def run(base_url: str, token: str, petition_id: int, message_id: int) -> dict:
    """Talk to the API at `base_url` with `token`; returns what it saw."""
    session = requests.Session()
    session.headers.update({"OSDI-API-Token": token, "Content-Type": "application/json"})
    entry = session.get(f"{base_url}/api/v1/", timeout=10).json()
    people_url = entry["_links"]["osdi:people"]["href"] + "?per_page=10"
    emails, pages = [], 0
    while people_url:
        page = session.get(people_url, timeout=10)
        page.raise_for_status()
        body = page.json()
        pages += 1
        emails += [p["email_addresses"][0]["address"] for p in body["_embedded"]["osdi:people"]]
        people_url = body["_links"].get("next", {}).get("href")

    # record_signature_helper, as OSDI's example posts it: the person inline with the signature.
    signed = session.post(f"{base_url}/api/v1/petitions/{petition_id}/signatures", timeout=10, json={
        "person": {"family_name": "Smith", "given_name": "John", "postal_addresses": [{"postal_code": "20009"}],
                   "email_addresses": [{"address": "jsmith@mail.com", "status": "subscribed"}]},
        "add_tags": ["volunteer"],
    })
    signed.raise_for_status()
    person_href = signed.json()["_links"]["osdi:person"]["href"]
    person = session.get(person_href, timeout=10).json()
    found = session.get(f"{base_url}/api/v1/people", timeout=10,
                        params={"filter": "email_address eq 'jsmith@mail.com'"}).json()

    message = session.get(f"{base_url}/api/v1/messages/{message_id}", timeout=10).json()
    return {"emails": emails, "pages": pages, "total": body["total_records"], "signed_status": signed.status_code,
            "person": person, "found": found["total_records"], "statistics": message["statistics"]}
