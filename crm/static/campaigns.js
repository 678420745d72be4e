/* Campaign pages, no framework:
   - the editor's live preview: the content is POSTed (debounced, with the CSRF token) to
     /campaigns/preview, which answers with the rendered subject, HTML and text, or the problems
     by field; the HTML goes into a sandboxed iframe (no scripts run there);
   - "preview as supporter": search by the start of an address, pick one;
   - "Regenerate from HTML" for the plain-text part, and the cursor's line in the MJML box;
   - live progress on the campaign page: polls a JSON endpoint every two seconds while the
     campaign is scheduled, sending or paused, and reloads when its status changes;
   - a confirm() before forms marked data-confirm.
   Everything here is an enhancement: without JavaScript the pages still work (plain forms,
   the saved campaign's preview, a refresh link). */
(function () {
  "use strict";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text != null) node.textContent = text;
    return node;
  }

  Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (f) {
    f.addEventListener("submit", function (event) {
      if (!window.confirm(f.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // -- the editor ---------------------------------------------------------------------------
  var form = document.getElementById("campaign-form");
  var fieldset = form && form.querySelector("fieldset");
  if (form && !(fieldset && fieldset.disabled)) editor(form);

  function editor(form) {
    var fields = {};
    ["name", "subject", "preheader", "mjml", "text_body"].forEach(function (n) { fields[n] = document.getElementById(n); });
    var csrf = form.querySelector("input[name=csrf_token]");
    var frame = document.getElementById("preview-frame");
    var textOut = document.getElementById("preview-text");
    var subjectOut = document.getElementById("preview-subject");
    var statusOut = document.getElementById("preview-status");
    var regenerate = document.getElementById("regenerate-text");
    var cursor = document.getElementById("mjml-cursor");
    var supporterId = null, timer = null, seq = 0, wantText = false;

    function showProblems(problems) {
      Array.prototype.forEach.call(form.querySelectorAll(".live-problems"), function (box) {
        box.textContent = "";
        (problems[box.getAttribute("data-field")] || []).forEach(function (message) {
          box.appendChild(el("p", { "class": "error" }, message));
        });
      });
    }

    function content() {
      var body = {};
      Object.keys(fields).forEach(function (n) { body[n] = fields[n] ? fields[n].value : ""; });
      body.supporter_id = supporterId;
      return body;
    }

    function refresh() {
      var mine = ++seq;
      var headers = { "Content-Type": "application/json", "Accept": "application/json" };
      if (csrf) headers["X-CSRFToken"] = csrf.value;
      statusOut.textContent = "Updating the preview…";
      fetch(form.getAttribute("data-preview-url"), {
        method: "POST", credentials: "same-origin", headers: headers, body: JSON.stringify(content())
      }).then(function (r) {
        return r.json().catch(function () { return { error: "The preview failed (" + r.status + ")." }; });
      }).then(function (body) {
        if (mine !== seq) return;  // a newer preview is on its way
        if (body.error) { statusOut.textContent = body.error; return; }
        if (body.problems) {
          showProblems(body.problems);
          var count = Object.keys(body.problems).reduce(function (n, k) { return n + body.problems[k].length; }, 0);
          statusOut.textContent = count + (count === 1 ? " problem" : " problems") +
            " to fix (shown beside the fields); the preview shows the last version without problems.";
          wantText = false;
          return;
        }
        showProblems({});
        if (wantText) {
          wantText = false;
          fields.text_body.value = body.generated_text;
          schedule(0);  // and preview the text as it now stands
        }
        frame.removeAttribute("src");
        frame.srcdoc = body.html;
        textOut.textContent = body.text;
        subjectOut.textContent = body.subject;
        statusOut.textContent = "Preview up to date.";
      }).catch(function () { if (mine === seq) statusOut.textContent = "The preview could not be reached."; });
    }

    function schedule(delay) {
      clearTimeout(timer);
      timer = setTimeout(refresh, delay == null ? 400 : delay);
    }

    Object.keys(fields).forEach(function (n) {
      if (fields[n]) fields[n].addEventListener("input", function () { schedule(); });
    });

    if (regenerate && fields.text_body) {
      regenerate.hidden = false;
      regenerate.addEventListener("click", function () { wantText = true; schedule(0); });
    }

    if (cursor && fields.mjml) {
      var where = function () {
        var before = fields.mjml.value.slice(0, fields.mjml.selectionStart);
        var lines = before.split("\n");
        cursor.textContent = "Cursor: line " + lines.length + ", column " + (lines[lines.length - 1].length + 1);
      };
      ["keyup", "click", "input", "focus"].forEach(function (e) { fields.mjml.addEventListener(e, where); });
    }

    // Preview as a chosen supporter.
    var picker = document.getElementById("preview-as");
    var query = document.getElementById("preview-as-query");
    var results = document.getElementById("preview-as-results");
    var current = document.getElementById("preview-as-current");
    var clear = document.getElementById("preview-as-clear");
    var sample = current ? current.textContent : "";
    var searchTimer = null, searchSeq = 0;
    if (picker && query) {
      picker.hidden = false;
      query.addEventListener("keydown", function (event) { if (event.key === "Enter") event.preventDefault(); });
      query.addEventListener("input", function () {
        clearTimeout(searchTimer);
        searchTimer = setTimeout(search, 250);
      });
      clear.addEventListener("click", function () {
        supporterId = null; current.textContent = sample; clear.hidden = true; schedule(0);
      });
    }

    function search() {
      var mine = ++searchSeq, q = query.value.trim();
      results.textContent = "";
      if (q.length < 2) return;
      var url = form.getAttribute("data-search-url") + "?q=" + encodeURIComponent(q);
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (body) {
          if (mine !== searchSeq) return;
          if (!body.supporters.length) { results.appendChild(el("li", { "class": "muted" }, "No supporter’s address starts with that.")); return; }
          body.supporters.forEach(function (s) {
            var label = s.email + (s.name ? " (" + s.name + ")" : "");
            var b = el("button", { type: "button", "data-supporter-id": String(s.id) }, label);
            b.addEventListener("click", function () {
              supporterId = s.id; current.textContent = label; clear.hidden = false;
              results.textContent = ""; query.value = ""; schedule(0);
            });
            var li = el("li"); li.appendChild(b); results.appendChild(li);
          });
        }).catch(function () { /* the picker is optional; the sample stays */ });
    }

    refresh();
  }

  // -- live progress ------------------------------------------------------------------------
  var progress = document.getElementById("progress");
  if (progress && progress.hasAttribute("data-live")) poll(progress);

  function poll(section) {
    var url = section.getAttribute("data-progress-url");
    var shown = section.getAttribute("data-status");
    var bar = document.getElementById("progress-bar");
    var reason = document.getElementById("progress-reason");

    function set(name, text) {
      var node = section.querySelector('[data-p="' + name + '"]');
      if (node) node.textContent = text;
    }

    function eta(seconds) {
      if (seconds == null) return "–";
      return seconds < 60 ? "< 1 min" : Math.round(seconds / 60) + " min";
    }

    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
        .then(function (p) {
          if (p.status !== shown) { window.location.reload(); return; }  // new actions and lists apply
          ["sent", "total", "status", "rate_per_minute", "failed", "unknown", "suppressed"].forEach(function (k) {
            set(k, typeof p[k] === "number" ? p[k].toLocaleString("en-GB") : p[k]);
          });
          set("queued", (p.queued + p.in_flight).toLocaleString("en-GB"));
          set("eta", eta(p.eta_seconds));
          if (bar) { bar.max = p.total || 1; bar.value = p.done; }
          reason.textContent = p.reason || "";
          reason.hidden = !p.reason;
          setTimeout(tick, 2000);
        })
        .catch(function () { setTimeout(tick, 5000); });
    }

    setTimeout(tick, 2000);
  }
})();
