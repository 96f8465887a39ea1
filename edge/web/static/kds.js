// The kitchen display: cards kept live over server-sent events (see edge/web/live.py).
// Every snapshot replaces the whole state; upserts and removes apply by card id, so one
// applied twice changes nothing. A jump in the stream's seq, a silent stream, or a closed
// one make us reconnect, and the server starts again with a snapshot. Text from orders is
// only ever set with textContent: never parsed as markup.
"use strict";

(function () {
  const body = document.body;
  const eventsUrl = body.dataset.events;
  const bumpUrl = body.dataset.bump;
  const recallUrl = body.dataset.recall;
  const warnMs = Number(body.dataset.warnSeconds) * 1000;
  const lateMs = Number(body.dataset.lateSeconds) * 1000;
  const showStation = body.dataset.all === "true";
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const cardsBox = document.getElementById("cards");
  const alldayBody = document.querySelector("#allday tbody");
  const live = document.getElementById("live");
  const count = document.getElementById("count");
  const message = document.getElementById("message");
  const SILENCE_MS = 40000; // the server ticks every 15 s

  let cards = new Map(); // card_id -> card
  const shown = new Map(); // card_id -> {el, json}
  let epoch = null;
  let seq = -1;
  let skewMs = 0; // server clock minus ours
  let source = null;
  let lastHeard = 0;
  let retryMs = 1000;
  let snapshots = 0;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setLive(on, text) {
    live.textContent = text;
    live.className = "live " + (on ? "on" : "off");
    body.dataset.live = on ? "true" : "false";
  }

  function say(text, bad) {
    message.hidden = !text;
    message.textContent = text || "";
    message.className = "message" + (bad ? " bad" : "");
  }

  function heard(data) {
    lastHeard = Date.now();
    if (data.now) skewMs = Date.parse(data.now) - Date.now();
  }

  // -- the stream -----------------------------------------------------------------------

  function connect() {
    if (source) source.close();
    setLive(false, "connecting…");
    source = new EventSource(eventsUrl);
    lastHeard = Date.now();
    source.addEventListener("snapshot", (e) => {
      const data = JSON.parse(e.data);
      heard(data);
      epoch = data.epoch;
      seq = data.seq;
      cards = new Map(data.cards.map((c) => [c.card_id, c]));
      snapshots += 1;
      body.dataset.snapshots = String(snapshots);
      body.dataset.epoch = epoch;
      retryMs = 1000;
      setLive(true, "live");
      render();
    });
    for (const name of ["upsert", "remove", "tick"]) {
      source.addEventListener(name, (e) => delta(name, JSON.parse(e.data)));
    }
    source.onerror = () => {
      setLive(false, "reconnecting…");
      // A refused or broken answer closes an EventSource for good: open a new one.
      if (source.readyState === EventSource.CLOSED) later();
    };
  }

  function later() {
    if (source) source.close();
    source = null;
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 5000);
  }

  function delta(name, data) {
    if (data.epoch !== epoch || data.seq <= seq) return; // not this stream's, or seen
    if (data.seq !== seq + 1) {
      later(); // a gap: start again from a snapshot
      return;
    }
    seq = data.seq;
    heard(data);
    if (name === "upsert") cards.set(data.card.card_id, data.card);
    else if (name === "remove") cards.delete(data.card_id);
    if (name !== "tick") render();
  }

  setInterval(() => {
    if (source && Date.now() - lastHeard > SILENCE_MS) later();
  }, 5000);

  // -- drawing ----------------------------------------------------------------------------

  function drawCard(card) {
    const flags = new Set(card.flags);
    const node = el("article", "card");
    node.dataset.cardId = card.card_id;
    node.dataset.orderId = card.order_id;
    node.dataset.startedAt = card.started_at;
    if (flags.has("CANCELLED")) node.classList.add("cancelled");
    if (flags.has("HOLD")) node.classList.add("hold");

    const head = el("header", "card-head");
    head.append(el("span", "kind kind-" + card.kind.toLowerCase(), card.kind));
    head.append(el("span", "order", card.display_id));
    head.append(el("span", "timer", ""));
    node.append(head);
    const sub = el("div", "card-sub");
    sub.append(el("span", "where", card.where));
    sub.append(el("span", "channel", showStation ? card.station_id + " · " + card.channel
      : card.channel));
    node.append(sub);

    if (card.flags.length) {
      const line = el("div", "flags");
      for (const flag of card.flags) line.append(el("span", "flag flag-" + flag.toLowerCase(), flag));
      node.append(line);
    }

    const list = el("ul", "items");
    for (const item of card.items) {
      const li = el("li", "item" + (item.voided ? " voided" : ""));
      const top = el("div", "item-line");
      top.append(el("span", "qty", item.qty + "×"));
      top.append(el("span", "name", item.name));
      if (item.voided) top.append(el("span", "void-tag", "VOID"));
      li.append(top);
      if (item.modifiers.length) {
        const mods = el("ul", "mods");
        for (const m of item.modifiers) mods.append(el("li", "mod", m));
        li.append(mods);
      }
      if (item.note) li.append(el("div", "note", item.note));
      if (item.allergens.length) {
        li.append(el("div", "allergens", "ALLERGENS: " + item.allergens.join(", ")));
      }
      list.append(li);
    }
    node.append(list);
    if (card.note) node.append(el("p", "order-note", card.note));

    const foot = el("footer", "card-foot");
    const bump = el("button", "bump", "Bump");
    bump.type = "button";
    bump.addEventListener("click", () => bumpCard(card.card_id, node));
    foot.append(bump);
    node.append(foot);
    return node;
  }

  function render() {
    const ordered = [...cards.values()].sort(
      (a, b) => a.started_at.localeCompare(b.started_at) || a.card_id.localeCompare(b.card_id));
    for (const [id, entry] of shown) {
      if (!cards.has(id)) {
        entry.el.remove();
        shown.delete(id);
      }
    }
    let previous = null;
    for (const card of ordered) {
      const json = JSON.stringify(card);
      let entry = shown.get(card.card_id);
      if (!entry || entry.json !== json) {
        const node = drawCard(card);
        if (entry) entry.el.replaceWith(node);
        entry = { el: node, json: json };
        shown.set(card.card_id, entry);
      }
      const want = previous ? previous.nextSibling : cardsBox.firstChild;
      if (want !== entry.el) cardsBox.insertBefore(entry.el, want);
      previous = entry.el;
    }
    count.textContent = cards.size === 1 ? "1 ticket" : cards.size + " tickets";
    allDay();
    tickTimers();
  }

  function allDay() {
    const totals = new Map();
    for (const card of cards.values()) {
      if (card.flags.includes("CANCELLED")) continue;
      for (const item of card.items) {
        if (!item.voided) totals.set(item.name, (totals.get(item.name) || 0) + item.qty);
      }
    }
    const rows = [...totals.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    alldayBody.replaceChildren(...rows.map(([name, qty]) => {
      const tr = el("tr", "allday-row");
      tr.append(el("td", "allday-qty", qty), el("td", "allday-name", name));
      return tr;
    }));
  }

  function tickTimers() {
    const now = Date.now() + skewMs;
    for (const { el: node } of shown.values()) {
      const age = Math.max(0, now - Date.parse(node.dataset.startedAt));
      const secs = Math.floor(age / 1000);
      const text = String(Math.floor(secs / 60)).padStart(2, "0") + ":" +
        String(secs % 60).padStart(2, "0");
      node.querySelector(".timer").textContent = text;
      const level = age >= lateMs ? "late" : age >= warnMs ? "warn" : "fresh";
      if (node.dataset.level !== level) {
        node.dataset.level = level;
        node.classList.remove("fresh", "warn", "late");
        node.classList.add(level);
      }
    }
  }
  setInterval(tickTimers, 1000);

  // -- actions ----------------------------------------------------------------------------

  async function post(url, payload) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(payload),
    });
    const text = await response.text();
    if (!response.ok) {
      const login = response.status === 401 ? " Log in (top right) to act." : "";
      throw new Error(text.trim() + login);
    }
    return text ? JSON.parse(text) : {};
  }

  async function bumpCard(cardId, node) {
    node.classList.add("busy");
    try {
      await post(bumpUrl, { card_id: cardId });
      say("");
      cards.delete(cardId); // the stream says so too; twice changes nothing
      render();
    } catch (err) {
      node.classList.remove("busy");
      say(err.message, true);
    }
  }

  document.getElementById("recall").addEventListener("click", async () => {
    try {
      const result = await post(recallUrl, {});
      say(result.card_id ? "" : "Nothing to recall", !result.card_id);
    } catch (err) {
      say(err.message, true);
    }
  });

  connect();
})();
