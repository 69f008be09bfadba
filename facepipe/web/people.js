"use strict";
// The people page: one thumbnail per person with counts; a person's photos on click.

const status = document.getElementById("status");
const grid = document.getElementById("people");
const detail = document.getElementById("person");
const title = document.getElementById("person-title");
const photos = document.getElementById("photos");

async function load() {
  const response = await fetch("/api/people");
  if (!response.ok) {
    status.textContent = `Could not load people: ${await errorText(response)}`;
    return;
  }
  const people = await response.json();
  status.textContent = people.length
    ? `${people.length} people. Faces seen only once are not listed.`
    : "No people yet: index some photos (facepipe index), people are clustered after each run.";
  for (const p of people) {
    const count = p.image_keys.length;
    grid.append(el("a", { class: "person", href: `#${encodeURIComponent(p.person_id)}`, "data-person-id": p.person_id },
      p.cover_face_id ? el("img", { class: "thumb", src: cropUrl(p.cover_face_id), alt: p.name || p.person_id }) : null,
      el("span", { class: "name", text: p.name || p.person_id }),
      el("span", { class: "count", text: `${count} photo${count === 1 ? "" : "s"} · ${p.faces} faces` }),
    ));
  }
  if (location.hash) open(decodeURIComponent(location.hash.slice(1)));
}

async function open(personId) {
  const response = await fetch(`/api/people/${encodeURIComponent(personId)}`);
  if (!response.ok) {
    status.textContent = await errorText(response);
    return;
  }
  const p = await response.json();
  title.textContent = `${personLabel(p.person_id, p.name)}: ${p.photos.length} photos`;
  photos.replaceChildren(...p.photos.map((photo) => {
    const face = photo.faces[0];
    return el("a", { class: "photo", href: photoUrl(photo.image_key, face && face.face_id), target: "_blank", rel: "noopener" },
      el("img", { src: photoUrl(photo.image_key, face && face.face_id, 360), alt: photo.image_key, loading: "lazy" }),
      el("span", { class: "key", text: photo.image_key }));
  }));
  detail.hidden = false;
  detail.scrollIntoView({ behavior: "smooth" });
}

window.addEventListener("hashchange", () => location.hash && open(decodeURIComponent(location.hash.slice(1))));
load();
