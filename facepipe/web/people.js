"use strict";
// The people page: every person with counts; a person's faces and photos, with rename, hide, merge,
// split and move; the review queue; faces in no person; the edit log and undo. Views by #hash:
// #<person id>, #review, #unassigned; nothing (all people).

const $ = (id) => document.getElementById(id);
const status = $("status");
const grid = $("people");
const views = { person: $("person"), review: $("review"), unassigned: $("unassigned") };
const PEOPLE_PAGE = 60;
const PHOTOS_PAGE = 48;
let people = []; // every person (the pickers need them all); the grid shows them a page at a time
let shownPeople = PEOPLE_PAGE;
let current = null; // the person shown

function say(text) {
  status.textContent = text;
}

async function ok(response, what) {
  if (response.ok) return response.json();
  say(`${what} failed. ${await plainError(response)}`);
  return null;
}

function crop(faceId, imageKey, alt) {
  return el("img", { class: "thumb", src: cropUrl(faceId, imageKey), alt: alt || "face", loading: "lazy" });
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function label(p) {
  return p.name || p.person_id;
}

// -- the list ------------------------------------------------------------------------------------------

async function loadPeople() {
  const response = await api("GET", "/api/people");
  const list = await ok(response, "Loading people");
  if (!list) return;
  people = list;
  const showHidden = $("show-hidden").checked;
  const visible = people.filter((p) => showHidden || !p.hidden);
  const shown = visible.slice(0, shownPeople);
  grid.replaceChildren(...shown.map((p) => {
    const count = p.image_keys.length;
    return el("a", { class: p.hidden ? "person hidden" : "person", href: `#${encodeURIComponent(p.person_id)}`,
      "data-person-id": p.person_id },
      p.cover_face_id ? crop(p.cover_face_id, p.image_keys[0], label(p)) : null,
      el("span", { class: "name", text: label(p) + (p.hidden ? " (hidden)" : "") }),
      el("span", { class: "count", text: `${plural(count, "photo")} · ${plural(p.faces, "face")}` }));
  }));
  moreButton(grid, "more-people", shown.length < visible.length, "More people", async () => {
    shownPeople += PEOPLE_PAGE;
    peopleStatus(await loadPeople());
  });
  return { visible: visible.length, shown: shown.length, hidden: people.length - visible.length };
}

function moreButton(after, id, wanted, text, action) {
  const old = document.getElementById(id);
  if (old) old.remove();
  if (wanted) after.after(el("button", { id, class: "more", type: "button", text, onclick: action }));
}

function peopleStatus(counts) {
  if (!counts) return;
  if (!people.length) {
    say("No people yet. People appear here once photos with faces have been added to the collection.");
    return;
  }
  const shown = counts.shown < counts.visible ? `, ${counts.shown} shown` : "";
  const hidden = counts.hidden ? ` (${counts.hidden} hidden)` : "";
  say(`${counts.visible} people${shown}${hidden}. Faces seen only once are under "Faces in no person".`);
}

function options(select, exclude, extra) {
  select.replaceChildren(
    ...(extra || []),
    ...people.filter((p) => p.person_id !== exclude).map((p) => el("option", { value: p.person_id, text: `${label(p)} (${plural(p.faces, "face")})` })),
  );
}

// -- one person ----------------------------------------------------------------------------------------

// A person's faces (to select) and photos, a page of photos at a time, each with every face of theirs in
// yellow; a photo opens the viewer.
async function openPerson(personId, more = false) {
  const offset = more ? $("photos").children.length : 0;
  const url = `/api/people/${encodeURIComponent(personId)}?offset=${offset}&limit=${PHOTOS_PAGE}`;
  const p = await ok(await api("GET", url), "Opening the person");
  if (!p) return;
  current = p;
  views.person.dataset.personId = p.person_id;
  $("person-title").textContent = `${personLabel(p.person_id, p.name)}: ${plural(p.faces, "face")} in ${plural(p.photos_total, "photo")}${p.hidden ? " (hidden)" : ""}`;
  $("person-title").dataset.personId = p.person_id;
  if (!more) {
    $("name-input").value = p.name || "";
    $("hide").textContent = p.hidden ? "Show this person again" : "Hide this person";
    options($("merge-from"), p.person_id);
    options($("move-to"), p.person_id, [el("option", { value: "", text: "no person" })]);
  }
  const faces = p.photos.flatMap((photo) => photo.faces.map((f) => ({ ...f, image_key: photo.image_key })));
  const picks = faces.map((f) => el("label", { class: "pick", "data-face-id": f.face_id, title: f.image_key },
    el("input", { type: "checkbox", value: f.face_id, onchange: selectionChanged }),
    crop(f.face_id, f.image_key, f.image_key),
    el("span", { class: "key", text: f.image_key })));
  const tiles = p.photos.map((photo) => {
    const ids = photo.faces.map((f) => f.face_id);
    return el("a", { class: "photo", href: viewerUrl(photo.image_key), "data-image-key": photo.image_key, "data-faces": ids.length },
      el("img", { src: photoUrl(photo.image_key, ids, 360), alt: photo.image_key, loading: "lazy" }),
      el("span", { class: "key", text: photo.image_key }));
  });
  if (more) {
    $("faces").append(...picks);
    $("photos").append(...tiles);
  } else {
    $("faces").replaceChildren(...picks);
    $("photos").replaceChildren(...tiles);
  }
  moreButton($("photos"), "more-photos", $("photos").children.length < p.photos_total, "More photos", () => openPerson(p.person_id, true));
  selectionChanged();
  if (!more) show("person");
}

function selected() {
  return [...$("faces").querySelectorAll("input:checked")].map((i) => i.value);
}

function selectionChanged() {
  const n = selected().length;
  $("split").disabled = n === 0;
  $("move").disabled = n === 0;
}

// -- edits ---------------------------------------------------------------------------------------------

async function afterEdit(message, openId) {
  await loadPeople();
  await loadLog();
  await loadReviewCount();
  const target = openId || (current && current.person_id);
  const view = location.hash.slice(1);
  if (view === "review") await loadReview();
  else if (view === "unassigned") await loadUnassigned();
  else if (target && people.some((p) => p.person_id === target)) {
    if (decodeURIComponent(view) !== target) location.hash = encodeURIComponent(target);
    else await openPerson(target);
  } else hideViews();
  say(message); // after the views, which say what they show
}

$("rename").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("name-input").value;
  const p = await ok(await api("PATCH", `/api/people/${encodeURIComponent(current.person_id)}`, { name }), "Renaming");
  if (p) await afterEdit(p.name ? `${p.person_id} is now ${p.name}.` : `${p.person_id} has no name now.`);
});

