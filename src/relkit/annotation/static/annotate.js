// relkit annotate: judge the pair on screen by key; the next pair is already in the page.
(() => {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf"]').content;
  const levels = Number(document.body.dataset.levels);
  const stage = document.getElementById("stage");
  const note = document.getElementById("note");
  const message = document.getElementById("message");
  const help = document.getElementById("help");
  const progress = document.getElementById("progress");
  const progressText = document.getElementById("progress-text");
  let cards = JSON.parse(document.getElementById("cards").textContent);
  let shownAt = performance.now();
  let chain = Promise.resolve();
  const pending = [];          // pairs whose action is on its way to the server
  const key = (c) => c.query_id + "\u001f" + c.item_id;
  stage.dataset.key = cards.length ? key(cards[0]) : "";

  function newId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function setPending() { document.body.dataset.pending = String(pending.length); }

  function show() {
    if (!cards.length) {
      if (stage.dataset.key !== "") {
        stage.textContent = "";
        const done = document.createElement("p");
        done.className = "done";
        done.textContent = pending.length ? "Saving…" : "Nothing left to judge. Thank you.";
        stage.appendChild(done);
        stage.dataset.key = "";
      }
      return;
    }
    if (stage.dataset.key !== key(cards[0])) {
      stage.innerHTML = cards[0].html;      // rendered and escaped by the server
      stage.dataset.key = key(cards[0]);
      shownAt = performance.now();
    }
    for (const c of cards.slice(1)) {
      if (c.image) { const img = new Image(); img.src = c.image; }
    }
  }

  function update(data) {
    cards = data.cards.filter((c) => !pending.includes(key(c)));
    progress.value = Math.min(data.done, Number(progress.max));
    progressText.textContent = data.done + " / " + data.goal;
    show();
  }

  async function send(path, body) {
    // a network failure (the app restarting) is retried with the same action id: saved once
    for (let attempt = 0; ; attempt++) {
      let response;
      try {
        response = await fetch(path, {
          method: "POST", credentials: "same-origin",
          headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
          body: JSON.stringify(body),
        });
      } catch (e) {
        message.textContent = "the app is not answering; trying again…";
        await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 5000)));
        continue;
      }
      const data = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(data.detail || response.statusText);
      message.textContent = "";
      return data;
    }
  }

  function fail(e) {
    // refused (a pair judged meanwhile in another tab, nothing to undo): say so and show what the
    // server holds for this annotator now
    message.textContent = String(e.message || e);
    pending.shift();
    setPending();
    return fetch("/api/pairs", {credentials: "same-origin"})
      .then((r) => (r.ok ? r.json() : null))
      .then((data) => { if (data) { stage.dataset.key = "-"; update(data); } })
      .catch(() => {});
  }

  function act(action, label) {
    if (!cards.length) return;
    const c = cards.shift();
    const body = {event_id: newId(), query_id: c.query_id, item_id: c.item_id, label: label,
                  note: note.value || null, seconds: (performance.now() - shownAt) / 1000};
    note.value = "";
    pending.push(key(c));
    setPending();
    show();
    chain = chain.then(() => send("/api/" + action, body))
      .then((data) => { pending.shift(); setPending(); update(data); })
      .catch(fail);
  }

  function undo() {
    pending.push("undo");
    setPending();
    const body = {event_id: newId()};
    chain = chain.then(() => send("/api/undo", body))
      .then((data) => { pending.shift(); setPending(); stage.dataset.key = "-"; update(data); })
      .catch(fail);
  }

  document.addEventListener("keydown", (e) => {
    if (e.target.matches("input, textarea")) {
      if (e.key === "Enter" || e.key === "Escape") { e.target.blur(); e.preventDefault(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;   // a held key judges once
    if (/^[1-9]$/.test(e.key) && Number(e.key) <= levels) act("judge", Number(e.key));
    else if (e.key === "s") act("skip", null);
    else if (e.key === "u") undo();
    else if (e.key === "n") note.focus();
    else if (e.key === "?") help.hidden = !help.hidden;
    else if (e.key === "Escape") help.hidden = true;
    else return;
    e.preventDefault();
  });
  for (const b of document.querySelectorAll("button.level")) {
    b.addEventListener("click", () => act("judge", Number(b.dataset.level)));
  }
  document.getElementById("skip").addEventListener("click", () => act("skip", null));
  document.getElementById("undo").addEventListener("click", undo);
  document.getElementById("help-button").addEventListener("click", () => { help.hidden = !help.hidden; });
  show();
})();
