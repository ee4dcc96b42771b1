/* Sign-up and log-in pages. */
(function () {
  "use strict";
  var Coca = window.Coca;

  /* Only a path on this site: never an absolute or protocol-relative URL from the query string. */
  function nextPage() {
    var next = new URLSearchParams(location.search).get("next") || "";
    return /^\/(?![\/\\])/.test(next) ? next : "/agents";
  }

  async function logIn(email, password) {
    var pair = await Coca.api("/v1/auth/login", { method: "POST", json: { email: email, password: password }, auth: false });
    Coca.saveSession(pair, { email: email });
    try {
      var me = await Coca.api("/v1/users/me");
      Coca.saveSession(pair, { email: me.email || email, display_name: me.display_name || "" });
    } catch (e) {
      /* the tokens work or the next page will say so */
    }
    location.assign(nextPage());
  }

  function handle(form, submit) {
    var status = document.getElementById("form-status");
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      Coca.setStatus(status, "Working…");
      try {
        await submit(new FormData(form));
      } catch (error) {
        Coca.setStatus(status, Coca.describe(error), "error");
        button.disabled = false;
      }
    });
  }

  var login = document.getElementById("login-form");
  if (login) {
    handle(login, function (data) {
      return logIn(data.get("email").trim(), data.get("password"));
    });
  }

  var signup = document.getElementById("signup-form");
  if (signup) {
    handle(signup, async function (data) {
      var email = data.get("email").trim();
      var payload = { email: email, password: data.get("password"), display_name: data.get("display_name").trim() };
      var tenant = (data.get("tenant_name") || "").trim();
      if (tenant) payload.tenant_name = tenant;
      await Coca.api("/v1/auth/register", { method: "POST", json: payload, auth: false });
      Coca.setStatus(document.getElementById("form-status"), "Account created. Logging you in…", "ok");
      await logIn(email, payload.password);
    });
  }
})();
