// The demo workspace: one Slack-like channel, its threads, and the controls of the demo.
// Every action goes to the demo server, which sends the bot the signed request Slack would;
// the page then shows what the emulated Slack holds, polled a little more than once a second.

import { renderBlocks } from "./blocks.js";
import { escapeHtml, mrkdwn, plainText } from "./mrkdwn.js";

const POLL_MS = 800;
const DEFAULT_USER = "U01ALICE";
const COLORS = ["#2bac76", "#e8912d", "#1d9bd1", "#e01e5a", "#9b59b6"];
const COMMANDS = [
  ["start", "<service> <tag-or-image> [--steps 5,25,50] [--interval 30m] [--no-approval]", "Start a canary rollout"],
  ["status", "[service]", "Where a rollout stands"],
  ["list", "", "Active rollouts"],
  ["pause", "<service> [reason...]", "Hold the canary at its weight"],
  ["resume", "<service>", "Carry on after a pause"],
  ["promote", "<service>", "Skip the remaining steps, go to approval"],
  ["rollback", "<service> [reason...]", "All traffic back to stable now"],
  ["history", "<service>", "Past rollouts of a service"],
  ["help", "", "What /canary can do"],
];

const $ = (selector) => document.querySelector(selector);
const page = {
  me: localStorage.getItem("canary-demo-user") || DEFAULT_USER,
  thread: null,
  data: null,
  timer: null,
  view: null,
};

// ------------------------------------------------------------------ talking to the demo server

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

async function refresh() {
  clearTimeout(page.timer);
  try {
    const query = new URLSearchParams({ user: page.me, thread: page.thread ?? "" });
    render(await api(`/api/state?${query}`));
    document.body.classList.remove("offline");
  } catch (error) {
    document.body.classList.add("offline");
  }
  page.timer = setTimeout(refresh, POLL_MS);
}

// ------------------------------------------------------------------ drawing

function el(tag, className, html) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (html !== undefined) node.innerHTML = html;
  return node;
}

function directory(data) {
  return { ...data.directory, me: data.me };
}

function render(data) {
  page.data = data;
  page.dir = directory(data);
  renderPeople(data);
  renderTraffic(data.traffic);
  renderChannel(data);
  renderThread(data);
  renderView(data.views);
}

function avatar(userId, className = "avatar") {
  const node = el("span", className);
  if (userId === page.data.bot) {
    node.classList.add("bot");
    node.textContent = "🐤";
  } else if (userId === "USLACKBOT") {
    node.classList.add("slackbot");
    node.textContent = "✱";
  } else {
    const ids = Object.keys(page.data.directory.users);
    node.style.background = COLORS[Math.max(0, ids.indexOf(userId)) % COLORS.length];
    node.textContent = (page.data.directory.users[userId]?.real_name ?? "?")[0];
  }
  return node;
}

function clock(ts) {
  return new Date(Number(ts) * 1000).toLocaleTimeString(undefined, {
    hour: "numeric",
    minute: "2-digit",
  });
}

// `compact`: a follow-up from the same author shortly after, drawn without name and avatar.
function drawMessage(message, { ephemeral = false, inThread = false, compact = false } = {}) {
  const node = el("div", `message${ephemeral ? " ephemeral" : ""}${compact ? " compact" : ""}`);
  const sender = author(message);
  const person = page.dir.users[sender] ?? { real_name: sender };
  const time = el("time", "", clock(message.ts));
  time.title = new Date(Number(message.ts) * 1000).toString();
  const body = el("div", "message-body");
  if (compact) {
    node.append(el("span", "gutter", clock(message.ts).replace(/\s*[AP]M$/i, "")));
  } else {
    node.append(avatar(sender));
    const meta = el("div", "meta");
    meta.append(el("span", "author", escapeHtml(person.real_name)));
    if (person.role === "app") meta.append(el("span", "app-badge", "APP"));
    meta.append(time);
    body.append(meta);
  }
  const ctx = {
    dir: page.dir,
    onButton: (item, button) => press(message, item, button, ephemeral),
  };
  if (message.blocks?.length) {
    body.append(renderBlocks(message.blocks, ctx));
  } else {
    body.append(el("div", "mrkdwn", mrkdwn(message.text, page.dir)));
  }
  if (message.edited) (body.querySelector(".meta") ?? body).append(el("span", "edited", "(edited)"));
  for (const file of message.files ?? []) body.append(drawFile(file));
  if (ephemeral) body.append(el("div", "only-you", "👁 Only visible to you"));
  if (!inThread && message.reply_count) body.append(threadLink(message));
  node.append(body);
  return node;
}

