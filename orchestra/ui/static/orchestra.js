// orchestra web UI: progressive enhancement only. Every page works without this file;
// with it, times gain the viewer's local time, run states update live (server-sent
// events), the Run form is checked and submitted in place, and logs follow live.
(function () {
  "use strict";
  var localFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", timeZoneName: "short"
  });

  function announce(text) {
    var region = document.getElementById("live-status");
    if (region) region.textContent = text;
  }

  // Times: the server wrote UTC (or the schedule's zone); add the viewer's local time.
  function localiseTimes(root) {
    root.querySelectorAll("time[data-local]:not([data-localised])").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      el.setAttribute("data-localised", "");
      var span = document.createElement("span");
      span.className = "local-time";
      span.textContent = " · " + localFormat.format(when) + " your time";
      el.after(span);
    });
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    document.querySelectorAll("[data-viewer-zone]").forEach(function (el) {
      el.textContent = "your local times are in " + zone;
    });
  }

  // Live run states: one EventSource on /api/v1/events (the session cookie authenticates it).
  function onRunEvent(message) {
    var event = JSON.parse(message.data);
    var known = false;
    document.querySelectorAll('[data-run-state="' + event.runId + '"]').forEach(function (el) {
      known = true;
      el.textContent = event.to;
      el.className = "state state-" + event.to.toLowerCase();
    });
    document.querySelectorAll('[data-run-reason="' + event.runId + '"]').forEach(function (el) {
      el.textContent = event.reason;
    });
    if (document.body.dataset.run === event.runId || document.body.dataset.live === "pools") refreshParts();
    if (known) announce("Run " + event.runId.slice(0, 8) + " is now " + event.to);
    var note = document.querySelector("[data-new-runs]");
    if (!known && note && event.from === null) note.hidden = false;
  }

  // The run page (on each change of its run) and the pools page (on any change): fetch
  // the page again and swap the parts marked data-refresh; a run's log keeps streaming.
  var refreshing = false, again = false;
  function refreshParts() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(window.location.href, {credentials: "same-origin"}).then(function (response) {
      return response.ok ? response.text() : "";
    }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html");
      document.querySelectorAll("[data-refresh][id]").forEach(function (el) {
        if (el.contains(document.activeElement)) return;  // never pull focus from under the keyboard
        var replacement = fresh.getElementById(el.id);
        if (replacement) { el.replaceWith(replacement); localiseTimes(replacement); enhanceForms(replacement); }
      });
    }).catch(function () {}).then(function () {
      refreshing = false;
      if (again) { again = false; refreshParts(); }
    });
  }

  function listen() {
    if (!document.body.dataset.live || !window.EventSource) return;
    var source = new EventSource("/api/v1/events");
    source.addEventListener("run", onRunEvent);
    source.addEventListener("open", function () { document.body.dataset.liveReady = "true"; });
    // Changes between rendering the page and the stream opening are not replayed: look again.
    if (document.body.dataset.run || document.body.dataset.live === "pools") {
      source.addEventListener("open", refreshParts);
    }
  }

  // Forms: JSON fields are checked before sending; the Run form is sent in place so that
  // the server's field errors replace it without a reload.
  function checkJson(field) {
    var text = field.value.trim();
    var message = "";
    if (text) {
      try { JSON.parse(text); } catch (err) { message = "Not valid JSON: " + err.message; }
    }
    field.setCustomValidity(message);
  }

  function enhanceForms(root) {
    root.querySelectorAll("textarea[data-json]").forEach(function (field) {
      field.addEventListener("input", function () { checkJson(field); });
    });
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.dataset.confirm)) e.preventDefault();
      });
    });
    root.querySelectorAll('form[data-enhance="run-form"]').forEach(function (form) {
      form.addEventListener("submit", function (e) { submitInPlace(e, form); });
    });
  }

  function submitInPlace(e, form) {
    e.preventDefault();
    form.querySelectorAll("textarea[data-json]").forEach(checkJson);
    if (!form.reportValidity()) return;
    var button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    fetch(form.action, {
      method: "POST", body: new URLSearchParams(new FormData(form)),
      headers: {"X-Orchestra-Fragment": "run-form"}, credentials: "same-origin"
    }).then(function (response) {
      if (response.status === 422) {
        return response.text().then(function (html) { replaceForm(form, html); });
      }
      window.location.assign(response.url);
    }).catch(function () { form.submit(); });
  }

  function replaceForm(form, html) {
    var holder = document.createElement("div");
    holder.innerHTML = html;
    var fresh = holder.querySelector("form");
    if (!fresh) return;
    form.replaceWith(fresh);
    enhanceForms(fresh.parentNode);
    var invalid = fresh.querySelector('[aria-invalid="true"]');
    (invalid || fresh.querySelector("[role=alert]") || fresh).focus();
    announce("The run was not started: see the messages next to the fields.");
  }

  // Logs: follow the run's output stream and append it as it comes.
  function followLog() {
    var pre = document.querySelector("pre[data-follow]");
    if (!pre || !window.fetch || !window.TextDecoder) return;
    var status = document.querySelector("[data-log-status]");
    var decoder = new TextDecoder();
    fetch(pre.dataset.follow, {credentials: "same-origin"}).then(function (response) {
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      var reader = response.body.getReader();
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) {
            pre.append(decoder.decode());
            if (status) status.textContent = "The run has ended; this is its whole output.";
            return;
          }
          var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
          pre.append(decoder.decode(chunk.value, {stream: true}));
          if (atBottom) pre.scrollTop = pre.scrollHeight;
          return pump();
        });
      }
      return pump();
    }).catch(function (err) {
      if (status) status.textContent = "Stopped following the output (" + err.message + "); reload to resume.";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localiseTimes(document);
    enhanceForms(document);
    listen();
    followLog();
  });
})();
