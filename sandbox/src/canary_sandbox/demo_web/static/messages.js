// Messages as Slack lays them out: avatar, name, time, the Block Kit body, files, thread link;
// follow-ups from the same author within five minutes are drawn compact, without the header.

import { renderBlocks } from "./blocks.js";
import { lightbox, press } from "./dialogs.js";
import { escapeHtml, mrkdwn, plainText } from "./mrkdwn.js";
import { el, page } from "./page.js";

const COLORS = ["#2bac76", "#e8912d", "#1d9bd1", "#e01e5a", "#9b59b6"];
const GROUP_WITHIN_S = 300;

export function avatar(userId, className = "avatar") {
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

export function clock(ts) {
  return new Date(Number(ts) * 1000).toLocaleTimeString(undefined, {
    hour: "numeric",
    minute: "2-digit",
  });
}

// An ephemeral's `user` is who may see it; its author is the `sender`.
function author(message) {
  return message.sender ?? message.user;
}

function drawMessage(message, { ephemeral = false, inThread = false, compact = false } = {}) {
  const node = el("div", `message${ephemeral ? " ephemeral" : ""}${compact ? " compact" : ""}`);
  const sender = author(message);
  const person = page.dir.users[sender] ?? { real_name: sender };
  const body = el("div", "message-body");
  if (compact) {
    node.append(el("span", "gutter", clock(message.ts).replace(/\s*[AP]M$/i, "")));
  } else {
    node.append(avatar(sender));
    const meta = el("div", "meta");
    meta.append(el("span", "author", escapeHtml(person.real_name)));
    if (person.role === "app") meta.append(el("span", "app-badge", "APP"));
    const time = el("time", "", clock(message.ts));
    time.title = new Date(Number(message.ts) * 1000).toString();
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
  link.addEventListener("click", () => page.openThread(message.ts));
  return link;
}

// Messages and ephemerals in time order, as items for `sync`.
export function items(messages, ephemerals, options) {
  const all = [
    ...messages.map((m) => ({ m, ephemeral: false })),
    ...ephemerals.map((m) => ({ m, ephemeral: true })),
  ].sort((a, b) => Number(a.m.ts) - Number(b.m.ts));
  return all.map(({ m, ephemeral }, i) => {
    const before = all[i - 1];
    const compact = Boolean(
      before && !ephemeral && !before.ephemeral && !m.reply_count && !before.m.reply_count &&
        author(before.m) === author(m) && Number(m.ts) - Number(before.m.ts) < GROUP_WITHIN_S,
    );
    return {
      key: `${ephemeral ? "e" : "m"}${m.ts}`,
      sig: `${page.me}|${compact}|${JSON.stringify(m)}`,
      draw: () => drawMessage(m, { ...options, ephemeral, compact }),
    };
  });
}

// Keeps unchanged messages' DOM nodes, so images do not flicker and scroll positions hold.
export function sync(container, list) {
  const old = new Map([...container.children].map((node) => [node.dataset.key, node]));
  let previous = null;
  for (const item of list) {
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

// Follow new messages only when the reader was already at the bottom (or nothing was shown).
export function keepAtBottom(scroller, change) {
  const fresh = scroller.querySelector("[data-key]") === null;
  const atBottom = fresh || scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  change();
  if (atBottom) scroller.scrollTop = scroller.scrollHeight;
}