$("hide").addEventListener("click", async () => {
  const p = await ok(await api("PATCH", `/api/people/${encodeURIComponent(current.person_id)}`, { hidden: !current.hidden }), "Hiding");
  if (p) await afterEdit(p.hidden ? `${label(p)} is hidden.` : `${label(p)} is shown again.`);
});

$("merge").addEventListener("submit", async (event) => {
  event.preventDefault();
  const other = $("merge-from").value;
  if (!other) return;
  const p = await ok(await api("POST", `/api/people/${encodeURIComponent(current.person_id)}/merge`, { from: [other] }), "Merging");
  if (p) await afterEdit(`${other} merged into ${label(p)}: ${p.faces} faces.`, p.person_id);
});

$("split").addEventListener("click", async () => {
  const faceIds = selected();
  const p = await ok(await api("POST", `/api/people/${encodeURIComponent(current.person_id)}/split`, { face_ids: faceIds }), "Splitting");
  if (p) await afterEdit(`${faceIds.length} face${faceIds.length === 1 ? "" : "s"} split off into ${p.person_id}.`, p.person_id);
});

$("move").addEventListener("click", async () => {
  const target = $("move-to").value || null;
  let moved = 0;
  for (const faceId of selected()) {
    const r = await ok(await api("PUT", `/api/faces/${encodeURIComponent(faceId)}/person`, { person_id: target }), "Moving the face");
    if (!r) return;
    moved++;
  }
  await afterEdit(`${moved} face${moved === 1 ? "" : "s"} moved to ${target || "no person"}.`);
});

$("undo").addEventListener("click", async () => {
  const undone = await ok(await api("POST", "/api/people/undo", { n: 1 }), "Undo");
  if (!undone) return;
  await afterEdit(undone.length ? `Undone: ${describe(undone[0])}.` : "Nothing to undo.");
});

$("show-hidden").addEventListener("change", async () => peopleStatus(await loadPeople()));

// -- review and unassigned faces -------------------------------------------------------------------------

async function loadReviewCount() {
  const list = await ok(await api("GET", "/api/review"), "Loading the review queue");
  if (list) $("review-count").textContent = `(${list.length})`;
  return list;
}