function drawFile(file) {
  const node = el("figure", "file");
  node.append(el("figcaption", "", plainText(file.title || file.name)));
  const img = el("img");
  img.src = `/files/${encodeURIComponent(file.id)}`;
  img.alt = file.title || file.name;
  img.addEventListener("click", () => lightbox(img.src, img.alt));
  node.append(img);
  return node;
}

function threadLink(message) {
  const link = el("button", "thread-link");
  link.type = "button";
  link.append(avatar(page.data.bot, "avatar mini"));
  const count = message.reply_count === 1 ? "1 reply" : `${message.reply_count} replies`;
  link.append(el("span", "replies", count));
  link.append(el("span", "last", `Last reply ${clock(message.latest_reply)}`));
  link.addEventListener("click", () => openThread(message.ts));
  return link;
}

// Keeps unchanged messages' DOM nodes, so images do not flicker and scroll positions hold.
function sync(container, items) {
  const old = new Map([...container.children].map((node) => [node.dataset.key, node]));
  let previous = null;
  for (const item of items) {
    let node = old.get(item.key);
    if (!node || node.dataset.sig !== item.sig) {
      const fresh = item.draw();
      fresh.dataset.key = item.key;
      fresh.dataset.sig = item.sig;
      if (node) node.replaceWith(fresh);
      node = fresh;
    }
    old.delete(item.key);
    const expected = previous ? previous.nextSibling : container.firstChild;
    if (expected !== node) container.insertBefore(node, expected);
    previous = node;
  }
  for (const node of old.values()) node.remove();
}

// An ephemeral's `user` is who may see it; its author is the `sender`.
function author(message) {
  return message.sender ?? message.user;
}

function items(messages, ephemerals, options) {
  const all = [
    ...messages.map((m) => ({ m, ephemeral: false })),
    ...ephemerals.map((m) => ({ m, ephemeral: true })),
  ].sort((a, b) => Number(a.m.ts) - Number(b.m.ts));
  return all.map(({ m, ephemeral }, i) => {
    const before = all[i - 1];
    const compact = Boolean(
      before && !ephemeral && !before.ephemeral && !m.reply_count && !before.m.reply_count &&
        author(before.m) === author(m) && Number(m.ts) - Number(before.m.ts) < 300,
    );
    return {
      key: `${ephemeral ? "e" : "m"}${m.ts}`,
      sig: `${page.me}|${compact}|${JSON.stringify(m)}`,
      draw: () => drawMessage(m, { ...options, ephemeral, compact }),
    };
  });
}

function keepAtBottom(scroller, change) {
  const fresh = scroller.querySelector("[data-key]") === null;
  const atBottom = fresh || scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  change();
  if (atBottom) scroller.scrollTop = scroller.scrollHeight;
}

function renderChannel(data) {
  const inChannel = data.ephemerals.filter((e) => !e.thread_ts);
  $("#empty").hidden = data.messages.length + inChannel.length > 0;
  keepAtBottom($("#messages"), () => sync($("#message-list"), items(data.messages, inChannel, {})));
}

function renderThread(data) {
  const pane = $("#thread");
  document.body.classList.toggle("thread-open", Boolean(page.thread));
  if (!page.thread) return;
  const root = data.messages.find((m) => m.ts === page.thread);
  const replies = data.thread.filter((m) => m.thread_ts === page.thread);
  const ephemerals = data.ephemerals.filter((e) => e.thread_ts === page.thread);
  const list = [];
  if (root) list.push(...items([root], [], { inThread: true }));
  const count = replies.length === 1 ? "1 reply" : `${replies.length} replies`;
  list.push({ key: "separator", sig: count, draw: () => el("div", "replies-separator", `<span>${count}</span>`) });
  list.push(...items(replies, ephemerals, { inThread: true }));
  keepAtBottom($("#thread-scroll"), () => sync($("#thread-list"), list));
  pane.dataset.thread = page.thread;
}

