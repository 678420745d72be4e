/* Segment rule builder: edits the rule tree kept as JSON in the form's `rules` textarea and
   asks /segments/preview for a live count, sample and summary (debounced). No framework. */
(function () {
  "use strict";
  var form = document.getElementById("segment-form");
  var root = document.getElementById("segment-builder");
  var textarea = document.getElementById("rules");
  if (!form || !root || !textarea) return;
  var data = JSON.parse(document.getElementById("segment-data").textContent);
  var csrf = form.querySelector("input[name=csrf_token]");
  var segmentId = form.getAttribute("data-segment-id");
  var uid = 0;

  var FIELDS = [
    ["petitions", "Signed petitions"], ["email_status", "Email status"], ["tags", "Tags"],
    ["country", "Country"], ["postal_code", "Postal code"], ["created", "Added to the CRM"],
    ["source", "Came from"], ["segment", "Another segment"], ["custom_field", "Custom field"],
    ["engagement", "Email engagement"]
  ];
  var OPS = {
    petitions: [["any_of", "signed any of"], ["all_of", "signed all of"], ["none_of", "signed none of"]],
    email_status: [["in", "is one of"]],
    tags: [["any_of", "has any of"], ["all_of", "has all of"], ["none_of", "has none of"]],
    country: [["in", "is one of"]],
    postal_code: [["starts_with", "starts with any of"]],
    created: [["between", "between"]],
    source: [["starts_with", "starts with"]],
    segment: [["member", "is in"], ["not_member", "is not in"]],
    custom_field: [["equals", "equals"], ["contains", "contains"]],
    engagement: [
      ["received", "was sent"], ["not_received", "was not sent"],
      ["opened", "opened"], ["not_opened", "did not open"],
      ["clicked", "clicked a link in"], ["not_clicked", "did not click a link in"],
      ["never_opened", "never opened any email"],
      ["received_at_least", "was sent at least"], ["received_at_most", "was sent at most"]
    ]
  };
  var COUNTED = { received_at_least: true, received_at_most: true };
  var DEFAULTS = {
    petitions: function () { return { petition_ids: [] }; },
    email_status: function () { return ["subscribed"]; },
    tags: function () { return []; },
    country: function () { return []; },
    postal_code: function () { return []; },
    created: function () { return {}; },
    source: function () { return "petition"; },
    segment: function () { return data.segments.length ? data.segments[0].id : null; },
    custom_field: function () { return { key: "", value: "" }; },
    engagement: function () { return { within_days: 30 }; }
  };

  // Tests of what recipients did (opens, clicks) can leave machines' events out.
  function readsEvents(op) { return op.indexOf("received") < 0; }

  // An engagement test keeps what still applies when it changes: the campaign, the days, people only.
  function engagementValue(op, old) {
    var v = {};
    if (old.people_only && readsEvents(op)) v.people_only = true;
    if (op === "never_opened") return v;
    if (old.within_days) v.within_days = old.within_days;
    if (COUNTED[op]) v.count = old.count != null ? old.count : (op === "received_at_least" ? 1 : 0);
    else if (old.campaign_id != null) v.campaign_id = old.campaign_id;
    return v;
  }

  var tree;
  try { tree = JSON.parse(textarea.value || "null"); } catch (e) { tree = null; }
  if (!tree || tree.type !== "group") tree = { type: "group", match: "all", rules: [] };

  // Keep the JSON field visible only when the server reported an error in it.
  var rulesField = document.getElementById("rules-field");
  if (rulesField && !rulesField.querySelector(".has-error")) rulesField.hidden = true;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k in node && k !== "list") node[k] = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function labelled(text, control) {
    var id = "sb-" + (++uid);
    control.id = id;
    // The label sits beside (not around) the control, so its accessible name is just `text`.
    return el("span", { className: "builder-field" }, [el("label", { htmlFor: id, text: text }), control]);
  }

  function select(options, value, onchange) {
    var s = el("select", {});
    options.forEach(function (o) {
      var opt = el("option", { value: String(o[0]), text: o[1] });
      if (String(o[0]) === String(value)) opt.selected = true;
      s.appendChild(opt);
    });
    s.addEventListener("change", function () { onchange(s.value); });
    return s;
  }

  // A multiple choice as checkboxes (no Ctrl-click), with a filter box when the list is long.
  function checklist(legend, options, values, onchange) {
    var box = el("fieldset", { className: "builder-field builder-checklist" });
    box.appendChild(el("legend", { text: legend }));
    var listEl = el("div", { className: "checklist-options" });
    var chosen = values.map(String), boxes = [];
    options.forEach(function (o) {
      var cb = el("input", { type: "checkbox", value: String(o[0]) });
      cb.checked = chosen.indexOf(String(o[0])) >= 0;
      cb.addEventListener("change", function () {
        onchange(boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; }));
      });
      boxes.push(cb);
      listEl.appendChild(el("label", { className: "check" }, [cb, document.createTextNode(" " + o[1])]));
    });
    if (!options.length) listEl.appendChild(el("span", { className: "muted", text: "None yet." }));
    if (options.length > 8) {
      var filter = el("input", { type: "search", placeholder: "Type to filter", "aria-label": "Filter " + legend });
      filter.addEventListener("input", function () {
        var q = filter.value.trim().toLowerCase();
        boxes.forEach(function (b) {
          var label = b.parentNode;
          var hide = Boolean(q) && label.textContent.toLowerCase().indexOf(q) < 0 && !b.checked;
          label.style.display = hide ? "none" : "";
        });
      });
      box.appendChild(filter);
    }
    box.appendChild(listEl);
    return box;
  }

  function input(type, value, oninput, extra) {
    var i = el("input", Object.assign({ type: type, value: value == null ? "" : value }, extra || {}));
    i.addEventListener("input", function () { oninput(i.value); });
    return i;
  }

  function ints(values) { return values.map(function (v) { return parseInt(v, 10); }); }
  function list(text) { return text.split(",").map(function (s) { return s.trim(); }).filter(Boolean); }
  function pairs(items) { return items.map(function (o) { return [o.id, o.label]; }); }
  function setOrDelete(obj, key, v) { if (v === "" || v == null) delete obj[key]; else obj[key] = v; }

  function valueEditors(cond) {
    var v = cond.value, out = [];
    switch (cond.field) {
      case "petitions":
        out.push(checklist("Petitions", pairs(data.petitions), v.petition_ids || [],
          function (ids) { v.petition_ids = ints(ids); changed(); }));
        out.push(labelled("In the last … days (optional)", input("number", v.since_days, function (x) {
          setOrDelete(v, "since_days", x ? parseInt(x, 10) : ""); changed();
        }, { min: 1 })));
        out.push(labelled("From (optional)", input("date", v.date_from, function (x) { setOrDelete(v, "date_from", x); changed(); })));
        out.push(labelled("To (optional)", input("date", v.date_to, function (x) { setOrDelete(v, "date_to", x); changed(); })));
        break;
      case "email_status":
        out.push(checklist("Statuses", data.statuses.map(function (s) { return [s, s.replace("_", " ")]; }),
          v, function (vals) { cond.value = vals; changed(); }));
        break;
      case "tags":
        out.push(checklist("Tags", pairs(data.tags), v, function (ids) { cond.value = ints(ids); changed(); }));
        break;
      case "country":
        out.push(checklist("Countries", data.countries, v, function (codes) { cond.value = codes; changed(); }));
        break;
      case "postal_code":
        out.push(labelled("Prefixes, comma-separated", input("text", v.join(", "), function (x) {
          cond.value = list(x); changed();
        }, { placeholder: "SW1, N1" })));
        break;
      case "created":
        out.push(labelled("From", input("date", v.date_from, function (x) { setOrDelete(v, "date_from", x); changed(); })));
        out.push(labelled("To", input("date", v.date_to, function (x) { setOrDelete(v, "date_to", x); changed(); })));
        break;
      case "source":
        out.push(labelled("Source", select([["petition", "a petition"], ["import", "an import"], ["api", "the API"]], v, function (x) { cond.value = x; changed(); })));
        break;
      case "segment":
        if (!data.segments.length) out.push(el("span", { className: "muted", text: "No other segments yet." }));
        else out.push(labelled("Segment", select(pairs(data.segments), v, function (x) {
          cond.value = parseInt(x, 10); changed();
        })));
        break;
      case "custom_field":
        out.push(labelled("Field name", input("text", v.key, function (x) { v.key = x; changed(); })));
        out.push(labelled("Text", input("text", v.value, function (x) { v.value = x; changed(); })));
        break;
      case "engagement":
        if (readsEvents(cond.op)) {
          var people = el("input", { type: "checkbox", checked: !!v.people_only });
          people.addEventListener("change", function () { setOrDelete(v, "people_only", people.checked || ""); changed(); });
          out.push(labelled("People only (leave out image proxies and link scanners)", people));
        }
        if (cond.op === "never_opened") break;
        if (COUNTED[cond.op]) {
          out.push(labelled("Emails", input("number", v.count, function (x) {
            setOrDelete(v, "count", x === "" ? "" : parseInt(x, 10)); changed();
          }, { min: cond.op === "received_at_least" ? 1 : 0 })));
        } else {
          var choices = [["", "Any campaign"]].concat(pairs(data.campaigns));
          if (v.campaign_id != null && !data.campaigns.some(function (c) { return c.id === v.campaign_id; })) {
            choices.push([v.campaign_id, "Campaign " + v.campaign_id]);
          }
          out.push(labelled("Campaign", select(choices, v.campaign_id == null ? "" : v.campaign_id, function (x) {
            setOrDelete(v, "campaign_id", x ? parseInt(x, 10) : ""); changed();
          })));
        }
        out.push(labelled("In the last … days (optional)", input("number", v.within_days, function (x) {
          setOrDelete(v, "within_days", x ? parseInt(x, 10) : ""); changed();
        }, { min: 1 })));
        break;
    }
    return out;
  }

  function renderCondition(cond, path, parent, index) {
    var row = el("div", { className: "builder-row", "data-path": path });
    if (!OPS[cond.field]) {
      row.appendChild(el("span", { text: "A rule this builder cannot edit (" + cond.field + "); remove it or edit the JSON." }));
    } else {
      var fieldSelect = select(FIELDS, cond.field, function (f) {
        cond.field = f; cond.op = OPS[f][0][0]; cond.value = DEFAULTS[f](); rebuild(path, "field");
      });
      fieldSelect.setAttribute("data-role", "field");
      row.appendChild(labelled("Condition", fieldSelect));
      var opSelect = select(OPS[cond.field], cond.op, function (op) {
        cond.op = op;
        if (cond.field !== "engagement") { changed(); return; }
        cond.value = engagementValue(op, cond.value);  // the value editors differ by test
        rebuild(path, "op");
      });
      opSelect.setAttribute("data-role", "op");
      row.appendChild(labelled("Test", opSelect));
      valueEditors(cond).forEach(function (n) { row.appendChild(n); });
    }
    row.appendChild(el("button", { type: "button", text: "Remove condition", onclick: function () {
      parent.rules.splice(index, 1); rebuild();
    } }));
    return row;
  }

  function renderGroup(group, path, depth, parent, index) {
    var box = el("div", { className: "builder-group", "data-path": path, role: "group" });
    box.appendChild(labelled("Supporters matching", select(
      [["all", "all of these"], ["any", "any of these"], ["none", "none of these"]],
      group.match, function (m) { group.match = m; changed(); })));
    group.rules.forEach(function (child, i) {
      var childPath = (path ? path + "." : "") + "rules[" + i + "]";
      box.appendChild(child.type === "group" ? renderGroup(child, childPath, depth + 1, group, i)
                                             : renderCondition(child, childPath, group, i));
    });
    var actions = el("div", { className: "builder-actions" });
    actions.appendChild(el("button", { type: "button", text: "Add condition", onclick: function () {
      group.rules.push({ type: "condition", field: "email_status", op: "in", value: ["subscribed"] }); rebuild();
    } }));
    if (depth < 5) {
      actions.appendChild(el("button", { type: "button", text: "Add group", onclick: function () {
        group.rules.push({ type: "group", match: "any", rules: [] }); rebuild();
      } }));
    }
    if (parent) {
      actions.appendChild(el("button", { type: "button", text: "Remove group", onclick: function () {
        parent.rules.splice(index, 1); rebuild();
      } }));
    }
    box.appendChild(actions);
    return box;
  }

  // Redraw the tree; when a select caused it, put the keyboard focus back on the new one.
  function rebuild(focusPath, focusRole) {
    root.innerHTML = "";
    root.appendChild(renderGroup(tree, "", 1, null, 0));
    if (focusPath != null) {
      var again = root.querySelector('[data-path="' + focusPath + '"] [data-role="' + focusRole + '"]');
      if (again) again.focus();
    }
    changed();
  }

  var timer = null, seq = 0;
  function changed() {
    textarea.value = JSON.stringify(tree);
    clearTimeout(timer);
    timer = setTimeout(preview, 350);
  }

  var countEl = document.getElementById("segment-count");
  var nounEl = document.getElementById("segment-noun");
  var summaryEl = document.getElementById("segment-summary");
  var errorEl = document.getElementById("segment-error");
  var sampleEl = document.getElementById("segment-sample");

  function showError(message, path) {
    errorEl.textContent = message;
    errorEl.hidden = false;
    countEl.textContent = "–";
    var node = root.querySelector('[data-path="' + (path || "") + '"]');
    if (node) node.classList.add("builder-error");
  }

  function preview() {
    var mine = ++seq;
    Array.prototype.forEach.call(root.querySelectorAll(".builder-error"), function (n) { n.classList.remove("builder-error"); });
    var headers = { "Content-Type": "application/json", "Accept": "application/json" };
    if (csrf) headers["X-CSRFToken"] = csrf.value;
    fetch(form.getAttribute("data-preview-url"), {
      method: "POST", credentials: "same-origin", headers: headers,
      body: JSON.stringify({ rules: tree, segment_id: segmentId ? parseInt(segmentId, 10) : null })
    }).then(function (r) {
      return r.json().catch(function () { return { error: "The preview failed (" + r.status + ")." }; });
    }).then(function (body) {
      if (mine !== seq) return;  // a newer preview is on its way
      if (body.error) { showError(body.error, body.path); return; }
      errorEl.hidden = true;
      countEl.textContent = body.count.toLocaleString();
      if (nounEl) nounEl.textContent = body.count === 1 ? "supporter matches" : "supporters match";
      summaryEl.textContent = body.summary;
      sampleEl.innerHTML = "";
      body.sample.forEach(function (s) {
        sampleEl.appendChild(el("li", { text: s.email + (s.name ? " (" + s.name + ")" : "") + " · " + s.email_status.replace("_", " ") }));
      });
    }).catch(function () { if (mine === seq) showError("The preview could not be reached.", null); });
  }

  rebuild();
})();
