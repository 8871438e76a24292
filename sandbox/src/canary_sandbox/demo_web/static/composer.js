// The message box: `/canary ...` goes to the bot as a signed slash command; typing `/` lists
// the subcommands, as Slack's own autocomplete does.

import { escapeHtml } from "./mrkdwn.js";
import { $, api, el, page, toast } from "./page.js";

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
  page.refresh();
}

function hints() {
  const box = $("#composer-input");
  const list = $("#hints");
  const words = box.value.trimStart().split(/\s+/);
  if (!words[0].startsWith("/") || box.value.includes("\n") || words.length > 2) {
    list.hidden = true;
    return;
  }
  const typed = words.join(" ");
  const matching = COMMANDS.filter(([sub]) => `/canary ${sub}`.startsWith(typed));
  list.hidden = matching.length === 0;
  list.replaceChildren(
    ...matching.map(([sub, usage, about]) => {
      const item = el("button", "hint");
      item.type = "button";
      item.innerHTML = `<b>/canary ${sub}</b> <span class="usage">${escapeHtml(usage)}</span>
        <span class="about">${escapeHtml(about)}</span>`;
      item.addEventListener("click", () => fill(`/canary ${sub} `));
      return item;
    }),
  );
}

export function fill(text) {
  const box = $("#composer-input");
  box.value = text;
  box.focus();
  hints();
}

export function wireComposer() {
  const box = $("#composer-input");
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      send();
    }
  });
  box.addEventListener("input", hints);
  $("#send").addEventListener("click", send);
}
