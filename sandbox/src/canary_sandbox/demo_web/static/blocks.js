// Block Kit as DOM: the blocks the bot really sent, drawn the way Slack draws them.
// Buttons call `ctx.onButton(element, button)`; everything else is display only.

import { escapeHtml, mrkdwn, plainText } from "./mrkdwn.js";

export function text(object, ctx) {
  if (!object) return "";
  if (object.type === "mrkdwn") return mrkdwn(object.text, ctx.dir);
  return plainText(object.text, { emoji: object.emoji !== false });
}

function el(tag, className, html) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (html !== undefined) node.innerHTML = html;
  return node;
}

export function renderBlocks(blocks, ctx) {
  const root = el("div", "blocks");
  for (const block of blocks ?? []) {
    const draw = DRAW[block.type] ?? unsupported;
    root.append(draw(block, ctx));
  }
  return root;
}

const DRAW = {
  section(block, ctx) {
    const node = el("div", "block section");
    const main = el("div", "section-main");
    if (block.text) main.append(el("div", "mrkdwn", text(block.text, ctx)));
    if (block.fields?.length) {
      const grid = el("div", "fields");
      for (const field of block.fields) grid.append(el("div", "field mrkdwn", text(field, ctx)));
      main.append(grid);
    }
    node.append(main);
    if (block.accessory) node.append(element(block.accessory, ctx, "accessory"));
    return node;
  },
  header(block, ctx) {
    return el("div", "block header", text(block.text, ctx));
  },
  divider() {
    return el("hr", "block divider");
  },
  context(block, ctx) {
    const node = el("div", "block context");
    for (const item of block.elements ?? []) {
      if (item.type === "image") {
        const img = el("img", "context-image");
        img.src = item.image_url;
        img.alt = item.alt_text ?? "";
        node.append(img);
      } else {
        node.append(el("span", "mrkdwn", text(item, ctx)));
      }
    }
    return node;
  },
  image(block, ctx) {
    const node = el("figure", "block image");
    if (block.title) node.append(el("figcaption", "", text(block.title, ctx)));
    const img = el("img");
    img.src = block.image_url ?? block.slack_file?.url ?? "";
    img.alt = block.alt_text ?? "";
    node.append(img);
    return node;
  },
  actions(block, ctx) {
    const node = el("div", "block actions");
    for (const item of block.elements ?? []) node.append(element(item, ctx, "", block));
    return node;
  },
  input(block, ctx) {
    const node = el("label", "block input");
    node.append(el("span", "input-label", text(block.label, ctx)));
    const spec = block.element ?? {};
    const field = el(spec.multiline ? "textarea" : "input", "input-field");
    field.dataset.blockId = block.block_id;
    field.dataset.actionId = spec.action_id;
    if (spec.max_length) field.maxLength = spec.max_length;
    if (spec.placeholder) field.placeholder = spec.placeholder.text;
    if (spec.initial_value) field.value = spec.initial_value;
    node.append(field, el("span", "input-error"));
    if (block.hint) node.append(el("span", "input-hint", text(block.hint, ctx)));
    return node;
  },
};

function element(item, ctx, className, block) {
  if (item.type === "button") {
    const button = el("button", `btn ${item.style ?? ""} ${className}`.trim(), text(item.text, ctx));
    button.type = "button";
    button.dataset.actionId = item.action_id ?? "";
    if (item.url) {
      button.addEventListener("click", () => window.open(item.url, "_blank", "noreferrer"));
    } else {
      button.addEventListener("click", () => ctx.onButton(item, button, block));
    }
    return button;
  }
  if (item.type === "image") {
    const img = el("img", `accessory-image ${className}`);
    img.src = item.image_url;
    img.alt = item.alt_text ?? "";
    return img;
  }
  return el("span", `unsupported ${className}`, `[${escapeHtml(item.type)}]`);
}

function unsupported(block) {
  return el("div", "block unsupported", `This demo does not draw <code>${escapeHtml(block.type)}</code> blocks.`);
}
