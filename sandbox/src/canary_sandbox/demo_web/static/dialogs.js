// Clicking buttons, and what pops up over the page: confirm dialogs, the bot's modals
// (views.open, submitted back as view_submission), and full-size charts.

import { renderBlocks } from "./blocks.js";
import { mrkdwn, plainText } from "./mrkdwn.js";
import { $, api, el, page, toast } from "./page.js";

export async function press(message, item, button, ephemeral) {
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
    page.refresh();
  }
}

// Slack asks before sending a click whose button has a `confirm` object; so does the page.
function confirmDialog(confirm) {
  return new Promise((resolve) => {
    const overlay = el("div", "overlay");
    const box = el("div", "dialog confirm-dialog");
    box.setAttribute("role", "alertdialog");
    box.append(el("h2", "", plainText(confirm.title?.text ?? "Are you sure?")));
    const text = confirm.text ?? {};
    const body = text.type === "mrkdwn" ? mrkdwn(text.text, page.dir) : plainText(text.text ?? "");
    box.append(el("div", "dialog-body mrkdwn", body));
    const deny = el("button", "btn", plainText(confirm.deny?.text ?? "Cancel"));
    const style = confirm.style === "danger" ? "danger" : "primary";
    const ok = el("button", `btn ${style} confirm`, plainText(confirm.confirm?.text ?? "Yes"));
    const close = (answer) => {
      overlay.remove();
      document.removeEventListener("keydown", onKey);
      resolve(answer);
    };
    const onKey = (event) => event.key === "Escape" && close(false);
    deny.addEventListener("click", () => close(false));
    ok.addEventListener("click", () => close(true));
    document.addEventListener("keydown", onKey);
    const actions = el("div", "dialog-actions");
    actions.append(deny, ok);
    box.append(actions);
    overlay.append(box);
    $("#modal-root").append(overlay);
    ok.focus();
  });
}

// The modal the bot opened for this user, if any (the reject reason).
export function renderView(views) {
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
  const cancel = el("button", "btn", plainText(view.close?.text ?? "Cancel"));
  cancel.type = "button";
  const submit = el("button", "btn primary submit", plainText(view.submit?.text ?? "Submit"));
  submit.type = "submit";
  const actions = el("div", "dialog-actions");
  actions.append(cancel, submit);
  box.append(actions);
  overlay.append(box);
  $("#modal-root").append(overlay);
  box.querySelector(".input-field")?.focus();

  const close = async () => {
    overlay.remove();
    await api(`/api/views/${view.id}/close`, { user: page.me }).catch(() => {});
    page.refresh();
  };
  x.addEventListener("click", close);
  cancel.addEventListener("click", close);
  box.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const answer = await api(`/api/views/${view.id}/submit`, { user: page.me, values: values(box) });
      if (answer.ok) {
        overlay.remove();
      } else {
        for (const field of box.querySelectorAll(".input-field")) {
          const error = field.parentElement.querySelector(".input-error");
          error.textContent = answer.errors[field.dataset.blockId] ?? "";
        }
      }
    } catch (error) {
      toast(error.message);
    } finally {
      submit.disabled = false;
      page.refresh();
    }
  });
}

// view.state.values as Slack sends it: {block_id: {action_id: {type, value}}}.
function values(form) {
  const state = {};
  for (const field of form.querySelectorAll(".input-field")) {
    state[field.dataset.blockId] = {
      [field.dataset.actionId]: { type: "plain_text_input", value: field.value },
    };
  }
  return state;
}

export function lightbox(src, alt) {
  const overlay = el("div", "overlay lightbox");
  const img = el("img");
  img.src = src;
  img.alt = alt;
  overlay.append(img);
  overlay.addEventListener("click", () => overlay.remove());
  $("#modal-root").append(overlay);
}
