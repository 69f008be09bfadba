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

// `faceIds`: one face id or a list of them, outlined in yellow.
function photoUrl(imageKey, faceIds, maxSide) {
  const params = new URLSearchParams();
  for (const id of [faceIds].flat()) if (id) params.append("face_id", id);
  if (maxSide) params.set("max_side", String(maxSide));
  const query = params.toString();
  return `/api/images/${keyPath(imageKey)}${query ? "?" + query : ""}`;
}

// A face's box ([top, right, bottom, left] in pixels of a width x height photo) as a style that places it
// over the photo in percentages, so it follows the photo however large the page draws it.
function boxStyle([top, right, bottom, left], width, height) {
  return {
    left: `${(100 * left) / width}%`,
    top: `${(100 * top) / height}%`,
    width: `${(100 * (right - left)) / width}%`,
    height: `${(100 * (bottom - top)) / height}%`,
  };
}

// Pointing at any of `nodes` lights up (class "hot") every element whose `attribute` is `value`: a face's
// box and its entry in the list beside the photo together.
function hoverTogether(nodes, attribute, value) {
  const light = (on) => {
    for (const node of document.querySelectorAll(`[${attribute}="${value}"]`)) node.classList.toggle("hot", on);
  };
  for (const node of nodes) {
    node.addEventListener("mouseenter", () => light(true));
    node.addEventListener("mouseleave", () => light(false));
  }
}

// The photo viewer page of one photo, and a person's page.
function viewerUrl(imageKey) {
  return `/photos/${keyPath(imageKey)}`;
}

function personUrl(personId) {
  return `/people#${encodeURIComponent(personId)}`;
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

// What went wrong, in words for the person at the page (the API's details are for programs).
async function plainError(response) {
  const detail = await errorText(response);
  switch (response.status) {
    case 400: return "That photo could not be read. Try another file (JPEG, PNG, HEIC or WebP).";
    case 404: return detail.includes("`") ? "Not found in the collection." : detail;
    case 413: return "That photo is too large to search with. Try a smaller copy of it.";
    case 415: return "That file is not a photo. Pick a JPEG, PNG, HEIC or WebP image.";
    case 503: return "The collection is busy being updated. Try again in a few seconds.";
    default: return response.status >= 500 ? "Something went wrong on the server. Try again later." : detail;
  }
}

// Calls to the API that change something (or any call, when the server asks for its token): the
// token the user typed is kept for this tab (sessionStorage) and as a cookie for <img> requests.
const TOKEN_KEY = "facepipe_token";

function tokenHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(method, url, body) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const init = { method, headers: { ...tokenHeaders() } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    if (response.status !== 401 || attempt) return response;
    const token = window.prompt("This facepipe server needs its access token (FACEPIPE_API_TOKEN):");
    if (!token) return response;
    sessionStorage.setItem(TOKEN_KEY, token);
    document.cookie = `${TOKEN_KEY}=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
  }
}