function openThread(ts) {
  page.thread = ts;
  $("#thread-list").replaceChildren();
  refresh();
}

function renderPeople(data) {
  const list = $("#people");
  const people = Object.entries(data.directory.users).filter(([, u]) => u.role !== "app");
  const sig = `${page.me}|${people.length}`;
  if (list.dataset.sig === sig) return;
  list.dataset.sig = sig;
  list.replaceChildren(
    ...people.map(([id, user]) => {
      const item = el("button", `person${id === page.me ? " active" : ""}`);
      item.type = "button";
      item.dataset.user = id;
      item.append(avatar(id, "avatar small"));
      const label = el("span", "person-label");
      label.append(el("span", "person-name", escapeHtml(user.real_name)));
      label.append(el("span", "person-role", escapeHtml(user.role)));
      item.append(label);
      item.addEventListener("click", () => actAs(id));
      return item;
    }),
  );
  const me = data.directory.users[page.me];
  $("#me").replaceChildren(avatar(page.me, "avatar small"), el("span", "", escapeHtml(me.real_name)));
}

function actAs(user) {
  page.me = user;
  localStorage.setItem("canary-demo-user", user);
  page.view = null;
  $("#modal-root").replaceChildren();
  refresh();
}

function renderTraffic(traffic) {
  $("#canary-share").textContent = `${traffic.canary_weight}%`;
  $("#canary-bar").style.width = `${Math.min(100, traffic.canary_weight)}%`;
  const rate = `${(traffic.canary_error_rate * 100).toFixed(1)}%`;
  $("#canary-errors").textContent = rate;
  $("#canary-errors").classList.toggle("bad", traffic.canary_broken);
  const button = $("#break");
  button.textContent = traffic.canary_broken ? "🩹 Heal the canary" : "💥 Break the canary";
  button.classList.toggle("broken", traffic.canary_broken);
  button.dataset.broken = String(traffic.canary_broken);
  $("#metrics-source").textContent = traffic.metrics;
}

// ------------------------------------------------------------------ acting

async function press(message, item, button, ephemeral) {
  if (ephemeral) {
    toast("Buttons on messages only you can see are not part of this demo.");
    return;
  }
  if (item.confirm && !(await confirmDialog(item.confirm))) return;
  button.disabled = true;
  button.classList.add("busy");
  try {
    await api("/api/click", {
      user: page.me,
      channel: page.data.channel.id,
      ts: message.ts,
      action_id: item.action_id,
      value: item.value ?? null,
    });
  } catch (error) {
    toast(error.message);
  } finally {
    button.disabled = false;
    button.classList.remove("busy");
    refresh();
  }
}

function confirmDialog(confirm) {
  return new Promise((resolve) => {
    const ctx = { dir: page.dir };
    const overlay = el("div", "overlay");
    const box = el("div", "dialog confirm-dialog");
    box.setAttribute("role", "alertdialog");
    box.append(el("h2", "", plainText(confirm.title?.text ?? "Are you sure?")));
    const body = confirm.text?.type === "mrkdwn" ? mrkdwn(confirm.text.text, ctx.dir) : plainText(confirm.text?.text ?? "");
    box.append(el("div", "dialog-body mrkdwn", body));
    const actions = el("div", "dialog-actions");
    const deny = el("button", "btn", plainText(confirm.deny?.text ?? "Cancel"));
    const ok = el("button", `btn ${confirm.style === "danger" ? "danger" : "primary"} confirm`, plainText(confirm.confirm?.text ?? "Yes"));
    const close = (answer) => {
      overlay.remove();
      document.removeEventListener("keydown", onKey);
      resolve(answer);
    };
    const onKey = (event) => event.key === "Escape" && close(false);
    deny.addEventListener("click", () => close(false));
    ok.addEventListener("click", () => close(true));
    document.addEventListener("keydown", onKey);
    actions.append(deny, ok);
    box.append(actions);
    overlay.append(box);
    $("#modal-root").append(overlay);
    ok.focus();
  });
}

