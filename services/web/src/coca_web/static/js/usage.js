/* Usage page: the tenant's balance (GET /v1/billing/balance) and token usage (GET /v1/usage).
 * Values are formatted by their names (*_tokens, *_micros, dates); an error is shown as a message. */
(function () {
  "use strict";
  var Coca = window.Coca;
  if (!Coca.signedIn) return;
  var el = Coca.el;
  var DATE_KEYS = /(^|_)(start|end|from|to|at)$/;

  function label(key) {
    var text = String(key).replace(/_micros$/, "").replace(/_/g, " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function show(key, value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number" && /_micros$/.test(key)) {
      return (value / 1e6).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 6 });
    }
    if (typeof value === "number") return value.toLocaleString();
    if (typeof value === "string" && DATE_KEYS.test(key) && !isNaN(Date.parse(value))) {
      return new Date(value).toLocaleDateString(undefined, { timeZone: "UTC" });
    }
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function facts(node, object) {
    Object.entries(object || {}).forEach(function (entry) {
      if (entry[1] !== null && typeof entry[1] === "object") return;
      node.append(el("dt", null, label(entry[0])), el("dd", null, show(entry[0], entry[1])));
    });
    return node;
  }

  function quotaBar(answer) {
    if (typeof answer.used_tokens !== "number" || !answer.quota_tokens) return null;
    var used = answer.used_tokens + (answer.reserved_tokens || 0);
    var share = Math.min(100, Math.round((100 * used) / answer.quota_tokens));
    return el(
      "div",
      { class: "quota" },
      el("progress", { max: answer.quota_tokens, value: Math.min(used, answer.quota_tokens), "aria-labelledby": "quota-label" }),
      el("span", { id: "quota-label", class: "muted" }, share + "% of this period's " + show("quota_tokens", answer.quota_tokens) + " tokens used")
    );
  }

  function table(rows, keyLabel) {
    var columns = [];
    rows.forEach(function (row) {
      Object.keys(row).forEach(function (key) {
        if (columns.indexOf(key) < 0) columns.push(key);
      });
    });
    var head = columns.map(function (c) {
      return el("th", { scope: "col" }, c === "key" ? keyLabel : label(c));
    });
    var body = rows.map(function (row) {
      return el("tr", null, ...columns.map(function (c) { return el("td", null, show(c, row[c])); }));
    });
    return el("table", { class: "table" }, el("thead", null, el("tr", null, ...head)), el("tbody", null, ...body));
  }

  var balance = document.getElementById("balance");
  var balanceStatus = document.getElementById("balance-status");
  Coca.api("/v1/billing/balance")
    .then(function (answer) {
      balance.replaceChildren();
      var bar = quotaBar(answer || {});
      if (bar) balance.append(bar);
      balance.append(facts(el("dl", { class: "facts" }), answer));
      Coca.setStatus(balanceStatus, "");
    })
    .catch(function (error) {
      Coca.setStatus(balanceStatus, Coca.describe(error), "error");
    });

  var form = document.getElementById("usage-form");
  var usage = document.getElementById("usage");
  var usageStatus = document.getElementById("usage-status");
  var today = new Date().toISOString().slice(0, 10);
  document.getElementById("usage-from").value = today.slice(0, 8) + "01";
  document.getElementById("usage-to").value = today;

  async function load() {
    var data = new FormData(form);
    var query = new URLSearchParams();
    ["from", "to", "group_by"].forEach(function (key) {
      if (data.get(key)) query.set(key, data.get(key)); /* dates are whole UTC days, "to" included */
    });
    Coca.setStatus(usageStatus, "Loading…");
    try {
      var answer = await Coca.api("/v1/usage?" + query.toString());
      var rows = Array.isArray(answer) ? answer : (answer && answer.items) || [];
      usage.replaceChildren();
      if (rows.length && answer.totals) usage.append(facts(el("dl", { class: "facts" }), answer.totals));
      if (rows.length) usage.append(table(rows, label(data.get("group_by") || "key")));
      Coca.setStatus(usageStatus, rows.length ? "" : "No usage in this period.");
    } catch (error) {
      usage.replaceChildren();
      Coca.setStatus(usageStatus, Coca.describe(error), "error");
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    load();
  });
  load();
})();
