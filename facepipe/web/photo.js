"use strict";
// The photo viewer: the photo with every face outlined and labelled by its person; a face leads to its person.

const status = document.getElementById("status");
const viewer = document.getElementById("viewer");
const photo = document.getElementById("photo");
const boxes = document.getElementById("boxes");
const who = document.getElementById("who");
const about = document.getElementById("about");
const imageKey = location.pathname.slice("/photos/".length).split("/").map(decodeURIComponent).join("/");

async function load() {
  document.getElementById("title").textContent = imageKey;
  document.title = `facepipe · ${imageKey}`;
  const response = await fetch(`/api/photos/${keyPath(imageKey)}`);
  if (!response.ok) {
    status.textContent = await plainError(response);
    document.body.dataset.state = "error";
    return;
  }
  const p = await response.json();
  if (p.status !== "ok") {
    status.textContent = "This photo could not be read when the collection was indexed.";
    document.body.dataset.state = "error";
    return;
  }
  photo.alt = imageKey;
  photo.src = `/api/images/${keyPath(imageKey)}?boxes=false&max_side=1600`;
  const width = p.width || 1, height = p.height || 1;
  p.faces.forEach((face, n) => {
    const label = face.person_id ? face.name || face.person_id : "no person";
    const attrs = {
      class: `box labelled${face.person_id ? "" : " unknown"}`,
      "data-face-id": face.face_id,
      "data-person-id": face.person_id || "",
      title: face.person_id ? `${personLabel(face.person_id, face.name)}: open their page` : "not in any person",
      style: boxStyle(face.box, width, height),
    };
    const box = face.person_id
      ? el("a", { ...attrs, href: personUrl(face.person_id) }, el("span", { text: label }))
      : el("div", { ...attrs, tabindex: "0" }, el("span", { text: label }));
    boxes.append(box);
    const item = el("li", { "data-face-id": face.face_id },
      face.person_id ? el("a", { href: personUrl(face.person_id), text: label }) : el("span", { text: label }));
    hoverTogether([box, item], "data-face-id", face.face_id);
    who.append(item);
  });
  const n = p.faces.length;
  status.textContent = n ? `${n} face${n > 1 ? "s" : ""} in this photo.` : "No face was found in this photo.";
  const taken = p.taken_at ? `Taken ${p.taken_at.replace("T", " ")}` : "";
  const camera = [p.camera_make, p.camera_model].filter(Boolean).join(" ");
  about.textContent = [taken, camera].filter(Boolean).join(" · ");
  viewer.hidden = false;
  document.body.dataset.state = "done";
}

// Arrows move between the faces, Enter opens the focused face's person, Esc goes back.
document.addEventListener("keydown", (event) => {
  const faces = [...boxes.children];
  if (event.key === "Escape") { history.back(); return; }
  if (!faces.length || !["ArrowRight", "ArrowDown", "ArrowLeft", "ArrowUp"].includes(event.key)) return;
  event.preventDefault();
  const at = faces.indexOf(document.activeElement);
  const step = event.key === "ArrowRight" || event.key === "ArrowDown" ? 1 : -1;
  faces[at < 0 ? 0 : (at + step + faces.length) % faces.length].focus();
});

load();
