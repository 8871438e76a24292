// What every part of the page shares: the page's state, DOM helpers, and the demo server's API.

export const page = {
  me: localStorage.getItem("canary-demo-user") || "U01ALICE", // whose eyes the page sees with
  thread: null, // the root ts of the open thread
  data: null, // the last /api/state answer
  dir: null, // who is who, for mentions: users, groups, channels, and `me`
  view: null, // the id of the modal on screen
  refresh: () => {}, // set by app.js: poll now
  openThread: () => {}, // set by app.js
};

export const $ = (selector) => document.querySelector(selector);

export function el(tag, className, html) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (html !== undefined) node.innerHTML = html;
  return node;
}

// POST when there is a body; the server takes JSON only, and answers errors as {error}.
export async function api(path, body) {
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

export function toast(message) {
  const node = el("div", "toast");
  node.textContent = message;
  $("#toasts").append(node);
  setTimeout(() => node.remove(), 4000);
}
