/* Coca AI web UI: what every page shares (window.Coca).
 *
 * - The session (access + refresh token, the user's email) lives in sessionStorage: this tab only, gone
 *   when it closes, never sent by the browser on its own (so no cross-site request can use it).
 * - api(): calls the public API on the gateway (<body data-gateway>), adds the bearer token, refreshes
 *   it once on a 401, and turns every failure into an ApiError with a message a person can read.
 * - sseEvents(): parses a text/event-stream response body (fetch + ReadableStream; EventSource cannot
 *   POST or send an Authorization header).
 * - el(): builds DOM nodes. Text always goes in as textContent, never as HTML.
 */
(function () {
  "use strict";

  var SESSION_KEY = "coca.session";
  var body = document.body;
  var gateway = (body.dataset.gateway || "").replace(/\/+$/, "");

  function loadSession() {
    try {
      var value = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
      return value && value.access_token ? value : null;
    } catch (e) {
      return null;
    }
  }

  function saveSession(pair, extra) {
    var current = loadSession() || {};
    var next = Object.assign({}, current, extra || {}, {
      access_token: pair.access_token,
      refresh_token: pair.refresh_token || current.refresh_token || null,
    });
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(next));
    return next;
  }

  function clearSession() {
    sessionStorage.removeItem(SESSION_KEY);
  }

  function ApiError(status, code, message, traceId) {
    var error = new Error(message);
    error.name = "ApiError";
    error.status = status;
    error.code = code;
    error.traceId = traceId || null;
    return error;
  }

  async function errorOf(response) {
    var text = "";
    try {
      text = await response.text();
      var parsed = JSON.parse(text);
      if (parsed && parsed.error) {
        return ApiError(
          response.status,
          parsed.error.code || "error",
          parsed.error.message || response.statusText,
          parsed.error.trace_id
        );
      }
    } catch (e) {
      /* not our error model: fall through */
    }
    return ApiError(response.status, "http_" + response.status, text.slice(0, 200) || response.statusText);
  }

  var refreshing = null;

  async function refreshTokens() {
    var session = loadSession();
    if (!session || !session.refresh_token) return false;
    if (!refreshing) {
      refreshing = (async function () {
        try {
          var response = await fetch(gateway + "/v1/auth/refresh", {
            method: "POST",
            headers: { "Content-Type": "application/json", Accept: "application/json" },
            body: JSON.stringify({ refresh_token: session.refresh_token }),
          });
          if (!response.ok) return false;
          saveSession(await response.json());
          return true;
        } catch (e) {
          return false;
        } finally {
          refreshing = null;
        }
      })();
    }
    return refreshing;
  }

  function sendToLogin() {
    clearSession();
    var here = location.pathname + location.search;
    location.assign("/login?next=" + encodeURIComponent(here));
  }

  /* fetch() against the gateway. Resolves to the Response when it is a 2xx; rejects with an ApiError
   * otherwise (status 0: the gateway could not be reached). options: method, json, form, headers,
   * signal, auth (default true). */
  async function request(path, options) {
    options = options || {};
    var attempt = async function () {
      var headers = Object.assign({ Accept: "application/json" }, options.headers || {});
      var session = loadSession();
      if (options.auth !== false && session) headers.Authorization = "Bearer " + session.access_token;
      var init = { method: options.method || "GET", headers: headers, signal: options.signal };
      if (options.json !== undefined) {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(options.json);
      } else if (options.form !== undefined) {
        init.body = options.form; /* the browser sets the multipart boundary */
      }
      try {
        return await fetch(gateway + path, init);
      } catch (e) {
        if (e && e.name === "AbortError") throw e;
        throw ApiError(0, "network_error", "Could not reach the Coca API at " + (gateway || location.origin) + ".");
      }
    };
    var response = await attempt();
    if (response.status === 401 && options.auth !== false && loadSession()) {
      if (await refreshTokens()) {
        response = await attempt();
      }
      if (response.status === 401) {
        sendToLogin();
        throw await errorOf(response);
      }
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async function api(path, options) {
    var response = await request(path, options);
    if (response.status === 204) return null;
    var text = await response.text();
    return text ? JSON.parse(text) : null;
  }

  /* A sentence for a person, from any error api() or request() threw. */
  function describe(error) {
    if (!error || error.name !== "ApiError") {
      return "Something went wrong in this page: " + (error && error.message ? error.message : String(error));
    }
    var trace = error.traceId ? " (trace " + error.traceId.slice(0, 12) + ")" : "";
    if (error.status === 0) return error.message + " Check that it is running, then try again.";
    if (error.status === 404 && error.code === "not_found" && /no such route/.test(error.message)) {
      return "This feature is not available on this server yet." + trace;
    }
    if (error.status === 502 || error.status === 503 || error.status === 504) {
      return "Not available right now: " + error.message.replace(/\.$/, "") + ". Try again in a moment." + trace;
    }
    return error.message + trace;
  }

  /* Parse a text/event-stream body; yields {id, event, data} (data as text). */
  async function* sseEvents(response) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var event = { id: null, event: "message", data: [] };
    try {
      while (true) {
        var chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        var newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          var line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (line.endsWith("\r")) line = line.slice(0, -1);
          if (line === "") {
            if (event.data.length) {
              yield { id: event.id, event: event.event, data: event.data.join("\n") };
            }
            event = { id: null, event: "message", data: [] };
            continue;
          }
          if (line.charAt(0) === ":") continue; /* a comment: keep-alive ping */
          var colon = line.indexOf(":");
          var field = colon < 0 ? line : line.slice(0, colon);
          var value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.charAt(0) === " ") value = value.slice(1);
          if (field === "data") event.data.push(value);
          else if (field === "event") event.event = value;
          else if (field === "id") event.id = value;
        }
      }
    } finally {
      reader.releaseLock();
    }
  }

  /* el("li", {class: "x", dataset: {id: 1}, onclick: fn}, "text", childNode, ...) */
  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function (entry) {
      var key = entry[0];
      var value = entry[1];
      if (value === null || value === undefined || value === false) return;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function setStatus(node, text, kind) {
    if (!node) return;
    node.textContent = text || "";
    node.classList.toggle("error", kind === "error");
    node.classList.toggle("ok", kind === "ok");
  }

  function formatDate(value) {
    if (!value) return "";
    var date = new Date(value);
    return isNaN(date) ? String(value) : date.toLocaleString();
  }

  function wireAccount() {
    var session = loadSession();
    var who = document.getElementById("whoami");
    if (who && session && session.email) who.textContent = session.email;
    var logout = document.getElementById("logout");
    if (logout) {
      logout.addEventListener("click", async function () {
        var current = loadSession();
        if (current) {
          try {
            await request("/v1/auth/logout", { method: "POST", json: { refresh_token: current.refresh_token } });
          } catch (e) {
            /* leaving anyway: the tokens are dropped from this tab below */
          }
        }
        clearSession();
        location.assign("/login");
      });
    }
  }

  var signedIn = loadSession() !== null;
  if (body.dataset.auth === "required" && !signedIn) {
    sendToLogin();
  }

  window.Coca = {
    gateway: gateway,
    signedIn: signedIn,
    session: loadSession,
    saveSession: saveSession,
    clearSession: clearSession,
    request: request,
    api: api,
    describe: describe,
    sseEvents: sseEvents,
    el: el,
    setStatus: setStatus,
    formatDate: formatDate,
  };

  document.addEventListener("DOMContentLoaded", wireAccount);
})();
