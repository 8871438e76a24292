// The demo workspace: one Slack-like channel, its threads, and the demo's own controls.
// Every action goes to the demo server, which sends the bot the signed request Slack would;
// the page then shows what the emulated Slack holds, polled a little more than once a second.

import { fill, wireComposer } from "./composer.js";
import { renderView } from "./dialogs.js";
import { avatar, items, keepAtBottom, sync } from "./messages.js";
import { escapeHtml } from "./mrkdwn.js";
import { $, api, el, page, toast } from "./page.js";

const POLL_MS = 800;
const DEFAULT_USER = "U01ALICE";
let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const query = new URLSearchParams({ user: page.me, thread: page.thread ?? "" });
    render(await api(`/api/state?${query}`));
    document.body.classList.remove("offline");
  } catch (error) {
    if (error.message.startsWith("Unknown user")) {
      page.me = DEFAULT_USER; // a stale choice remembered from another demo
    } else {
      document.body.classList.add("offline");
    }
  }
  timer = setTimeout(refresh, POLL_MS);
}

function render(data) {
  page.data = data;
  page.dir = { ...data.directory, me: data.me };
  renderPeople(data);
  renderTraffic(data.traffic);
  renderChannel(data);
  renderThread(data);
  renderView(data.views);
}

function renderChannel(data) {
  const inChannel = data.ephemerals.filter((e) => !e.thread_ts);
  $("#empty").hidden = data.messages.length + inChannel.length > 0;
  keepAtBottom($("#messages"), () => sync($("#message-list"), items(data.messages, inChannel, {})));
}

function renderThread(data) {
  document.body.classList.toggle("thread-open", Boolean(page.thread));
  if (!page.thread) return;
  const root = data.messages.find((m) => m.ts === page.thread);
  const replies = data.thread.filter((m) => m.thread_ts === page.thread);
  const ephemerals = data.ephemerals.filter((e) => e.thread_ts === page.thread);
  const count = replies.length === 1 ? "1 reply" : `${replies.length} replies`;
  const list = [
    ...(root ? items([root], [], { inThread: true }) : []),
    { key: "separator", sig: count, draw: () => el("div", "replies-separator", `<span>${count}</span>`) },
    ...items(replies, ephemerals, { inThread: true }),
  ];
  keepAtBottom($("#thread-scroll"), () => sync($("#thread-list"), list));
}

function openThread(ts) {
  page.thread = ts;
  $("#thread-list").replaceChildren();
  refresh();
}

// "Act as": whose eyes the page sees with, and whose name the next command or click carries.
function renderPeople(data) {
  const list = $("#people");
  const people = Object.entries(data.directory.users).filter(([, user]) => user.role !== "app");
  const sig = `${page.me}|${people.length}`;
  if (list.dataset.sig === sig) return;
  list.dataset.sig = sig;
  list.replaceChildren(
    ...people.map(([id, user]) => {
      const item = el("button", `person${id === page.me ? " active" : ""}`);
      item.type = "button";
      item.dataset.user = id;
      const label = el("span", "person-label");
      label.append(el("span", "person-name", escapeHtml(user.real_name)));
      label.append(el("span", "person-role", escapeHtml(user.role)));
      item.append(avatar(id, "avatar small"), label);
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
  $("#canary-errors").textContent = `${(traffic.canary_error_rate * 100).toFixed(1)}%`;
  $("#canary-errors").classList.toggle("bad", traffic.canary_broken);
  const button = $("#break");
  button.textContent = traffic.canary_broken ? "🩹 Heal the canary" : "💥 Break the canary";
  button.classList.toggle("broken", traffic.canary_broken);
  button.dataset.broken = String(traffic.canary_broken);
  $("#metrics-source").textContent = traffic.metrics;
}

function wire() {
  page.refresh = refresh;
  page.openThread = openThread;
  wireComposer();
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
    chip.addEventListener("click", () => fill(chip.textContent));
  }
  // A permalink to a thread of this channel (the alert's "rollout thread") opens it here.
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
