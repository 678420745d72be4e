"""The staff home page: its figures and the newest signatures."""

import re
from datetime import timedelta

from crm.models import utcnow
from tests import factories


def test_newest_signatures_are_ordered_by_when_they_were_signed(app, client_as):
    """Imported signatures keep their own dates: the list follows the time it shows, not the row order."""
    petition = factories.make_petition(title="Safe routes")
    now = utcnow()
    # Rows created in this order, signed in another: an import of older signatures after a new one.
    for name, days_ago in (("Newest", 0), ("Oldest", 30), ("Middle", 3)):
        supporter = factories.make_supporter(first_name=name, last_name="Signer")
        factories.make_signature(petition, supporter, created_at=now - timedelta(days=days_ago))
    page = client_as("analyst").get("/").text
    assert re.findall(r">(\w+) Signer</a>", page) == ["Newest", "Middle", "Oldest"]
    assert '<span class="stat-n">2</span><span>signatures this week</span>' in page
