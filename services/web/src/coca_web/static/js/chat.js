/* Chat page: history, then each message's reply streamed token by token over SSE.
 *
 * POST /v1/conversations/{id}/messages with Accept: text/event-stream streams the run's events. If the
 * stream drops before run.completed/run.failed, the page resumes with GET .../events and Last-Event-ID
 * (the last event it saw), so no token is lost or shown twice. When it has no cursor, or the server no
 * longer knows it (404), it reloads the conversation's messages instead.
 */
(function () {
  "use strict";
  var Coca = window.Coca;
  if (!Coca.signedIn) return;
  var el = Coca.el;

  var conversationId = document.body.dataset.conversationId;
  var base = "/v1/conversations/" + encodeURIComponent(conversationId);
  var messages = document.getElementById("messages");
  var status = document.getElementById("chat-status");
  var form = document.getElementById("chat-form");
  var input = document.getElementById("chat-input");
  var sendButton = document.getElementById("send");
  var agentName = "Agent";
  var lastEventId = null; /* the newest event this page has seen in this conversation */

  function sleep(ms) {
    return new Promise(function (resolve) {
      setTimeout(resolve, ms);
    });
  }

  function scrollDown() {
    messages.scrollTop = messages.scrollHeight;
  }

  function bubble(role, content) {
    var text = document.createTextNode(content || "");
    var node = el(
      "div",
      { class: "message " + role },
      el("div", { class: "who" }, role === "user" ? "You" : role === "tool" ? "Tool" : agentName),
      el("div", { class: "text" }, text)
    );
    messages.append(node);
    scrollDown();
    return { node: node, text: text };
  }

  function note(run, text) {
    var node = el("div", { class: "message tool" }, el("div", { class: "text" }, text));
    messages.insertBefore(node, run.reply.node);
    scrollDown();
  }

  function busy(on) {
    input.disabled = on;
    sendButton.disabled = on;
    messages.setAttribute("aria-busy", on ? "true" : "false");
    if (!on) input.focus();
  }

  function finish(run, failure) {
    run.done = true;
    run.reply.node.classList.remove("streaming");
    if (failure) {
      run.reply.node.classList.add("failed");
      if (!run.reply.text.data) run.reply.text.data = "The reply failed.";
      Coca.setStatus(status, failure, "error");
    } else {
      Coca.setStatus(status, "");
    }
  }

  function apply(run, type, data) {
    switch (type) {
      case "run.started":
        Coca.setStatus(status, agentName + " is thinking…");
        break;
      case "message.delta":
        if (typeof data.text === "string") {
          run.reply.text.appendData(data.text);
          scrollDown();
        }
        break;
      case "tool.call":
        note(run, "Calling tool " + (data.name || data.tool || "") + "…");
        break;
      case "tool.result":
        note(run, "Tool " + (data.name || data.tool || "") + " answered.");
        break;
      case "message.completed":
        if (data.message && typeof data.message.content === "string" && data.message.content) {
          run.reply.text.data = data.message.content; /* the stored reply is the reference */
        }
        break;
      case "run.completed": {
        var usage = data.usage || {};
        var tokens = usage.total_tokens || (usage.prompt_tokens || 0) + (usage.completion_tokens || 0);
        if (tokens) run.reply.node.append(el("div", { class: "meta" }, tokens + " tokens"));
        finish(run, null);
        break;
      }
      case "run.failed": {
        var error = data.error || {};
        var message = typeof error === "string" ? error : error.message || error.code || "unknown error";
        finish(run, "The agent could not answer: " + message);
        break;
      }
    }
  }

  async function consume(run, response) {
    for await (var frame of Coca.sseEvents(response)) {
      if (frame.id) {
        run.cursor = frame.id;
        lastEventId = frame.id;
      }
      var envelope;
      try {
        envelope = JSON.parse(frame.data);
      } catch (e) {
        continue;
      }
      apply(run, envelope.type || frame.event, envelope.data || {});
      if (run.done) return;
    }
  }

  async function resume(run) {
    for (var attempt = 0; attempt < 6 && !run.done && run.cursor; attempt++) {
      Coca.setStatus(status, "Connection lost. Reconnecting…");
      await sleep(Math.min(250 * Math.pow(2, attempt), 4000));
      try {
        var response = await Coca.request(base + "/events", {
          headers: { Accept: "text/event-stream", "Last-Event-ID": run.cursor },
        });
        await consume(run, response);
      } catch (error) {
        if (error.name === "ApiError" && error.status === 404) break; /* cursor unknown: reload */
        if (error.name === "ApiError" && error.status >= 400 && error.status < 500) {
          finish(run, Coca.describe(error));
          return;
        }
      }
    }
    if (!run.done) await reloadAfterDrop(run);
  }

  async function reloadAfterDrop(run) {
    Coca.setStatus(status, "Connection lost. Loading the conversation again…");
    for (var attempt = 0; attempt < 10; attempt++) {
      try {
        var page = await Coca.api(base + "/messages");
        var items = page.items || [];
        var last = items[items.length - 1];
        if (last && last.role === "assistant" && last.content) {
          render(items);
          Coca.setStatus(status, "");
          run.done = true;
          return;
        }
      } catch (error) {
        /* try again below */
      }
      await sleep(1000);
    }
    finish(run, "The connection was lost and the reply is not available yet. Reload the page to check again.");
  }

  async function send(content) {
    busy(true);
    bubble("user", content);
    var reply = bubble("assistant", "");
    reply.node.classList.add("streaming");
    /* Until this run's first event, the previous run's last event is the cursor to resume after. */
    var run = { reply: reply, done: false, cursor: lastEventId };
    Coca.setStatus(status, "Sending…");
    try {
      var response = await Coca.request(base + "/messages", {
        method: "POST",
        json: { content: content },
        headers: { Accept: "text/event-stream" },
      });
      await consume(run, response);
    } catch (error) {
      if (error.name === "ApiError") {
        finish(run, Coca.describe(error)); /* refused before the run started, e.g. over quota */
      }
      /* anything else is the stream breaking while it was read: resume below */
    }
    if (!run.done) await resume(run);
    busy(false);
  }

  function render(items) {
    messages.replaceChildren();
    items.forEach(function (message) {
      if ((message.role === "user" || message.role === "assistant") && message.content) {
        bubble(message.role, message.content);
      }
    });
  }

  async function load() {
    Coca.setStatus(status, "Loading…");
    try {
      var conversation = await Coca.api(base);
      try {
        var agent = await Coca.api("/v1/agents/" + encodeURIComponent(conversation.agent_id));
        agentName = agent.name;
      } catch (e) {
        /* the agent's name is a nicety */
      }
      var title = conversation.title || "Chat with " + agentName;
      document.getElementById("chat-title").textContent = title;
      document.title = title + " · Coca AI";
      var page = await Coca.api(base + "/messages");
      render(page.items || []);
      Coca.setStatus(status, "");
      busy(false);
    } catch (error) {
      Coca.setStatus(status, Coca.describe(error), "error");
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var content = input.value;
    if (!content.trim() || input.disabled) return;
    input.value = "";
    send(content);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  busy(true);
  load();
})();
