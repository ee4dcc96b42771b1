/* Agents page: list, create, and start a chat. */
(function () {
  "use strict";
  var Coca = window.Coca;
  if (!Coca.signedIn) return;
  var el = Coca.el;
  var list = document.getElementById("agent-list");
  var status = document.getElementById("agents-status");

  async function startChat(agent, button) {
    button.disabled = true;
    try {
      var conversation = await Coca.api("/v1/conversations", {
        method: "POST",
        json: { agent_id: agent.id, title: "Chat with " + agent.name },
      });
      location.assign("/conversations/" + encodeURIComponent(conversation.id));
    } catch (error) {
      Coca.setStatus(status, Coca.describe(error), "error");
      button.disabled = false;
    }
  }

  function item(agent) {
    var chat = el("button", { type: "button", class: "primary", "aria-label": "Chat with " + agent.name }, "Chat");
    chat.addEventListener("click", function () {
      startChat(agent, chat);
    });
    return el(
      "li",
      { dataset: { agentId: agent.id } },
      el(
        "div",
        { class: "item-main" },
        el("div", { class: "item-title" }, agent.name, " ", el("span", { class: "tag" }, agent.model || "default model")),
        el("div", { class: "item-sub" }, agent.system_prompt || "No instructions.")
      ),
      chat
    );
  }

  function showCount() {
    var n = list.children.length;
    Coca.setStatus(status, n ? "" : "No agents yet. Create one to start chatting.");
  }

  async function load() {
    try {
      var page = await Coca.api("/v1/agents");
      list.replaceChildren.apply(list, page.items.map(item));
      showCount();
    } catch (error) {
      Coca.setStatus(status, Coca.describe(error), "error");
    }
  }

  var form = document.getElementById("agent-form");
  var formStatus = document.getElementById("agent-form-status");
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    var data = new FormData(form);
    var payload = { name: data.get("name").trim(), system_prompt: data.get("system_prompt") };
    var model = data.get("model").trim();
    if (model) payload.model = model;
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      var agent = await Coca.api("/v1/agents", { method: "POST", json: payload });
      list.prepend(item(agent));
      showCount();
      form.reset();
      Coca.setStatus(formStatus, "Created " + agent.name + ".", "ok");
    } catch (error) {
      Coca.setStatus(formStatus, Coca.describe(error), "error");
    } finally {
      button.disabled = false;
    }
  });

  load();
})();
