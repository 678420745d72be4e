"""Sections whose features are still to come: each page says plainly what it will hold."""

from flask import Blueprint, render_template

from crm.auth.permissions import requires

campaigns = Blueprint("campaigns", __name__, url_prefix="/campaigns")


@campaigns.route("/", endpoint="index")
@requires("read")
def campaigns_index():
    return render_template("sections/campaigns.html")
