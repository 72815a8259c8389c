// Parley web chat. Talks to /ws with JSON frames: the server sends "history" on
// connect, then one frame per reply event (status, delta, final, notice, error) and
// "done" when an answer is complete. Files are uploaded first (POST /upload, from the
// 📎 button or dropped on the page) and their ids sent with the next message.
//
// What a user wrote, and an answer while it streams, reach the page only as text nodes
// (textContent). A finished answer comes as HTML the server rendered from Markdown and
// sanitised with an allow-list (nh3): no script, no event handler, no style, only
// http(s)/mailto links. The page's Content-Security-Policy forbids inline script too.
"use strict";

(() => {
  const log = document.getElementById("log");
  const form = document.getElementById("composer");
  const input = document.getElementById("input");
  const send = document.getElementById("send");
  const state = document.getElementById("state");
  const picker = document.getElementById("files");
  const attached = document.getElementById("attached");

  let socket = null;
  let reply = null; // the bubble of the answer being streamed, if any
  let busy = false;
  let retryDelay = 500;
  let pending = []; // ids of uploaded files, for the next message
  let uploading = 0;

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  function link(text, href) {
    const a = element("a", "", text);
    a.href = href;
    a.rel = "noopener noreferrer nofollow";
    a.target = "_blank";
    return a;
  }

  // A finished answer's Markdown arrives rendered and sanitised by the server
  // (markdown-it-py + nh3, adapters/web_markdown.py); without it, plain text.
  function renderMarkdown(parent, text, html) {
    if (typeof html === "string") parent.innerHTML = html;
    else parent.textContent = text;
  }

  // --- bubbles

  function addUser(text) {
    log.append(element("div", "bubble user", text));
    scrollDown();
  }

  function addAssistant(text, html) {
    const bubble = element("div", "bubble assistant");
    renderMarkdown(bubble, text, html);
    log.append(bubble);
    scrollDown();
    return bubble;
  }

  function currentReply() {
    if (!reply) {
      reply = { bubble: element("div", "bubble assistant streaming"), text: "", shown: 0 };
      log.append(reply.bubble);
    }
    return reply;
  }

  // Streamed text comes in batches about half a second apart (the server reads the
  // model that often: each wake-up of its process costs more than many tokens do), so
  // the page types each batch out over about that long instead of showing it at once.
  const TYPE_OUT_MS = 450;

  function typeOut(current) {
    if (current.typing) return;
    current.typing = true;
    let last = performance.now();
    const step = (now) => {
      if (current.finished || current.shown >= current.text.length) {
        current.typing = false;
        return;
      }
      const left = current.text.length - current.shown;
      const share = Math.min(1, (now - last) / TYPE_OUT_MS);
      last = now;
      current.shown += Math.max(1, Math.ceil(left * share));
      current.bubble.textContent = current.text.slice(0, current.shown);
      scrollDown();
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }

  function showImage(bubble, frame) {
    const bytes = Uint8Array.from(atob(frame.image), (c) => c.charCodeAt(0));
    const url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
    const image = element("img", "chart");
    image.src = url;
    image.alt = frame.text || frame.image_name;
    const save = link("Download " + frame.image_name, url);
    save.download = frame.image_name;
    save.removeAttribute("target");
    bubble.append(image, element("br"), save);
  }

  function finish(frame) {
    const current = currentReply();
    current.finished = true;
    current.bubble.replaceChildren();
    current.bubble.classList.remove("streaming");
    if (frame.type === "error") {
      current.bubble.classList.add("error");
      current.bubble.textContent = frame.text;
    } else {
      renderMarkdown(current.bubble, frame.text, frame.html);
    }
    if (frame.image) showImage(current.bubble, frame);
    if (frame.private) current.bubble.classList.add("private");
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "history":
        log.replaceChildren();
        for (const item of frame.messages) {
          if (item.role === "user") addUser(item.text);
          else addAssistant(item.text, item.html);
        }
        break;
      case "status": {
        const current = currentReply();
        if (!current.text) current.bubble.replaceChildren(element("span", "status", frame.text));
        break;
      }
      case "delta": {
        const current = currentReply();
        current.text += frame.text;
        // While streaming, plain text: half-written Markdown would flicker.
        typeOut(current);
        break;
      }
      case "notice":
        log.insertBefore(element("div", "notice", frame.text), reply ? reply.bubble : null);
        break;
      case "final":
      case "error":
        finish(frame);
        break;
      case "done":
        reply = null;
        setBusy(false);
        break;
    }
    scrollDown();
  }

  // --- the connection

  function setBusy(value) {
    busy = value;
    const usable = !busy && socket && socket.readyState === WebSocket.OPEN;
    input.disabled = !(socket && socket.readyState === WebSocket.OPEN);
    send.disabled = !usable || uploading > 0;
  }

  // --- files

  async function upload(file) {
    const chip = element("span", "chip uploading", file.name);
    chip.dataset.name = file.name;
    attached.append(chip);
    uploading += 1;
    setBusy(busy);
    try {
      const body = new FormData();
      body.append("file", file, file.name);
      const response = await fetch("/upload", { method: "POST", body: body });
      if (!response.ok) throw new Error((await response.text()) || "HTTP " + response.status);
      const saved = await response.json();
      pending.push(saved.id);
      chip.classList.remove("uploading");
      const remove = element("button", "remove", "×");
      remove.type = "button";
      remove.title = "Remove " + file.name;
      remove.addEventListener("click", () => {
        pending = pending.filter((id) => id !== saved.id);
        chip.remove();
      });
      chip.append(remove);
    } catch (error) {
      chip.remove();
      log.append(element("div", "notice", file.name + ": " + error.message));
      scrollDown();
    } finally {
      uploading -= 1;
      setBusy(busy);
    }
  }

  function uploadAll(files) {
    for (const file of files) upload(file);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/ws");
    socket.addEventListener("open", () => {
      retryDelay = 500;
      state.textContent = "connected";
      state.dataset.state = "connected";
      setBusy(false);
      input.focus();
    });
    socket.addEventListener("message", (event) => onFrame(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      state.textContent = "disconnected, reconnecting…";
      state.dataset.state = "disconnected";
      reply = null;
      setBusy(false);
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    });
  }

  function submit() {
    const text = input.value;
    if (!text.trim() && !pending.length) return;
    if (busy || uploading || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "message", text: text, files: pending }));
    const names = [...attached.querySelectorAll(".chip")].map((chip) => chip.dataset.name);
    addUser(names.length ? (text + "\n📎 " + names.join(", ")).trim() : text);
    input.value = "";
    pending = [];
    attached.replaceChildren();
    setBusy(true);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });

  picker.addEventListener("change", () => {
    uploadAll(picker.files);
    picker.value = "";
  });
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    document.body.classList.add("dropping");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) document.body.classList.remove("dropping");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    document.body.classList.remove("dropping");
    if (event.dataTransfer) uploadAll(event.dataTransfer.files);
  });

  connect();
})();
