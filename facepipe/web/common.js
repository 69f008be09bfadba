"use strict";
// Shared helpers for the facepipe pages (plain JS, no build step).

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

// Image keys are paths; each segment is URL-encoded (a key may itself contain %-escapes).
function keyPath(key) {
  return key.split("/").map(encodeURIComponent).join("/");
}

function cropUrl(faceId, imageKey) {
  const hint = imageKey ? `?image_key=${encodeURIComponent(imageKey)}` : "";
  return `/api/faces/${encodeURIComponent(faceId)}/crop${hint}`;
}

function photoUrl(imageKey, faceId, maxSide) {
  const params = new URLSearchParams();
  if (faceId) params.set("face_id", faceId);
  if (maxSide) params.set("max_side", String(maxSide));
  const query = params.toString();
  return `/api/images/${keyPath(imageKey)}${query ? "?" + query : ""}`;
}

function personLabel(personId, name) {
  if (!personId) return "no person";
  return name ? `${name} (${personId})` : personId;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}