function renderView(views) {
  const view = views[0];
  if (!view) {
    if (page.view) $("#modal-root").querySelector(".view-overlay")?.remove();
    page.view = null;
    return;
  }
  if (page.view === view.id) return;
  page.view = view.id;
  const overlay = el("div", "overlay view-overlay");
  const box = el("form", "dialog modal");
  const header = el("div", "modal-header");
  header.append(el("h2", "", plainText(view.title?.text ?? "")));
  const x = el("button", "modal-x", "×");
  x.type = "button";
  header.append(x);
  box.append(header, renderBlocks(view.blocks, { dir: page.dir, onButton: () => {} }));
  const actions = el("div", "dialog-actions");
  const cancel = el("button", "btn", plainText(view.close?.text ?? "Cancel"));
  cancel.type = "button";
  const submit = el("button", "btn primary submit", plainText(view.submit?.text ?? "Submit"));
  submit.type = "submit";
  actions.append(cancel, submit);
  box.append(actions);
  overlay.append(box);
  $("#modal-root").append(overlay);
  box.querySelector(".input-field")?.focus();

  const close = async () => {
    overlay.remove();
    await api(`/api/views/${view.id}/close`, { user: page.me }).catch(() => {});
    refresh();
  };
  x.addEventListener("click", close);
  cancel.addEventListener("click", close);
  box.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = {};
    for (const field of box.querySelectorAll(".input-field")) {
      values[field.dataset.blockId] = {
        [field.dataset.actionId]: { type: "plain_text_input", value: field.value },
      };
    }
    submit.disabled = true;
    try {
      const answer = await api(`/api/views/${view.id}/submit`, { user: page.me, values });
      if (answer.ok) {
        overlay.remove();
      } else {
        for (const field of box.querySelectorAll(".input-field")) {
          field.parentElement.querySelector(".input-error").textContent = answer.errors[field.dataset.blockId] ?? "";
        }
      }
    } catch (error) {
      toast(error.message);
    } finally {
      submit.disabled = false;
      refresh();
    }
  });
}

async function send() {
  const box = $("#composer-input");
  const text = box.value.trim();
  if (!text) return;
  box.value = "";
  hints();
  try {
    await api("/api/command", { user: page.me, text });
  } catch (error) {
    toast(error.message);
  }
  refresh();
}

function hints() {
  const box = $("#composer-input");
  const list = $("#hints");
  const typed = box.value.trimStart();
  if (!typed.startsWith("/") || typed.includes("\n")) {
    list.hidden = true;
    return;
  }
  const matching = COMMANDS.filter(([sub]) => `/canary ${sub}`.startsWith(typed.split(/\s+/).slice(0, 2).join(" ")));
  list.hidden = matching.length === 0 || typed.split(/\s+/).length > 2;
  list.replaceChildren(
    ...matching.map(([sub, usage, about]) => {
      const item = el("button", "hint");
      item.type = "button";
      item.innerHTML = `<b>/canary ${sub}</b> <span class="usage">${escapeHtml(usage)}</span><span class="about">${escapeHtml(about)}</span>`;
      item.addEventListener("click", () => {
        box.value = `/canary ${sub} `;
        box.focus();
        hints();
      });
      return item;
    }),
  );
}

function toast(message) {
  const node = el("div", "toast", escapeHtml(message));
  $("#toasts").append(node);
  setTimeout(() => node.remove(), 4000);
}

function lightbox(src, alt) {
  const overlay = el("div", "overlay lightbox");
  const img = el("img");
  img.src = src;
  img.alt = alt;
  overlay.append(img);
  overlay.addEventListener("click", () => overlay.remove());
  $("#modal-root").append(overlay);
}

// ------------------------------------------------------------------ wiring

function wire() {
  const box = $("#composer-input");
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      send();
    }
  });
  box.addEventListener("input", hints);
  $("#send").addEventListener("click", send);
  $("#thread-close").addEventListener("click", () => {
    page.thread = null;
    refresh();
  });
  $("#break").addEventListener("click", async (event) => {
    const broken = event.currentTarget.dataset.broken !== "true";
    await api("/api/canary", { broken }).catch((error) => toast(error.message));
    refresh();
  });
  for (const chip of document.querySelectorAll(".try")) {
    chip.addEventListener("click", () => {
      box.value = chip.textContent;
      box.focus();
      hints();
    });
  }
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-thread]");
    if (link) {
      event.preventDefault();
      openThread(link.dataset.thread);
    }
  });
}

wire();
refresh();
