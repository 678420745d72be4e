"""Staff read every time in the organisation's zone; the database keeps UTC."""

from datetime import UTC, datetime

from crm.clock import local_time, to_local, to_utc


def test_times_are_shown_in_the_organisations_zone_with_its_abbreviation(make_app):
    app = make_app(ORG_TIMEZONE="Europe/London")
    with app.app_context():
        assert local_time(datetime(2026, 7, 1, 9, 30)) == "2026-07-01 10:30 BST"  # naive = UTC
        assert local_time(datetime(2026, 1, 1, 9, 30, tzinfo=UTC)) == "2026-01-01 09:30 GMT"
        assert local_time(None) == ""
        rendered = app.jinja_env.from_string("{{ t|datetime }} / {{ t|datetime('%H:%M') }}").render(
            t=datetime(2026, 7, 1, 23, 15))
        assert rendered == "2026-07-02 00:15 BST / 00:15 BST"


def test_wall_clock_round_trip(make_app):
    app = make_app(ORG_TIMEZONE="America/New_York")
    with app.app_context():
        utc = to_utc(datetime(2026, 3, 1, 9, 0))
        assert utc == datetime(2026, 3, 1, 14, 0, tzinfo=UTC)
        assert to_local(utc).replace(tzinfo=None) == datetime(2026, 3, 1, 9, 0)
