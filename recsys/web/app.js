// The demo article page: one article, a reaction bar, and the three boxes filled from GET /page/{id}.
// The reader's id and history live in localStorage; views, reactions and headline clicks (with the list and
// position they were in) are POSTed to /events.
"use strict";

const HISTORY_KEY = "recsys-history";
const READER_KEY = "recsys-reader";
const BOX_SIZE = 6;

function readerId() {
  let id = localStorage.getItem(READER_KEY);
  if (!id) {
    id = "web-" + Math.random().toString(36).slice(2, 12);
    localStorage.setItem(READER_KEY, id);
  }
  return id;
}

function history() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]"); } catch { return []; }
}

function remember(articleId) {
  const kept = history().filter((id) => id !== articleId);
  kept.push(articleId);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(kept.slice(-50)));
}

async function api(path, options) {
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

function postEvents(events) {
  return api("/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ events }),
  });
}

function element(tag, attributes, text) {
  const node = document.createElement(tag);
  Object.entries(attributes || {}).forEach(([name, value]) => node.setAttribute(name, value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderList(listId, hits) {
  const list = document.getElementById(listId);
  list.replaceChildren();
  hits.forEach((hit) => {
    const item = element("li", { "data-id": hit.id });
    const link = element("a", { href: "/?id=" + encodeURIComponent(hit.id), "data-id": hit.id }, hit.title);
    link.addEventListener("click", (event) => followHeadline(event, link, hit));
    item.append(link, element("span", { class: "reason" }, hit.reason));
    list.append(item);
  });
}

// A headline click is posted with the list it was in and its place there (the served-list log credits it to
// that box), then the reader goes on; a failed post never keeps them from the article.
function followHeadline(event, link, hit) {
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  const click = {
    article_id: hit.id, type: "click", list_id: hit.list_id, position: hit.position, user_id: readerId(),
  };
  const go = () => { location.href = link.href; };
  const posted = fetch("/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ events: [click] }),
    keepalive: true,
  }).catch(() => undefined);
  Promise.race([posted, new Promise((resolve) => setTimeout(resolve, 800))]).then(go);
}

function renderReactions(article) {
  const bar = document.getElementById("reactions");
  bar.replaceChildren();
  article.reaction_names.forEach((name) => {
    const count = article.reactions[name] || 0;
    const button = element("button", { class: "reaction", type: "button", "data-name": name }, `${name}! (${count})`);
    button.addEventListener("click", () => react(article.id, name, button));
    bar.append(button);
  });
}

async function fillBoxes(articleId) {
  const past = history().filter((id) => id !== articleId).join(",");
  const query = new URLSearchParams({
    history: past, k_related: BOX_SIZE, k_ranking: BOX_SIZE, k_recommend: BOX_SIZE,
  });
  const page = await api(`/page/${encodeURIComponent(articleId)}?${query}`);
  renderList("related", page.related);
  renderList("ranking", page.ranking);
  renderList("recommendation", page.recommendation);
  document.body.dataset.loaded = String(Date.now());
}

async function react(articleId, name, button) {
  button.disabled = true;
  await postEvents([{ article_id: articleId, type: "reaction", reaction: name, user_id: readerId() }]);
  const article = await api(`/articles/${encodeURIComponent(articleId)}`);
  renderReactions(article);
  document.querySelector(`.reaction[data-name="${name}"]`).classList.add("done");
  await fillBoxes(articleId);
}

async function show(articleId) {
  const article = await api(`/articles/${encodeURIComponent(articleId)}`);
  document.title = article.title + " · recsys demo";
  document.getElementById("title").textContent = article.title;
  document.getElementById("category").textContent = article.category;
  document.getElementById("published").textContent = (article.published_at || "").slice(0, 10);
  const body = document.getElementById("body");
  body.replaceChildren(...(article.body || article.abstract || "").split(/\n+/).map((p) => element("p", {}, p)));
  renderReactions(article);
  await fillBoxes(articleId);
  await postEvents([{ article_id: articleId, type: "view", user_id: readerId() }]);
  remember(articleId);
}

async function main() {
  document.getElementById("forget").addEventListener("click", () => {
    localStorage.removeItem(HISTORY_KEY);
    location.reload();
  });
  try {
    let articleId = new URLSearchParams(location.search).get("id");
    if (!articleId) {
      const top = await api("/ranking?k=1");
      if (!top.length) throw new Error("the index is empty");
      articleId = top[0].id;
    }
    await show(articleId);
  } catch (error) {
    const box = document.getElementById("error");
    box.hidden = false;
    box.textContent = "Could not load this page: " + error.message;
  }
}

main();
