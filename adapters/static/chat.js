// Parley web chat. Talks to /ws with JSON frames: the server sends "history" on
// connect, then one frame per reply event (status, delta, final, notice, error) and
// "done" when an answer is complete.
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

  let socket = null;
  let reply = null; // the bubble of the answer being streamed, if any
  let busy = false;
  let retryDelay = 500;

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
      reply = { bubble: element("div", "bubble assistant streaming"), text: "" };
      log.append(reply.bubble);
    }
    return reply;
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
        current.bubble.textContent = current.text;
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
    send.disabled = !usable;
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
    if (!text.trim() || busy || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "message", text: text }));
    addUser(text);
    input.value = "";
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

  connect();
})();
