// Slack's mrkdwn as HTML: *bold*, _italic_, ~strike~, `code`, ```pre```, > quotes, :emoji:,
// and the <...> entities: links, user and group mentions, channels, and dates shown in the
// reader's own time zone. Text arrives escaped the Slack way (&amp; &lt; &gt;); everything
// that reaches the page is HTML-escaped here, so a message can never inject markup.

const EMOJI = {
  arrow_forward: "▶️", arrow_up_small: "🔼", arrows_counterclockwise: "🔄",
  ballot_box_with_check: "☑️", bar_chart: "📊", double_vertical_bar: "⏸️", eyes: "👀",
  grey_question: "❔", hourglass: "⌛", hourglass_flowing_sand: "⏳", information_source: "ℹ️",
  large_green_circle: "🟢", leftwards_arrow_with_hook: "↩️", no_entry: "⛔", raised_hand: "✋",
  red_circle: "🔴", rewind: "⏪", rocket: "🚀", rotating_light: "🚨", tada: "🎉",
  warning: "⚠️", white_check_mark: "✅", white_circle: "⚪", x: "❌",
};

export function escapeHtml(text) {
  return String(text)
    .replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;").replaceAll("'", "&#39;");
}

function unescapeSlack(text) {
  return text.replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&amp;", "&");
}

export function emojify(html) {
  return html.replace(/:([a-z0-9_+-]+):/g, (whole, name) => EMOJI[name] ?? whole);
}

export function plainText(text, { emoji = true } = {}) {
  const html = escapeHtml(text);
  return emoji ? emojify(html) : html;
}

// `dir` knows people, groups and channels by id, and who is reading (`dir.me`).
export function mrkdwn(text, dir) {
  const saved = [];
  const keep = (html) => `\u0001${saved.push(html) - 1}\u0002`;
  let out = String(text ?? "");
  out = out.replace(/<([^<>\n]+)>/g, (_, inner) => keep(entity(inner, dir)));
  out = out.replace(/```\n?([\s\S]*?)```/g, (_, code) => keep(`<pre>${codeText(code)}</pre>`));
  out = out.replace(/`([^`\n]+)`/g, (_, code) => keep(`<code>${codeText(code)}</code>`));
  out = escapeHtml(unescapeSlack(out));
  const edge = "(^|[\\s(\\u0002\"'])";
  const end = "(?=$|[\\s).,!?:;\"'\\u0001])";
  out = out.replace(new RegExp(`${edge}\\*(?!\\s)([^*\\n]+?)\\*${end}`, "g"), "$1<b>$2</b>");
  out = out.replace(new RegExp(`${edge}_(?!\\s)([^_\\n]+?)_${end}`, "g"), "$1<i>$2</i>");
  out = out.replace(new RegExp(`${edge}~(?!\\s)([^~\\n]+?)~${end}`, "g"), "$1<s>$2</s>");
  out = out.replace(/^&gt; ?(.*)$/gm, '<span class="quote">$1</span>');
  out = emojify(out).replaceAll("\n", "<br>");
  // Entities can sit inside code spans, so restore until nothing is left to restore.
  while (/\u0001\d+\u0002/.test(out)) {
    out = out.replace(/\u0001(\d+)\u0002/g, (_, i) => saved[Number(i)]);
  }
  return out;
}

function codeText(code) {
  // Code keeps its characters; only the entities already taken out come back in it.
  return escapeHtml(unescapeSlack(code)).replace(/&#39;/g, "'");
}

function entity(inner, dir) {
  const [target, label] = splitOnce(inner, "|");
  if (target.startsWith("@")) {
    const user = dir.users[target.slice(1)];
    const name = user ? user.real_name : label || target.slice(1);
    const me = target.slice(1) === dir.me ? " me" : "";
    return `<span class="mention${me}">@${escapeHtml(name)}</span>`;
  }
  if (target.startsWith("!subteam^")) {
    const id = target.slice("!subteam^".length);
    const handle = dir.groups[id]?.handle ?? (label || id).replace(/^@/, "");
    const me = (dir.groups[id]?.members ?? []).includes(dir.me) ? " me" : "";
    return `<span class="mention group${me}">@${escapeHtml(handle)}</span>`;
  }
  if (target.startsWith("#")) {
    const name = dir.channels[target.slice(1)] ?? label ?? target.slice(1);
    return `<span class="mention channel">#${escapeHtml(name)}</span>`;
  }
  if (target.startsWith("!date^")) {
    return dateEntity(target, label);
  }
  if (["!here", "!channel", "!everyone"].includes(target)) {
    return `<span class="mention me">@${target.slice(1)}</span>`;
  }
  if (/^(https?:|mailto:)/.test(target)) {
    return link(target, label || target);
  }
  return escapeHtml(unescapeSlack(label || target));
}

function link(url, label) {
  // A permalink into this workspace opens the thread here instead of slack.com.
  const found = url.match(/\/archives\/(C\w+)\/p(\d{10})(\d{6})(?:\?thread_ts=([\d.]+))?/);
  const thread = found ? found[4] || `${found[2]}.${found[3]}` : "";
  const data = thread ? ` data-thread="${escapeHtml(thread)}"` : "";
  return `<a href="${escapeHtml(url)}" target="_blank" rel="noreferrer"${data}>${escapeHtml(
    unescapeSlack(label),
  )}</a>`;
}

function splitOnce(text, separator) {
  const at = text.indexOf(separator);
  return at < 0 ? [text, ""] : [text.slice(0, at), text.slice(at + 1)];
}

// <!date^1392734382^{date_short_pretty} at {time}^optional_link|fallback>
function dateEntity(target, fallback) {
  const [, seconds, pattern, url] = target.split("^");
  const when = new Date(Number(seconds) * 1000);
  if (Number.isNaN(when.getTime()) || !pattern) return escapeHtml(unescapeSlack(fallback));
  const text = pattern.replace(/\{(\w+)\}/g, (whole, token) => dateToken(token, when) ?? whole);
  const shown = `<time datetime="${when.toISOString()}" title="${escapeHtml(
    when.toString(),
  )}">${escapeHtml(text)}</time>`;
  return url && /^https?:/.test(url) ? link(url, text) : shown;
}

function dateToken(token, when) {
  const date = (options) => when.toLocaleDateString(undefined, options);
  const long = { weekday: "long", month: "long", day: "numeric", year: "numeric" };
  const plain = { month: "long", day: "numeric", year: "numeric" };
  const short = { month: "short", day: "numeric", year: "numeric" };
  const pretty = (options) => relativeDay(when) ?? date(options);
  switch (token) {
    case "date_num": {
      const pad = (n) => String(n).padStart(2, "0");
      return `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())}`;
    }
    case "date": return date(plain);
    case "date_short": return date(short);
    case "date_long": return date(long);
    case "date_pretty": return pretty(plain);
    case "date_short_pretty": return pretty(short);
    case "date_long_pretty": return pretty(long);
    case "time": return when.toLocaleTimeString(undefined, { hour: "numeric", minute: "2-digit" });
    case "time_secs": return when.toLocaleTimeString();
    case "ago": return ago(when);
    default: return null;
  }
}

function relativeDay(when) {
  const day = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const diff = Math.round((day(when) - day(new Date())) / 86_400_000);
  return { [-1]: "Yesterday", 0: "Today", 1: "Tomorrow" }[diff] ?? null;
}

function ago(when) {
  const seconds = Math.round((when.getTime() - Date.now()) / 1000);
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60]]) {
    if (Math.abs(seconds) >= size) return format.format(Math.round(seconds / size), unit);
  }
  return format.format(seconds, "second");
}
