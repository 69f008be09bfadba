"use strict";
// The search page: drop or pick a photo, see its faces outlined and, per face, the nearest faces.

const SAME_PERSON = 0.5; // the server says its measured value (same_person); this is the fallback
const drop = document.getElementById("drop");
const input = document.getElementById("file");
const status = document.getElementById("status");
const result = document.getElementById("result");
const query = document.getElementById("query");
const boxes = document.getElementById("boxes");
const facesList = document.getElementById("faces");
let objectUrl = null;

input.addEventListener("change", () => input.files.length && search(input.files[0]));
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) search(file);
});
// A photo pasted from the clipboard (a screenshot, an image copied in another app) is searched too.
document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData ? event.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
  if (!file) return;
  event.preventDefault();
  search(file);
});

async function search(file) {
  document.body.dataset.state = "searching";
  status.textContent = `Looking for faces in ${file.name || "the pasted image"}…`;
  facesList.replaceChildren();
  boxes.replaceChildren();
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(file);
  query.src = objectUrl;
  query.hidden = false;
  result.hidden = false;

  const body = new FormData();
  body.append("image", file);
  let answer;
  try {
    const response = await fetch("/api/search?top_k=8", { method: "POST", body });
    if (!response.ok) throw new Error(await plainError(response));
    answer = await response.json();
  } catch (error) {
    // fetch itself failing means the server is gone: say so, not the browser's "Failed to fetch"
    status.textContent = error instanceof TypeError ? "The facepipe server cannot be reached." : error.message;
    document.body.dataset.state = "error";
    return;
  }
  show(answer);
  const n = answer.faces.length;
  status.textContent = n ? `${n} face${n > 1 ? "s" : ""} found.` : "No face found in this photo.";
  document.body.dataset.state = "done";
}

function show(answer) {
  const size = answer.image || { width: query.naturalWidth || 1, height: query.naturalHeight || 1 };
  answer.faces.forEach((face, n) => {
    const box = el("div", {
      class: "box",
      "data-face": n,
      title: `face ${n + 1}`,
      style: boxStyle(face.box, size.width, size.height),
    }, el("span", { text: String(n + 1) }));
    boxes.append(box);

    const matches = el("ol", { class: "matches" });
    for (const m of face.matches) {
      const near = m.distance < (answer.same_person ?? SAME_PERSON);
      const who = m.person_id
        ? el("a", { class: "who", href: personUrl(m.person_id), text: personLabel(m.person_id, m.name) })
        : el("span", { class: "who", text: personLabel(m.person_id, m.name) });
      matches.append(el("li", {
        class: `match${near ? " near" : ""}`,
        "data-image-key": m.image_key,
        "data-person-id": m.person_id || "",
        "data-distance": m.distance,
      },
        el("a", { class: "open", href: viewerUrl(m.image_key), title: `${m.image_key}: open the photo` },
          el("img", { class: "thumb", src: cropUrl(m.face_id, m.image_key), alt: m.image_key, loading: "lazy" })),
        el("div", { class: "label" },
          el("span", { class: "key", text: m.image_key }),
          el("span", { class: "distance", text: m.distance.toFixed(3) }),
          who),
      ));
    }
    if (!face.matches.length) matches.append(el("li", { class: "none", text: "No stored face is similar." }));
    const card = el("section", { class: "face", "data-face": n },
      el("h3", { text: `Face ${n + 1}` }), matches);
    hoverTogether([card, box], "data-face", n);
    facesList.append(card);
  });
}

// Keyboard: arrows move between the results, Enter opens the focused one's photo, Esc clears the search.
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    reset();
    return;
  }
  const links = [...facesList.querySelectorAll(".match a.open")];
  const keys = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
  if (!links.length || !(event.key in keys)) return;
  event.preventDefault();
  const at = links.indexOf(document.activeElement);
  links[at < 0 ? 0 : Math.min(links.length - 1, Math.max(0, at + keys[event.key]))].focus();
});

function reset() {
  result.hidden = true;
  facesList.replaceChildren();
  boxes.replaceChildren();
  query.removeAttribute("src");
  query.hidden = true;
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = null;
  input.value = "";
  status.textContent = "";
  document.body.dataset.state = "idle";
}
