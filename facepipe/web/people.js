"use strict";
// The people page: one thumbnail per person with counts; a person's photos on click.

const status = document.getElementById("status");
const grid = document.getElementById("people");
const detail = document.getElementById("person");
const title = document.getElementById("person-title");
const photos = document.getElementById("photos");
const PEOPLE_PAGE = 60;
const PHOTOS_PAGE = 48;
let shownPeople = 0;
let shownPerson = null;

// People come a page at a time; "More people" asks for the next page.
async function load() {
  const response = await fetch(`/api/people?offset=${shownPeople}&limit=${PEOPLE_PAGE}`);
  if (!response.ok) {
    status.textContent = `The people could not be loaded. ${await plainError(response)}`;
    return;
  }
  const people = await response.json();
  const total = Number(response.headers.get("X-Total-Count") || people.length);
  shownPeople += people.length;
  status.textContent = total
    ? `${total} people${shownPeople < total ? `, ${shownPeople} shown` : ""}. Faces seen only once are not listed.`
    : "No people yet. People appear here once photos with faces have been added to the collection.";
  for (const p of people) {
    const count = p.image_keys.length;
    grid.append(el("a", { class: "person", href: `#${encodeURIComponent(p.person_id)}`, "data-person-id": p.person_id },
      p.cover_face_id ? el("img", { class: "thumb", src: cropUrl(p.cover_face_id), alt: p.name || p.person_id }) : null,
      el("span", { class: "name", text: p.name || p.person_id }),
      el("span", { class: "count", text: `${count} photo${count === 1 ? "" : "s"} · ${p.faces} faces` }),
    ));
  }
  moreButton(grid, "more-people", shownPeople < total, "More people", load);
  if (location.hash && shownPerson === null) open(decodeURIComponent(location.hash.slice(1)));
}

function moreButton(after, id, wanted, text, action) {
  const old = document.getElementById(id);
  if (old) old.remove();
  if (wanted) after.after(el("button", { id, class: "more", type: "button", text, onclick: action }));
}

// A person's photos, a page at a time, each with every face of theirs in yellow; a photo opens the viewer.
async function open(personId, more = false) {
  const offset = more ? photos.children.length : 0;
  const response = await fetch(`/api/people/${encodeURIComponent(personId)}?offset=${offset}&limit=${PHOTOS_PAGE}`);
  if (!response.ok) {
    status.textContent = await plainError(response);
    return;
  }
  const p = await response.json();
  shownPerson = p.person_id;
  detail.dataset.personId = p.person_id;
  title.textContent = `${personLabel(p.person_id, p.name)}: ${p.photos_total} photo${p.photos_total === 1 ? "" : "s"}`;
  const tiles = p.photos.map((photo) => {
    const ids = photo.faces.map((f) => f.face_id);
    return el("a", { class: "photo", href: viewerUrl(photo.image_key), "data-image-key": photo.image_key, "data-faces": ids.length },
      el("img", { src: photoUrl(photo.image_key, ids, 360), alt: photo.image_key, loading: "lazy" }),
      el("span", { class: "key", text: photo.image_key }));
  });
  if (more) photos.append(...tiles);
  else photos.replaceChildren(...tiles);
  moreButton(photos, "more-photos", photos.children.length < p.photos_total, "More photos", () => open(p.person_id, true));
  detail.hidden = false;
  if (!more) detail.scrollIntoView({ behavior: "smooth" });
}

window.addEventListener("hashchange", () => location.hash && open(decodeURIComponent(location.hash.slice(1))));
load();
