// Live updates of the programme board: the office service pushes the re-rendered board
// (server-sent events) when it changes; without JavaScript the page is the same, unrefreshed.
(function () {
  "use strict";
  // A keyboard user keeps their place: the element focused before an update (the same
  // tag, id and link, the same one of its like) is focused again after it.
  function like(board, tag, id, href) {
    return Array.prototype.filter.call(board.getElementsByTagName(tag), function (e) {
      return e.id === id && e.getAttribute("href") === href;
    });
  }
  function focusOf(board) {
    var active = document.activeElement;
    if (!active || active === board || !board.contains(active)) { return null; }
    var id = active.id, href = active.getAttribute("href");
    return { tag: active.tagName, id: id, href: href,
             index: like(board, active.tagName, id, href).indexOf(active) };
  }
  function refocus(board, focused) {
    if (!focused) { return; }
    var same = like(board, focused.tag, focused.id, focused.href);
    var target = same[focused.index] || same[0];
    if (target) { target.focus({ preventScroll: true }); }
  }
  function start() {
    var board = document.querySelector("[data-live]");
    if (!board || !window.EventSource) { return; }
    var status = document.getElementById("live-status");
    var source = new EventSource(board.getAttribute("data-live"));
    function say(text) { if (status) { status.textContent = text; } }
    source.addEventListener("open", function () { say("Live updates on."); });
    source.addEventListener("page", function (event) {
      var focused = focusOf(board);
      board.innerHTML = event.data;  // HTML rendered (and escaped) by the server's template
      refocus(board, focused);
      board.setAttribute("data-version", event.lastEventId);
      say("Updated at " + new Date().toLocaleTimeString("en-GB") + ".");
    });
    source.addEventListener("error", function () { say("Live updates paused: reconnecting."); });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
