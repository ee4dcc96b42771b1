/* Knowledge pages: knowledge bases (list, create) and one base's documents (upload, status). */
(function () {
  "use strict";
  var Coca = window.Coca;
  if (!Coca.signedIn) return;
  var el = Coca.el;
  var FINAL = { ready: true, failed: true };

  function kbPath(id) {
    return "/v1/knowledge-bases/" + encodeURIComponent(id);
  }

  /* ---- /knowledge ---- */
  function kbItem(kb) {
    var link = el("a", { href: "/knowledge/" + encodeURIComponent(kb.id), class: "item-title" }, kb.name || kb.id);
    return el(
      "li",
      { dataset: { knowledgeBaseId: kb.id } },
      el("div", { class: "item-main" }, link, el("div", { class: "item-sub" }, kb.description || "No description."))
    );
  }

  function listPage() {
    var list = document.getElementById("kb-list");
    var status = document.getElementById("kbs-status");
    var form = document.getElementById("kb-form");
    var formStatus = document.getElementById("kb-form-status");

    function showCount() {
      Coca.setStatus(status, list.children.length ? "" : "No knowledge bases yet.");
    }

    Coca.api("/v1/knowledge-bases")
      .then(function (page) {
        list.replaceChildren.apply(list, (page.items || []).map(kbItem));
        showCount();
      })
      .catch(function (error) {
        Coca.setStatus(status, Coca.describe(error), "error");
      });

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      var data = new FormData(form);
      var payload = { name: data.get("name").trim() };
      var description = data.get("description").trim();
      if (description) payload.description = description;
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        var kb = await Coca.api("/v1/knowledge-bases", { method: "POST", json: payload });
        list.prepend(kbItem(kb));
        showCount();
        form.reset();
        Coca.setStatus(formStatus, "Created " + (kb.name || "the knowledge base") + ".", "ok");
      } catch (error) {
        Coca.setStatus(formStatus, Coca.describe(error), "error");
      } finally {
        button.disabled = false;
      }
    });
  }

  /* ---- /knowledge/{id} ---- */
  function basePage(kbId) {
    var rows = document.getElementById("doc-rows");
    var status = document.getElementById("docs-status");
    var form = document.getElementById("upload-form");
    var uploadStatus = document.getElementById("upload-status");
    var shown = {};

    function details(doc) {
      if (doc.status === "failed") return doc.error || doc.reason || doc.status_reason || doc.failure_reason || "";
      var chunks = doc.chunk_count || doc.chunks;
      if (doc.status === "ready" && chunks) return chunks + (chunks === 1 ? " chunk" : " chunks");
      if (doc.size_bytes || doc.size) return Math.ceil((doc.size_bytes || doc.size) / 1024) + " KiB";
      return "";
    }

    function row(doc) {
      var state = String(doc.status || "unknown");
      return el(
        "tr",
        { dataset: { documentId: doc.id } },
        el("td", null, doc.filename || doc.name || doc.id),
        el("td", null, el("span", { class: "tag " + state }, state)),
        el("td", null, details(doc))
      );
    }

    function show(doc) {
      var next = row(doc);
      if (shown[doc.id]) shown[doc.id].replaceWith(next);
      else rows.prepend(next);
      shown[doc.id] = next;
      Coca.setStatus(status, "");
    }

    async function watch(doc) {
      var delay = 1000;
      while (!FINAL[doc.status]) {
        await new Promise(function (resolve) {
          setTimeout(resolve, delay);
        });
        delay = Math.min(delay * 1.5, 5000);
        try {
          doc = await Coca.api(kbPath(kbId) + "/documents/" + encodeURIComponent(doc.id));
          show(doc);
        } catch (error) {
          Coca.setStatus(status, "Could not refresh the status: " + Coca.describe(error), "error");
        }
      }
    }

    Coca.api(kbPath(kbId))
      .then(function (kb) {
        document.getElementById("kb-title").textContent = kb.name || "Knowledge base";
        document.getElementById("kb-description").textContent = kb.description || "";
        document.title = (kb.name || "Knowledge base") + " · Coca AI";
      })
      .catch(function (error) {
        Coca.setStatus(status, Coca.describe(error), "error");
      });

    Coca.api(kbPath(kbId) + "/documents")
      .then(function (page) {
        var docs = (page && page.items) || [];
        docs.slice().reverse().forEach(show);
        Coca.setStatus(status, docs.length ? "" : "No documents yet.");
        docs.forEach(watch);
      })
      .catch(function (error) {
        if (error.status === 404 || error.status === 405) Coca.setStatus(status, "Documents you upload appear here.");
        else Coca.setStatus(status, Coca.describe(error), "error");
      });

    var search = document.getElementById("search-form");
    var searchStatus = document.getElementById("search-status");
    var results = document.getElementById("search-results");
    search.addEventListener("submit", async function (event) {
      event.preventDefault();
      var query = new FormData(search).get("query").trim();
      if (!query) return;
      Coca.setStatus(searchStatus, "Searching…");
      try {
        var found = await Coca.api(kbPath(kbId) + "/search", { method: "POST", json: { query: query, top_k: 5 } });
        var items = (found && found.items) || [];
        results.replaceChildren.apply(
          results,
          items.map(function (hit) {
            var source = (hit.document_name || hit.document_id || "") + (hit.position !== undefined ? " · part " + (hit.position + 1) : "");
            var score = typeof hit.score === "number" ? " · score " + hit.score.toFixed(2) : "";
            return el("li", null, el("div", { class: "item-sub" }, source + score), el("div", null, hit.text || ""));
          })
        );
        Coca.setStatus(searchStatus, items.length ? "" : "Nothing found.");
      } catch (error) {
        results.replaceChildren();
        Coca.setStatus(searchStatus, Coca.describe(error), "error");
      }
    });

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      var file = document.getElementById("upload-file").files[0];
      if (!file) return;
      var data = new FormData();
      data.append("file", file, file.name);
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      Coca.setStatus(uploadStatus, "Uploading " + file.name + "…");
      try {
        var doc = await Coca.api(kbPath(kbId) + "/documents", { method: "POST", form: data });
        if (!doc.filename && !doc.name) doc.filename = file.name;
        show(doc);
        form.reset();
        Coca.setStatus(uploadStatus, "Uploaded. Indexing runs in the background.", "ok");
        watch(doc);
      } catch (error) {
        Coca.setStatus(uploadStatus, Coca.describe(error), "error");
      } finally {
        button.disabled = false;
      }
    });
  }

  var kbId = document.body.dataset.knowledgeBaseId;
  if (kbId) basePage(kbId);
  else listPage();
})();
