"""The list of feature blueprints, in one place."""

from flask import Flask


def register_blueprints(app: Flask) -> None:
    import api
    from campaigns.preference_pages import bp as preferences
    from campaigns.unsubscribe import bp as unsubscribe
    from campaigns.variant_views import bp as ab_tests
    from campaigns.views import bp as campaigns
    from crm.auth import bp as auth
    from crm.dashboard import bp as dashboard
    from crm.imports import bp as imports
    from crm.outbox import bp as outbox
    from crm.petitions import bp as petitions
    from crm.public import bp as public
    from crm.public.confirm import bp as confirm
    from crm.segments import bp as segments
    from crm.settings import bp as settings
    from crm.staff import bp as staff
    from crm.supporters import bp as supporters
    from feedback.pages import bp as deliverability
    from feedback.settings import bp as feedback_settings
    from feedback.views import bp as hooks
    from outbound.views import bp as webhooks
    from reports.views import bp as reports
    from tracking.views import bp as tracking

    api.register(app)
    for blueprint in (auth, dashboard, supporters, petitions, segments, campaigns, reports,
                      settings, staff, outbox, public, imports, unsubscribe, hooks, deliverability,
                      feedback_settings, tracking, preferences, confirm, webhooks, ab_tests):
        app.register_blueprint(blueprint)