function renderSuggestions(list) {
  const names = Object.fromEntries(people.map((p) => [p.person_id, label(p)]));
  $("suggestions").replaceChildren(...list.map((s) => {
    const left = s.kind === "persons" ? names[s.person_id] || s.person_id : "this face";
    const right = s.kind === "persons" ? names[s.other_id] || s.other_id : names[s.person_id] || s.person_id;
    const decide = (accept) => async () => {
      const body = { kind: s.kind, person_id: s.person_id, accept,
        ...(s.kind === "persons" ? { other_id: s.other_id } : { face_id: s.face_id }) };
      const rest = await ok(await api("POST", "/api/review/decision", body), "Deciding");
      if (rest) await afterEdit(accept ? `Accepted: ${left} and ${right} are one person.` : `Kept apart: ${left} and ${right}.`);
    };
    return el("li", { class: "suggestion", "data-kind": s.kind, "data-person-id": s.person_id,
      "data-other-id": s.other_id || null, "data-face-id": s.face_id || null },
      el("div", { class: "pair" },
        el("figure", {}, crop(s.face_ids[0], s.image_key, left), el("figcaption", { text: left })),
        el("figure", {}, crop(s.face_ids[1], null, right), el("figcaption", { text: right }))),
      el("span", { class: "distance", text: `distance ${s.distance.toFixed(3)}` }),
      el("button", { type: "button", class: "accept", onclick: decide(true), text: "Same person" }),
      el("button", { type: "button", class: "reject", onclick: decide(false), text: "Not the same" }));
  }));
}

async function loadReview() {
  const list = await loadReviewCount();
  if (!list) return;
  renderSuggestions(list);
  say(list.length ? `${list.length} suggestions to review, nearest first.` : "Nothing to review.");
  show("review");
}

async function loadUnassigned() {
  const faces = await ok(await api("GET", "/api/faces/unassigned"), "Loading the faces in no person");
  if (!faces) return;
  $("loose").replaceChildren(...faces.map((f) => {
    const select = el("select", { "aria-label": "put this face in" }, el("option", { value: "", text: "put in…" }));
    options(select, null, [el("option", { value: "", text: "put in…" })]);
    select.addEventListener("change", async () => {
      if (!select.value) return;
      const r = await ok(await api("PUT", `/api/faces/${encodeURIComponent(f.face_id)}/person`, { person_id: select.value }), "Moving the face");
      if (r) await afterEdit(`The face is now in ${r.name || r.person_id}.`);
    });
    return el("div", { class: "pick", "data-face-id": f.face_id }, crop(f.face_id, f.image_key, f.image_key),
      el("span", { class: "key", text: f.image_key }), select);
  }));
  say(`${faces.length} face${faces.length === 1 ? "" : "s"} in no person.`);
  show("unassigned");
}

// -- the log ---------------------------------------------------------------------------------------------

function describe(e) {
  const d = e.detail;
  switch (e.action) {
    case "name": return d.name ? `named ${d.person_id} ${d.name}` : `removed the name of ${d.person_id}`;
    case "hide": return `${d.hidden ? "hid" : "showed"} ${d.person_id}`;
    case "merge": return `merged ${d.from.join(", ")} into ${d.person_id}`;
    case "split": return `split ${d.face_ids.length} face(s) off ${d.person_id}`;
    case "move": return `moved a face from ${d.from || "no person"} to ${d.to || "no person"}`;
    default: return d.reject ? `kept ${d.reject.join(" and ")} apart` : d.reject_face ? `a face is not ${d.person_id}` : `reviewed: ${JSON.stringify(d)}`;
  }
}

async function loadLog() {
  const log = await ok(await api("GET", "/api/people/log?limit=10"), "Loading the edit log");
  if (!log) return;
  $("log").replaceChildren(...log.map((e) => el("li", { class: e.undone_at ? "undone" : "", "data-action": e.action },
    `${e.at.replace("T", " ").slice(0, 19)} · ${e.who} · ${describe(e)}${e.undone_at ? " (undone)" : ""}`)));
  $("undo").disabled = !log.some((e) => !e.undone_at);
}

// -- views -----------------------------------------------------------------------------------------------

function hideViews() {
  for (const view of Object.values(views)) view.hidden = true;
  current = null;
}

function show(name) {
  for (const [key, view] of Object.entries(views)) view.hidden = key !== name;
  if (name !== "person") current = null;
  views[name].scrollIntoView({ behavior: "smooth" });
}

async function route() {
  const target = decodeURIComponent(location.hash.slice(1));
  if (target === "review") return loadReview();
  if (target === "unassigned") return loadUnassigned();
  if (target) return openPerson(target);
  hideViews();
  peopleStatus(await loadPeople());
}

window.addEventListener("hashchange", route);
(async () => {
  const counts = await loadPeople();
  peopleStatus(counts);
  await loadLog();
  await loadReviewCount();
  if (location.hash) await route();
})();
